//! Authentication of one request as ECS does it: common parameters, AccessKey, STS token,
//! signature V1 recomputed over what was sent, timestamp window, nonce reuse.

use super::state::{EcsFault, SimState};
use crate::ecs::signer;
use crate::secret::SecretString;

const REQUIRED: &[&str] = &[
    "Action",
    "Version",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "Signature",
];
const MAX_SKEW_SECONDS: i64 = 15 * 60;

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The authenticated caller's AccessKeyId, or the error ECS would return.
pub fn authenticate(
    method: &str,
    params: &[(String, String)],
    state: &SimState,
) -> Result<String, EcsFault> {
    for name in REQUIRED {
        if param(params, name).is_none_or(str::is_empty) {
            return Err(EcsFault::missing(name));
        }
    }
    let get = |name| param(params, name).unwrap_or_default();
    if get("SignatureMethod") != signer::SIGNATURE_METHOD
        || get("SignatureVersion") != signer::SIGNATURE_VERSION
    {
        return Err(EcsFault::new(
            400,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards (SignatureMethod HMAC-SHA1, SignatureVersion 1.0).",
        ));
    }
    let key_id = get("AccessKeyId");
    let key = state.access_key(key_id).ok_or_else(|| {
        EcsFault::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    })?;
    match (&key.security_token, param(params, "SecurityToken")) {
        (Some(_), None) => {
            return Err(EcsFault::new(
                400,
                "InvalidSecurityToken.Malformed",
                "Specified SecurityToken is malformed: a temporary AccessKey needs its SecurityToken.",
            ));
        }
        (Some(expected), Some(sent)) if expected != sent => {
            return Err(EcsFault::new(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            ));
        }
        (None, Some(_)) => {
            return Err(EcsFault::new(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey: this AccessKey is not temporary.",
            ));
        }
        _ => {}
    }
    let signed = signer::sign(
        method,
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &SecretString::new(key.secret.as_str()),
    );
    if signed.signature != get("Signature") {
        return Err(EcsFault::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{}",
                signed.string_to_sign
            ),
        ));
    }
    let sent = parse_timestamp(get("Timestamp")).ok_or_else(|| {
        EcsFault::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted (yyyy-MM-ddTHH:mm:ssZ, UTC).",
        )
    })?;
    let now = state.now();
    if (now.as_second() - sent.as_second()).abs() > MAX_SKEW_SECONDS {
        return Err(EcsFault::new(
            400,
            "InvalidTimeStamp.Expired",
            format!(
                "Specified time stamp or date value is expired. The server time is {}.",
                signer::format_timestamp(now)
            ),
        ));
    }
    if !state.use_nonce(get("SignatureNonce"), now) {
        return Err(EcsFault::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok(key_id.to_string())
}

/// `yyyy-MM-ddTHH:mm:ssZ` exactly (UTC, seconds, no fraction).
fn parse_timestamp(text: &str) -> Option<jiff::Timestamp> {
    let b = text.as_bytes();
    let shaped = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if shaped { text.parse().ok() } else { None }
}
