//! `ecs-vnc-controller modify-vnc-password`: set one instance's VNC password and say whether a
//! reboot is needed for it to take effect.
//!
//! Exit codes: 0 applied (and `reboot-required` known); 1 ECS or the network refused; 2 bad input
//! (nothing was sent); 3 applied, but whether a reboot is required could not be learned.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::EcsArgs;
use crate::ecs::{Credentials, EcsClient, EcsError};
use crate::password::VncPassword;

#[derive(Debug, Clone, Args)]
pub struct ModifyArgs {
    /// Region of the instance, e.g. cn-hangzhou.
    #[arg(long, env = "ECS_VNC_REGION_ID", value_name = "REGION")]
    pub region_id: String,
    /// ECS instance ID, e.g. i-bp67acfmxazb4ph0001.
    #[arg(long, env = "ECS_VNC_INSTANCE_ID", value_name = "ID")]
    pub instance_id: String,
    /// File whose first line is the new password; without it, the first line of standard input.
    /// (Never on the command line: argv is visible to every user of the machine.)
    #[arg(long, env = "ECS_VNC_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub ecs: EcsArgs,
}

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_REBOOT_UNKNOWN: u8 = 3;

pub async fn run(args: ModifyArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match execute(&args, &mut out, &mut err).await {
        Ok(code) => ExitCode::from(code),
        Err(code) => ExitCode::from(code),
    }
}

fn read_password(args: &ModifyArgs) -> Result<String, String> {
    let mut line = String::new();
    match &args.password_file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
            std::io::BufReader::new(file)
                .read_line(&mut line)
                .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("New VNC password (6 letters or digits), then Enter: ");
            }
            stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        }
    }
    Ok(line)
}

async fn execute(args: &ModifyArgs, out: &mut impl Write, err: &mut impl Write) -> Result<u8, u8> {
    let bad_input = |err: &mut dyn Write, message: &str| {
        let _ = writeln!(err, "error: {message}");
        EXIT_BAD_INPUT
    };
    let raw = read_password(args).map_err(|m| bad_input(err, &m))?;
    let password = VncPassword::parse(&raw)
        .map_err(|e| bad_input(err, &format!("{e}; nothing was sent to ECS")))?;
    drop(raw);
    let credentials = Credentials::from_env().map_err(|e| bad_input(err, &e.to_string()))?;
    let config = args.ecs.client_config().map_err(|m| bad_input(err, &m))?;
    let client = EcsClient::new(config).map_err(|e| bad_input(err, &e.to_string()))?;
    crate::ecs::client::validate_region(&args.region_id)
        .map_err(|e| bad_input(err, &e.to_string()))?;

    let request_id = client
        .modify_instance_vnc_passwd(&credentials, &args.region_id, &args.instance_id, &password)
        .await
        .map_err(|e| {
            report(err, &e);
            EXIT_FAILED
        })?
        .request_id;
    let _ = writeln!(out, "RequestId: {request_id}");
    let _ = out.flush();

    match client
        .describe_instances(
            &credentials,
            &args.region_id,
            std::slice::from_ref(&args.instance_id),
        )
        .await
    {
        Ok(instances) => match instances.iter().find(|i| i.instance_id == args.instance_id) {
            Some(instance) => {
                let _ = writeln!(out, "reboot-required: {}", !instance.io_optimized);
                if !instance.io_optimized {
                    let _ = writeln!(
                        err,
                        "note: {} is not I/O-optimized; the new password takes effect after the instance restarts (console or RebootInstance)",
                        args.instance_id
                    );
                }
                Ok(0)
            }
            None => {
                let _ = writeln!(out, "reboot-required: unknown");
                let _ = writeln!(
                    err,
                    "warning: the password was applied, but DescribeInstances did not return {}",
                    args.instance_id
                );
                Err(EXIT_REBOOT_UNKNOWN)
            }
        },
        Err(e) => {
            let _ = writeln!(out, "reboot-required: unknown");
            let _ = writeln!(
                err,
                "warning: the password was applied, but DescribeInstances failed:"
            );
            report(err, &e);
            Err(EXIT_REBOOT_UNKNOWN)
        }
    }
}

/// Prints an ECS failure for a person: code, message, RequestId, and on a signature mismatch both
/// strings to sign (secrets masked) so they can be compared.
fn report(err: &mut impl Write, error: &EcsError) {
    match error {
        EcsError::Api {
            action,
            error,
            client_string_to_sign,
        } => {
            let _ = writeln!(
                err,
                "error: ECS refused {action} (HTTP {})",
                error.http_status
            );
            let _ = writeln!(err, "  Code: {}", error.code);
            let _ = writeln!(err, "  Message: {}", error.message);
            let _ = writeln!(
                err,
                "  RequestId: {}",
                error.request_id.as_deref().unwrap_or("none")
            );
            if let Some(recommend) = &error.recommend {
                let _ = writeln!(err, "  Recommend: {recommend}");
            }
            match (client_string_to_sign, error.server_canonical_request()) {
                // Signature V3: the string to sign is a hash; the canonical requests are what
                // can be compared, line by line.
                (Some(client), server) if client.contains('\n') => {
                    let _ = writeln!(err, "  client canonical request:\n{}", indent(client));
                    let _ = writeln!(
                        err,
                        "  server canonical request:\n{}",
                        server.map_or_else(|| "    (not given)".to_string(), indent)
                    );
                }
                (Some(client), _) => {
                    let _ = writeln!(err, "  client string to sign: {client}");
                    let _ = writeln!(
                        err,
                        "  server string to sign: {}",
                        error.server_string_to_sign().unwrap_or("(not given)")
                    );
                }
                (None, _) => {}
            }
        }
        other => {
            let _ = writeln!(err, "error: {other}");
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
