//! Alibaba Cloud credentials: an AccessKey pair, optionally with an STS SecurityToken.

use std::fmt;

use crate::secret::SecretString;

pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Not secret: it names the key and appears in every request.
    pub access_key_id: String,
    pub access_key_secret: SecretString,
    /// Present for temporary (STS) credentials; sent and signed as `SecurityToken`.
    pub security_token: Option<SecretString>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "{0} is not set: set {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} (and {ENV_SECURITY_TOKEN} for STS credentials)"
    )]
    MissingVariable(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<SecretString>,
        security_token: Option<SecretString>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
            security_token: security_token.filter(|t| !t.is_empty()),
        }
    }

    /// Reads the `ALIBABA_CLOUD_*` variables through `lookup` (the process environment in
    /// [`Credentials::from_env`]; a map in tests).
    pub fn from_lookup(
        lookup: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, CredentialsError> {
        let required = |name: &'static str| -> Result<String, CredentialsError> {
            let value = lookup(name).ok_or(CredentialsError::MissingVariable(name))?;
            if value.trim().is_empty() {
                return Err(CredentialsError::Empty(name));
            }
            Ok(value.trim().to_string())
        };
        let id = required(ENV_ACCESS_KEY_ID)?;
        let secret = required(ENV_ACCESS_KEY_SECRET)?;
        let token = lookup(ENV_SECURITY_TOKEN)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(SecretString::new);
        Ok(Self::new(id, SecretString::new(secret), token))
    }

    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &self.access_key_secret)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&'static str, &str)]) -> impl Fn(&'static str) -> Option<String> {
        let map: HashMap<&'static str, String> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn missing_variables_are_named() {
        let err = Credentials::from_lookup(lookup(&[(ENV_ACCESS_KEY_ID, "id")])).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::MissingVariable(ENV_ACCESS_KEY_SECRET)
        );
        assert!(
            err.to_string()
                .contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not set")
        );
    }

    #[test]
    fn a_token_is_optional_and_debug_redacts() {
        let c = Credentials::from_lookup(lookup(&[
            (ENV_ACCESS_KEY_ID, "id"),
            (ENV_ACCESS_KEY_SECRET, "verysecret"),
            (ENV_SECURITY_TOKEN, "tok+/="),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("id") && !shown.contains("verysecret") && !shown.contains("tok+"));
        assert_eq!(
            c.security_token.as_ref().map(|t| t.expose()),
            Some("tok+/=")
        );
    }
}
