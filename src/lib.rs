//! ecs-vnc-controller: manage the VNC passwords of Alibaba Cloud ECS instances from Kubernetes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod ecs;
pub mod password;
pub mod secret;
pub mod simulator;
