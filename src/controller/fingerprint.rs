//! The keyed fingerprint of an applied password, and the key's life in a Secret of the controller.
//!
//! A 6-character password has only 62^6 ≈ 5.7e10 values, so a plain hash in a status would be
//! brute-forced in minutes. The fingerprint is HMAC-SHA256 under a 32-byte random key that only the
//! controller reads (a Secret in its own namespace, created on first start), over the region, the
//! instance and the password: a new instance or a new password gives a new fingerprint.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::password::VncPassword;

pub const KEY_SECRET_NAME: &str = "ecs-vnc-controller-fingerprint-key";
const KEY_FIELD: &str = "key";
const KEY_BYTES: usize = 32;

/// The fingerprint key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct FingerprintKey(Vec<u8>);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

impl FingerprintKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= 16).then_some(Self(bytes))
    }

    pub fn generate() -> Self {
        Self((0..KEY_BYTES).map(|_| rand::random::<u8>()).collect())
    }

    /// A short public ID of the key, so a fingerprint names the key it was made with.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(&self.0)[..4])
    }

    /// `hmac-sha256:<key id>:<base64url HMAC>`.
    pub fn fingerprint(&self, region: &str, instance_id: &str, password: &VncPassword) -> String {
        self.mac(&["ecsvnc.io/v1", region, instance_id, password.expose()])
    }

    /// Proof that the object with this uid reached the instance (`<region>/<instance>`) with its own
    /// credentials (ECS accepted its password, or described the instance to it). Only the
    /// controller can make one, so a claim on an instance cannot be forged by writing a status, nor
    /// copied from another object (it names the uid).
    pub fn access_proof(&self, uid: &str, instance_key: &str) -> String {
        self.mac(&["ecsvnc.io/access/v1", uid, instance_key])
    }

    /// Whether `proof` is [`Self::access_proof`] of this uid and instance under this key.
    pub fn verifies_access(&self, proof: &str, uid: &str, instance_key: &str) -> bool {
        // Every byte is compared whatever differs: the time says nothing about a guess.
        let expected = self.access_proof(uid, instance_key);
        expected.len() == proof.len()
            && expected
                .bytes()
                .zip(proof.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        format!(
            "hmac-sha256:{}:{}",
            self.id(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create Secret {namespace}/{KEY_SECRET_NAME}: {source}")]
    Kube {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{KEY_SECRET_NAME} has no usable key '{KEY_FIELD}' (16 bytes or more); delete it to have a new one generated (applied passwords whose Secrets did not change are re-recorded under it without any ECS call)"
    )]
    Malformed { namespace: String },
}

/// Loads the key from its Secret, creating it (once, race-free) when it does not exist.
pub async fn load_or_create(client: Client, namespace: &str) -> Result<FingerprintKey, KeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_err = |source| KeyError::Kube {
        namespace: namespace.to_string(),
        source,
    };
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(KEY_SECRET_NAME).await.map_err(kube_err)? {
            return secret
                .data
                .and_then(|mut d| d.remove(KEY_FIELD))
                .and_then(|b| FingerprintKey::from_bytes(b.0))
                .ok_or_else(|| KeyError::Malformed {
                    namespace: namespace.to_string(),
                });
        }
        let key = FingerprintKey::generate();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(KEY_SECRET_NAME.to_string()),
                labels: Some(
                    [(
                        "app.kubernetes.io/name".to_string(),
                        "ecs-vnc-controller".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(KEY_FIELD.to_string(), ByteString(key.0.clone()))].into()),
            type_: Some("Opaque".to_string()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(key),
            // Another instance created it first: read theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(kube_err(e)),
        }
    }
    Err(KeyError::Malformed {
        namespace: namespace.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_access_proof_names_its_object_and_instance_and_cannot_be_made_without_the_key() {
        let key = FingerprintKey::generate();
        let proof = key.access_proof("uid-1", "cn-hangzhou/i-1");
        assert!(key.verifies_access(&proof, "uid-1", "cn-hangzhou/i-1"));
        assert!(
            !key.verifies_access(&proof, "uid-2", "cn-hangzhou/i-1"),
            "copied to another object"
        );
        assert!(
            !key.verifies_access(&proof, "uid-1", "cn-hangzhou/i-2"),
            "another instance"
        );
        assert!(!FingerprintKey::generate().verifies_access(&proof, "uid-1", "cn-hangzhou/i-1"));
        assert!(!key.verifies_access("", "uid-1", "cn-hangzhou/i-1"));
    }

    use super::*;

    fn pw(s: &str) -> VncPassword {
        VncPassword::parse(s).unwrap()
    }

    #[test]
    fn fingerprint_depends_on_key_instance_region_and_password() {
        let k = FingerprintKey::from_bytes(vec![7; 32]).unwrap();
        let base = k.fingerprint("cn-hangzhou", "i-abcdefgh1", &pw("Ecs123"));
        assert_eq!(
            base,
            k.fingerprint("cn-hangzhou", "i-abcdefgh1", &pw("Ecs123"))
        );
        assert_ne!(
            base,
            k.fingerprint("cn-hangzhou", "i-abcdefgh1", &pw("Ecs124"))
        );
        assert_ne!(
            base,
            k.fingerprint("cn-hangzhou", "i-abcdefgh2", &pw("Ecs123"))
        );
        assert_ne!(
            base,
            k.fingerprint("cn-beijing", "i-abcdefgh1", &pw("Ecs123"))
        );
        let other = FingerprintKey::from_bytes(vec![8; 32]).unwrap();
        assert_ne!(
            base,
            other.fingerprint("cn-hangzhou", "i-abcdefgh1", &pw("Ecs123"))
        );
        assert!(!base.contains("Ecs123"));
        assert!(base.starts_with("hmac-sha256:"));
    }

    #[test]
    fn short_keys_are_refused_and_debug_redacts() {
        assert!(FingerprintKey::from_bytes(vec![1; 8]).is_none());
        assert_eq!(
            format!("{:?}", FingerprintKey::generate()),
            "FingerprintKey(<redacted>)"
        );
    }
}
