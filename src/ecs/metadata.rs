//! The ECS RAM role from the instance metadata service, in hardened (token) mode only: `PUT
//! /latest/api/token` for a session token, then `GET
//! /latest/meta-data/ram/security-credentials/[<role>]` with it. As Alibaba's credentials SDKs do
//! it with `disableIMDSv1` (github.com/aliyun/credentials-go, `providers/ecs_ram_role.go`;
//! https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata).

use serde::Deserialize;

use super::sts::Temporary;
use super::transport;

pub const DEFAULT_ENDPOINT: &str = "http://100.100.100.200";
pub const TOKEN_PATH: &str = "/latest/api/token";
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
pub const HEADER_TOKEN: &str = "X-aliyun-ecs-metadata-token";
pub const HEADER_TOKEN_TTL: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// The session token's lifetime we ask for (the SDKs ask 21600 s; one fetch needs far less).
const TOKEN_TTL_SECONDS: u32 = 60;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    #[error("the ECS metadata service at {endpoint} is not reachable: {reason}")]
    Network { endpoint: String, reason: String },
    #[error("the ECS metadata service answered HTTP {status} to {what}")]
    Status { what: &'static str, status: u16 },
    /// Never followed: it would send the session token, or fetch the node's credentials, elsewhere.
    #[error(
        "the ECS metadata service answered {what} with HTTP {status} redirecting to {location}; redirects are not followed"
    )]
    Redirected {
        what: &'static str,
        status: u16,
        location: String,
    },
    #[error(
        "the ECS metadata service's answer to {what}: {}",
        super::transport::too_large()
    )]
    TooLarge { what: &'static str },
    #[error("the ECS metadata service answered no usable credentials for role {role}")]
    Unexpected { role: String },
    #[error("this instance has no RAM role (the metadata service names none)")]
    NoRole,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
    #[serde(default)]
    code: Option<String>,
}

fn network(endpoint: &str, e: &reqwest::Error) -> MetadataError {
    MetadataError::Network {
        endpoint: endpoint.to_string(),
        reason: super::client::error_chain(e),
    }
}

/// A 2xx answer's body as text: never a redirect, never more than [`transport::MAX_BODY`].
async fn body(
    endpoint: &str,
    r: reqwest::Response,
    what: &'static str,
) -> Result<String, MetadataError> {
    let status = r.status().as_u16();
    if let Some(location) = transport::redirect_target(&r) {
        return Err(MetadataError::Redirected {
            what,
            status,
            location,
        });
    }
    if !(200..300).contains(&status) {
        return Err(MetadataError::Status { what, status });
    }
    match transport::read_body(r).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(transport::BodyError::TooLarge { .. }) => Err(MetadataError::TooLarge { what }),
        Err(transport::BodyError::Network(e)) => Err(network(endpoint, &e)),
    }
}

async fn session_token(http: &reqwest::Client, endpoint: &str) -> Result<String, MetadataError> {
    let r = http
        .put(format!("{}{TOKEN_PATH}", endpoint.trim_end_matches('/')))
        .header(HEADER_TOKEN_TTL, TOKEN_TTL_SECONDS.to_string())
        .send()
        .await
        .map_err(|e| network(endpoint, &e))?;
    body(endpoint, r, "the session token request").await
}

async fn get(
    http: &reqwest::Client,
    endpoint: &str,
    token: &str,
    role: &str,
    what: &'static str,
) -> Result<String, MetadataError> {
    let r = http
        .get(format!(
            "{}{CREDENTIALS_PATH}{role}",
            endpoint.trim_end_matches('/')
        ))
        .header(HEADER_TOKEN, token)
        .send()
        .await
        .map_err(|e| network(endpoint, &e))?;
    body(endpoint, r, what).await
}

/// The role's current credentials; `role` `None` discovers the instance's role.
pub async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    role: Option<&str>,
) -> Result<(String, Temporary), MetadataError> {
    let token = session_token(http, endpoint).await?;
    let role = match role {
        Some(r) => r.to_string(),
        None => get(http, endpoint, &token, "", "the role name request")
            .await?
            .lines()
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or(MetadataError::NoRole)?
            .to_string(),
    };
    let body = get(http, endpoint, &token, &role, "the credentials request").await?;
    let unexpected = || MetadataError::Unexpected { role: role.clone() };
    let doc: Document = serde_json::from_str(&body).map_err(|_| unexpected())?;
    if doc.code.as_deref().is_some_and(|c| c != "Success") {
        return Err(unexpected());
    }
    let t = super::sts::temporary(
        doc.access_key_id,
        doc.access_key_secret,
        doc.security_token,
        &doc.expiration,
    )
    .ok_or_else(unexpected)?;
    Ok((role, t))
}
