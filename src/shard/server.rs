//! The API server's side of sharding: whether it filters lists and watches by `shardSelector`
//! (Kubernetes sharded list and watch, KEP-5866, alpha gate `ShardedListAndWatch`), and a client
//! that asks it to for the VncPasswords and VncPasswordSets.
//!
//! With the gate off the API server ignores the parameter without a word and returns the whole
//! collection, so filtering is only ever an optimisation: a replica must still check
//! [`ShardRange::contains_uid`](super::ShardRange::contains_uid) on what it receives.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, VersionMatch};
use kube::client::Body;
use kube::core::ObjectList;
use kube::{Api, Client, Resource, ResourceExt};

use super::range::{ShardRange, fnv1a64, selector};
use crate::api::VncPassword;

/// The API group and the collections [`sharded_client`] filters.
const GROUP: &str = "ecsvnc.io";
const RESOURCES: [&str; 2] = ["vncpasswords", "vncpasswordsets"];
const PARAM: &str = "shardSelector";

/// Whether the API server filters lists (and watches: the same gate, the same predicate in
/// `k8s.io/apiserver/pkg/registry/generic/registry/store.go`, `ListPredicate` and `Watch`) by
/// `shardSelector`. Detected, never assumed; `namespace` is the caller's own (where it may list
/// VncPasswords when it may not list them everywhere).
///
/// 1. The CRD, when a VncPassword exists (looked for in all namespaces, or in `namespace` when that
///    is forbidden): that one object is listed again, by name, at the same resourceVersion
///    (`resourceVersionMatch=Exact`: the same snapshot, so it cannot have gone away in between),
///    with a selector of every hash but its own. A filtering server returns nothing; a server
///    ignoring the selector returns the object: false. A CRD list cannot answer by itself: its
///    type, `unstructured.UnstructuredList`, does not implement `metav1.ShardedListInterface`, so it
///    never carries `metadata.shardInfo`, filtered or not.
/// 2. With no VncPassword to test, the gate: a list of Leases in `namespace` (`limit=1`) with a
///    selector of the whole hash space (it filters nothing). With the gate on the API server echoes
///    the selector in `metadata.shardInfo` (`SelectionPredicate.SetShardInfoOnList`, for list types
///    implementing `ShardedListInterface`, which `metav1.ListMeta` does); with it off the parameter
///    is dropped before parsing and `shardInfo` is absent. Both storages read the one process-wide
///    feature gate. The controller's Role has no `list` on Leases: refused, the answer is false
///    (there is nothing to filter yet; the next term asks again).
///
/// It is a point-in-time answer from whichever API server served it: behind a load balancer every
/// kube-apiserver needs the gate, and callers must still check what a filtered list or watch brings
/// against their own ranges.
pub async fn server_filters(client: &Client, namespace: &str) -> Result<bool, kube::Error> {
    let all: Api<VncPassword> = Api::all(client.clone());
    let probe = ListParams::default().limit(1);
    let found = match all.list_metadata(&probe).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Api::<VncPassword>::namespaced(client.clone(), namespace)
                .list_metadata(&probe)
                .await?
        }
        other => other?,
    };
    let (Some(object), Some(version)) = (found.items.first(), found.metadata.resource_version)
    else {
        return lease_list_says(client, namespace).await;
    };
    let (Some(uid), Some(object_namespace)) = (object.uid(), object.namespace()) else {
        return lease_list_says(client, namespace).await;
    };
    let hash = fnv1a64(uid.as_bytes());
    // Every hash but the object's own: [0, hash) and [hash + 1, 2^64), whichever are not empty.
    let mut others = Vec::new();
    if hash > 0 {
        others.push(ShardRange {
            start: 0,
            end: u128::from(hash),
        });
    }
    if hash < u64::MAX {
        others.push(ShardRange {
            start: hash + 1,
            end: 1 << 64,
        });
    }
    let others = selector(&others).expect("a hash is never both 0 and 2^64 - 1");
    let again =
        Api::<VncPassword>::namespaced(sharded_client(client.clone(), others), &object_namespace)
            .list_metadata(
                &ListParams::default()
                    .fields(&format!("metadata.name={}", object.name_any()))
                    .at(&version)
                    .matching(VersionMatch::Exact),
            )
            .await?;
    Ok(again.items.is_empty())
}

/// Whether a list of Leases with a shard selector comes back with `metadata.shardInfo` (step 2 of
/// [`server_filters`]); a refused list (403) is a no.
async fn lease_list_says(client: &Client, namespace: &str) -> Result<bool, kube::Error> {
    let everything = selector(&[ShardRange::of(0, 1)]).expect("one range");
    let request = kube::core::Request::new(Lease::url_path(&(), Some(namespace)))
        .list(&ListParams::default().limit(1))
        .map_err(kube::Error::BuildRequest)?;
    let (mut parts, body) = request.into_parts();
    parts.uri = with_selector(&parts.uri, &encode(&everything))?;
    match client
        .request::<ObjectList<Lease>>(Request::from_parts(parts, body))
        .await
    {
        Ok(leases) => Ok(leases.metadata.shard_info.is_some()),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(false),
        Err(e) => Err(e),
    }
}

/// A client whose lists and watches of VncPasswords and VncPasswordSets (GET on their collections,
/// namespaced or not) carry `shardSelector=<selector>`; every other request goes through unchanged.
/// The selector is sent as given: build it with [`selector`](super::selector).
pub fn sharded_client(client: Client, selector: String) -> Client {
    let default_namespace = client.default_namespace().to_string();
    let valid_until = *client.valid_until();
    Client::new(
        ShardFilter {
            inner: client,
            param: Arc::from(encode(&selector)),
        },
        default_namespace,
    )
    .with_valid_until(valid_until)
}

/// `shardSelector=<selector, form-urlencoded>`, as kube encodes its own query parameters.
fn encode(selector: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair(PARAM, selector)
        .finish()
}

#[derive(Clone)]
struct ShardFilter {
    inner: Client,
    param: Arc<str>,
}

impl tower_service::Service<Request<Body>> for ShardFilter {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        // The inner client buffers and waits for readiness itself, in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let rewritten = if filtered(request.method(), request.uri()) {
            with_selector(request.uri(), &self.param).map(|uri| *request.uri_mut() = uri)
        } else {
            Ok(())
        };
        Box::pin(async move {
            // A selector that cannot be added fails the request rather than widen it silently.
            rewritten?;
            inner.send(request).await
        })
    }
}

/// A GET of `/apis/ecsvnc.io/<version>/[namespaces/<ns>/]vncpasswords|vncpasswordsets`: a list or
/// a watch (`watch=true` is a query parameter on the same path).
fn filtered(method: &Method, uri: &Uri) -> bool {
    if method != Method::GET {
        return false;
    }
    let segments: Vec<&str> = uri.path().trim_end_matches('/').split('/').collect();
    let resource = match segments.as_slice() {
        ["", "apis", group, _version, resource] if *group == GROUP => resource,
        ["", "apis", group, _version, "namespaces", _, resource] if *group == GROUP => resource,
        _ => return false,
    };
    RESOURCES.contains(resource)
}

/// `uri` with `param` (`shardSelector=…`, already encoded) added to its query, other parameters
/// kept in order; a query already naming `shardSelector` is left alone.
fn with_selector(uri: &Uri, param: &str) -> Result<Uri, kube::Error> {
    let query = uri.query().unwrap_or("");
    if form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == PARAM) {
        return Ok(uri.clone());
    }
    let path_and_query = if query.is_empty() {
        format!("{}?{param}", uri.path())
    } else {
        format!("{}?{query}&{param}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query).map_err(|e| kube::Error::Service(Box::new(e)))?,
    );
    Uri::from_parts(parts).map_err(|e| kube::Error::Service(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELECTOR: &str =
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x4000000000000000')";
    const ENCODED: &str = "shardSelector=shardRange%28object.metadata.uid%2C+%270x0000000000000000%27%2C+%270x4000000000000000%27%29";

    fn rewrite(method: Method, uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        if filtered(&method, &uri) {
            with_selector(&uri, &encode(SELECTOR)).unwrap().to_string()
        } else {
            uri.to_string()
        }
    }

    #[test]
    fn the_selector_is_form_encoded_and_decodes_back() {
        assert_eq!(encode(SELECTOR), ENCODED);
        let (k, v) = form_urlencoded::parse(ENCODED.as_bytes()).next().unwrap();
        assert_eq!((k.as_ref(), v.as_ref()), (PARAM, SELECTOR));
    }

    #[test]
    fn lists_and_watches_of_our_collections_get_the_selector() {
        for (uri, expected) in [
            (
                "/apis/ecsvnc.io/v1alpha1/vncpasswords?limit=500",
                format!("/apis/ecsvnc.io/v1alpha1/vncpasswords?limit=500&{ENCODED}"),
            ),
            (
                "/apis/ecsvnc.io/v1alpha1/namespaces/team-a/vncpasswords?limit=500&continue=abc%3D",
                format!(
                    "/apis/ecsvnc.io/v1alpha1/namespaces/team-a/vncpasswords?limit=500&continue=abc%3D&{ENCODED}"
                ),
            ),
            (
                "/apis/ecsvnc.io/v1alpha1/vncpasswords?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12",
                format!(
                    "/apis/ecsvnc.io/v1alpha1/vncpasswords?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12&{ENCODED}"
                ),
            ),
            (
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswordsets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
                format!(
                    "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswordsets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&{ENCODED}"
                ),
            ),
            (
                "/apis/ecsvnc.io/v1alpha1/vncpasswords",
                format!("/apis/ecsvnc.io/v1alpha1/vncpasswords?{ENCODED}"),
            ),
            (
                "https://10.0.0.1:6443/apis/ecsvnc.io/v2/vncpasswords?limit=1",
                format!("https://10.0.0.1:6443/apis/ecsvnc.io/v2/vncpasswords?limit=1&{ENCODED}"),
            ),
        ] {
            assert_eq!(rewrite(Method::GET, uri), expected, "{uri}");
        }
    }

    #[test]
    fn everything_else_passes_unchanged() {
        for (method, uri) in [
            // One object, its status, writes.
            (
                Method::GET,
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords/p",
            ),
            (
                Method::GET,
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords/p/status",
            ),
            (
                Method::PATCH,
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords/p/status",
            ),
            (
                Method::POST,
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords",
            ),
            (
                Method::DELETE,
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords",
            ),
            // Other groups and resources, even with our resource's name.
            (Method::GET, "/api/v1/namespaces/n/secrets?limit=500"),
            (Method::GET, "/apis/other.io/v1/vncpasswords?limit=500"),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/n/leases?watch=true",
            ),
            (Method::GET, "/apis/events.k8s.io/v1/namespaces/n/events"),
            // A namespace called like our resource, and discovery.
            (Method::GET, "/api/v1/namespaces/vncpasswords"),
            (Method::GET, "/apis/ecsvnc.io/v1alpha1"),
            (Method::GET, "/apis/ecsvnc.io"),
        ] {
            assert_eq!(rewrite(method.clone(), uri), uri, "{method} {uri}");
        }
    }

    #[test]
    fn a_selector_already_there_is_kept() {
        let uri = "/apis/ecsvnc.io/v1alpha1/vncpasswords?shardSelector=x&limit=1";
        assert_eq!(rewrite(Method::GET, uri), uri);
    }

    /// The whole path: a request built by kube's `Api` goes through the service with the selector,
    /// and one that must not be touched goes through as it was.
    #[tokio::test]
    async fn requests_made_through_the_client_carry_it() {
        use std::sync::Mutex;
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let record = seen.clone();
        let inner = Client::new(
            tower::service_fn(move |request: Request<Body>| {
                record.lock().unwrap().push(request.uri().to_string());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(200)
                            .body(Body::from(
                                br#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#
                                    .to_vec(),
                            ))
                            .unwrap(),
                    )
                }
            }),
            "default",
        );
        let client = sharded_client(inner, SELECTOR.to_string());
        let api: Api<VncPassword> = Api::namespaced(client.clone(), "n");
        api.list(&ListParams::default().limit(7)).await.unwrap();
        let _ = api.get_opt("p").await;
        let leases: Api<Lease> = Api::namespaced(client, "n");
        leases.list(&ListParams::default()).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                format!("/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords?&limit=7&{ENCODED}"),
                "/apis/ecsvnc.io/v1alpha1/namespaces/n/vncpasswords/p".to_string(),
                "/apis/coordination.k8s.io/v1/namespaces/n/leases?".to_string(),
            ]
        );
    }
}
