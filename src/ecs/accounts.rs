//! Which Alibaba Cloud account a credential belongs to, so that rate limits are kept the way ECS
//! counts them: per account, region and action. RAM users and roles of one account share the
//! account's quota, and temporary STS keys belong to their role's account.
//!
//! The account is learnt once per credential with STS `GetCallerIdentity` ([`super::sts`]) and
//! cached, keyed by a keyed hash of AccessKeyId, secret and token: a copied AccessKeyId with a junk
//! secret is another entry and never reuses a real key's answer. A credential STS does not vouch
//! for (refused, unreachable) is named by that hash, `unverified.<12 hex>`, so it gets a bucket of
//! its own and shares nothing with any other; its ECS calls then fail with ECS's own error as
//! before. Failed look-ups are remembered for a while, so a junk credential costs one STS call per
//! [`REFUSED_TTL`] at most, never one per ECS call; temporary credentials (new keys every refresh)
//! cost one look-up per refresh.
//!
//! Hand-written: a bounded map with one look-up in flight per credential and per-entry lifetimes
//! (verified: kept; failed: minutes) is a few lines, and no cache crate is in the dependency tree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::credentials::Credentials;
use super::sts::{self, StsError};

/// Credentials remembered at most; past it the least recently used quarter is forgotten.
const MAX_ENTRIES: usize = 4096;
/// How long a credential STS refused stays unverified before it is asked about again.
pub const REFUSED_TTL: Duration = Duration::from_secs(300);
/// Likewise when STS could not be reached or answered nonsense.
pub const UNREACHABLE_TTL: Duration = Duration::from_secs(30);

type Digest = [u8; 32];

#[derive(Clone)]
struct Known {
    /// The account ID, or `unverified.<hash>`.
    label: String,
    /// Ask STS again after this (failed look-ups only).
    until: Option<Instant>,
}

#[derive(Default)]
struct Entry {
    slot: Arc<tokio::sync::Mutex<Option<Known>>>,
}

/// The accounts of the credentials a client has used. Shared by the client's clones.
pub struct Accounts {
    /// STS's endpoint and the client to ask it with; `None`: no look-up, every credential is its
    /// own (unverified) account.
    sts: Option<(reqwest::Client, String)>,
    /// The hash key: random per process, so the hashes in metrics are no handle on a secret.
    key: [u8; 32],
    entries: Mutex<HashMap<Digest, (Entry, Instant)>>,
}

impl Accounts {
    pub fn new(sts: Option<(reqwest::Client, String)>) -> Self {
        Self {
            sts,
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, credentials: &Credentials) -> Digest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(credentials.access_key_id.as_bytes());
        mac.update(&[0]);
        mac.update(credentials.access_key_secret.expose().as_bytes());
        mac.update(&[0]);
        if let Some(token) = &credentials.security_token {
            mac.update(token.expose().as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn slot(&self, digest: Digest) -> Arc<tokio::sync::Mutex<Option<Known>>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((entry, used)) = entries.get_mut(&digest) {
            *used = now;
            return entry.slot.clone();
        }
        if entries.len() >= MAX_ENTRIES {
            let mut by_use: Vec<(Instant, Digest)> =
                entries.iter().map(|(d, (_, used))| (*used, *d)).collect();
            by_use.sort_unstable();
            for (_, d) in by_use.into_iter().take(MAX_ENTRIES / 4) {
                entries.remove(&d);
            }
        }
        let entry = Entry::default();
        let slot = entry.slot.clone();
        entries.insert(digest, (entry, now));
        slot
    }

    /// The account `credentials` belong to, asking STS the first time (one look-up at a time per
    /// credential; the others wait for its answer).
    pub async fn account(&self, credentials: &Credentials) -> String {
        let digest = self.digest(credentials);
        let slot = self.slot(digest);
        let mut known = slot.lock().await;
        if let Some(k) = known.as_ref()
            && k.until.is_none_or(|u| Instant::now() < u)
        {
            return k.label.clone();
        }
        let unverified = unverified(&digest);
        let found = match &self.sts {
            None => Known {
                label: unverified,
                until: None,
            },
            Some((http, endpoint)) => {
                match sts::get_caller_identity(http, endpoint, credentials).await {
                    Ok(who) if is_account_id(&who.account_id) => Known {
                        label: who.account_id,
                        until: None,
                    },
                    result => {
                        let (why, ttl) = match &result {
                            Ok(_) => ("an AccountId that is not one".to_string(), UNREACHABLE_TTL),
                            Err(StsError::Refused { code, .. }) if !result_transient(&result) => {
                                (code.clone(), REFUSED_TTL)
                            }
                            Err(e) => (e.to_string(), UNREACHABLE_TTL),
                        };
                        tracing::warn!(
                            account = %unverified,
                            "STS GetCallerIdentity did not vouch for a credential ({why}): it gets an ECS rate-limit bucket of its own, asked about again in {} s",
                            ttl.as_secs()
                        );
                        Known {
                            label: unverified,
                            until: Some(Instant::now() + ttl),
                        }
                    }
                }
            }
        };
        *known = Some(found.clone());
        found.label
    }

    /// The account of `credentials` if it is known now (never waits, never asks STS).
    pub fn cached(&self, credentials: &Credentials) -> Option<String> {
        let digest = self.digest(credentials);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (entry, _) = entries.get(&digest)?;
        let known = entry.slot.try_lock().ok()?;
        known.as_ref().map(|k| k.label.clone())
    }
}

fn result_transient(result: &Result<sts::CallerIdentity, StsError>) -> bool {
    matches!(result, Err(e) if e.transient())
}

/// `unverified.` and the first 6 bytes of the credential's keyed hash, in hex.
fn unverified(digest: &Digest) -> String {
    format!("unverified.{}", hex::encode(&digest[..6]))
}

/// Alibaba Cloud account IDs are numbers; anything else from an endpoint is not trusted as one.
fn is_account_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    fn creds(id: &str, secret: &str, token: Option<&str>) -> Credentials {
        Credentials::new(id, SecretString::new(secret), token.map(SecretString::new))
    }

    #[tokio::test]
    async fn without_sts_every_credential_is_its_own_unverified_account() {
        let a = Accounts::new(None);
        let real = a.account(&creds("LTAIa", "s", None)).await;
        let junk = a.account(&creds("LTAIa", "junk", None)).await;
        let token = a.account(&creds("LTAIa", "s", Some("t"))).await;
        assert!(real.starts_with("unverified.") && real.len() == "unverified.".len() + 12);
        assert_ne!(real, junk);
        assert_ne!(real, token);
        assert_eq!(a.account(&creds("LTAIa", "s", None)).await, real);
        assert_eq!(a.cached(&creds("LTAIa", "s", None)), Some(real.clone()));
        assert_eq!(a.cached(&creds("LTAIb", "s", None)), None);
        assert!(!real.contains("LTAI"));
        // Another process (another hash key): another name for the same credential.
        let b = Accounts::new(None);
        assert_ne!(b.account(&creds("LTAIa", "s", None)).await, real);
    }

    #[tokio::test]
    async fn the_map_stays_bounded() {
        let a = Accounts::new(None);
        for i in 0..MAX_ENTRIES + 10 {
            a.account(&creds(&format!("k{i}"), "s", None)).await;
        }
        assert!(a.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }

    #[test]
    fn only_numbers_are_account_ids() {
        assert!(is_account_id("1000000000000001"));
        assert!(!is_account_id(""));
        assert!(!is_account_id("LTAIabc"));
        assert!(!is_account_id("1 2"));
        assert!(!is_account_id(&"1".repeat(33)));
    }
}
