//! The controller's Kubernetes client: kube's own layers (base URI, authentication and its token
//! refresh, impersonation and extra headers, kube's retry of 429/503/504) over a hyper client that
//! speaks HTTP/2 when the API server offers it (ALPN), as client-go does.
//!
//! kube-client 5 builds an HTTP/1.1-only client (kube-rs/kube#1923): each concurrent request has a
//! TCP and TLS connection of its own, with hyper's and rustls' buffers, and keeps it idle for 90 s
//! afterwards. With `--concurrency` reconciles each reading a Secret and writing a status, that
//! was a few hundred connections at a wave's peak. Over HTTP/2 they are streams of one connection
//! (the API server allows 250 at once by default; hyper queues the rest). Dead connections are
//! found by HTTP/2 pings, with client-go's timings (a ping after 30 s without a frame, 15 s for
//! its answer).
//!
//! Whether the API server speaks HTTP/2 is asked once, not assumed: one `GET /version` offering
//! both protocols. When it answers over HTTP/2 the client is HTTP/2-only, so that hyper opens one
//! connection and every request waits for it (with both protocols offered, each request of a burst
//! would open a connection while the first is still in its TLS handshake: 77 of them in the
//! benchmark's wave). Otherwise, or when the probe finds no answer, the client offers both on
//! each connection, as the probe did. The answer holds for the process: an API server that stops
//! speaking HTTP/2 later (a load balancer moving it to a backend without it) fails its requests
//! until the controller restarts.
//!
//! Configurations this does not cover get kube's own client (HTTP/1.1): a proxy, or an exec plugin
//! (its certificate's expiry is kube's to track). The connection timeouts are kube's (connect,
//! read, write: hyper-timeout, as kube's own client).

use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody, retry::RetryPolicy};
use kube::{Client, Config};
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// What a [`ClientBuilder`] from [`builder`] wraps: the same service type as kube's own builder.
pub type Service = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// client-go's HTTP/2 health check: a ping after this long without a frame ...
const PING_AFTER: Duration = Duration::from_secs(30);
/// ... and the connection is dropped when its answer takes longer than this.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client from `config` (see the module's documentation).
pub async fn client(config: Config) -> Result<Client, kube::Error> {
    Ok(builder(config).await?.build())
}

/// How long the probe waits for the API server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`client`] as a builder, for callers that add a layer of their own (tests record requests).
pub async fn builder(config: Config) -> Result<ClientBuilder<Service>, kube::Error> {
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        return ClientBuilder::try_from(config);
    }
    let probe = Request::get("/version")
        .body(Body::empty())
        .map_err(kube::Error::HttpError)?;
    let h2_only = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, stack(&config, false)?.oneshot(probe)).await,
        Ok(Ok(answer)) if answer.version() == http::Version::HTTP_2
    );
    Ok(ClientBuilder::new(
        stack(&config, h2_only)?,
        config.default_namespace.clone(),
    ))
}

/// kube's layers over hyper's client, offering HTTP/2 and HTTP/1.1 (ALPN), or HTTP/2 only.
fn stack(config: &Config, h2_only: bool) -> Result<Service, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into().map_err(|e| {
                kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e))
            })?,
        )),
        None => tls,
    };
    let mut connector = hyper_timeout::TimeoutConnector::new(
        tls.enable_http1().enable_http2().wrap_connector(http),
    );
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(h2_only)
        .http2_keep_alive_interval(PING_AFTER)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .build(connector);
    Ok(ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper)
        .map_response(|response: Response<hyper::body::Incoming>| {
            response.map(|body| {
                Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>
            })
        })
        .boxed())
}
