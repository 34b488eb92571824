//! HTTP: the ECS RPC endpoint at `/` and the admin API under `/_simulator/`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{FaultConfig, InstanceConfig};
use super::render::{self, Format};
use super::state::{CallRecord, EcsFault, SimState};
use super::verify::{authenticate, param};

const MAX_BODY: usize = 1024 * 1024;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/", any(ecs))
        .route(
            "/_simulator/instances",
            get(list_instances).post(add_instance),
        )
        .route("/_simulator/instances/{id}/status", post(set_status))
        .route("/_simulator/instances/{id}/reboot", post(console_reboot))
        .route("/_simulator/calls", get(calls).delete(reset_calls))
        .route("/_simulator/faults", get(get_faults).put(put_faults))
        .route("/_simulator/faults/throttle", post(throttle))
        .with_state(state)
}

/// Decodes `a=b&c=d` (query or form body). `+` is a space, as servlet containers decode it;
/// anything that does not decode to UTF-8 is refused rather than guessed.
fn parse_params(raw: &[u8]) -> Result<Vec<(String, String)>, EcsFault> {
    let decode = |part: &[u8]| -> Result<String, EcsFault> {
        let spaced: Vec<u8> = part
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                EcsFault::new(
                    400,
                    "InvalidParameter",
                    "The request contains a parameter that is not valid UTF-8.",
                )
            })
    };
    raw.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = decode(it.next().unwrap_or_default())?;
            let value = decode(it.next().unwrap_or_default())?;
            Ok((name, value))
        })
        .collect()
}

fn reply(format: Format, status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

fn dropped() -> Response {
    // A body that fails at once makes the server abort the connection without an answer.
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped by fault injection",
        ))
    });
    Response::new(Body::from_stream(stream))
}

async fn ecs(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let faults = state.faults();
    let delay = faults.latency_ms
        + if faults.latency_jitter_ms > 0 {
            rand::random::<u64>() % (faults.latency_jitter_ms + 1)
        } else {
            0
        };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if faults.drop_rate > 0.0 && rand::random::<f64>() < faults.drop_rate {
        state.record(record(
            "(dropped)",
            "ConnectionDropped",
            0,
            None,
            None,
            None,
        ));
        return dropped();
    }

    let method = request.method().clone();
    let query = request
        .uri()
        .query()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let fault = EcsFault::new(
                400,
                "InvalidParameter",
                "The request body is larger than 1 MiB or could not be read.",
            );
            return reply(
                Format::Xml,
                400,
                render::error(Format::Xml, &fault, &render::request_id()),
            );
        }
    };
    let mut params = match parse_params(&query) {
        Ok(p) => p,
        Err(fault) => {
            return reply(
                Format::Xml,
                fault.status,
                render::error(Format::Xml, &fault, &render::request_id()),
            );
        }
    };
    if method == Method::POST {
        match parse_params(&body) {
            Ok(p) => params.extend(p),
            Err(fault) => {
                return reply(
                    Format::Xml,
                    fault.status,
                    render::error(Format::Xml, &fault, &render::request_id()),
                );
            }
        }
    }
    let format = Format::from_param(param(&params, "Format"));
    let action = param(&params, "Action").unwrap_or_default().to_string();
    let request_id = render::request_id();

    if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
        let fault = if rand::random::<bool>() {
            EcsFault::new(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
        } else {
            EcsFault::new(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error, exception or failure.",
            )
        };
        state.record(record(&action, fault.code, fault.status, None, None, None));
        return reply(
            format,
            fault.status,
            render::error(format, &fault, &request_id),
        );
    }

    let outcome = authenticate(method.as_str(), &params, &state).and_then(|key_id| {
        if state.throttles(&key_id, &action) {
            Err(EcsFault::throttled())
        } else {
            Ok(key_id)
        }
    });
    let key_id = param(&params, "AccessKeyId").map(str::to_string);
    let instance_id = param(&params, "InstanceId").map(str::to_string);
    let password = param(&params, "VncPassword").map(str::to_string);
    let result = outcome.and_then(|_| dispatch(&state, &action, &params, &request_id));
    let (status, body, code) = match result {
        Ok(fields) => (200, render::success(format, &action, fields), "Success"),
        Err(fault) => (
            fault.status,
            render::error(format, &fault, &request_id),
            fault.code,
        ),
    };
    tracing::debug!(action = %action, code, status, "simulated ECS call");
    state.record(record(&action, code, status, key_id, instance_id, password));
    reply(format, status, body)
}

fn record(
    action: &str,
    code: &str,
    status: u16,
    key: Option<String>,
    instance: Option<String>,
    password: Option<String>,
) -> CallRecord {
    CallRecord {
        time: jiff::Timestamp::now().to_string(),
        action: if action.is_empty() {
            "(none)".into()
        } else {
            action.into()
        },
        code: code.into(),
        http_status: status,
        access_key_id: key,
        instance_id: instance,
        vnc_password: password,
    }
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, EcsFault> {
    param(params, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| EcsFault::missing(name))
}

fn dispatch(
    state: &Arc<SimState>,
    action: &str,
    params: &[(String, String)],
    request_id: &str,
) -> Result<Value, EcsFault> {
    match action {
        "ModifyInstanceVncPasswd" => {
            let region = required(params, "RegionId")?;
            let id = required(params, "InstanceId")?;
            let password = required(params, "VncPassword")?;
            state.modify_vnc_password(region, id, password)?;
            Ok(json!({"RequestId": request_id}))
        }
        "DescribeInstances" => {
            let region = required(params, "RegionId")?;
            let ids: Option<Vec<String>> = match param(params, "InstanceIds") {
                None | Some("") => None,
                Some(text) => Some(serde_json::from_str(text).map_err(|_| {
                    EcsFault::new(
                        400,
                        "InvalidParameter",
                        "The specified parameter InstanceIds is not a JSON array of strings.",
                    )
                })?),
            };
            let number = |name: &str, default: usize| -> Result<usize, EcsFault> {
                param(params, name).map_or(Ok(default), |v| {
                    v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        EcsFault::new(
                            400,
                            "InvalidParameter",
                            format!("The specified parameter {name} is not valid."),
                        )
                    })
                })
            };
            let page = number("PageNumber", 1)?;
            let size = number("PageSize", 10)?;
            if size > 100 {
                return Err(EcsFault::new(
                    400,
                    "InvalidParameter",
                    "The specified parameter PageSize is not valid (1-100).",
                ));
            }
            let all = state.describe(region, ids.as_deref())?;
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1).saturating_mul(size))
                .take(size)
                .map(render::instance_json)
                .collect();
            Ok(json!({
                "RequestId": request_id,
                "TotalCount": all.len(),
                "PageNumber": page,
                "PageSize": size,
                "Instances": {"Instance": items},
            }))
        }
        "DescribeInstanceAttribute" => {
            let id = required(params, "InstanceId")?;
            let i = state
                .instance(id)
                .filter(|i| i.status != "Released")
                .ok_or_else(|| {
                    EcsFault::new(
                        404,
                        "InvalidInstanceId.NotFound",
                        "The specified InstanceId does not exist.",
                    )
                })?;
            Ok(json!({
                "RequestId": request_id,
                "InstanceId": i.id,
                "InstanceName": format!("sim-{}", i.id),
                "RegionId": i.region,
                "Status": i.status,
                "IoOptimized": if i.io_optimized { "optimized" } else { "none" },
            }))
        }
        "RebootInstance" => {
            let id = required(params, "InstanceId")?;
            if param(params, "DryRun") == Some("true") {
                return Err(EcsFault::new(
                    400,
                    "DryRunOperation",
                    "Request validation has been passed with DryRun flag set.",
                ));
            }
            let slow = state.reboot(param(params, "RegionId"), id)?;
            finish_later(state, id, slow);
            Ok(json!({"RequestId": request_id}))
        }
        "" => Err(EcsFault::missing("Action")),
        _ => Err(EcsFault::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

fn finish_later(state: &Arc<SimState>, id: &str, slow: bool) {
    if slow {
        let state = state.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(state.reboot_duration).await;
            state.finish_start(&id);
        });
    }
}

async fn list_instances(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.instances()).into_response()
}

async fn add_instance(
    State(state): State<Arc<SimState>>,
    axum::Json(config): axum::Json<InstanceConfig>,
) -> Response {
    if !super::state::STATUSES.contains(&config.status.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown status {:?}", config.status),
        )
            .into_response();
    }
    let id = config.id.clone();
    state.add_instance(config);
    (StatusCode::CREATED, axum::Json(state.instance(&id))).into_response()
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn set_status(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<StatusBody>,
) -> Response {
    match state.set_status(&id, &body.status) {
        Ok(()) => axum::Json(state.instance(&id)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn console_reboot(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    match state.reboot(None, &id) {
        Ok(slow) => {
            finish_later(&state, &id, slow);
            axum::Json(state.instance(&id)).into_response()
        }
        Err(fault) => (
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_REQUEST),
            format!("{}: {}", fault.code, fault.message),
        )
            .into_response(),
    }
}

async fn calls(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(json!({"counts": state.counts(), "calls": state.call_log()})).into_response()
}

async fn reset_calls(State(state): State<Arc<SimState>>) -> Response {
    state.reset_log();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.faults()).into_response()
}

async fn put_faults(
    State(state): State<Arc<SimState>>,
    axum::Json(faults): axum::Json<FaultConfig>,
) -> Response {
    state.set_faults(faults);
    axum::Json(state.faults()).into_response()
}

#[derive(Deserialize)]
struct ThrottleBody {
    count: u32,
    #[serde(default)]
    action: Option<String>,
}

async fn throttle(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<ThrottleBody>,
) -> Response {
    state.throttle_next(body.count, body.action.as_deref());
    axum::Json(state.faults()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_plus_and_percent_and_refuse_bad_utf8() {
        let p = parse_params(b"A=a+b&B=%2B%2F%3D&C=&D").unwrap();
        assert_eq!(
            p,
            vec![
                ("A".into(), "a b".into()),
                ("B".into(), "+/=".into()),
                ("C".into(), "".into()),
                ("D".into(), "".into())
            ]
        );
        assert!(parse_params(b"A=%FF%FE").is_err());
    }
}
