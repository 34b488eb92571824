//! Redacting containers for secret material (AccessKeySecret, SecurityToken, VNC passwords).
//!
//! `Debug` and `Display` never print the value; the only way to read it is [`SecretString::expose`],
//! which makes every use greppable. The memory is zeroed on drop.

use std::fmt;

use zeroize::Zeroizing;

/// A string whose value never appears in `Debug`/`Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret value. Never log or format what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::new("Ecs123");
        assert!(!format!("{s:?}").contains("Ecs123"));
        assert!(!format!("{s}").contains("Ecs123"));
        assert!(!format!("{:#?}", Some(&s)).contains("Ecs123"));
        assert_eq!(s.expose(), "Ecs123");
    }
}
