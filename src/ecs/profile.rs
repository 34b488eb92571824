//! The credentials file (`~/.alibabacloud/credentials`, or `ALIBABA_CLOUD_CREDENTIALS_FILE`): INI
//! sections named by profile, each with a `type`, as Alibaba's credentials SDKs read it
//! (github.com/aliyun/credentials-go, `credentials/profile_provider.go`). Supported types:
//! `access_key` (`access_key_id`, `access_key_secret`), `ecs_ram_role` (`role_name`) and
//! `oidc_role_arn` (`role_arn`, `oidc_provider_arn`, `oidc_token_file_path`, optional
//! `role_session_name`).

use std::collections::HashMap;

use super::credentials::Credentials;
use crate::secret::SecretString;

#[derive(Debug, Clone)]
pub enum Profile {
    AccessKey(Credentials),
    EcsRamRole {
        role_name: Option<String>,
    },
    OidcRoleArn {
        role_arn: String,
        oidc_provider_arn: String,
        token_file: String,
        role_session_name: Option<String>,
    },
}

/// `key = value` lines per `[section]`; `#`/`;` comments. Values are never quoted back in errors.
fn sections(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// The profile `name` of the file's `text`, or why not (naming keys, never values).
pub fn parse(text: &str, name: &str, file: &str) -> Result<Profile, String> {
    let all = sections(text);
    let section = all
        .get(name)
        .ok_or_else(|| format!("{file} has no profile [{name}]"))?;
    let get = |key: &str| -> Result<String, String> {
        section
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("profile [{name}] in {file} has no {key}"))
    };
    let kind = section
        .get("type")
        .map(String::as_str)
        .unwrap_or("access_key");
    match kind {
        "access_key" => Ok(Profile::AccessKey(Credentials::new(
            get("access_key_id")?,
            SecretString::new(get("access_key_secret")?),
            None,
        ))),
        "ecs_ram_role" => Ok(Profile::EcsRamRole {
            role_name: get("role_name").ok(),
        }),
        "oidc_role_arn" => Ok(Profile::OidcRoleArn {
            role_arn: get("role_arn")?,
            oidc_provider_arn: get("oidc_provider_arn")?,
            token_file: get("oidc_token_file_path")?,
            role_session_name: get("role_session_name").ok(),
        }),
        other => Err(format!(
            "profile [{name}] in {file} has type {other:?}, which this controller does not support (access_key, ecs_ram_role, oidc_role_arn)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[default]\ntype = access_key\naccess_key_id = AKID\naccess_key_secret = s3cr3t\n\n[ecs]\ntype = ecs_ram_role\nrole_name = r\n\n[bad]\ntype = access_key\naccess_key_id = AKID\n\n[odd]\ntype = bearer\n";

    #[test]
    fn profiles_parse_and_errors_name_keys_not_values() {
        match parse(FILE, "default", "f").unwrap() {
            Profile::AccessKey(c) => {
                assert_eq!(c.access_key_id, "AKID");
                assert_eq!(c.access_key_secret.expose(), "s3cr3t");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(FILE, "ecs", "f").unwrap(),
            Profile::EcsRamRole { role_name: Some(r) } if r == "r"
        ));
        let e = parse(FILE, "bad", "f").unwrap_err();
        assert!(
            e.contains("access_key_secret") && !e.contains("AKID"),
            "{e}"
        );
        assert!(parse(FILE, "odd", "f").unwrap_err().contains("bearer"));
        assert!(parse(FILE, "nope", "f").unwrap_err().contains("[nope]"));
    }
}
