//! Command-line front ends: the one-shot `modify-vnc-password` tool and shared client flags.

pub mod modify;

use std::time::Duration;

use clap::Args;

use crate::ecs::retry::RetryPolicy;
use crate::ecs::{ClientConfig, SignatureVersion};

/// How to reach ECS; shared by every subcommand that calls it.
#[derive(Debug, Clone, Args)]
pub struct EcsArgs {
    /// Where ECS is: a URL with `{region}` in it is a template (e.g.
    /// https://ecs-vpc.{region}.aliyuncs.com), any other one base URL for all regions (a simulator;
    /// http:// only to loopback, see --allow-insecure-http). Default: the endpoint Alibaba's ECS SDK
    /// chooses for the region.
    #[arg(long, env = "ECS_ENDPOINT", value_name = "URL")]
    pub ecs_endpoint: Option<String>,
    /// ECS calls per second per account, region and action, as ECS counts them: a number for every
    /// action, or Action=N pairs (e.g. ModifyInstanceVncPasswd=20,DescribeInstances=50,RebootInstance=10;
    /// a plain number among them sets the other actions). The account's limit is shared with the
    /// console and every other tool. Throttling answers slow a bucket down; it recovers gradually.
    #[arg(long, default_value = "10", value_name = "QPS")]
    pub ecs_qps: crate::ecs::ratelimit::QpsLimits,
    /// Calls one bucket (account, region, action) may send at once before its rate applies.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub ecs_burst: u32,
    /// Retries of throttled, transient (5xx, network) and stale-signature failures per call.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub ecs_max_retries: u32,
    /// Seconds to wait for a TCP/TLS connection.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub ecs_connect_timeout: f64,
    /// Seconds one HTTP attempt may take in all.
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS")]
    pub ecs_timeout: f64,
    /// Request signature: v1 (HMAC-SHA1 RPC signature, "V2" in Alibaba's newer documents) or v3
    /// (ACS3-HMAC-SHA256, which Alibaba recommends).
    #[arg(long, env = "ECS_SIGNATURE", value_enum, default_value_t = SignatureVersion::V1)]
    pub ecs_signature: SignatureVersion,
    /// Allow plain http:// for --ecs-endpoint (and --sts-endpoint) to a host that is not loopback
    /// (127.0.0.0/8, ::1, localhost are always allowed): requests carry signatures, STS tokens and
    /// VNC passwords, so only for a test endpoint you trust.
    #[arg(long, env = crate::ecs::transport::ALLOW_INSECURE_HTTP_ENV)]
    pub allow_insecure_http: bool,
}

impl EcsArgs {
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let seconds = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("--{name} must be a positive number of seconds"))
            }
        };
        Ok(ClientConfig {
            endpoint: self.ecs_endpoint.clone().filter(|e| !e.trim().is_empty()),
            connect_timeout: seconds("ecs-connect-timeout", self.ecs_connect_timeout)?,
            request_timeout: seconds("ecs-timeout", self.ecs_timeout)?,
            qps: self.ecs_qps.clone(),
            burst: self.ecs_burst,
            retry: RetryPolicy {
                max_retries: self.ecs_max_retries,
                ..RetryPolicy::default()
            },
            signature: self.ecs_signature,
            allow_insecure_http: self.allow_insecure_http,
            ..ClientConfig::default()
        })
    }
}
