//! An object's uid as the key of the controller's per-object maps: the 16 bytes of the UUID the API
//! server gives every object (`metadata.uid`, a lowercase hyphenated UUID), kept inline with no
//! allocation, where the text took 36 bytes on the heap (48 with the allocator's rounding) and a
//! pointer. A uid that is not in that form (never from the API server) is kept as its text, so
//! two different uids are never one key.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Uid {
    Uuid(uuid::Uuid),
    Other(Box<str>),
}

impl From<&str> for Uid {
    fn from(uid: &str) -> Self {
        // Only the canonical form: `try_parse` also takes upper case, braces and URNs, which
        // would make distinct strings one key.
        match uuid::Uuid::try_parse(uid) {
            Ok(u)
                if u.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    == uid =>
            {
                Uid::Uuid(u)
            }
            _ => Uid::Other(uid.into()),
        }
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Uuid(u) => u.hyphenated().fmt(f),
            Uid::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_uids_are_kept_as_sixteen_bytes_and_read_back_the_same() {
        let text = "8d0e5a7c-3b1f-4c2d-9e8f-0a1b2c3d4e5f";
        let uid = Uid::from(text);
        assert!(matches!(uid, Uid::Uuid(_)));
        assert_eq!(uid.to_string(), text);
        assert_eq!(std::mem::size_of::<Uid>(), 24);
    }

    #[test]
    fn other_forms_stay_text_and_distinct() {
        let lower = Uid::from("8d0e5a7c-3b1f-4c2d-9e8f-0a1b2c3d4e5f");
        for other in [
            "8D0E5A7C-3B1F-4C2D-9E8F-0A1B2C3D4E5F",
            "8d0e5a7c3b1f4c2d9e8f0a1b2c3d4e5f",
            "{8d0e5a7c-3b1f-4c2d-9e8f-0a1b2c3d4e5f}",
            "1",
            "",
        ] {
            let uid = Uid::from(other);
            assert!(matches!(uid, Uid::Other(_)), "{other}");
            assert_ne!(uid, lower, "{other}");
            assert_eq!(uid.to_string(), other);
        }
    }
}
