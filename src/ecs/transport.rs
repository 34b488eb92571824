//! What every HTTP client of the controller shares (ECS, STS, the metadata service):
//!
//! - **No redirects.** A 307/308 re-sends the body — signature, `SecurityToken`, VNC password,
//!   OIDC token — wherever it points, even from https to http; any 3xx is an error naming where it
//!   pointed ([`redirect_target`]), and the request is known not to have reached its service.
//! - **Bounded answers.** Bodies are read as they arrive and abandoned past [`MAX_BODY`]
//!   ([`read_body`]): a hostile or broken endpoint cannot make the controller hold an endless
//!   answer. (reqwest has no such limit of its own.)
//! - **https unless loopback** ([`check_scheme`]): plain http only to 127.0.0.0/8, ::1 or
//!   `localhost`, or with the operator's `--allow-insecure-http`. The metadata service is plain
//!   http by design (`http://100.100.100.200`) and is not checked.
//! - **No proxy for the metadata service** ([`Proxy::Never`]): `HTTP_PROXY` must not send the
//!   request for the node's credentials (or their answer) through another machine.

use std::time::Duration;

/// The most of an answer any client reads: ECS's largest answers here (a DescribeInstances page of
/// 100 instances) are well under 1 MiB.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The flag (and its environment variable) that allows plain http to a host that is not loopback.
pub const ALLOW_INSECURE_HTTP_FLAG: &str = "--allow-insecure-http";
pub const ALLOW_INSECURE_HTTP_ENV: &str = "ECS_VNC_ALLOW_INSECURE_HTTP";

/// Whether a client may go through the proxies of the environment (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `NO_PROXY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// ECS and STS: https end to end (a proxy only tunnels), as operators may need for egress.
    FromEnvironment,
    /// The instance metadata service: link-local, plain http, always direct.
    Never,
}

/// A client builder with the shared rules: no redirects, the project's User-Agent, timeouts.
pub fn builder(
    connect_timeout: Duration,
    timeout: Duration,
    proxy: Proxy,
) -> reqwest::ClientBuilder {
    // reqwest panics without a process-wide rustls provider (built without a default one).
    super::client::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .user_agent(super::client::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout);
    match proxy {
        Proxy::FromEnvironment => builder,
        Proxy::Never => builder.no_proxy(),
    }
}

/// Where a 3xx answer pointed (its `Location`, shortened, control characters dropped, secret
/// parameters masked), or `None` when the answer is not a redirect.
pub fn redirect_target(response: &reqwest::Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let shown: String = location
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Some(if shown.is_empty() {
        "(no Location)".to_string()
    } else {
        super::signer::mask_sensitive(&shown)
    })
}

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than [`MAX_BODY`]; what arrived first is kept for an excerpt.
    TooLarge {
        start: Vec<u8>,
    },
    Network(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { .. } => write!(f, "{}", too_large()),
            Self::Network(e) => write!(f, "{}", super::client::error_chain(e)),
        }
    }
}

/// The sentence every client uses for an answer past the limit.
pub fn too_large() -> String {
    format!(
        "the answer is larger than {} MiB; it was not read past that",
        MAX_BODY / (1024 * 1024)
    )
}

/// The body, read chunk by chunk and abandoned as soon as it passes [`MAX_BODY`] (or at once when
/// its `Content-Length` says it would).
pub async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    const START: usize = 256;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(BodyError::TooLarge { start: Vec::new() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Network)? {
        if body.len() + chunk.len() > MAX_BODY {
            body.extend_from_slice(&chunk[..chunk.len().min(START)]);
            body.truncate(START);
            return Err(BodyError::TooLarge { start: body });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether `url`'s host is loopback: 127.0.0.0/8, ::1, or `localhost`.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost."),
    }
}

/// Refuses plain http to a host that is not loopback unless `allow_insecure_http`; `what` names
/// the setting (`--ecs-endpoint`, `--sts-endpoint`). Anything that is not an http(s) URL is left
/// to the caller's own check.
pub fn check_scheme(endpoint: &str, what: &str, allow_insecure_http: bool) -> Result<(), String> {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return Ok(());
    };
    if url.scheme() != "http" || allow_insecure_http || is_loopback(&url) {
        return Ok(());
    }
    Err(format!(
        "{what} {endpoint} is plain http to a host that is not loopback: requests to it carry signatures, STS tokens and VNC passwords in clear text; use https, or pass {ALLOW_INSECURE_HTTP_FLAG} (env {ALLOW_INSECURE_HTTP_ENV}=true) for a test endpoint you trust"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_be_plain_http_without_the_override() {
        for ok in [
            "https://ecs.cn-hangzhou.aliyuncs.com",
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://[::1]:9",
            "http://localhost:80",
            "http://LOCALHOST",
        ] {
            assert!(check_scheme(ok, "--ecs-endpoint", false).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:8080",
            "http://ecs.cn-hangzhou.aliyuncs.com",
            "http://128.0.0.1",
            "http://localhost.evil.com",
            "http://[::2]",
            "http://0.0.0.0:80",
        ] {
            let e = check_scheme(bad, "--sts-endpoint", false).unwrap_err();
            assert!(
                e.contains(bad)
                    && e.contains("--sts-endpoint")
                    && e.contains(ALLOW_INSECURE_HTTP_FLAG),
                "{e}"
            );
            assert!(check_scheme(bad, "--sts-endpoint", true).is_ok(), "{bad}");
        }
    }
}
