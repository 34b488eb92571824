//! ecs-vnc-controller: manage the VNC passwords of Alibaba Cloud ECS instances from Kubernetes.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod ecs;
pub mod http;
pub mod kube_http;
pub mod leader;
pub mod metrics;
pub mod password;
pub mod secret;
pub mod shard;
pub mod simulator;
pub mod telemetry;
