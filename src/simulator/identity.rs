//! The simulated STS (`AssumeRoleWithOIDC` and `GetCallerIdentity` at `/sts`) and the instance
//! metadata service's RAM role (`/latest/api/token`,
//! `/latest/meta-data/ram/security-credentials/[<role>]`, token mode only). Both issue temporary
//! keys that the simulated ECS accepts until their `Expiration`; they belong to the role's account.
//!
//! `GetCallerIdentity` (https://help.aliyun.com/document_detail/371868.html; the fields of
//! `GetCallerIdentityResponseBody` in github.com/aliyun/alibabacloud-go-sdk, `sts-20150401`) is
//! signed like any RPC call (signature V1 here) and answers `AccountId`, `Arn`, `IdentityType`,
//! `PrincipalId`, `UserId` (RAM users) or `RoleId` (assumed roles), `RequestId`. It is served
//! whether or not `sts` is configured: it needs only the keys.
//!
//! The OIDC token is verified for real: RS256 signature against the configured JWKS (by `kid`),
//! `iss`, `aud`, `exp` (against the simulator's clock), then the role's trust (OIDC provider ARN,
//! admitted subjects). Error codes as STS documents them
//! (https://help.aliyun.com/zh/ram/developer-reference/api-sts-2015-04-01-errorcodes).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;
use serde_json::json;

use super::config::AccessKeyConfig;
use super::render::request_id;
use super::state::{Principal, SimState};

pub const ISSUER_STS: &str = "AssumeRoleWithOIDC";
pub const ISSUER_METADATA: &str = "EcsRamRole";

fn error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        json!({
            "RequestId": request_id(),
            "HostId": "sts.aliyuncs.com",
            "Code": code,
            "Message": message,
        })
        .to_string(),
    )
        .into_response()
}

fn random(n: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Mints a temporary key of `principal` living `seconds`, known to the simulated ECS.
fn mint(
    state: &SimState,
    seconds: u32,
    issuer: &'static str,
    principal: Principal,
) -> (AccessKeyConfig, jiff::Timestamp) {
    let key = AccessKeyConfig {
        id: format!("STS.{}", random(24)),
        secret: random(30),
        security_token: Some(format!("CAIS{}", random(120))),
        account_id: Some(principal.account_id.clone()),
    };
    let expiration = state.now() + jiff::SignedDuration::from_secs(i64::from(seconds));
    state.add_temporary_key(key.clone(), expiration, issuer, principal);
    (key, expiration)
}

/// `GetCallerIdentity`: who the signed request's key is.
fn get_caller_identity(state: &SimState, params: &[(String, String)]) -> Response {
    state.count_caller_identity();
    let key_id = match super::verify::authenticate_version(
        "POST",
        params,
        state,
        crate::ecs::sts::STS_VERSION,
    ) {
        Ok(id) => id,
        Err(fault) => return error(fault.status, fault.code, &fault.message),
    };
    let Some(p) = state.principal(&key_id) else {
        return error(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        );
    };
    let mut answer = json!({
        "RequestId": request_id(),
        "AccountId": p.account_id,
        "Arn": p.arn,
        "IdentityType": p.identity_type,
        "PrincipalId": p.principal_id,
    });
    if let Some(user) = p.user_id {
        answer["UserId"] = json!(user);
    }
    if let Some(role) = p.role_id {
        answer["RoleId"] = json!(role);
    }
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        answer.to_string(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    exp: i64,
}

/// Verifies `token`; the claims, or STS's error.
// The error is the answer itself; this is the simulator, one call per exchange.
#[allow(clippy::result_large_err)]
fn verify(state: &SimState, token: &str) -> Result<Claims, Response> {
    let invalid = |m: &str| error(401, "AuthenticationFail.OIDCToken.Invalid", m);
    let Some(cfg) = state.sts_config() else {
        return Err(error(
            404,
            "InvalidAction.NotFound",
            "STS is not configured.",
        ));
    };
    if token.is_empty() {
        return Err(invalid("The OIDCToken can not empty."));
    }
    if token.split('.').count() != 3 {
        return Err(invalid(
            "The number of Jwt field should be divided into 3 parts with '.' .",
        ));
    }
    let head = jsonwebtoken::decode_header(token)
        .map_err(|_| invalid("The Jwt content is invalid that cannot be recognized."))?;
    if head.alg != Algorithm::RS256 {
        return Err(invalid(&format!(
            "The algorithm {:?} that be specified in Jwt header is unknown.",
            head.alg
        )));
    }
    let jwks: JwkSet = serde_json::from_value(cfg.jwks.clone())
        .map_err(|_| error(500, "InternalError", "The configured JWKS does not parse."))?;
    let jwk = head
        .kid
        .as_deref()
        .and_then(|kid| jwks.find(kid))
        .ok_or_else(|| {
            error(
                401,
                "AuthenticationFail.OIDCToken.InvalidSignature",
                "OIDC token validate failed: no key of the issuer matches the token's kid.",
            )
        })?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| error(500, "InternalError", "A JWKS key cannot be used."))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[cfg.audience.as_str()]);
    validation.set_issuer(&[cfg.issuer.as_str()]);
    // `exp` is checked against the simulator's clock below.
    validation.validate_exp = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data =
        jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => error(
                401,
                "AuthenticationFail.OIDCToken.InvalidSignature",
                "OIDC token validate failed: invalid signature.",
            ),
            ErrorKind::InvalidAudience => error(
                401,
                "AuthenticationFail.OIDCToken.AudienceNotMatch",
                "Invalid audience.",
            ),
            ErrorKind::InvalidIssuer => error(
                401,
                "AuthenticationFail.OIDCToken.IssuerNotMatch",
                "The issuer of the OIDC token does not match the OIDC provider.",
            ),
            _ => invalid("The Jwt content is invalid that cannot be recognized."),
        })?;
    if data.claims.exp <= state.now().as_second() {
        return Err(error(
            401,
            "AuthenticationFail.OIDCToken.Expired",
            "This JsonWebToken is expired.",
        ));
    }
    Ok(data.claims)
}

fn params(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub async fn sts(State(state): State<Arc<SimState>>, body: axum::body::Bytes) -> Response {
    let params = params(&body);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    if get("Action") == "GetCallerIdentity" {
        return get_caller_identity(&state, &params);
    }
    if get("Action") != "AssumeRoleWithOIDC" {
        return error(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        );
    }
    if get("Version") != crate::ecs::sts::STS_VERSION {
        return error(
            400,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        );
    }
    for name in ["RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"] {
        if get(name).is_empty() {
            return error(
                400,
                "MissingParameter",
                &format!(
                    "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
                ),
            );
        }
    }
    let session = get("RoleSessionName");
    if session.len() < 2
        || session.len() > 64
        || !session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return error(
            400,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed.",
        );
    }
    let duration = match get("DurationSeconds") {
        "" => 3600,
        d => match d.parse::<u32>() {
            Ok(d) if (900..=43200).contains(&d) => d,
            _ => {
                return error(
                    400,
                    "InvalidParameter.DurationSeconds",
                    "The Min/Max value of DurationSeconds is 15min/12hr.",
                );
            }
        },
    };
    let claims = match verify(&state, get("OIDCToken")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(cfg) = state.sts_config() else {
        return error(404, "InvalidAction.NotFound", "STS is not configured.");
    };
    let Some(role) = cfg.roles.iter().find(|r| r.arn == get("RoleArn")) else {
        return error(404, "EntityNotExist.Role", "The specified Role not exists.");
    };
    if role.oidc_provider_arn != get("OIDCProviderArn") {
        return error(
            401,
            "AuthenticationFail.NoPermission",
            "No such OIDC Provider registered.",
        );
    }
    if !role.subjects.is_empty() && !role.subjects.contains(&claims.sub) {
        return error(
            401,
            "AuthenticationFail.NoPermission",
            "There is no permission",
        );
    }
    let seconds = cfg
        .max_duration_seconds
        .map_or(duration, |m| duration.min(m.max(1)));
    let principal = Principal::assumed_role(&role.arn, session);
    let (key, expiration) = mint(&state, seconds, ISSUER_STS, principal);
    let role_name = role.arn.rsplit('/').next().unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        json!({
            "RequestId": request_id(),
            "Credentials": {
                "AccessKeyId": key.id,
                "AccessKeySecret": key.secret,
                "SecurityToken": key.security_token,
                "Expiration": rfc3339(expiration),
            },
            "AssumedRoleUser": {
                "Arn": format!("{}/{session}", role.arn.replace(":role/", ":assumed-role/")),
                "AssumedRoleId": format!("{}:{session}", role_name),
            },
            "OIDCTokenInfo": {
                "Subject": claims.sub,
                "Issuer": claims.iss,
                "ClientIds": cfg.audience,
            },
        })
        .to_string(),
    )
        .into_response()
}

fn plain(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `PUT /latest/api/token`: a session token for `X-aliyun-ecs-metadata-token-ttl-seconds`
/// (1..=21600) seconds.
pub async fn metadata_token(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if state.metadata_config().is_none() {
        return plain(StatusCode::NOT_FOUND, "Not Found".into());
    }
    let ttl = headers
        .get(crate::ecs::metadata::HEADER_TOKEN_TTL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|t| (1..=21600).contains(t));
    let Some(ttl) = ttl else {
        return plain(StatusCode::BAD_REQUEST, "Bad Request".into());
    };
    let token = random(40);
    state.add_metadata_token(
        token.clone(),
        state.now() + jiff::SignedDuration::from_secs(ttl),
    );
    plain(StatusCode::OK, token)
}

#[allow(clippy::result_large_err)]
fn metadata_authorized(state: &SimState, headers: &HeaderMap) -> Result<(), Response> {
    let ok = headers
        .get(crate::ecs::metadata::HEADER_TOKEN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| state.metadata_token_valid(t));
    if ok {
        Ok(())
    } else {
        Err(plain(StatusCode::UNAUTHORIZED, "Unauthorized".into()))
    }
}

/// `GET /latest/meta-data/ram/security-credentials/`: the role name.
pub async fn metadata_roles(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let Some(cfg) = state.metadata_config() else {
        return plain(StatusCode::NOT_FOUND, "Not Found".into());
    };
    if let Err(r) = metadata_authorized(&state, &headers) {
        return r;
    }
    plain(StatusCode::OK, cfg.role_name.clone())
}

/// `GET /latest/meta-data/ram/security-credentials/<role>`: the role's credentials.
pub async fn metadata_credentials(
    State(state): State<Arc<SimState>>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(cfg) = state.metadata_config().cloned() else {
        return plain(StatusCode::NOT_FOUND, "Not Found".into());
    };
    if let Err(r) = metadata_authorized(&state, &headers) {
        return r;
    }
    if role != cfg.role_name {
        return plain(StatusCode::NOT_FOUND, "Not Found".into());
    }
    let arn = format!(
        "acs:ram::{}:role/{}",
        cfg.account_id
            .as_deref()
            .unwrap_or(super::config::DEFAULT_ACCOUNT_ID),
        cfg.role_name
    );
    let principal = Principal::assumed_role(&arn, "vm-ram-role");
    let (key, expiration) = mint(&state, cfg.duration_seconds, ISSUER_METADATA, principal);
    (
        [(header::CONTENT_TYPE, "text/plain")],
        json!({
            "AccessKeyId": key.id,
            "AccessKeySecret": key.secret,
            "SecurityToken": key.security_token,
            "Expiration": rfc3339(expiration),
            "LastUpdated": rfc3339(state.now()),
            "Code": "Success",
        })
        .to_string(),
    )
        .into_response()
}
