//! The checked-in CRD is exactly what `ecs-vnc-controller crd` prints, and it carries what users
//! and the API server rely on.

use std::process::Command;

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let generated = ecs_vnc_controller::api::crd_yaml().expect("render CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/vncpassword.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/vncpassword.yaml exists");
    assert!(
        generated == checked_in,
        "crds/vncpassword.yaml is stale: run `cargo run --bin ecs-vnc-controller -- crd > crds/vncpassword.yaml`"
    );
}

#[test]
fn the_crd_subcommand_prints_the_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .arg("crd")
        .output()
        .expect("run the binary");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        ecs_vnc_controller::api::crd_yaml().expect("render")
    );
}

#[test]
fn the_crd_has_status_subresource_columns_and_validation() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&ecs_vnc_controller::api::crd_yaml().expect("render")).expect("yaml");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "vncpw");
    assert_eq!(crd["spec"]["names"]["categories"][0], "ecs");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Instance",
            "Region",
            "Ready",
            "Reason",
            "Reboot-Required",
            "Age"
        ]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(required, ["instanceId", "passwordSecretRef", "regionId"]);
    assert!(spec["properties"]["instanceId"]["pattern"].is_string());
    assert!(spec["properties"]["regionId"]["pattern"].is_string());
    assert_eq!(
        spec["properties"]["rebootPolicy"]["enum"],
        serde_json::json!(["Manual", "Automatic"])
    );
    for field in [
        "regionId",
        "instanceId",
        "passwordSecretRef",
        "credentialsSecretRef",
        "rebootPolicy",
    ] {
        assert!(
            spec["properties"][field]["description"].is_string(),
            "{field} has no description for kubectl explain"
        );
    }
}
