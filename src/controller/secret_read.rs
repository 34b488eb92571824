//! Reading a Secret's data, bounded: at most [`CONCURRENT_READS`] reads at once, at most
//! [`MAX_SECRET_BYTES`] of response body each (read incrementally and given up past the limit,
//! never decoded), and a version found too large is not read again until the Secret changes.

use std::collections::HashMap;
use std::sync::Mutex;

use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use k8s_openapi::api::core::v1::Secret;
use kube::api::GetParams;
use kube::core::{Request, Status};

/// The most of a Secret's GET response the controller reads: a password or an AccessKey pair
/// with its metadata takes a few KiB; Kubernetes allows 1 MiB.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Reads at once. A GET takes the API server milliseconds, so 8 sustain hundreds of reads a second,
/// more than ECS's quota lets a wave apply, while at most 8 × 64 KiB of Secrets is being read.
pub const CONCURRENT_READS: usize = 8;

/// `"64 KiB"`, for messages.
pub fn limit_text() -> String {
    format!("{} KiB", MAX_SECRET_BYTES / 1024)
}

pub enum Read {
    Found(Box<Secret>),
    Missing,
    /// Its GET response is larger than [`MAX_SECRET_BYTES`].
    TooLarge,
}

/// The read slots and the versions found too large, for one leadership term.
pub struct SecretReader {
    permits: tokio::sync::Semaphore,
    /// (namespace, name) → (uid, resourceVersion), as the metadata cache showed the Secret when it
    /// was found too large. At most one entry per Secret; pruned by [`SecretReader::retain`].
    too_large: Mutex<HashMap<(String, String), (String, String)>>,
}

impl Default for SecretReader {
    fn default() -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(CONCURRENT_READS),
            too_large: Mutex::default(),
        }
    }
}

impl SecretReader {
    /// Reads Secret `namespace/name`. `cached`: its (uid, resourceVersion) in the metadata cache,
    /// if known; a version already found too large is answered without a read.
    pub async fn read(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        cached: Option<(&str, &str)>,
    ) -> Result<Read, kube::Error> {
        // Never closed; a closed semaphore would only mean reading without a slot.
        let _permit = self.permits.acquire().await.ok();
        let key = (namespace.to_string(), name.to_string());
        let known_too_large = |uid: &str, rv: &str| {
            self.lock()
                .get(&key)
                .is_some_and(|(u, r)| u == uid && r == rv)
        };
        if cached.is_some_and(|(uid, rv)| known_too_large(uid, rv)) {
            return Ok(Read::TooLarge);
        }
        let read = get_bounded(client, namespace, name).await?;
        match (&read, cached) {
            (Read::TooLarge, Some((uid, rv))) => {
                self.lock().insert(key, (uid.to_string(), rv.to_string()));
            }
            _ => {
                self.lock().remove(&key);
            }
        }
        Ok(read)
    }

    /// Forgets the versions that are no longer the cached one (changed, deleted).
    pub fn retain(&self, current: impl Fn(&str, &str) -> Option<(String, String)>) {
        self.lock().retain(|(namespace, name), (uid, rv)| {
            current(namespace, name).is_some_and(|(u, r)| u == *uid && r == *rv)
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (String, String)>> {
        self.too_large.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// GET of the Secret with its response body read up to [`MAX_SECRET_BYTES`].
async fn get_bounded(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Read, kube::Error> {
    let request = Request::new(format!("/api/v1/namespaces/{namespace}/secrets"))
        .get(name, &GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let body = match Limited::new(response.into_body(), MAX_SECRET_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return if status.is_success() {
                Ok(Read::TooLarge)
            } else {
                Err(api_error(status.as_u16(), "a response too large to read"))
            };
        }
        Err(e) => return Err(kube::Error::Service(e)),
    };
    if status.as_u16() == 404 {
        return Ok(Read::Missing);
    }
    if !status.is_success() {
        return Err(match serde_json::from_slice::<Status>(&body) {
            Ok(s) => kube::Error::Api(s.boxed()),
            Err(_) => api_error(status.as_u16(), "a response that is not a Status"),
        });
    }
    serde_json::from_slice(&body)
        .map(|s| Read::Found(Box::new(s)))
        .map_err(kube::Error::SerdeError)
}

fn api_error(code: u16, what: &str) -> kube::Error {
    kube::Error::Api(
        Status::failure(&format!("the API server answered {code} with {what}"), "")
            .with_code(code)
            .boxed(),
    )
}
