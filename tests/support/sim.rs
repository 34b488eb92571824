//! The ECS simulator, in-process, as the tests use it.
#![allow(dead_code)]

use std::net::SocketAddr;

use ecs_vnc_controller::simulator::{
    AccessKeyConfig, InstanceConfig, RunningSimulator, Simulator, SimulatorConfig,
};

/// A simulator configuration with one access key and Running instances (id, io_optimized) in
/// cn-hangzhou; the caller sets reboot times and faults.
pub fn fleet(
    key: &str,
    secret: &str,
    instances: impl IntoIterator<Item = (String, bool)>,
) -> SimulatorConfig {
    SimulatorConfig {
        access_keys: vec![AccessKeyConfig {
            id: key.into(),
            secret: secret.into(),
            security_token: None,
            account_id: None,
        }],
        instances: instances
            .into_iter()
            .map(|(id, io_optimized)| InstanceConfig {
                id,
                region: "cn-hangzhou".into(),
                io_optimized,
                status: "Running".into(),
                tags: Default::default(),
            })
            .collect(),
        ..Default::default()
    }
}

pub struct Sim {
    running: RunningSimulator,
}

impl Sim {
    /// Instances (id, io_optimized) in cn-hangzhou; keys (id, secret, token).
    pub async fn start(instances: &[(&str, bool)], keys: &[(&str, &str, Option<&str>)]) -> Self {
        let config = SimulatorConfig {
            access_keys: keys
                .iter()
                .map(|(id, secret, token)| AccessKeyConfig {
                    id: id.to_string(),
                    secret: secret.to_string(),
                    security_token: token.map(str::to_string),
                    account_id: None,
                })
                .collect(),
            instances: instances
                .iter()
                .map(|(id, io)| InstanceConfig {
                    id: id.to_string(),
                    region: "cn-hangzhou".into(),
                    io_optimized: *io,
                    status: "Running".into(),
                    tags: Default::default(),
                })
                .collect(),
            ..Default::default()
        };
        let running = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .expect("start the ECS simulator");
        Self { running }
    }

    /// A simulator of any configuration (an STS, faults, ...).
    pub async fn from_config(config: SimulatorConfig) -> Self {
        let running = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .expect("start the ECS simulator");
        Self { running }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn calls(&self, action: &str) -> usize {
        self.running.state().calls(action)
    }

    pub fn calls_with_code(&self, action: &str, code: &str) -> usize {
        self.running.state().calls_with_code(action, code)
    }

    pub fn total_calls(&self) -> usize {
        self.running.state().total_calls()
    }

    pub fn set_password(&self, id: &str) -> Option<String> {
        self.running
            .state()
            .instance(id)
            .and_then(|i| i.set_password)
    }

    pub fn effective_password(&self, id: &str) -> Option<String> {
        self.running
            .state()
            .instance(id)
            .and_then(|i| i.effective_password)
    }

    pub fn console_reboot(&self, id: &str) {
        self.running
            .state()
            .reboot(None, id)
            .unwrap_or_else(|e| panic!("console reboot of {id}: {e:?}"));
    }

    pub fn set_status(&self, id: &str, status: &str) {
        self.running
            .state()
            .set_status(id, status)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn throttle_next(&self, n: u32) {
        self.running.state().throttle_next(n, None);
    }

    pub fn set_error_rate(&self, rate: f64) {
        self.running.state().set_error_rate(rate);
    }

    pub fn state(&self) -> &std::sync::Arc<ecs_vnc_controller::simulator::SimState> {
        self.running.state()
    }

    /// Answers the next `count` calls of `action` with `code` (HTTP `status`).
    pub fn fail_next(&self, action: &str, code: &str, status: u16, count: u32) {
        self.running
            .state()
            .fail_next(ecs_vnc_controller::simulator::FailNext {
                action: action.into(),
                code: code.into(),
                status,
                count,
            });
    }

    /// Changes the fault configuration in place.
    pub fn with_faults(
        &self,
        change: impl FnOnce(&mut ecs_vnc_controller::simulator::FaultConfig),
    ) {
        let state = self.running.state();
        let mut faults = state.faults();
        change(&mut faults);
        state.set_faults(faults);
    }

    pub fn add_instance(&self, id: &str, io_optimized: bool) {
        self.running.state().add_instance(InstanceConfig {
            id: id.into(),
            region: "cn-hangzhou".into(),
            io_optimized,
            status: "Running".into(),
            tags: Default::default(),
        });
    }

    /// Adds a Running instance in cn-hangzhou carrying `tags` (key, value).
    pub fn add_tagged_instance(&self, id: &str, io_optimized: bool, tags: &[(&str, &str)]) {
        self.running.state().add_instance(InstanceConfig {
            id: id.into(),
            region: "cn-hangzhou".into(),
            io_optimized,
            status: "Running".into(),
            tags: tag_map(tags),
        });
    }

    /// Replaces the tags of instance `id` (an empty slice removes them all), as the console would.
    pub fn set_tags(&self, id: &str, tags: &[(&str, &str)]) {
        self.running
            .state()
            .set_tags(id, tag_map(tags))
            .unwrap_or_else(|e| panic!("set the tags of {id}: {e}"));
    }

    /// The tags instance `id` carries now.
    pub fn tags(&self, id: &str) -> std::collections::BTreeMap<String, String> {
        self.running
            .state()
            .instance(id)
            .map(|i| i.tags)
            .unwrap_or_default()
    }

    /// Successful calls of `action` (`Success` answers only).
    pub fn successes(&self, action: &str) -> usize {
        self.calls_with_code(action, "Success")
    }

    pub fn reboot_count(&self, id: &str) -> u32 {
        self.running
            .state()
            .instance(id)
            .map(|i| i.reboot_count)
            .unwrap_or_default()
    }
}

fn tag_map(tags: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    tags.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
