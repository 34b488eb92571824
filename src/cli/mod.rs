//! Command-line front ends: the one-shot `modify-vnc-password` tool and shared client flags.

pub mod legacy_env;
pub mod modify;

use std::fmt;
use std::str::FromStr;
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
    #[arg(long, env = "ECS_VNC_ECS_ENDPOINT", value_name = "URL")]
    pub ecs_endpoint: Option<String>,
    /// ECS calls per second per account, region and action, as ECS counts them: a number for every
    /// action, or Action=N pairs (e.g. ModifyInstanceVncPasswd=20,DescribeInstances=50,RebootInstance=10;
    /// a plain number among them sets the other actions). The account's limit is shared with the
    /// console and every other tool. Throttling answers slow a bucket down; it recovers gradually.
    #[arg(
        long,
        env = "ECS_VNC_ECS_QPS",
        default_value = "10",
        value_name = "QPS"
    )]
    pub ecs_qps: crate::ecs::ratelimit::QpsLimits,
    /// Calls one bucket (account, region, action) may send at once before its rate applies.
    #[arg(
        long,
        env = "ECS_VNC_ECS_BURST",
        default_value_t = 10,
        value_name = "N"
    )]
    pub ecs_burst: u32,
    /// Retries of throttled, transient (5xx, network) and stale-signature failures per call.
    /// Default: 4 for `modify-vnc-password`; 2 for `run`, which retries its objects with backoff
    /// instead and takes at most 2 (with a warning when this asks for more).
    #[arg(long, env = "ECS_VNC_ECS_MAX_RETRIES", value_name = "N")]
    pub ecs_max_retries: Option<u32>,
    /// How long to wait for a TCP/TLS connection (a Go duration; default 5s). With `run
    /// --leader-elect`, at most the lease duration minus the renew deadline (docs/operations/high-availability.md).
    #[arg(long, env = "ECS_VNC_ECS_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub ecs_connect_timeout: Option<FlagDuration>,
    /// How long one HTTP attempt may take in all (default 20s). With `run --leader-elect`, at most
    /// the lease duration minus the renew deadline (5s by default; docs/operations/high-availability.md).
    #[arg(long, env = "ECS_VNC_ECS_TIMEOUT", value_name = "DURATION")]
    pub ecs_timeout: Option<FlagDuration>,
    /// Request signature: v1 (HMAC-SHA1 RPC signature, "V2" in Alibaba's newer documents) or v3
    /// (ACS3-HMAC-SHA256, which Alibaba recommends).
    #[arg(long, env = "ECS_VNC_ECS_SIGNATURE", value_enum, default_value_t = SignatureVersion::V1)]
    pub ecs_signature: SignatureVersion,
    /// Allow plain http:// for --ecs-endpoint (and --sts-endpoint) to a host that is not loopback
    /// (127.0.0.0/8, ::1, localhost are always allowed): requests carry signatures, STS tokens and
    /// VNC passwords, so only for a test endpoint you trust.
    #[arg(long, env = crate::ecs::transport::ALLOW_INSECURE_HTTP_ENV)]
    pub allow_insecure_http: bool,
}

impl EcsArgs {
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const TIMEOUT: Duration = Duration::from_secs(20);

    pub fn client_config(&self) -> Result<ClientConfig, String> {
        Ok(ClientConfig {
            endpoint: self.ecs_endpoint.clone().filter(|e| !e.trim().is_empty()),
            connect_timeout: self
                .ecs_connect_timeout
                .map_or(Self::CONNECT_TIMEOUT, |d| d.0),
            request_timeout: self.ecs_timeout.map_or(Self::TIMEOUT, |d| d.0),
            qps: self.ecs_qps.clone(),
            burst: self.ecs_burst,
            retry: RetryPolicy {
                max_retries: self.ecs_max_retries.unwrap_or(4),
                ..RetryPolicy::default()
            },
            signature: self.ecs_signature,
            allow_insecure_http: self.allow_insecure_http,
            ..ClientConfig::default()
        })
    }
}

/// A duration flag: a Go duration (`15m`, `90s`, `1h30m`, `500ms`), as Kubernetes' own components
/// take them, longer than zero. A bare number is read as seconds, as these flags took them before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDuration(pub Duration);

impl FromStr for FlagDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let d = match s.parse::<f64>() {
            Ok(seconds) => Duration::try_from_secs_f64(seconds)
                .map_err(|_| format!("{s:?} is not a duration such as 15m, 90s or 500ms"))?,
            Err(_) => crate::controller::schedule::parse_go_duration(s)?,
        };
        if d.is_zero() {
            return Err(format!("{s:?}: must be longer than 0"));
        }
        Ok(FlagDuration(d))
    }
}

impl fmt::Display for FlagDuration {
    /// As Go prints a duration: `15m0s`, `1.5s`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < Duration::from_secs(1) {
            return write!(f, "{}ms", d.as_secs_f64() * 1e3);
        }
        let (h, m) = (d.as_secs() / 3600, d.as_secs() / 60 % 60);
        let s = d.as_secs_f64() - (h * 3600 + m * 60) as f64;
        match (h, m) {
            (0, 0) => write!(f, "{s}s"),
            (0, _) => write!(f, "{m}m{s}s"),
            _ => write!(f, "{h}h{m}m{s}s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of `run` and `modify-vnc-password` has an environment variable: `ECS_VNC_` and
    /// its name in capitals, but for the one Alibaba's SDKs name.
    #[test]
    fn every_flag_has_its_ecs_vnc_variable() {
        use clap::Args as _;
        let commands = [
            crate::controller::RunArgs::augment_args(clap::Command::new("run")),
            modify::ModifyArgs::augment_args(clap::Command::new("modify-vnc-password")),
        ];
        for command in commands {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
                let expected = match long {
                    "oidc-provider-arn" => "ALIBABA_CLOUD_OIDC_PROVIDER_ARN".to_string(),
                    _ => format!("ECS_VNC_{}", long.to_uppercase().replace('-', "_")),
                };
                assert_eq!(env, expected, "--{long}");
            }
        }
    }

    #[test]
    fn duration_flags_take_go_durations_and_bare_seconds() {
        let d = |s: &str| s.parse::<FlagDuration>().map(|d| d.0);
        assert_eq!(d("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("900"), Ok(Duration::from_secs(900)));
        assert_eq!(d("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "0s", "-5", "15 minutes", "", "5d", "NaN", "inf"] {
            assert!(d(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn a_duration_prints_as_go_prints_it_and_reads_back() {
        for (text, shown) in [
            ("15m", "15m0s"),
            ("1h30m", "1h30m0s"),
            ("500ms", "500ms"),
            ("90s", "1m30s"),
            ("2.5s", "2.5s"),
        ] {
            let d: FlagDuration = text.parse().unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<FlagDuration>(), Ok(d));
        }
    }
}
