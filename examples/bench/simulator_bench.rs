//! Throughput of the ECS simulator: signed requests per second it verifies and answers on ONE core.
//!
//!     cargo run --release --example simulator_bench [-- REQUESTS CONCURRENCY]
//!
//! The simulator runs on a single-threaded runtime in its own OS thread (one core); the load comes
//! from another thread over loopback with keep-alive connections, each request freshly signed
//! (alternating DescribeInstances and ModifyInstanceVncPasswd). Prints requests/s and latency
//! percentiles. No injected latency or faults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecs_vnc_controller::ecs::signer;
use ecs_vnc_controller::secret::SecretString;
use ecs_vnc_controller::simulator::{AccessKeyConfig, InstanceConfig, Simulator, SimulatorConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);

    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let config = SimulatorConfig {
                access_keys: vec![AccessKeyConfig {
                    id: "bench".into(),
                    secret: "bench-secret".into(),
                    security_token: None,
                    account_id: None,
                }],
                instances: (0..100u32)
                    .map(|i| InstanceConfig {
                        id: format!("i-bench{i:08}"),
                        region: "cn-hangzhou".into(),
                        io_optimized: i.is_multiple_of(2),
                        status: "Running".into(),
                        tags: Default::default(),
                    })
                    .collect(),
                ..Default::default()
            };
            let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
                .await
                .expect("start");
            addr_tx.send(sim.addr()).expect("send addr");
            std::future::pending::<()>().await;
        });
    });
    let addr = addr_rx.recv().expect("simulator address");

    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (elapsed, mut latencies, failures) = rt.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .expect("client");
        let url = Arc::new(format!("http://{addr}/"));
        let secret = Arc::new(SecretString::new("bench-secret"));
        // Warm up connections.
        for _ in 0..concurrency {
            let _ = http
                .post(url.as_str())
                .body(request(0, &secret))
                .send()
                .await;
        }
        let started = Instant::now();
        let per_task = total / concurrency;
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let (http, url, secret) = (http.clone(), url.clone(), secret.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per_task);
                    let mut failed = 0usize;
                    for i in 0..per_task {
                        let body = request(t * per_task + i, &secret);
                        let sent = Instant::now();
                        match http
                            .post(url.as_str())
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                            }
                            _ => failed += 1,
                        }
                        lat.push(sent.elapsed());
                    }
                    (lat, failed)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(total);
        let mut failures = 0;
        for t in tasks {
            let (lat, failed) = t.await.expect("task");
            all.extend(lat);
            failures += failed;
        }
        (started.elapsed(), all, failures)
    });
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len() - 1))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let n = latencies.len();
    println!(
        "ecs-simulator throughput (server on 1 core, {concurrency} keep-alive connections, signed requests)"
    );
    println!("requests:   {n} ({failures} failed)");
    println!("elapsed:    {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput: {:.0} requests/s",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency:    p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}

fn request(i: usize, secret: &SecretString) -> String {
    let nonce = uuid::Uuid::new_v4().to_string();
    let timestamp = signer::format_timestamp(jiff::Timestamp::now());
    let instance = format!("i-bench{:08}", i % 100);
    let mut params: Vec<(&str, &str)> = vec![
        ("Version", "2014-05-26"),
        ("Format", "JSON"),
        ("AccessKeyId", "bench"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        ("Timestamp", &timestamp),
        ("RegionId", "cn-hangzhou"),
    ];
    let ids;
    if i.is_multiple_of(2) {
        ids = format!("[\"{instance}\"]");
        params.extend([
            ("Action", "DescribeInstances"),
            ("InstanceIds", ids.as_str()),
        ]);
    } else {
        params.extend([
            ("Action", "ModifyInstanceVncPasswd"),
            ("InstanceId", instance.as_str()),
            ("VncPassword", "Bench1"),
        ]);
    }
    let signed = signer::sign("POST", params.iter().copied(), secret);
    signer::encode_with_signature(params.iter().copied(), &signed.signature)
}
