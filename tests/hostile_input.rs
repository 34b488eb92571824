//! Hostile input never panics: ECS response bodies (JSON and XML, error and success, truncated,
//! non-UTF-8, huge), StartTime texts, Secret values (huge, binary, non-UTF-8, empty) and the
//! signer's inputs. Property tests, bounded by their case counts.

use proptest::prelude::*;

use ecs_vnc_controller::controller::tenancy;
use ecs_vnc_controller::ecs::error::{excerpt, parse_error_body};
use ecs_vnc_controller::ecs::signer;
use ecs_vnc_controller::ecs::types::{
    DescribeInstancesResponse, RequestIdResponse, parse_start_time,
};
use ecs_vnc_controller::password::VncPassword;
use ecs_vnc_controller::secret::SecretString;

/// Bodies that look like ECS's, then cut, spliced and corrupted.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_error = r#"{"RequestId":"R","HostId":"ecs.aliyuncs.com","Code":"Throttling.User","Message":"m","Recommend":"r"}"#;
    let xml_error = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><RequestId>R</RequestId><Code>InvalidInstanceId.NotFound</Code><Message>m</Message></Error>";
    let describe = r#"{"RequestId":"R","TotalCount":1,"PageNumber":1,"PageSize":100,"Instances":{"Instance":[{"InstanceId":"i-1","RegionId":"cn-hangzhou","Status":"Running","IoOptimized":true,"StartTime":"2026-01-01T10:00Z"}]}}"#;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        (
            prop_oneof![Just(json_error), Just(xml_error), Just(describe)],
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(base, cut, junk)| {
                let mut b = base.as_bytes().to_vec();
                let cut = cut % (b.len() + 1);
                b.truncate(cut);
                b.extend(junk);
                b
            }),
        (
            prop_oneof![Just(json_error), Just(xml_error), Just(describe)],
            any::<usize>(),
            any::<u8>()
        )
            .prop_map(|(base, at, byte)| {
                let mut b = base.as_bytes().to_vec();
                let at = at % b.len();
                b[at] = byte;
                b
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn response_bodies_never_panic(bytes in body(), status in 100u16..600) {
        let _ = parse_error_body(status, Some("application/json"), &bytes);
        let _ = parse_error_body(status, Some("text/xml"), &bytes);
        let _ = serde_json::from_slice::<DescribeInstancesResponse>(&bytes);
        let _ = serde_json::from_slice::<RequestIdResponse>(&bytes);
        let e = excerpt(&bytes);
        prop_assert!(e.chars().count() <= 120);
        prop_assert!(!e.chars().any(char::is_control));
    }

    #[test]
    fn start_times_never_panic(text in ".{0,64}") {
        let _ = parse_start_time(&text);
    }

    #[test]
    fn secret_values_never_panic_and_never_echo(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        match VncPassword::parse_bytes(&bytes) {
            Ok(p) => prop_assert_eq!(p.expose().len(), 6),
            Err(e) => {
                let shown = e.to_string();
                if let Ok(text) = std::str::from_utf8(&bytes) && text.len() >= 3 {
                    prop_assert!(!shown.contains(text), "the error echoes the value");
                }
            }
        }
        let creds = tenancy::from_secret_data("c", |k| (k != "securityToken").then(|| bytes.clone()));
        if let Err(failure) = creds {
            let shown = format!("{failure:?}");
            if let Ok(text) = std::str::from_utf8(&bytes) && text.trim().len() >= 3 {
                prop_assert!(!shown.contains(text.trim()), "the failure echoes the value");
            }
        }
    }

    #[test]
    fn the_signer_takes_any_input(
        params in proptest::collection::vec((".{0,40}", ".{0,200}"), 0..20),
        secret in ".{0,64}",
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), ".{0,8}"],
    ) {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let signed = signer::sign(&method, pairs.iter().copied(), &SecretString::new(secret));
        let _ = signer::encode_with_signature(pairs.iter().copied(), &signed.signature);
    }
}

#[test]
fn a_huge_body_is_cut_to_an_excerpt() {
    let huge = vec![b'x'; 8 * 1024 * 1024];
    assert!(parse_error_body(502, None, &huge).is_err());
    assert!(excerpt(&huge).len() <= 120);
}
