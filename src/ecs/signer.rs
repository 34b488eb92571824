//! Alibaba Cloud RPC signature V1 (HMAC-SHA1), as pure functions.
//!
//! The algorithm (Alibaba Cloud's RPC signature documentation,
//! <https://www.alibabacloud.com/help/en/sdk/product-overview/rpc-mechanism>; the official SDK core's
//! `GetRPCSignature` in `github.com/alibabacloud-go/darabonba-openapi/v2/utils`): sort every parameter but `Signature` by name, percent-encode
//! names and values (RFC 3986 unreserved characters stay, everything else is `%XY`, upper-case hex),
//! join them into the canonicalized query string, build
//! `METHOD & percentEncode("/") & percentEncode(canonicalized)`, and sign that with
//! `HMAC-SHA1(AccessKeySecret + "&")`, base64-encoded.
//!
//! Nothing here reads a clock or a random source: the caller passes the timestamp and nonce, so the
//! same inputs always give the same signature and the published vectors can be checked exactly.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

use crate::secret::SecretString;

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`) is encoded.
const RPC_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
pub const SIGNATURE_VERSION: &str = "1.0";

/// Percent-encodes one name or value the way signature V1 requires (space is `%20`, `*` is `%2A`,
/// `~` stays, non-ASCII is encoded as UTF-8 bytes).
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RPC_ENCODE_SET).to_string()
}

/// The canonicalized query string: parameters sorted by name (byte order), each `name=value`
/// percent-encoded, joined by `&`. A parameter named `Signature` is left out.
pub fn canonicalized_query<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(name, _)| *name != "Signature")
        .collect();
    // Stable sort by name; equal names (which ECS never expects) keep the caller's order.
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    encode_form(pairs)
}

/// `METHOD & percentEncode("/") & percentEncode(canonicalized)`.
pub fn string_to_sign(method: &str, canonicalized: &str) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(canonicalized)
    )
}

/// `base64(HMAC-SHA1(AccessKeySecret + "&", string_to_sign))`.
pub fn signature(access_key_secret: &SecretString, string_to_sign: &str) -> String {
    let mut key = Vec::with_capacity(access_key_secret.expose().len() + 1);
    key.extend_from_slice(access_key_secret.expose().as_bytes());
    key.push(b'&');
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
    key.iter_mut().for_each(|b| *b = 0);
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The stages of one signature, kept so that a `SignatureDoesNotMatch` can be compared with the
/// server's own string to sign. `Debug` masks the secret parameters ([`mask_sensitive`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    pub canonicalized_query: String,
    pub string_to_sign: String,
    pub signature: String,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field(
                "canonicalized_query",
                &mask_sensitive(&self.canonicalized_query),
            )
            .field("string_to_sign", &mask_sensitive(&self.string_to_sign))
            .field("signature", &self.signature)
            .finish()
    }
}

/// Signs a full parameter set (common parameters included) for `method`.
pub fn sign<'a, I>(method: &str, params: I, access_key_secret: &SecretString) -> Signed
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let canonicalized_query = canonicalized_query(params);
    let string_to_sign = string_to_sign(method, &canonicalized_query);
    let signature = signature(access_key_secret, &string_to_sign);
    Signed {
        canonicalized_query,
        string_to_sign,
        signature,
    }
}

/// Encodes parameters plus their signature as a query string or `application/x-www-form-urlencoded`
/// body, with the same encoding the signature used (so the server decodes exactly what was signed).
pub fn encode_with_signature<'a, I>(params: I, signature: &str) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::new();
    for (name, value) in params {
        if name == "Signature" {
            continue;
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
        out.push('&');
    }
    out.push_str("Signature=");
    out.push_str(&percent_encode(signature));
    out
}

/// Encodes parameters as an `application/x-www-form-urlencoded` body with the signature's
/// percent-encoding (space is `%20`); used for the V3 body, whose bytes are hashed as sent.
pub fn encode_form<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::new();
    for (i, (name, value)) in params.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// Parameters whose values are secret and must never be shown, even inside a string to sign.
pub const SENSITIVE_PARAMETERS: &[&str] = &["SecurityToken", "VncPassword", "AccessKeySecret"];

/// Replaces the values of [`SENSITIVE_PARAMETERS`] in a query string, a (once-encoded) string to
/// sign or a V3 canonical request, and the `x-acs-security-token` header of a V3 canonical request,
/// with `***`, so that the text can be shown to a person or logged. Used on the client's string to
/// sign and on the server's, which ECS echoes in `SignatureDoesNotMatch` messages.
pub fn mask_sensitive(text: &str) -> String {
    let mut out = text.to_string();
    let mut markers: Vec<(String, &[&str])> = Vec::new();
    for name in SENSITIVE_PARAMETERS {
        // In a V1 string to sign the separators are encoded once more (`%3D`, `%26`); in a V3
        // canonical request the query is one line.
        markers.push((format!("{name}%3D"), &["%26", "\n"]));
        markers.push((format!("{name}="), &["&", "\n"]));
    }
    markers.push(("x-acs-security-token:".to_string(), &["\n"]));
    for (marker, separators) in &markers {
        let mut searched = 0;
        while let Some(found) = out[searched..].find(marker.as_str()) {
            let start = searched + found + marker.len();
            let end = separators
                .iter()
                .filter_map(|s| out[start..].find(s))
                .min()
                .map_or(out.len(), |i| start + i);
            out.replace_range(start..end, "***");
            searched = start + 3;
        }
    }
    out
}

/// Timestamps in the format signature V1 expects: UTC, `yyyy-MM-ddTHH:mm:ssZ`.
pub fn format_timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::new("testsecret")
    }

    // Vector A: Alibaba Cloud's RPC signature documentation, DescribeRegions example (GET,
    // AccessKeySecret "testsecret"); the doc spells the timestamp parameter "TimeStamp".
    #[test]
    fn vector_a_describe_regions_matches_stage_by_stage() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("TimeStamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ];
        let signed = sign("GET", params, &secret());
        assert_eq!(
            signed.string_to_sign,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(signed.signature, "CT9X0VtwR86fNWSnsc6v8YGOjuE=");
    }

    // Vector B: Alibaba Cloud's signature V1 documentation, DescribeDedicatedHosts example.
    #[test]
    fn vector_b_describe_dedicated_hosts_matches() {
        let params = [
            ("Version", "2014-05-26"),
            ("Timestamp", "2023-03-13T08:34:30Z"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("RegionId", "cn-beijing"),
            ("Format", "JSON"),
            ("Action", "DescribeDedicatedHosts"),
            ("AccessKeyId", "testid"),
        ];
        let signed = sign("GET", params, &secret());
        assert!(signed.canonicalized_query.starts_with(
            "AccessKeyId=testid&Action=DescribeDedicatedHosts&Format=JSON&RegionId=cn-beijing"
        ));
        assert_eq!(signed.signature, "9NaGiOspFP5UPcwX8Iwt2YJXXuk=");
    }

    #[test]
    fn unreserved_characters_stay_and_everything_else_is_upper_hex() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode(" "), "%20");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("+"), "%2B");
        assert_eq!(percent_encode("="), "%3D");
        assert_eq!(percent_encode("&"), "%26");
        assert_eq!(percent_encode(":"), "%3A");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn string_to_sign_encodes_values_twice() {
        let c = canonicalized_query([("a", "x y*~/")]);
        assert_eq!(c, "a=x%20y%2A~%2F");
        assert_eq!(
            string_to_sign("post", &c),
            "POST&%2F&a%3Dx%2520y%252A~%252F"
        );
    }

    #[test]
    fn empty_values_stay_as_name_equals() {
        assert_eq!(canonicalized_query([("b", ""), ("a", "1")]), "a=1&b=");
    }

    #[test]
    fn sorting_is_by_byte_order_not_case_insensitive() {
        assert_eq!(
            canonicalized_query([("b", "1"), ("B", "2"), ("a", "3")]),
            "B=2&a=3&b=1"
        );
    }

    #[test]
    fn signature_parameter_is_never_part_of_what_is_signed() {
        assert_eq!(canonicalized_query([("Signature", "x"), ("a", "1")]), "a=1");
    }

    #[test]
    fn sts_security_token_with_plus_slash_equals_is_signed_like_any_value() {
        let token = "CAIS+/abc==";
        let params = [("AccessKeyId", "STS.id"), ("SecurityToken", token)];
        let signed = sign("POST", params, &secret());
        assert_eq!(
            signed.canonicalized_query,
            "AccessKeyId=STS.id&SecurityToken=CAIS%2B%2Fabc%3D%3D"
        );
        assert!(
            signed
                .string_to_sign
                .ends_with("SecurityToken%3DCAIS%252B%252Fabc%253D%253D")
        );
        // The wire form decodes back to the exact token.
        let body = encode_with_signature(params, &signed.signature);
        let decoded: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert!(decoded.contains(&("SecurityToken".into(), token.into())));
        assert!(decoded.contains(&("Signature".into(), signed.signature.clone())));
    }

    #[test]
    fn masking_hides_token_and_password_in_both_encodings() {
        let signed = sign(
            "POST",
            [("A", "1"), ("SecurityToken", "CAIS+/abc=="), ("Z", "2")],
            &secret(),
        );
        let masked = mask_sensitive(&signed.string_to_sign);
        assert!(!masked.contains("CAIS"), "{masked}");
        assert!(masked.contains("SecurityToken%3D***%26Z"));
        let masked = mask_sensitive("A=1&SecurityToken=abc%2B&VncPassword=Ecs123&Z=2");
        assert_eq!(masked, "A=1&SecurityToken=***&VncPassword=***&Z=2");
        assert_eq!(mask_sensitive("SecurityToken=tail"), "SecurityToken=***");
        assert_eq!(
            mask_sensitive("POST&%2F&VncPassword%3DEcs123"),
            "POST&%2F&VncPassword%3D***"
        );
    }

    #[test]
    fn debug_of_a_signature_masks_token_and_password() {
        let signed = sign(
            "POST",
            [("SecurityToken", "CAIS+/abc=="), ("VncPassword", "Ecs123")],
            &secret(),
        );
        let shown = format!("{signed:?}");
        assert!(
            !shown.contains("CAIS") && !shown.contains("Ecs123"),
            "{shown}"
        );
        assert!(shown.contains(&signed.signature));
    }

    #[test]
    fn timestamp_format_is_seconds_precision_utc() {
        let t: jiff::Timestamp = "2026-11-27T10:00:05.123Z".parse().unwrap();
        assert_eq!(format_timestamp(t), "2026-11-27T10:00:05Z");
    }
}
