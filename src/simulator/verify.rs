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
/// The only API version of ECS this endpoint serves.
pub const ECS_VERSION: &str = "2014-05-26";

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
    if get("Version") != ECS_VERSION {
        return Err(EcsFault::new(
            400,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::config::{AccessKeyConfig, SimulatorConfig};

    /// Vector B of `ECS-API-NOTES.md` (Alibaba's own documentation), with the clock at its time.
    fn vector_b() -> Vec<(String, String)> {
        [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeDedicatedHosts"),
            ("Format", "JSON"),
            ("RegionId", "cn-beijing"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2023-03-13T08:34:30Z"),
            ("Version", "2014-05-26"),
            ("Signature", "9NaGiOspFP5UPcwX8Iwt2YJXXuk="),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn state_at(time: &str) -> SimState {
        let state = SimState::new(&SimulatorConfig {
            access_keys: vec![AccessKeyConfig {
                id: "testid".into(),
                secret: "testsecret".into(),
                security_token: None,
            }],
            ..Default::default()
        });
        let now: jiff::Timestamp = time.parse().unwrap();
        state.set_clock(move || now);
        state
    }

    fn code(r: Result<String, EcsFault>) -> &'static str {
        r.err().map_or("Success", |f| f.code)
    }

    #[test]
    fn alibabas_published_vector_verifies_once() {
        let state = state_at("2023-03-13T08:40:00Z");
        assert_eq!(
            authenticate("GET", &vector_b(), &state).ok().as_deref(),
            Some("testid")
        );
        assert_eq!(
            code(authenticate("GET", &vector_b(), &state)),
            "SignatureNonceUsed"
        );
    }

    #[test]
    fn the_method_is_signed() {
        let state = state_at("2023-03-13T08:40:00Z");
        let fault = authenticate("POST", &vector_b(), &state).unwrap_err();
        assert_eq!((fault.status, fault.code), (400, "SignatureDoesNotMatch"));
        assert!(fault.message.ends_with("server string to sign is:POST&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeDedicatedHosts%26Format%3DJSON%26RegionId%3Dcn-beijing%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dedb2b34af0af9a6d14deaf7c1a5315eb%26SignatureVersion%3D1.0%26Timestamp%3D2023-03-13T08%253A34%253A30Z%26Version%3D2014-05-26"), "{}", fault.message);
    }

    #[test]
    fn the_timestamp_window_is_fifteen_minutes_either_way() {
        assert_eq!(
            code(authenticate(
                "GET",
                &vector_b(),
                &state_at("2023-03-13T08:49:30Z")
            )),
            "Success"
        );
        assert_eq!(
            code(authenticate(
                "GET",
                &vector_b(),
                &state_at("2023-03-13T08:49:31Z")
            )),
            "InvalidTimeStamp.Expired"
        );
        assert_eq!(
            code(authenticate(
                "GET",
                &vector_b(),
                &state_at("2023-03-13T08:19:29Z")
            )),
            "InvalidTimeStamp.Expired"
        );
    }

    #[test]
    fn a_bad_signature_does_not_burn_the_nonce() {
        let state = state_at("2023-03-13T08:40:00Z");
        let mut wrong = vector_b();
        wrong.retain(|(k, _)| k != "Signature");
        wrong.push(("Signature".into(), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()));
        assert_eq!(
            code(authenticate("GET", &wrong, &state)),
            "SignatureDoesNotMatch"
        );
        assert_eq!(code(authenticate("GET", &vector_b(), &state)), "Success");
    }

    #[test]
    fn common_parameters_are_checked_before_the_key() {
        let state = state_at("2023-03-13T08:40:00Z");
        for (name, expected) in [
            ("SignatureNonce", "MissingParameter"),
            ("Timestamp", "MissingParameter"),
            ("Signature", "MissingParameter"),
        ] {
            let mut p = vector_b();
            p.retain(|(k, _)| k != name);
            assert_eq!(code(authenticate("GET", &p, &state)), expected, "{name}");
        }
        let mut p = vector_b();
        p.iter_mut()
            .filter(|(k, _)| k == "Version")
            .for_each(|(_, v)| *v = "2016-01-01".into());
        assert_eq!(code(authenticate("GET", &p, &state)), "InvalidVersion");
        let mut p = vector_b();
        p.iter_mut()
            .filter(|(k, _)| k == "SignatureMethod")
            .for_each(|(_, v)| *v = "HMAC-SHA256".into());
        assert_eq!(code(authenticate("GET", &p, &state)), "IncompleteSignature");
        let mut p = vector_b();
        p.iter_mut()
            .filter(|(k, _)| k == "Timestamp")
            .for_each(|(_, v)| *v = "2023-03-13 08:34:30".into());
        assert_eq!(
            code(authenticate("GET", &p, &state)),
            "SignatureDoesNotMatch"
        );
    }
}
