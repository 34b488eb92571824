//! Which credentials a VncPassword may use.
//!
//! A `credentials.secretRef` names a Secret in the object's own namespace, a
//! `credentials.serviceAccountRef` a ServiceAccount of it (see `service_account`; neither reference
//! has a namespace field, so one tenant can never name another's). Without either, the
//! controller's own credentials are used only in namespaces its operator listed: otherwise anyone
//! allowed to create a VncPassword could change the VNC password of every instance the controller's
//! identity can reach.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::api::{CredentialsSecretRef, Reason};
use crate::controller::decide::Failure;
use crate::ecs::Credentials;
use crate::secret::SecretString;

/// `--default-credentials-namespaces`: a comma list, `*` for all, empty for none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedNamespaces {
    #[default]
    None,
    All,
    Some(BTreeSet<String>),
}

/// The names of a comma list (blanks and empty entries dropped), as flags take them.
pub fn comma_list(s: &str) -> BTreeSet<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

impl FromStr for AllowedNamespaces {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let names = comma_list(s);
        if names.contains("*") {
            return if names.len() == 1 {
                Ok(Self::All)
            } else {
                Err("'*' cannot be combined with namespace names".into())
            };
        }
        if let Some(bad) = names.iter().find(|n| {
            n.len() > 63
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return Err(format!("{bad:?} is not a namespace name"));
        }
        Ok(if names.is_empty() {
            Self::None
        } else {
            Self::Some(names)
        })
    }
}

/// The ECS tag an instance must carry, with the VncPassword's namespace as value, before the
/// controller's shared credentials act on it.
pub const NAMESPACE_TAG: &str = "ecsvnc.io/namespace";

impl AllowedNamespaces {
    /// Whether the controller's own credentials may serve more than one namespace: then an
    /// instance must name the namespace that may use it ([`NAMESPACE_TAG`]), or any allowed
    /// namespace could take any instance of the account.
    pub fn shared(&self) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(names) => names.len() > 1,
        }
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(names) => names.contains(namespace),
        }
    }
}

pub const KEY_ACCESS_KEY_ID: &str = "accessKeyId";
pub const KEY_ACCESS_KEY_SECRET: &str = "accessKeySecret";
pub const KEY_SECURITY_TOKEN: &str = "securityToken";

/// Credentials from a Secret's data under the default keys, or why not (never quoting values).
pub fn from_secret_data(
    secret_name: &str,
    get: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Credentials, Failure> {
    from_secret_ref(&CredentialsSecretRef::named(secret_name), get)
}

/// Credentials from the data of the Secret `r` names, under its keys (or from the credentials
/// file under `credentialsFileKey`), or why not (never quoting values).
pub fn from_secret_ref(
    r: &CredentialsSecretRef,
    get: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Credentials, Failure> {
    let secret_name = r.name.as_str();
    let text = |key: &str| -> Result<Option<String>, Failure> {
        match get(key) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
                .map_err(|_| {
                    Failure::stalled(
                        Reason::CredentialsNotFound,
                        format!("key {key} of Secret {secret_name} is not UTF-8 text"),
                    )
                }),
        }
    };
    if let Some(file_key) = &r.credentials_file_key {
        let file = text(file_key)?.ok_or_else(|| {
            Failure::stalled(
                Reason::CredentialsNotFound,
                format!("Secret {secret_name} has no key {file_key} (spec.credentials.secretRef.credentialsFileKey): put an Alibaba Cloud credentials file there"),
            )
        })?;
        let what = format!("key {file_key} of Secret {secret_name}");
        return match crate::ecs::profile::parse(&file, "default", &what) {
            Ok(crate::ecs::profile::Profile::AccessKey(c)) => Ok(c),
            Ok(_) => Err(Failure::stalled(
                Reason::CredentialsNotFound,
                format!(
                    "the [default] profile in {what} is not of type access_key: a VncPassword's credentials file must hold an AccessKey (access_key_id, access_key_secret); for a RAM role use spec.credentials.serviceAccountRef"
                ),
            )),
            Err(e) => Err(Failure::stalled(Reason::CredentialsNotFound, e)),
        };
    }
    let id_key = r.access_key_id_key.as_deref().unwrap_or(KEY_ACCESS_KEY_ID);
    let secret_key = r
        .access_key_secret_key
        .as_deref()
        .unwrap_or(KEY_ACCESS_KEY_SECRET);
    let token_key = r
        .security_token_key
        .as_deref()
        .unwrap_or(KEY_SECURITY_TOKEN);
    let required = |key: &str| -> Result<String, Failure> {
        text(key)?.ok_or_else(|| {
            Failure::stalled(
                Reason::CredentialsNotFound,
                format!("Secret {secret_name} has no key {key} (it needs {id_key}, {secret_key} and, for STS credentials, {token_key})"),
            )
        })
    };
    let id = required(id_key)?;
    let secret = required(secret_key)?;
    let token = text(token_key)?.map(SecretString::new);
    Ok(Credentials::new(id, SecretString::new(secret), token))
}

/// The controller's own credentials for an object without `credentials`, or why not.
pub fn default_for<T: Clone>(
    namespace: &str,
    allowed: &AllowedNamespaces,
    defaults: Option<&T>,
) -> Result<T, Failure> {
    if !allowed.allows(namespace) {
        return Err(Failure::stalled(
            Reason::CredentialsNotAllowed,
            format!(
                "namespace {namespace} may not use the controller's default credentials: set spec.credentials.secretRef to a Secret in this namespace (or spec.credentials.serviceAccountRef), or ask the operator to add {namespace} to --default-credentials-namespaces"
            ),
        ));
    }
    defaults.cloned().ok_or_else(|| {
        Failure::stalled(
            Reason::CredentialsNotFound,
            "the controller has no default credentials (none of Alibaba's credentials chain: environment, OIDC, credentials file, ECS RAM role): set spec.credentials.secretRef or spec.credentials.serviceAccountRef",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_lists_parse() {
        assert_eq!("".parse::<AllowedNamespaces>(), Ok(AllowedNamespaces::None));
        assert_eq!("*".parse::<AllowedNamespaces>(), Ok(AllowedNamespaces::All));
        let some: AllowedNamespaces = "team-a, team-b".parse().unwrap();
        assert!(some.allows("team-a") && some.allows("team-b") && !some.allows("team-c"));
        assert!("*,a".parse::<AllowedNamespaces>().is_err());
        assert!("Team_A".parse::<AllowedNamespaces>().is_err());
    }

    #[test]
    fn default_credentials_only_where_allowed() {
        let creds = Credentials::new("id", SecretString::new("s"), None);
        let allowed: AllowedNamespaces = "team-a".parse().unwrap();
        assert!(default_for("team-a", &allowed, Some(&creds)).is_ok());
        match default_for("team-b", &allowed, Some(&creds)) {
            Err(Failure::Stalled { reason, .. }) => {
                assert_eq!(reason, Reason::CredentialsNotAllowed)
            }
            other => panic!("{other:?}"),
        }
        match default_for::<Credentials>("team-a", &allowed, None) {
            Err(Failure::Stalled { reason, .. }) => assert_eq!(reason, Reason::CredentialsNotFound),
            other => panic!("{other:?}"),
        }
    }

    /// A Secret's data as the reader `from_secret_data` takes.
    fn data(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<Vec<u8>> + Clone {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_bytes().to_vec())
        }
    }

    #[test]
    fn secret_data_needs_id_and_secret_token_optional() {
        let c = from_secret_data(
            "c",
            data(&[
                ("accessKeyId", "id"),
                ("accessKeySecret", "s"),
                ("securityToken", "t+/="),
            ]),
        )
        .unwrap();
        assert_eq!(c.security_token.as_ref().map(|t| t.expose()), Some("t+/="));
        match from_secret_data("c", data(&[("accessKeyId", "id")])) {
            Err(Failure::Stalled { reason, message }) => {
                assert_eq!(reason, Reason::CredentialsNotFound);
                assert!(message.contains("accessKeySecret"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn key_selectors_and_a_credentials_file_name_where_the_credentials_are() {
        let selected = CredentialsSecretRef {
            name: "c".into(),
            access_key_id_key: Some("id".into()),
            access_key_secret_key: Some("secret".into()),
            ..Default::default()
        };
        let c = from_secret_ref(&selected, data(&[("id", "LTAIx"), ("secret", "s")])).unwrap();
        assert_eq!(c.access_key_id, "LTAIx");
        assert!(c.security_token.is_none());
        let file = CredentialsSecretRef {
            name: "c".into(),
            credentials_file_key: Some("credentials".into()),
            ..Default::default()
        };
        let c = from_secret_ref(
            &file,
            data(&[(
                "credentials",
                "[default]\ntype = access_key\naccess_key_id = LTAIfile\naccess_key_secret = fs\n",
            )]),
        )
        .unwrap();
        assert_eq!(c.access_key_id, "LTAIfile");
        for bad in [
            "[other]\naccess_key_id = a\naccess_key_secret = b\n",
            "[default]\ntype = ecs_ram_role\nrole_name = r\n",
        ] {
            let text: &'static str = Box::leak(bad.to_string().into_boxed_str());
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(vec![("credentials", text)].into_boxed_slice());
            match from_secret_ref(&file, data(pairs)) {
                Err(Failure::Stalled { reason, .. }) => {
                    assert_eq!(reason, Reason::CredentialsNotFound)
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
