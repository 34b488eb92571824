//! Alibaba Cloud signature V3 (`ACS3-HMAC-SHA256`), as pure functions.
//!
//! The algorithm, from Alibaba Cloud's "V3 request structure and signature"
//! (<https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature>)
//! and its reference implementation in the official SDK core (`GetAuthorization` in
//! `github.com/alibabacloud-go/darabonba-openapi/v2/utils`):
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n
//!                    SignedHeaders \n HashedRequestPayload
//! StringToSign     = "ACS3-HMAC-SHA256" \n hex(SHA-256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(key = AccessKeySecret, StringToSign))
//! Authorization    = "ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<names>,Signature=<hex>"
//! ```
//!
//! - CanonicalURI: `/` for RPC-style APIs such as ECS.
//! - CanonicalQueryString: parameters sorted by name (byte order), names and values percent-encoded
//!   as in signature V1 (RFC 3986: `A-Z a-z 0-9 - _ . ~` stay, space is `%20`), `name=value`
//!   joined by `&`; empty when there is no query.
//! - CanonicalHeaders: every `host`, `content-type` and `x-acs-*` header, names lower-cased and
//!   sorted, values trimmed, one `name:value\n` each; a name sent twice has its values sorted and
//!   joined by `,` (as the SDK's `getCanonicalHeaders` does). SignedHeaders: those names joined by
//!   `;`. The document requires every such header present to be signed.
//! - HashedRequestPayload: hex SHA-256 of the body (of the empty string when there is none), also
//!   sent as `x-acs-content-sha256`.
//!
//! Nothing here reads a clock or a random source: the date and the nonce are passed in.
//! A canonical request can hold secrets (an STS token header, a password in the query): show it
//! only through [`mask`]; [`SignedV3`]'s `Debug` does that itself.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::signer::{self, percent_encode};
use crate::secret::SecretString;

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// `x-acs-content-sha256` of an empty body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub const HEADER_ACTION: &str = "x-acs-action";
pub const HEADER_VERSION: &str = "x-acs-version";
pub const HEADER_DATE: &str = "x-acs-date";
pub const HEADER_NONCE: &str = "x-acs-signature-nonce";
pub const HEADER_CONTENT_SHA256: &str = "x-acs-content-sha256";
pub const HEADER_SECURITY_TOKEN: &str = "x-acs-security-token";
pub const HEADER_ACCESS_KEY_ID: &str = "x-acs-accesskey-id";

/// `hex(SHA-256(body))`, lower case.
pub fn hashed_payload(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Whether a header (name already lower-cased) takes part in the signature.
pub fn is_signed_header(lower_name: &str) -> bool {
    lower_name == "host" || lower_name == "content-type" || lower_name.starts_with("x-acs-")
}

/// The canonical URI: `/` for an empty path, otherwise each segment percent-encoded (RFC 3986),
/// `/` kept. RPC-style APIs (ECS) always use `/`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// The canonical query string: sorted by name (byte order), names and values percent-encoded,
/// `name=value` joined by `&`.
pub fn canonical_query<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params.into_iter().collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    super::signer::encode_form(pairs)
}

/// `(CanonicalHeaders, SignedHeaders)` over the headers that are signed ([`is_signed_header`]);
/// the others (`user-agent`, `accept`, `authorization`, ...) are ignored. Header names are HTTP
/// tokens (ASCII) and are compared and lower-cased as ASCII.
pub fn canonical_headers<'a, I>(headers: I) -> (String, String)
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut entries: Vec<(String, &str)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .filter(|(name, _)| is_signed_header(name))
        .collect();
    // By name, then by value: a name sent twice has its values sorted, as the SDK does.
    entries.sort_by(|a, b| (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes())));
    let mut canonical = String::new();
    let mut signed = String::new();
    let mut previous: Option<&str> = None;
    for (name, value) in &entries {
        if previous == Some(name.as_str()) {
            canonical.pop(); // the '\n' of this name's previous value
            canonical.push(',');
        } else {
            if previous.is_some() {
                signed.push(';');
            }
            signed.push_str(name);
            canonical.push_str(name);
            canonical.push(':');
        }
        canonical.push_str(value);
        canonical.push('\n');
        previous = Some(name.as_str());
    }
    (canonical, signed)
}

/// The canonical request from its parts.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    hashed_payload: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{hashed_payload}"
    )
}

/// `ACS3-HMAC-SHA256\n` + hex(SHA-256(canonical request)).
pub fn string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// `hex(HMAC-SHA256(key = AccessKeySecret, string_to_sign))` (no `&` appended, unlike V1).
pub fn signature(access_key_secret: &SecretString, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(access_key_secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header's value.
pub fn authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// What is signed: the request as it goes on the wire.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The URL path; `/` for ECS.
    pub path: &'a str,
    /// Query parameters (decoded).
    pub query: &'a [(&'a str, &'a str)],
    /// Every header sent, signed or not (`Authorization` excluded).
    pub headers: &'a [(&'a str, &'a str)],
    /// [`hashed_payload`] of the body.
    pub hashed_payload: &'a str,
}

/// The stages of one V3 signature. `Debug` masks secrets (see [`mask`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedV3 {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

impl fmt::Debug for SignedV3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedV3")
            .field("canonical_request", &mask(&self.canonical_request))
            .field("string_to_sign", &self.string_to_sign)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &self.signature)
            .field("authorization", &self.authorization)
            .finish()
    }
}

/// Signs `request` with an AccessKey.
pub fn sign(
    request: &Request<'_>,
    access_key_id: &str,
    access_key_secret: &SecretString,
) -> SignedV3 {
    let query = canonical_query(request.query.iter().copied());
    let (headers, signed_headers) = canonical_headers(request.headers.iter().copied());
    let canonical_request = canonical_request(
        request.method,
        &canonical_uri(request.path),
        &query,
        &headers,
        &signed_headers,
        request.hashed_payload,
    );
    let string_to_sign = string_to_sign(&canonical_request);
    let signature = signature(access_key_secret, &string_to_sign);
    let authorization = authorization(access_key_id, &signed_headers, &signature);
    SignedV3 {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

/// The common headers of one V3 call (everything but `Authorization`), as Alibaba's SDK sends them
/// for an RPC-style API: `host`, `x-acs-action`, `x-acs-version`, `x-acs-date`,
/// `x-acs-signature-nonce`, `x-acs-content-sha256`, and with STS credentials
/// `x-acs-accesskey-id` and `x-acs-security-token`.
pub struct CommonHeaders<'a> {
    pub host: &'a str,
    pub action: &'a str,
    pub version: &'a str,
    pub date: jiff::Timestamp,
    pub nonce: &'a str,
    pub hashed_payload: &'a str,
    pub access_key_id: &'a str,
    pub security_token: Option<&'a SecretString>,
}

impl CommonHeaders<'_> {
    pub fn to_vec(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("host", self.host.to_string()),
            (HEADER_ACTION, self.action.to_string()),
            (HEADER_VERSION, self.version.to_string()),
            (HEADER_DATE, signer::format_timestamp(self.date)),
            (HEADER_NONCE, self.nonce.to_string()),
            (HEADER_CONTENT_SHA256, self.hashed_payload.to_string()),
        ];
        if let Some(token) = self.security_token {
            headers.push((HEADER_ACCESS_KEY_ID, self.access_key_id.to_string()));
            headers.push((HEADER_SECURITY_TOKEN, token.expose().to_string()));
        }
        headers
    }
}

/// A parsed `Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub algorithm: &'a str,
    pub credential: &'a str,
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

/// Parses an `Authorization` value; `None` when it is not `ALGORITHM Credential=..,SignedHeaders=..,
/// Signature=..` (each field present once, none empty).
pub fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let (algorithm, rest) = value.trim().split_once(' ')?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let (name, v) = field.trim().split_once('=')?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return None,
        };
        if slot.replace(v).is_some() || v.is_empty() {
            return None;
        }
    }
    Some(Authorization {
        algorithm,
        credential: credential?,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

/// Masks secrets in a canonical request (or any text holding one): the `x-acs-security-token`
/// header's value, and the values of [`signer::SENSITIVE_PARAMETERS`] in the query.
pub fn mask(text: &str) -> String {
    signer::mask_sensitive(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of Alibaba Cloud's "V3 request structure and signature", section
    // "Fixed parameter values":
    // https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature
    // (AccessKeyId "YourAccessKeyId", AccessKeySecret "YourAccessKeySecret", POST RunInstances on
    // ecs.cn-shanghai.aliyuncs.com, empty body).
    const EXAMPLE_CANONICAL_REQUEST: &str = "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\nhost:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\nx-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n\nhost;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EXAMPLE_STRING_TO_SIGN: &str =
        "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259";
    const EXAMPLE_SIGNATURE: &str =
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0";

    fn example_headers() -> Vec<(&'static str, String)> {
        CommonHeaders {
            host: "ecs.cn-shanghai.aliyuncs.com",
            action: "RunInstances",
            version: "2014-05-26",
            date: "2023-10-26T10:22:32Z".parse().unwrap(),
            nonce: "3156853299f313e23d1673dc12e1703d",
            hashed_payload: &hashed_payload(b""),
            access_key_id: "YourAccessKeyId",
            security_token: None,
        }
        .to_vec()
    }

    #[test]
    fn worked_example_stage_by_stage() {
        assert_eq!(hashed_payload(b""), EMPTY_PAYLOAD_SHA256);
        let query = [
            ("RegionId", "cn-shanghai"),
            (
                "ImageId",
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            ),
        ];
        assert_eq!(
            canonical_query(query),
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai"
        );
        let headers = example_headers();
        let mut sent: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Headers that are not signed change nothing.
        sent.push(("user-agent", "AlibabaCloud (test) TeaDSL/2"));
        sent.push(("accept", "application/json"));
        let (canonical, signed) = canonical_headers(sent.iter().copied());
        assert_eq!(
            canonical,
            "host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\nx-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n"
        );
        assert_eq!(
            signed,
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
        );
        let signed = sign(
            &Request {
                method: "POST",
                path: "/",
                query: &query,
                headers: &sent,
                hashed_payload: EMPTY_PAYLOAD_SHA256,
            },
            "YourAccessKeyId",
            &SecretString::new("YourAccessKeySecret"),
        );
        assert_eq!(signed.canonical_request, EXAMPLE_CANONICAL_REQUEST);
        assert_eq!(signed.string_to_sign, EXAMPLE_STRING_TO_SIGN);
        assert_eq!(signed.signature, EXAMPLE_SIGNATURE);
        assert_eq!(
            signed.authorization,
            format!(
                "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature={EXAMPLE_SIGNATURE}"
            )
        );
        let parsed = parse_authorization(&signed.authorization).unwrap();
        assert_eq!(parsed.algorithm, ALGORITHM);
        assert_eq!(parsed.credential, "YourAccessKeyId");
        assert_eq!(parsed.signed_headers, signed.signed_headers);
        assert_eq!(parsed.signature, EXAMPLE_SIGNATURE);
    }

    #[test]
    fn header_names_are_lower_cased_values_trimmed_and_repeats_joined_sorted() {
        let (canonical, signed) = canonical_headers([
            ("X-Acs-B", " 2 "),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("x-acs-b", "1"),
            ("Host", "h"),
            ("X-Other", "ignored"),
        ]);
        assert_eq!(
            canonical,
            "content-type:application/x-www-form-urlencoded\nhost:h\nx-acs-b:1,2\n"
        );
        assert_eq!(signed, "content-type;host;x-acs-b");
    }

    #[test]
    fn query_encoding_is_rfc3986_like_v1() {
        assert_eq!(
            canonical_query([("b", "x y*~/+="), ("a", "中"), ("c", "")]),
            "a=%E4%B8%AD&b=x%20y%2A~%2F%2B%3D&c="
        );
        assert_eq!(canonical_query([]), "");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a b/c~d"), "/a%20b/c~d");
    }

    #[test]
    fn sts_credentials_add_the_token_and_key_headers_which_are_signed() {
        let token = SecretString::new("CAIS+/tok==");
        let headers = CommonHeaders {
            security_token: Some(&token),
            access_key_id: "STS.id",
            ..CommonHeaders {
                host: "h",
                action: "A",
                version: "V",
                date: "2026-01-01T00:00:00Z".parse().unwrap(),
                nonce: "n",
                hashed_payload: EMPTY_PAYLOAD_SHA256,
                access_key_id: "",
                security_token: None,
            }
        }
        .to_vec();
        let sent: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (_, signed) = canonical_headers(sent.iter().copied());
        assert_eq!(
            signed,
            "host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version"
        );
    }

    #[test]
    fn debug_and_mask_never_show_the_token_or_password() {
        let token = SecretString::new("CAIS+/tok==");
        let headers = CommonHeaders {
            host: "h",
            action: "ModifyInstanceVncPasswd",
            version: "2014-05-26",
            date: "2026-01-01T00:00:00Z".parse().unwrap(),
            nonce: "n",
            hashed_payload: EMPTY_PAYLOAD_SHA256,
            access_key_id: "STS.id",
            security_token: Some(&token),
        }
        .to_vec();
        let sent: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signed = sign(
            &Request {
                method: "POST",
                path: "/",
                query: &[("VncPassword", "Ecs123"), ("ZoneId", "z")],
                headers: &sent,
                hashed_payload: EMPTY_PAYLOAD_SHA256,
            },
            "STS.id",
            &SecretString::new("the-secret"),
        );
        assert!(signed.canonical_request.contains("CAIS+/tok=="));
        let shown = format!("{signed:?}");
        for secret in ["CAIS", "Ecs123", "the-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let masked = mask(&signed.canonical_request);
        assert!(masked.contains("VncPassword=***&ZoneId=z\n"), "{masked}");
        assert!(masked.contains("\nx-acs-security-token:***\n"), "{masked}");
        assert!(masked.contains("x-acs-signature-nonce:n\n"), "{masked}");
    }

    #[test]
    fn malformed_authorizations_are_refused() {
        for bad in [
            "",
            "ACS3-HMAC-SHA256",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=",
            "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature=x",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=x,Extra=y",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad:?}");
        }
        let ok = parse_authorization(
            "ACS3-HMAC-SM3 Credential=a, SignedHeaders=host;x-acs-date, Signature=00",
        )
        .unwrap();
        assert_eq!(ok.algorithm, "ACS3-HMAC-SM3");
        assert_eq!(ok.signed_headers, "host;x-acs-date");
    }
}
