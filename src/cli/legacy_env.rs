//! Environment variables renamed to `ECS_VNC_*` (one prefix for every flag). A process that still
//! sets an old name is refused with the new one rather than run without the setting it meant.

/// (old, new) names.
pub const RENAMED: &[(&str, &str)] = &[
    ("ECS_ENDPOINT", "ECS_VNC_ECS_ENDPOINT"),
    ("ECS_SIGNATURE", "ECS_VNC_ECS_SIGNATURE"),
    ("STS_ENDPOINT", "ECS_VNC_STS_ENDPOINT"),
    ("ECS_METADATA_ENDPOINT", "ECS_VNC_METADATA_ENDPOINT"),
];

/// What to change, when `var` (the environment) sets an old name.
pub fn check(var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let old: Vec<String> = RENAMED
        .iter()
        .filter(|(old, _)| var(old).is_some())
        .map(|(old, new)| format!("{old} is now {new}"))
        .collect();
    if old.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "renamed environment variables are set ({}); rename them (see CHANGELOG.md)",
            old.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_name_is_refused_with_its_new_one() {
        assert_eq!(check(|_| None), Ok(()));
        let err = check(|v| (v == "ECS_ENDPOINT").then(|| "https://x".into())).unwrap_err();
        assert!(
            err.contains("ECS_ENDPOINT is now ECS_VNC_ECS_ENDPOINT"),
            "{err}"
        );
    }
}
