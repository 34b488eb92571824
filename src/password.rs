//! The VNC password rule of ECS: exactly six characters, each `A-Z`, `a-z` or `0-9`.
//!
//! Checked before any call leaves the machine. Errors say which rule failed and never carry the
//! password or any of its characters.

use std::fmt;

use crate::secret::SecretString;

pub const PASSWORD_LENGTH: usize = 6;

/// A password that satisfies the ECS rule. Its value is redacted in `Debug`/`Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct VncPassword(SecretString);

/// Which rule a candidate password broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the VNC password is empty; it must be exactly 6 characters from A-Z, a-z and 0-9")]
    Empty,
    #[error(
        "the VNC password has {length} characters; it must be exactly 6 characters from A-Z, a-z and 0-9"
    )]
    WrongLength { length: usize },
    #[error(
        "the VNC password contains a character other than A-Z, a-z and 0-9 (at position {position}); only letters and digits are allowed"
    )]
    InvalidCharacter { position: usize },
}

impl VncPassword {
    /// Validates `candidate`. A single trailing line ending (`\n` or `\r\n`), as left by
    /// `echo ... > file` or `kubectl create secret --from-file`, is not part of the password.
    pub fn parse(candidate: &str) -> Result<Self, PasswordError> {
        let trimmed = strip_line_ending(candidate);
        let length = trimmed.chars().count();
        if length == 0 {
            return Err(PasswordError::Empty);
        }
        // Length first: a 7-character value with a space is best described by its length; a
        // 6-character value with a symbol is then told which position to fix.
        if length != PASSWORD_LENGTH {
            return Err(PasswordError::WrongLength { length });
        }
        if let Some(index) = trimmed.chars().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(PasswordError::InvalidCharacter {
                position: index + 1,
            });
        }
        Ok(Self(SecretString::new(trimmed)))
    }

    /// Validates raw bytes (a Secret's data): non-UTF-8 is an invalid character, not a panic.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, PasswordError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::parse(s),
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let position = strip_line_ending(valid).chars().count() + 1;
                if position > PASSWORD_LENGTH {
                    Err(PasswordError::WrongLength {
                        length: String::from_utf8_lossy(bytes).chars().count(),
                    })
                } else {
                    Err(PasswordError::InvalidCharacter { position })
                }
            }
        }
    }

    /// A new random password from the operating system's CSPRNG: 6 characters of `A-Z a-z 0-9`
    /// with at least one upper-case letter, one lower-case letter and one digit (what ECS's
    /// Chinese documentation asks for, beyond the rule checked here).
    pub fn generate() -> Self {
        use rand::seq::SliceRandom as _;
        use rand::{Rng as _, TryRngCore as _};
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
        const DIGITS: &[u8] = b"0123456789";
        const ALL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        // Panics only if the operating system has no randomness to give, as getrandom does.
        let mut rng = rand::rngs::OsRng.unwrap_err();
        let mut chars = Vec::with_capacity(PASSWORD_LENGTH);
        for set in [UPPER, LOWER, DIGITS] {
            chars.push(set[rng.random_range(0..set.len())]);
        }
        while chars.len() < PASSWORD_LENGTH {
            chars.push(ALL[rng.random_range(0..ALL.len())]);
        }
        chars.shuffle(&mut rng);
        let text: String = chars.into_iter().map(char::from).collect();
        Self(SecretString::new(text))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    pub fn as_secret(&self) -> &SecretString {
        &self.0
    }
}

fn strip_line_ending(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

impl fmt::Debug for VncPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VncPassword(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_letters_and_digits_are_accepted() {
        for ok in ["Ecs123", "ABCDEF", "abcdef", "000000", "aZ09zA"] {
            assert_eq!(
                VncPassword::parse(ok).map(|p| p.expose().to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn one_trailing_line_ending_is_not_part_of_the_password() {
        assert_eq!(VncPassword::parse("Ecs123\n").unwrap().expose(), "Ecs123");
        assert_eq!(VncPassword::parse("Ecs123\r\n").unwrap().expose(), "Ecs123");
        assert!(VncPassword::parse("Ecs123\n\n").is_err());
        assert!(VncPassword::parse(" Ecs123").is_err());
    }

    #[test]
    fn wrong_lengths_say_how_long_the_value_is() {
        assert_eq!(VncPassword::parse(""), Err(PasswordError::Empty));
        assert_eq!(
            VncPassword::parse("Ecs12"),
            Err(PasswordError::WrongLength { length: 5 })
        );
        assert_eq!(
            VncPassword::parse("Ecs1234"),
            Err(PasswordError::WrongLength { length: 7 })
        );
        assert_eq!(
            VncPassword::parse("ÉcsÉ12"),
            Err(PasswordError::InvalidCharacter { position: 1 })
        );
    }

    #[test]
    fn symbols_spaces_and_non_ascii_are_rejected_with_their_position() {
        assert_eq!(
            VncPassword::parse("Ecs 12"),
            Err(PasswordError::InvalidCharacter { position: 4 })
        );
        assert_eq!(
            VncPassword::parse("Ecs12*"),
            Err(PasswordError::InvalidCharacter { position: 6 })
        );
        assert_eq!(
            VncPassword::parse("Ecs12é"),
            Err(PasswordError::InvalidCharacter { position: 6 })
        );
        assert_eq!(
            VncPassword::parse_bytes(b"Ec\xffs12"),
            Err(PasswordError::InvalidCharacter { position: 3 })
        );
    }

    #[test]
    fn errors_and_debug_never_echo_the_value() {
        let err = VncPassword::parse("Sec 12").unwrap_err().to_string();
        assert!(!err.contains("Sec"), "{err}");
        let ok = VncPassword::parse("Sec123").unwrap();
        assert!(!format!("{ok:?}").contains("Sec123"));
    }

    #[test]
    fn generated_passwords_follow_the_rule_with_all_three_kinds() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let p = VncPassword::generate();
            let text = p.expose().to_string();
            assert!(VncPassword::parse(&text).is_ok(), "{text}");
            assert!(text.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(text.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(text.bytes().any(|b| b.is_ascii_digit()));
            seen.insert(text);
        }
        assert!(seen.len() > 490, "{} distinct of 500", seen.len());
    }
}
