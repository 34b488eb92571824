//! STS `AssumeRoleWithOIDC`: an OIDC token (a Kubernetes ServiceAccount token in RRSA) exchanged
//! for temporary credentials of a RAM role. The call is anonymous (the token is the proof), an RPC
//! call with `Version=2015-04-01`; every parameter goes in the form body so the token never appears
//! in a URL. Shape as in Alibaba's credentials SDKs (github.com/aliyun/credentials-go,
//! `providers/oidc.go`) and the STS API reference
//! (https://help.aliyun.com/zh/ram/developer-reference/api-sts-2015-04-01-assumerolewithoidc).

use serde::Deserialize;

use super::credentials::Credentials;
use super::transport;
use crate::secret::SecretString;

pub const STS_VERSION: &str = "2015-04-01";
/// What Alibaba's SDKs use without `ALIBABA_CLOUD_STS_REGION`.
pub const GLOBAL_ENDPOINT: &str = "https://sts.aliyuncs.com";

/// The STS endpoint as the credentials SDKs choose it: `sts[-vpc].<region>.aliyuncs.com` with a
/// region, else the global one.
pub fn default_endpoint(region: Option<&str>, vpc: bool) -> String {
    match region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if vpc => format!("https://sts-vpc.{r}.aliyuncs.com"),
        Some(r) => format!("https://sts.{r}.aliyuncs.com"),
        None => GLOBAL_ENDPOINT.to_string(),
    }
}

/// Temporary credentials and when they stop working.
#[derive(Debug, Clone)]
pub struct Temporary {
    pub credentials: Credentials,
    pub expiration: jiff::Timestamp,
}

/// Why an exchange failed. Never quotes the token or the credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StsError {
    /// STS refused: its code and message.
    #[error("STS refused AssumeRoleWithOIDC: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach STS at {endpoint}: {reason}")]
    Network { endpoint: String, reason: String },
    /// Never followed: it would re-send the request (the OIDC token, a signature) elsewhere.
    #[error(
        "STS at {endpoint} answered HTTP {status} redirecting to {location}; redirects are not followed (they would re-send the request elsewhere): check --sts-endpoint"
    )]
    Redirected {
        endpoint: String,
        status: u16,
        location: String,
    },
    #[error(
        "unexpected answer from STS at {endpoint} (HTTP {status}): {}",
        super::transport::too_large()
    )]
    TooLarge { endpoint: String, status: u16 },
    #[error("unexpected answer from STS (HTTP {status})")]
    Unexpected { status: u16 },
}

impl StsError {
    /// Worth retrying unchanged (network, 5xx, throttling).
    pub fn transient(&self) -> bool {
        match self {
            Self::Refused { status, code, .. } => *status >= 500 || code.starts_with("Throttling"),
            Self::Network { .. } | Self::Unexpected { .. } | Self::TooLarge { .. } => true,
            Self::Redirected { .. } => false,
        }
    }
}

pub struct AssumeRoleWithOidc<'a> {
    pub role_arn: &'a str,
    pub oidc_provider_arn: &'a str,
    pub oidc_token: &'a SecretString,
    pub role_session_name: &'a str,
    pub duration_seconds: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    credentials: Option<StsCredentials>,
    code: Option<String>,
    message: Option<String>,
}

/// Parses an STS or metadata-service credentials document (`AccessKeyId`, `AccessKeySecret`,
/// `SecurityToken`, `Expiration`).
pub(crate) fn temporary(
    id: String,
    secret: String,
    token: String,
    expiration: &str,
) -> Option<Temporary> {
    let expiration = expiration.parse::<jiff::Timestamp>().ok()?;
    if id.is_empty() || secret.is_empty() || token.is_empty() {
        return None;
    }
    Some(Temporary {
        credentials: Credentials::new(
            id,
            SecretString::new(secret),
            Some(SecretString::new(token)),
        ),
        expiration,
    })
}

pub async fn assume_role_with_oidc(
    http: &reqwest::Client,
    endpoint: &str,
    request: &AssumeRoleWithOidc<'_>,
) -> Result<Temporary, StsError> {
    let timestamp = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let duration = request.duration_seconds.to_string();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithOIDC")
        .append_pair("Format", "JSON")
        .append_pair("Version", STS_VERSION)
        .append_pair("Timestamp", &timestamp)
        .append_pair("RoleArn", request.role_arn)
        .append_pair("OIDCProviderArn", request.oidc_provider_arn)
        .append_pair("OIDCToken", request.oidc_token.expose())
        .append_pair("RoleSessionName", request.role_session_name)
        .append_pair("DurationSeconds", &duration)
        .finish();
    let response = http
        .post(endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| StsError::Network {
            endpoint: endpoint.to_string(),
            reason: super::client::error_chain(&e),
        })?;
    let bytes = read_answer(endpoint, response).await?;
    let status = bytes.0;
    let bytes = bytes.1;
    let answer: Answer =
        serde_json::from_slice(&bytes).map_err(|_| StsError::Unexpected { status })?;
    if let Some(code) = answer.code.filter(|_| !(200..300).contains(&status)) {
        return Err(StsError::Refused {
            status,
            code: truncate(&code, 100),
            message: truncate(&answer.message.unwrap_or_default(), 300),
        });
    }
    let c = answer.credentials.ok_or(StsError::Unexpected { status })?;
    temporary(
        c.access_key_id,
        c.access_key_secret,
        c.security_token,
        &c.expiration,
    )
    .ok_or(StsError::Unexpected { status })
}

/// Who a credential is, as STS `GetCallerIdentity` answers
/// (https://help.aliyun.com/document_detail/371868.html; the fields of
/// `GetCallerIdentityResponseBody` in github.com/aliyun/alibabacloud-go-sdk, `sts-20150401`).
/// None of it is secret: `AccountId` is the account's number, the rest names the RAM user or role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CallerIdentity {
    pub account_id: String,
    #[serde(default)]
    pub arn: Option<String>,
    /// `Account`, `RAMUser` or `AssumedRoleUser`.
    #[serde(default)]
    pub identity_type: Option<String>,
    #[serde(default)]
    pub principal_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub role_id: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// STS `GetCallerIdentity` with `credentials`: an RPC call signed with signature V1 (HMAC-SHA1),
/// as Alibaba's credentials SDKs sign their STS calls (github.com/aliyun/credentials-go,
/// `providers/ram_role_arn.go`), every parameter in the form body so that the SecurityToken never
/// appears in a URL. A wrong secret is refused by STS (`SignatureDoesNotMatch`) like by ECS.
pub async fn get_caller_identity(
    http: &reqwest::Client,
    endpoint: &str,
    credentials: &Credentials,
) -> Result<CallerIdentity, StsError> {
    use super::signer;
    let nonce = uuid::Uuid::new_v4().to_string();
    let timestamp = signer::format_timestamp(jiff::Timestamp::now());
    let mut params: Vec<(&str, &str)> = vec![
        ("Action", "GetCallerIdentity"),
        ("Version", STS_VERSION),
        ("Format", "JSON"),
        ("AccessKeyId", credentials.access_key_id.as_str()),
        ("SignatureMethod", signer::SIGNATURE_METHOD),
        ("SignatureVersion", signer::SIGNATURE_VERSION),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", timestamp.as_str()),
    ];
    if let Some(token) = &credentials.security_token {
        params.push(("SecurityToken", token.expose()));
    }
    let signed = signer::sign(
        "POST",
        params.iter().copied(),
        &credentials.access_key_secret,
    );
    let body = signer::encode_with_signature(params.iter().copied(), &signed.signature);
    let response = http
        .post(endpoint)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| StsError::Network {
            endpoint: endpoint.to_string(),
            reason: super::client::error_chain(&e),
        })?;
    let (status, bytes) = read_answer(endpoint, response).await?;
    if !(200..300).contains(&status) {
        let answer: Answer =
            serde_json::from_slice(&bytes).map_err(|_| StsError::Unexpected { status })?;
        return Err(StsError::Refused {
            status,
            code: truncate(&answer.code.unwrap_or_default(), 100),
            message: signer::mask_sensitive(&truncate(&answer.message.unwrap_or_default(), 300)),
        });
    }
    serde_json::from_slice::<CallerIdentity>(&bytes)
        .ok()
        .filter(|who| !who.account_id.is_empty())
        .ok_or(StsError::Unexpected { status })
}

/// The answer's status and body: never a redirect, never more than [`transport::MAX_BODY`].
async fn read_answer(
    endpoint: &str,
    response: reqwest::Response,
) -> Result<(u16, Vec<u8>), StsError> {
    let status = response.status().as_u16();
    if let Some(location) = transport::redirect_target(&response) {
        return Err(StsError::Redirected {
            endpoint: endpoint.to_string(),
            status,
            location,
        });
    }
    match transport::read_body(response).await {
        Ok(body) => Ok((status, body)),
        Err(transport::BodyError::TooLarge { .. }) => Err(StsError::TooLarge {
            endpoint: endpoint.to_string(),
            status,
        }),
        Err(transport::BodyError::Network(e)) => Err(StsError::Network {
            endpoint: endpoint.to_string(),
            reason: super::client::error_chain(&e),
        }),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_sdks() {
        assert_eq!(default_endpoint(None, true), "https://sts.aliyuncs.com");
        assert_eq!(
            default_endpoint(Some("cn-hangzhou"), false),
            "https://sts.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            default_endpoint(Some("cn-hangzhou"), true),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com"
        );
    }

    #[test]
    fn credentials_documents_parse() {
        let t = temporary(
            "STS.x".into(),
            "s".into(),
            "t".into(),
            "2030-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(t.credentials.access_key_id, "STS.x");
        assert!(temporary("STS.x".into(), "s".into(), "t".into(), "tomorrow").is_none());
        assert!(
            temporary(
                "STS.x".into(),
                "".into(),
                "t".into(),
                "2030-01-01T00:00:00Z"
            )
            .is_none()
        );
    }
}
