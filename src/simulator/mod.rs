//! `ecs-simulator`: a fake ECS RPC endpoint strict enough that a client passing against it passes
//! against the real service — signature V1 checked exactly, the documented errors with their HTTP
//! statuses, reboot semantics of non-I/O-optimized instances — plus an admin API to inspect it and
//! inject faults. Used by the tests, the local demo and the benchmarks; never by production code.
//!
//! Layout: `config` (flags and files), `state` (instances, call log, nonces; pure transitions under
//! one short-held lock, time from an injectable clock), `faults` (latency, drops, 5xx, throttling),
//! `verify` (authentication), `render` (JSON/XML bodies), `server` (HTTP routes, the only I/O).
//! The admin API is described in `src/simulator/README.md`.

pub mod config;
pub mod faults;
pub mod identity;
pub mod render;
pub mod server;
pub mod state;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{
    AccessKeyConfig, DEFAULT_ACCOUNT_ID, FailNext, FaultConfig, InstanceConfig, MetadataConfig,
    RoleConfig, SimulatorConfig, StsConfig,
};
pub use state::{CallRecord, Clock, EcsFault, InstanceView, Principal, SimState};

pub struct Simulator;

impl Simulator {
    /// Binds `listen` and serves in the background until [`RunningSimulator::shutdown`].
    pub async fn start(
        listen: SocketAddr,
        config: SimulatorConfig,
    ) -> std::io::Result<RunningSimulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        Ok(Self::serve(listener, config))
    }

    pub fn serve(listener: tokio::net::TcpListener, config: SimulatorConfig) -> RunningSimulator {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let state = Arc::new(SimState::new(&config));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        RunningSimulator {
            addr,
            state,
            stop: Some(stop_tx),
            task,
        }
    }
}

pub struct RunningSimulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSimulator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}
