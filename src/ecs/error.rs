//! ECS errors: parsing error bodies, and classifying them into what a caller should do.
//!
//! Classification follows ECS's documented error codes (each operation's reference page and the
//! Alibaba Cloud API Error Center, <https://error-center.alibabacloud.com/status/product/Ecs>): by
//! `Code` first, by HTTP status for codes it does not know. Every message is passed through
//! [`signer::mask_sensitive`] when parsed, because ECS echoes the whole string to sign (VncPassword
//! and SecurityToken included) in `SignatureDoesNotMatch`.

use std::fmt;

use serde::Deserialize;

use super::signer;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Nothing changes until a person changes the input (instance, region, password).
    Terminal,
    /// The instance or the service is briefly unable; retry with backoff.
    Transient,
    /// The account's per-API rate limit; retry with backoff and jitter.
    Throttled,
    /// The credentials are wrong, inactive or not allowed; no hot retry.
    Credentials,
    /// The request went stale (timestamp, nonce): sign it again and retry at once.
    Resign,
    /// A 4xx code this classification does not list: not retried within a call; the controller
    /// retries it slowly, since ECS may have added a code for a passing condition.
    Unknown,
}

impl ErrorClass {
    /// Whether the client retries this class inside one call.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Throttled | Self::Resign)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::Transient => "transient",
            Self::Throttled => "throttled",
            Self::Credentials => "credentials",
            Self::Resign => "resign",
            Self::Unknown => "unknown",
        }
    }
}

/// Classifies an ECS error `Code` (with the HTTP status for codes not listed).
pub fn classify(code: &str, http_status: u16) -> ErrorClass {
    match code {
        "InvalidInstanceId.NotFound"
        | "InvalidRegionId.NotFound"
        | "NoSuchResource"
        | "IncorrectVncPassword.Malformed"
        | "MissingParameter"
        | "InvalidParameter"
        | "InvalidAction.NotFound" => ErrorClass::Terminal,
        // Another operation on the instance is in progress, or it is between states: Alibaba's own
        // Terraform provider retries these on instance operations.
        "IncorrectInstanceStatus"
        | "InstanceNotReady"
        | "OperationConflict"
        | "Operation.Conflict"
        | "InvalidOperation.Conflict"
        | "ServiceUnavailable"
        | "InternalError"
        | "UnknownError" => ErrorClass::Transient,
        c if c.starts_with("IncorrectInstanceStatus.") => ErrorClass::Transient,
        "InvalidTimeStamp.Expired" | "SignatureNonceUsed" => ErrorClass::Resign,
        "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "Forbidden.RAM"
        | "Forbidden"
        | "NoPermission" => ErrorClass::Credentials,
        c if c.starts_with("Throttling") || c == "Rejected.Throttling" => ErrorClass::Throttled,
        c if c.starts_with("InvalidAccessKeyId.") || c.starts_with("InvalidSecurityToken.") => {
            ErrorClass::Credentials
        }
        c if c.starts_with("Forbidden.") => ErrorClass::Credentials,
        _ if http_status >= 500 => ErrorClass::Transient,
        _ if http_status == 429 => ErrorClass::Throttled,
        _ => ErrorClass::Unknown,
    }
}

/// Where a V3 `SignatureDoesNotMatch` message gives the server's canonical request.
pub const CANONICAL_REQUEST_MARKER: &str = "server canonical request is:";

/// An error as ECS reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub http_status: u16,
    pub code: String,
    /// ECS's message, with secret parameter values masked.
    pub message: String,
    pub request_id: Option<String>,
    pub recommend: Option<String>,
    /// From `AccessDeniedDetail` (RAM refusals): the action that was denied and why, e.g.
    /// `AuthAction ecs:DescribeInstances, NoPermissionType ImplicitDeny, PolicyType
    /// AccountLevelIdentityBasedPolicy`. Names a permission, never a secret.
    pub access_denied: Option<String>,
    /// From a throttling answer's `x-ratelimit-*` header: how long until ECS's window resets.
    pub retry_after: Option<std::time::Duration>,
}

/// `TimeLeft:<milliseconds>` from an `x-ratelimit-user-api` / `x-ratelimit-user` header value
/// (`Limit:…,Remain:…,TimeLeft:…,Reset:…`).
pub fn time_left(header: &str) -> Option<std::time::Duration> {
    header.split([',', ';']).find_map(|part| {
        let (key, value) = part.split_once(':')?;
        (key.trim().eq_ignore_ascii_case("TimeLeft"))
            .then(|| value.trim().parse::<u64>().ok())
            .flatten()
            .map(std::time::Duration::from_millis)
    })
}

impl ApiError {
    pub fn class(&self) -> ErrorClass {
        classify(&self.code, self.http_status)
    }

    /// The server's string to sign, from a `SignatureDoesNotMatch` message (already masked).
    pub fn server_string_to_sign(&self) -> Option<&str> {
        const MARKER: &str = "server string to sign is:";
        let start = self.message.find(MARKER)? + MARKER.len();
        let end = self.message[start..]
            .find(CANONICAL_REQUEST_MARKER)
            .map_or(self.message.len(), |i| start + i);
        Some(self.message[start..end].trim())
    }

    /// With signature V3, the server's canonical request, from a `SignatureDoesNotMatch` message
    /// that carries one (the ECS simulator's does; already masked).
    pub fn server_canonical_request(&self) -> Option<&str> {
        self.message
            .find(CANONICAL_REQUEST_MARKER)
            .map(|i| self.message[i + CANONICAL_REQUEST_MARKER.len()..].trim())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ECS returned {} (HTTP {}): {} (RequestId: {})",
            self.code,
            self.http_status,
            self.message,
            self.request_id.as_deref().unwrap_or("none")
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    request_id: Option<String>,
    recommend: Option<String>,
    access_denied_detail: Option<serde_json::Value>,
}

/// The parts of `AccessDeniedDetail` that tell what to grant (only short, known fields).
fn access_denied_summary(detail: &serde_json::Value) -> Option<String> {
    let parts: Vec<String> = ["AuthAction", "NoPermissionType", "PolicyType"]
        .iter()
        .filter_map(|k| {
            let v = detail.get(*k)?.as_str()?;
            let v: String = v.chars().take(120).filter(|c| !c.is_control()).collect();
            (!v.is_empty()).then(|| format!("{k} {v}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Why a response body could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedBody {
    pub http_status: u16,
    pub content_type: Option<String>,
    /// The first characters of the body, control characters replaced, for a person to read.
    pub excerpt: String,
    /// What was wrong besides the body's shape (too large, endless paging).
    pub note: Option<String>,
}

impl fmt::Display for UnexpectedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unexpected response from the ECS endpoint (HTTP {}, content type {}): {}",
            self.http_status,
            self.content_type.as_deref().unwrap_or("none"),
            match (&self.note, self.excerpt.is_empty()) {
                (Some(note), _) => note.clone(),
                (None, true) => "empty body".to_string(),
                (None, false) => format!("body starts with {:?}", self.excerpt),
            }
        )
    }
}

const EXCERPT_CHARS: usize = 120;

/// A short, single-line, masked excerpt of a body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cut: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    signer::mask_sensitive(cut.trim())
}

/// Parses an ECS error body (JSON or XML, whatever the content type claims).
pub fn parse_error_body(
    http_status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ApiError, UnexpectedBody> {
    let parsed = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .or_else(|| parse_xml_error(body));
    match parsed {
        Some(ErrorBody {
            code: Some(code),
            message,
            request_id,
            recommend,
            access_denied_detail,
        }) if !code.is_empty() => Ok(ApiError {
            http_status,
            code,
            message: signer::mask_sensitive(message.as_deref().unwrap_or_default()),
            request_id,
            recommend,
            access_denied: access_denied_detail
                .as_ref()
                .and_then(access_denied_summary),
            retry_after: None,
        }),
        _ => Err(UnexpectedBody {
            http_status,
            content_type: content_type.map(str::to_string),
            excerpt: excerpt(body),
            note: None,
        }),
    }
}

fn parse_xml_error(body: &[u8]) -> Option<ErrorBody> {
    let text = std::str::from_utf8(body).ok()?;
    // ECS wraps errors in <Error>; some gateways use <Response><Errors><Error>.
    quick_xml::de::from_str::<ErrorBody>(text.trim_start_matches('\u{feff}')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_bodies_are_parsed() {
        let body = br#"{"RequestId":"R1","HostId":"ecs.aliyuncs.com","Code":"InvalidInstanceId.NotFound","Message":"The specified InstanceId does not exist.","Recommend":"https://x"}"#;
        let e = parse_error_body(404, Some("application/json"), body).unwrap();
        assert_eq!(e.code, "InvalidInstanceId.NotFound");
        assert_eq!(e.request_id.as_deref(), Some("R1"));
        assert_eq!(e.http_status, 404);
        assert_eq!(e.class(), ErrorClass::Terminal);
    }

    #[test]
    fn xml_error_bodies_are_parsed() {
        let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><RequestId>R2</RequestId><HostId>h</HostId><Code>Throttling.User</Code><Message>Request was denied due to user flow control.</Message><Recommend>r</Recommend></Error>";
        let e = parse_error_body(400, Some("text/xml"), body).unwrap();
        assert_eq!(e.code, "Throttling.User");
        assert_eq!(e.request_id.as_deref(), Some("R2"));
        assert_eq!(e.class(), ErrorClass::Throttled);
    }

    #[test]
    fn time_left_comes_from_the_rate_limit_header() {
        assert_eq!(
            time_left("Limit:100,Remain:0,TimeLeft:1234,Reset:1700000000"),
            Some(std::time::Duration::from_millis(1234))
        );
        assert_eq!(time_left("Limit:100,Remain:3"), None);
        assert_eq!(time_left("TimeLeft:soon"), None);
    }

    #[test]
    fn access_denied_detail_names_the_missing_permission() {
        let body = br#"{"RequestId":"R","Code":"Forbidden.RAM","Message":"User not authorized to operate on the specified resource.","AccessDeniedDetail":{"PolicyType":"AccountLevelIdentityBasedPolicy","AuthPrincipalOwnerId":"1","EncodedDiagnosticMessage":"xyz","AuthPrincipalType":"SubUser","AuthPrincipalDisplayName":"ops","NoPermissionType":"ImplicitDeny","AuthAction":"ecs:ModifyInstanceVncPasswd"}}"#;
        let e = parse_error_body(403, Some("application/json"), body).unwrap();
        assert_eq!(
            e.access_denied.as_deref(),
            Some(
                "AuthAction ecs:ModifyInstanceVncPasswd, NoPermissionType ImplicitDeny, PolicyType AccountLevelIdentityBasedPolicy"
            )
        );
    }

    #[test]
    fn conflicts_and_status_sub_codes_are_transient_unknown_codes_are_unknown() {
        for code in [
            "IncorrectInstanceStatus",
            "IncorrectInstanceStatus.Initializing",
            "OperationConflict",
            "Operation.Conflict",
            "InvalidOperation.Conflict",
        ] {
            assert_eq!(classify(code, 403), ErrorClass::Transient, "{code}");
        }
        assert_eq!(classify("Rejected.Throttling", 400), ErrorClass::Throttled);
        assert_eq!(classify("Something.New", 400), ErrorClass::Unknown);
        assert_eq!(classify("Something.New", 503), ErrorClass::Transient);
        assert_eq!(classify("InvalidParameter", 400), ErrorClass::Terminal);
    }

    #[test]
    fn garbage_bodies_name_status_and_excerpt() {
        for (body, expect) in [
            (
                &b"<html><body>502 Bad Gateway</body></html>"[..],
                "502 Bad Gateway",
            ),
            (&b""[..], "empty body"),
            (&b"{\"RequestId\":\"R\",\"Co"[..], "RequestId"),
            (&b"\xff\xfe\x00garbage"[..], "garbage"),
        ] {
            let e = parse_error_body(502, Some("text/html"), body).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("HTTP 502"), "{text}");
            assert!(text.contains(expect), "{text}");
        }
    }

    #[test]
    fn a_json_body_without_code_is_unexpected() {
        assert!(parse_error_body(500, None, br#"{"RequestId":"R"}"#).is_err());
    }

    #[test]
    fn signature_mismatch_message_is_masked_and_exposes_server_string() {
        let body = br#"{"Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3Did%26SecurityToken%3Dtok%252B%26VncPassword%3DEcs123","RequestId":"R"}"#;
        let e = parse_error_body(400, None, body).unwrap();
        assert!(!e.message.contains("Ecs123"));
        assert!(!e.message.contains("tok"));
        assert_eq!(
            e.server_string_to_sign(),
            Some("POST&%2F&AccessKeyId%3Did%26SecurityToken%3D***%26VncPassword%3D***")
        );
        assert_eq!(e.class(), ErrorClass::Credentials);
    }

    #[test]
    fn classification_follows_the_notes() {
        use ErrorClass::*;
        for (code, status, class) in [
            ("InvalidInstanceId.NotFound", 404, Terminal),
            ("InvalidRegionId.NotFound", 404, Terminal),
            ("NoSuchResource", 404, Terminal),
            ("IncorrectVncPassword.Malformed", 400, Terminal),
            ("MissingParameter", 400, Terminal),
            ("IncorrectInstanceStatus", 403, Transient),
            ("InstanceNotReady", 403, Transient),
            ("Throttling", 400, Throttled),
            ("Throttling.User", 400, Throttled),
            ("Throttling.Api", 400, Throttled),
            ("ServiceUnavailable", 503, Transient),
            ("InternalError", 500, Transient),
            ("SomethingNew", 502, Transient),
            ("SomethingNew", 400, Unknown),
            ("SignatureDoesNotMatch", 400, Credentials),
            ("IncompleteSignature", 400, Credentials),
            ("InvalidAccessKeyId.NotFound", 404, Credentials),
            ("InvalidAccessKeyId.Inactive", 400, Credentials),
            ("Forbidden.RAM", 403, Credentials),
            ("InvalidSecurityToken.Expired", 400, Credentials),
            (
                "InvalidSecurityToken.MismatchWithAccessKey",
                400,
                Credentials,
            ),
            ("InvalidTimeStamp.Expired", 400, Resign),
            ("SignatureNonceUsed", 400, Resign),
        ] {
            assert_eq!(classify(code, status), class, "{code}");
        }
        assert!(Transient.is_retryable() && Throttled.is_retryable() && Resign.is_retryable());
        assert!(!Terminal.is_retryable() && !Credentials.is_retryable());
    }
}
