//! `ecs-simulator`: a fake Alibaba Cloud ECS endpoint for tests, the local demo and benchmarks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use ecs_vnc_controller::simulator::{AccessKeyConfig, InstanceConfig, Simulator, SimulatorConfig};

#[derive(Debug, Parser)]
#[command(
    name = "ecs-simulator",
    version,
    about = "A fake Alibaba Cloud ECS RPC endpoint (signature V1) with an admin API under /_simulator/"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port. Keep it on loopback: the admin API has no
    /// authentication.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Also write the bound port to this file (atomically).
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
    /// ID:SECRET[:SECURITY_TOKEN] (repeatable); a key with a token is temporary (STS).
    #[arg(long = "access-key", value_name = "ID:SECRET[:TOKEN]")]
    access_keys: Vec<AccessKeyConfig>,
    /// ID,REGION,io-optimized|non-io-optimized[,STATUS] (repeatable; STATUS defaults to Running).
    #[arg(long = "instance", value_name = "ID,REGION,KIND[,STATUS]")]
    instances: Vec<InstanceConfig>,
    /// YAML or JSON file with accessKeys, instances, faults and rebootSeconds (flags add to it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn load(args: &Args) -> Result<SimulatorConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
            serde_yaml::from_str::<SimulatorConfig>(&text)
                .map_err(|e| format!("--config {}: {e}", path.display()))?
        }
        None => SimulatorConfig::default(),
    };
    config.access_keys.extend(args.access_keys.iter().cloned());
    config.instances.extend(args.instances.iter().cloned());
    config.validate()?;
    Ok(config)
}

/// Writes beside the target, then renames: a reader sees no file or the whole port, never a part.
fn write_port_file(path: &Path, port: u16) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if config.access_keys.is_empty() {
        eprintln!(
            "warning: no --access-key given: every call will fail with InvalidAccessKeyId.NotFound"
        );
    }
    let running = match Simulator::start(args.listen, config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", running.url());
    tracing::info!(
        url = %running.url(),
        instances = running.state().instances().len(),
        "ECS simulator serving; admin API under /_simulator/ (no authentication)"
    );
    if let Some(path) = &args.port_file
        && let Err(e) = write_port_file(path, running.addr().port())
    {
        eprintln!("error: cannot write --port-file {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}
