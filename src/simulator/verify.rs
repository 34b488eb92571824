//! Authentication of one request as ECS does it: common parameters, AccessKey, STS token,
//! the signature (V1, or V3 `ACS3-HMAC-SHA256`) recomputed over what was sent, timestamp window,
//! nonce reuse.

use super::config::AccessKeyConfig;
use super::state::{EcsFault, SimState};
use crate::ecs::{signer, signer_v3};
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
    authenticate_version(method, params, state, ECS_VERSION)
}

/// [`authenticate`] for a product of API `version` (STS: `2015-04-01`).
pub fn authenticate_version(
    method: &str,
    params: &[(String, String)],
    state: &SimState,
    version: &str,
) -> Result<String, EcsFault> {
    for name in REQUIRED {
        if param(params, name).is_none_or(str::is_empty) {
            return Err(EcsFault::missing(name));
        }
    }
    let get = |name| param(params, name).unwrap_or_default();
    if get("Version") != version {
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
    check_security_token(&key, param(params, "SecurityToken"))?;
    check_expiry(state, key_id)?;
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
    check_time_and_nonce(get("Timestamp"), get("SignatureNonce"), state)?;
    Ok(key_id.to_string())
}

/// Temporary keys from the simulated STS or metadata service work until their `Expiration`.
fn check_expiry(state: &SimState, key_id: &str) -> Result<(), EcsFault> {
    if state.key_expired(key_id) {
        return Err(EcsFault::new(
            400,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        ));
    }
    Ok(())
}

/// A temporary key needs its SecurityToken; a permanent key must not send one.
fn check_security_token(key: &AccessKeyConfig, sent: Option<&str>) -> Result<(), EcsFault> {
    match (&key.security_token, sent) {
        (Some(_), None) => Err(EcsFault::new(
            400,
            "InvalidSecurityToken.Malformed",
            "Specified SecurityToken is malformed: a temporary AccessKey needs its SecurityToken.",
        )),
        (Some(expected), Some(sent)) if expected != sent => Err(EcsFault::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )),
        (None, Some(_)) => Err(EcsFault::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey: this AccessKey is not temporary.",
        )),
        _ => Ok(()),
    }
}

/// The timestamp's format and window, then the nonce (only used up by a request that got this far).
fn check_time_and_nonce(timestamp: &str, nonce: &str, state: &SimState) -> Result<(), EcsFault> {
    let sent = parse_timestamp(timestamp).ok_or_else(|| {
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
    if !state.use_nonce(nonce, now) {
        return Err(EcsFault::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok(())
}

/// The headers a V3 request must carry besides `host` (each `MissingParameter` when absent).
const REQUIRED_V3: &[&str] = &[
    signer_v3::HEADER_ACTION,
    signer_v3::HEADER_VERSION,
    signer_v3::HEADER_DATE,
    signer_v3::HEADER_NONCE,
    signer_v3::HEADER_CONTENT_SHA256,
    "authorization",
];

/// A request as the V3 check sees it.
pub struct V3Request<'a> {
    pub method: &'a str,
    /// Every header received, names lower-cased, in the order received.
    pub headers: &'a [(String, String)],
    /// The query parameters, decoded.
    pub query: &'a [(String, String)],
    /// The body as received (its SHA-256 is what is signed).
    pub body: &'a [u8],
}

impl V3Request<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a request is signed with V3: it has an `Authorization` header, or it has no V1
/// `Signature` and carries V3's date or nonce header. (Alibaba's SDK sends `x-acs-action` and
/// `x-acs-version` with V1 requests too, so those do not count.)
pub fn is_v3(headers: &[(String, String)], params: &[(String, String)]) -> bool {
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    has("authorization")
        || (param(params, "Signature").is_none()
            && (has(signer_v3::HEADER_DATE) || has(signer_v3::HEADER_NONCE)))
}

/// The authenticated caller's AccessKeyId for a V3 request, or the error ECS would return. The
/// order mirrors V1: required headers (`MissingParameter`), `x-acs-version` (`InvalidVersion`),
/// the `Authorization` header's shape, algorithm and signed headers (`IncompleteSignature`: every
/// `host`, `content-type` and `x-acs-*` header present must be signed, and every signed one
/// present), the AccessKey, the STS token (`x-acs-security-token`), the signature recomputed over
/// the request as received (the payload hash from the body itself), then date and nonce.
pub fn authenticate_v3(request: &V3Request<'_>, state: &SimState) -> Result<String, EcsFault> {
    for &name in REQUIRED_V3 {
        if request.header(name).is_none_or(|v| v.trim().is_empty()) {
            let shown = if name == "authorization" {
                "Authorization"
            } else {
                name
            };
            return Err(EcsFault::missing(shown));
        }
    }
    let get = |name| request.header(name).unwrap_or_default().trim();
    if get(signer_v3::HEADER_VERSION) != ECS_VERSION {
        return Err(EcsFault::new(
            400,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        ));
    }
    let incomplete = |why: String| {
        EcsFault::new(
            400,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards: {why}."),
        )
    };
    let authorization = signer_v3::parse_authorization(get("authorization")).ok_or_else(|| {
        incomplete(
            "the Authorization header is not \"ACS3-HMAC-SHA256 Credential=...,SignedHeaders=...,Signature=...\""
                .into(),
        )
    })?;
    if authorization.algorithm != signer_v3::ALGORITHM {
        return Err(incomplete(format!(
            "the signature algorithm {:?} is not supported (use {})",
            authorization.algorithm,
            signer_v3::ALGORITHM
        )));
    }
    let claimed: Vec<&str> = authorization.signed_headers.split(';').collect();
    for required in ["host"]
        .iter()
        .chain(REQUIRED_V3.iter().filter(|h| **h != "authorization"))
    {
        if !claimed.contains(required) {
            return Err(incomplete(format!("the header {required} must be signed")));
        }
    }
    for (name, _) in request.headers {
        if signer_v3::is_signed_header(name) && !claimed.contains(&name.as_str()) {
            return Err(incomplete(format!(
                "the header {name} is present but not signed"
            )));
        }
    }
    if let Some(absent) = claimed.iter().find(|c| request.header(c).is_none()) {
        return Err(incomplete(format!(
            "the signed header {absent} is not in the request"
        )));
    }
    let key_id = authorization.credential;
    let key = state.access_key(key_id).ok_or_else(|| {
        EcsFault::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    })?;
    check_security_token(&key, request.header(signer_v3::HEADER_SECURITY_TOKEN))?;
    check_expiry(state, key_id)?;
    let query: Vec<(&str, &str)> = request
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let hashed = signer_v3::hashed_payload(request.body);
    let signed = signer_v3::sign(
        &signer_v3::Request {
            method: request.method,
            path: "/",
            query: &query,
            headers: &headers,
            hashed_payload: &hashed,
        },
        key_id,
        &SecretString::new(key.secret.as_str()),
    );
    if signed.signature != authorization.signature {
        return Err(EcsFault::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{} {}{}",
                signed.string_to_sign,
                crate::ecs::error::CANONICAL_REQUEST_MARKER,
                signer_v3::mask(&signed.canonical_request)
            ),
        ));
    }
    check_time_and_nonce(
        get(signer_v3::HEADER_DATE),
        get(signer_v3::HEADER_NONCE),
        state,
    )?;
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

    /// Vector B (Alibaba's signature V1 documentation, DescribeDedicatedHosts example; see
    /// `ecs::signer`), with the clock at its time.
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
                account_id: None,
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

    /// The worked example of Alibaba's "V3 request structure and signature" (see
    /// `ecs::signer_v3`), as a server receives it.
    struct V3Example {
        headers: Vec<(String, String)>,
        query: Vec<(String, String)>,
        body: Vec<u8>,
    }

    const V3_AUTHORIZATION: &str = "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0";

    fn v3_example() -> V3Example {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        V3Example {
            headers: pairs(&[
                ("host", "ecs.cn-shanghai.aliyuncs.com"),
                ("x-acs-action", "RunInstances"),
                ("x-acs-content-sha256", signer_v3::EMPTY_PAYLOAD_SHA256),
                ("x-acs-date", "2023-10-26T10:22:32Z"),
                ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
                ("x-acs-version", "2014-05-26"),
                ("user-agent", "AlibabaCloud (test) TeaDSL/2"),
                ("authorization", V3_AUTHORIZATION),
            ]),
            query: pairs(&[
                (
                    "ImageId",
                    "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
                ),
                ("RegionId", "cn-shanghai"),
            ]),
            body: Vec::new(),
        }
    }

    fn v3_state_at(time: &str) -> SimState {
        let state = SimState::new(&SimulatorConfig {
            access_keys: vec![
                AccessKeyConfig {
                    id: "YourAccessKeyId".into(),
                    secret: "YourAccessKeySecret".into(),
                    security_token: None,
                    account_id: None,
                },
                AccessKeyConfig {
                    id: "STS.id".into(),
                    secret: "sts-secret".into(),
                    security_token: Some("CAIS+/tok==".into()),
                    account_id: None,
                },
            ],
            ..Default::default()
        });
        let now: jiff::Timestamp = time.parse().unwrap();
        state.set_clock(move || now);
        state
    }

    fn v3(example: &V3Example, state: &SimState) -> Result<String, EcsFault> {
        authenticate_v3(
            &V3Request {
                method: "POST",
                headers: &example.headers,
                query: &example.query,
                body: &example.body,
            },
            state,
        )
    }

    fn set(example: &mut V3Example, name: &str, value: &str) {
        example.headers.retain(|(k, _)| k != name);
        example.headers.push((name.into(), value.into()));
    }

    #[test]
    fn v3_worked_example_verifies_once_within_the_window() {
        let state = v3_state_at("2023-10-26T10:30:00Z");
        assert!(is_v3(&v3_example().headers, &v3_example().query));
        assert_eq!(
            v3(&v3_example(), &state).ok().as_deref(),
            Some("YourAccessKeyId")
        );
        assert_eq!(code(v3(&v3_example(), &state)), "SignatureNonceUsed");
        assert_eq!(
            code(v3(&v3_example(), &v3_state_at("2023-10-26T10:37:33Z"))),
            "InvalidTimeStamp.Expired"
        );
        assert_eq!(
            code(v3(&v3_example(), &v3_state_at("2023-10-26T10:07:32Z"))),
            "Success"
        );
    }

    #[test]
    fn v3_missing_headers_are_missing_parameters() {
        let state = v3_state_at("2023-10-26T10:30:00Z");
        for name in [
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
            "authorization",
        ] {
            let mut e = v3_example();
            e.headers.retain(|(k, _)| k != name);
            let fault = v3(&e, &state).unwrap_err();
            assert_eq!(
                (fault.status, fault.code),
                (400, "MissingParameter"),
                "{name}"
            );
        }
        let mut e = v3_example();
        set(&mut e, "x-acs-version", "2016-01-01");
        assert_eq!(code(v3(&e, &state)), "InvalidVersion");
    }

    #[test]
    fn v3_incomplete_signatures_are_refused_before_the_key_is_looked_up() {
        let state = v3_state_at("2023-10-26T10:30:00Z");
        for authorization in [
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId",
            "ACS3-HMAC-SM3 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00",
            // x-acs-date not signed
            "ACS3-HMAC-SHA256 Credential=Unknown,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-signature-nonce;x-acs-version,Signature=00",
            // a signed header that is not in the request
            "ACS3-HMAC-SHA256 Credential=Unknown,SignedHeaders=content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00",
        ] {
            let mut e = v3_example();
            set(&mut e, "authorization", authorization);
            assert_eq!(
                code(v3(&e, &state)),
                "IncompleteSignature",
                "{authorization}"
            );
        }
        // Present but not signed: an x-acs-* header, content-type.
        for (name, value) in [
            ("x-acs-extra", "1"),
            ("content-type", "application/x-www-form-urlencoded"),
        ] {
            let mut e = v3_example();
            set(&mut e, name, value);
            let fault = v3(&e, &state).unwrap_err();
            assert_eq!(fault.code, "IncompleteSignature");
            assert!(fault.message.contains(name), "{}", fault.message);
        }
        let mut e = v3_example();
        set(
            &mut e,
            "authorization",
            &V3_AUTHORIZATION.replace("YourAccessKeyId", "Unknown"),
        );
        assert_eq!(code(v3(&e, &state)), "InvalidAccessKeyId.NotFound");
    }

    #[test]
    fn v3_changes_to_what_was_signed_do_not_match_and_do_not_burn_the_nonce() {
        let state = v3_state_at("2023-10-26T10:30:00Z");
        let mut body = v3_example();
        body.body = b"RegionId=cn-shanghai".to_vec(); // x-acs-content-sha256 still says empty
        let mut query = v3_example();
        query.query[1].1 = "cn-beijing".into();
        let mut header = v3_example();
        set(&mut header, "x-acs-action", "DescribeInstances");
        let mut unsigned = v3_example();
        set(&mut unsigned, "user-agent", "something else"); // not signed: still fine later
        for tampered in [body, query, header] {
            let fault = v3(&tampered, &state).unwrap_err();
            assert_eq!((fault.status, fault.code), (400, "SignatureDoesNotMatch"));
            assert!(
                fault
                    .message
                    .contains("server string to sign is:ACS3-HMAC-SHA256\n"),
                "{}",
                fault.message
            );
            assert!(
                fault.message.contains(&format!(
                    "{}POST\n/\n",
                    crate::ecs::error::CANONICAL_REQUEST_MARKER
                )),
                "{}",
                fault.message
            );
        }
        assert_eq!(code(v3(&unsigned, &state)), "Success");
    }

    #[test]
    fn v3_sts_tokens_are_checked_and_masked_in_the_servers_canonical_request() {
        let state = v3_state_at("2026-01-01T00:00:00Z");
        let token = SecretString::new("CAIS+/tok==");
        let sign_with = |token: Option<&SecretString>, secret: &str| {
            let body = b"VncPassword=Ecs123".to_vec();
            let hashed = signer_v3::hashed_payload(&body);
            let mut headers: Vec<(String, String)> = signer_v3::CommonHeaders {
                host: "h",
                action: "ModifyInstanceVncPasswd",
                version: ECS_VERSION,
                date: "2026-01-01T00:00:00Z".parse().unwrap(),
                nonce: &uuid::Uuid::new_v4().to_string(),
                hashed_payload: &hashed,
                access_key_id: "STS.id",
                security_token: token,
            }
            .to_vec()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let sent: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let signed = signer_v3::sign(
                &signer_v3::Request {
                    method: "POST",
                    path: "/",
                    query: &[],
                    headers: &sent,
                    hashed_payload: &hashed,
                },
                "STS.id",
                &SecretString::new(secret),
            );
            headers.push(("authorization".into(), signed.authorization));
            V3Example {
                headers,
                query: Vec::new(),
                body,
            }
        };
        assert_eq!(
            code(v3(&sign_with(Some(&token), "sts-secret"), &state)),
            "Success"
        );
        assert_eq!(
            code(v3(&sign_with(None, "sts-secret"), &state)),
            "InvalidSecurityToken.Malformed"
        );
        assert_eq!(
            code(v3(
                &sign_with(Some(&SecretString::new("CAIS-other")), "sts-secret"),
                &state
            )),
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
        let fault = v3(&sign_with(Some(&token), "wrong-secret"), &state).unwrap_err();
        assert_eq!(fault.code, "SignatureDoesNotMatch");
        assert!(!fault.message.contains("CAIS"), "{}", fault.message);
        assert!(
            fault.message.contains("x-acs-security-token:***\n"),
            "{}",
            fault.message
        );
    }
}
