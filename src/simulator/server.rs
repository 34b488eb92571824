//! HTTP: the ECS RPC endpoint at `/` and the admin API under `/_simulator/`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{FaultConfig, InstanceConfig};
use super::render::{self, Format};
use super::state::{CallRecord, EcsFault, SimState, TagFilter};
use super::verify::{V3Request, authenticate, authenticate_v3, is_v3, param};
use crate::ecs::signer_v3;

const MAX_BODY: usize = 1024 * 1024;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/", any(ecs))
        .route("/sts", post(super::identity::sts))
        .route("/sts/", post(super::identity::sts))
        .route("/latest/api/token", put(super::identity::metadata_token))
        .route(
            "/latest/meta-data/ram/security-credentials/",
            get(super::identity::metadata_roles),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/{role}",
            get(super::identity::metadata_credentials),
        )
        .route(
            "/_simulator/instances",
            get(list_instances).post(add_instance),
        )
        .route("/_simulator/instances/{id}", get(get_instance))
        .route("/_simulator/instances/{id}/status", post(set_status))
        .route("/_simulator/instances/{id}/tags", put(set_tags))
        .route("/_simulator/instances/{id}/reboot", post(console_reboot))
        .route("/_simulator/calls", get(calls).delete(reset_calls))
        .route("/_simulator/faults", get(get_faults).put(put_faults))
        .route("/_simulator/faults/throttle", post(throttle))
        .route("/_simulator/faults/fail", post(fail_next))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            date_header,
        ))
        .with_state(state)
}

/// Every answer carries `Date` from the simulator's clock, as ECS's carry ECS's: a test that moves
/// the simulator's clock moves what its answers say the time is.
async fn date_header(State(state): State<Arc<SimState>>, mut response: Response) -> Response {
    let date = crate::ecs::clock::format_http_date(state.now());
    if let Ok(value) = header::HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
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

/// A request as received: its method, headers (names lower-cased), query parameters, body and the
/// parameters of both (the form body counts for a POST only).
struct Incoming {
    method: Method,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: Bytes,
    params: Vec<(String, String)>,
}

/// Reads the request: the query, plus the form body of a POST (1 MiB at most).
async fn read_request(request: Request) -> Result<Incoming, EcsFault> {
    let method = request.method().clone();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let query = parse_params(request.uri().query().unwrap_or_default().as_bytes())?;
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            EcsFault::new(
                400,
                "InvalidParameter",
                "The request body is larger than 1 MiB or could not be read.",
            )
        })?;
    let mut params = query.clone();
    if method == Method::POST {
        params.extend(parse_params(&body)?);
    }
    Ok(Incoming {
        method,
        headers,
        query,
        body,
        params,
    })
}

async fn ecs(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let incoming = match read_request(request).await {
        Ok(p) => p,
        Err(fault) => {
            state.record(record(
                &state,
                "(unparsable)",
                fault.status,
                fault.code,
                Call::default(),
            ));
            return reply(
                Format::Xml,
                fault.status,
                render::error(Format::Xml, &fault, &render::request_id()),
            );
        }
    };
    let params = &incoming.params;
    let v3 = is_v3(&incoming.headers, params);
    let header = |name: &str| {
        incoming
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // V1 names the format in `Format` (XML by default); V3 requests (which have no `Format`, and
    // `accept: application/json` from Alibaba's SDK) are answered in JSON unless they ask for XML.
    let format = match param(params, "Format") {
        None if v3 => Format::Json,
        format => Format::from_param(format),
    };
    let (action, key) = if v3 {
        let credential = header("authorization")
            .and_then(signer_v3::parse_authorization)
            .map(|a| a.credential);
        (
            header(signer_v3::HEADER_ACTION).unwrap_or_default().trim(),
            credential.or(header(signer_v3::HEADER_ACCESS_KEY_ID)),
        )
    } else {
        (
            param(params, "Action").unwrap_or_default(),
            param(params, "AccessKeyId"),
        )
    };
    let call = Call {
        key,
        instance: param(params, "InstanceId"),
        password: param(params, "VncPassword"),
        signature: Some(if v3 { "v3" } else { "v1" }),
    };
    let request_id = render::request_id();

    let plan = state.plan_faults();
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if plan.drop {
        state.record(record(&state, action, 0, "ConnectionDropped", call));
        return dropped();
    }
    let check = || {
        if v3 {
            authenticate_v3(
                &V3Request {
                    method: incoming.method.as_str(),
                    headers: &incoming.headers,
                    query: &incoming.query,
                    body: &incoming.body,
                },
                &state,
            )
        } else {
            authenticate(incoming.method.as_str(), params, &state)
        }
    };
    let result = match plan.error {
        Some(fault) => Err(fault),
        None => check()
            .and_then(|key_id| {
                if state.throttles(&key_id, action) {
                    Err(EcsFault::throttled())
                } else if let Some(fault) = state.injected_error(action) {
                    Err(fault)
                } else {
                    Ok(key_id)
                }
            })
            .and_then(|key_id| dispatch(&state, action, params, &request_id, &key_id)),
    };
    let (status, code) = match &result {
        Ok(_) => (200, "Success"),
        Err(fault) => (fault.status, fault.code),
    };
    tracing::debug!(action, code, status, v3, "simulated ECS call");
    state.record(record(&state, action, status, code, call));
    let throttled = code.starts_with("Throttling");
    let body = match result {
        Ok(fields) => render::success(format, action, fields),
        Err(fault) => render::error(format, &fault, &request_id),
    };
    let mut response = reply(format, status, body);
    if throttled {
        // As ECS does: when the window resets, in milliseconds.
        let faults = state.faults();
        let limit = faults.qps_per_api.or(faults.qps_per_access_key);
        let time_left = limit
            .filter(|q| *q > 0.0)
            .map_or(100, |q| (1000.0 / q).ceil() as u64);
        if let Ok(value) = header::HeaderValue::from_str(&format!(
            "Limit:{},Remain:0,TimeLeft:{time_left}",
            limit.unwrap_or(0.0)
        )) {
            response.headers_mut().insert("x-ratelimit-user-api", value);
        }
    }
    response
}

/// What the call log keeps of a request besides its action and outcome.
#[derive(Default, Clone, Copy)]
struct Call<'a> {
    key: Option<&'a str>,
    instance: Option<&'a str>,
    password: Option<&'a str>,
    signature: Option<&'static str>,
}

fn record(state: &SimState, action: &str, status: u16, code: &str, call: Call<'_>) -> CallRecord {
    CallRecord {
        time: state.now().to_string(),
        action: if action.is_empty() {
            "(none)".into()
        } else {
            action.into()
        },
        code: code.into(),
        http_status: status,
        access_key_id: call.key.map(str::to_string),
        instance_id: call.instance.map(str::to_string),
        vnc_password: call.password.map(str::to_string),
        signature: call.signature.map(str::to_string),
    }
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, EcsFault> {
    param(params, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| EcsFault::missing(name))
}

/// How a DescribeInstances call pages: after a `NextToken` (the instance ID it stands for), or by
/// page number.
enum Paging {
    Token { after: Option<String>, size: usize },
    Page { offset: usize, size: usize },
}

/// `MaxResults` of DescribeInstances: "Valid values: 1 to 100. Default value: if you do not specify
/// this parameter or if you set it to a value that is smaller than 10, the default value is 10; if
/// you set it to a value that is greater than 100, the default value is 100" (the DescribeInstances
/// reference, as Alibaba's SDK ecs-20140526/v7 carries it). Not a number: `InvalidParameter`.
fn max_results(params: &[(String, String)]) -> Result<usize, EcsFault> {
    match param(params, "MaxResults").filter(|v| !v.is_empty()) {
        None => Ok(10),
        Some(v) => v
            .parse::<i64>()
            .map(|n| n.clamp(10, 100) as usize)
            .map_err(|_| {
                EcsFault::new(
                    400,
                    "InvalidParameter",
                    "The specified parameter MaxResults is not valid.",
                )
            }),
    }
}

/// The `Tag.N.Key`/`Tag.N.Value` filters of DescribeInstances ("Valid values of N: 1 to 20"; the
/// deprecated lower-case `Tag.N.key`/`Tag.N.value` stand in when the documented spelling is
/// absent), per https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-describeinstances:
/// an N outside 1..=20 is `InvalidTagCount`; a tag without a key, or with an empty one, is
/// `InvalidTag.Mismatch` (both in that page's error codes; ListTagResources states that a key has
/// 1 to 128 characters and that a value alone is an error). An empty value is no value filter:
/// "if a parameter is empty, the filter does not take effect" (the same page).
fn tag_filters(params: &[(String, String)]) -> Result<Vec<TagFilter>, EcsFault> {
    const KEY: usize = 0;
    const KEY_LOWER: usize = 1;
    const VALUE: usize = 2;
    const VALUE_LOWER: usize = 3;
    let mut tags: BTreeMap<u32, [Option<&str>; 4]> = BTreeMap::new();
    for (name, value) in params {
        let Some((n, field)) = name
            .strip_prefix("Tag.")
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        let slot = match field {
            "Key" => KEY,
            "key" => KEY_LOWER,
            "Value" => VALUE,
            "value" => VALUE_LOWER,
            _ => continue,
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue; // not a Tag.N parameter: ignored like any unknown parameter
        }
        match n.parse::<u32>() {
            Ok(n @ 1..=20) => {
                let entry = tags.entry(n).or_default();
                entry[slot] = entry[slot].or(Some(value.as_str()));
            }
            _ => {
                return Err(EcsFault::new(
                    400,
                    "InvalidTagCount",
                    "The specified tags are beyond the permitted range.",
                ));
            }
        }
    }
    tags.into_values()
        .map(|tag| {
            let key = tag[KEY].or(tag[KEY_LOWER]).filter(|k| !k.is_empty());
            let value = tag[VALUE].or(tag[VALUE_LOWER]).filter(|v| !v.is_empty());
            key.map(|key| TagFilter {
                key: key.to_string(),
                value: value.map(str::to_string),
            })
            .ok_or_else(|| {
                EcsFault::new(
                    400,
                    "InvalidTag.Mismatch",
                    "The specified Tag.n.Key and Tag.n.Value are not match.",
                )
            })
        })
        .collect()
}

fn dispatch(
    state: &Arc<SimState>,
    action: &str,
    params: &[(String, String)],
    request_id: &str,
    access_key_id: &str,
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
            let tags = tag_filters(params)?;
            // NextToken/MaxResults (the current paging), else PageNumber/PageSize (being retired):
            // "When MaxResults or NextToken is specified, the PageSize and PageNumber request
            // parameters do not take effect" (DescribeInstances reference).
            let by_token =
                param(params, "MaxResults").is_some() || param(params, "NextToken").is_some();
            let paging = if by_token {
                let after = match param(params, "NextToken").filter(|t| !t.is_empty()) {
                    None => None,
                    // DescribeInstances' reference lists no code for a bad token; ECS's other
                    // NextToken APIs of 2014-05-26 answer this one (e.g. DescribeCloudAssistantStatus,
                    // https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-describecloudassistantstatus).
                    Some(token) => Some(state.token_after(token).ok_or_else(|| {
                        EcsFault::new(
                            400,
                            "InvalidParameter.NextToken",
                            "The specified parameter NextToken is not valid.",
                        )
                    })?),
                };
                Paging::Token {
                    after,
                    size: max_results(params)?,
                }
            } else {
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
                let size = number("PageSize", 10)?;
                if size > 100 {
                    return Err(EcsFault::new(
                        400,
                        "InvalidParameter",
                        "The specified parameter PageSize is not valid (1-100).",
                    ));
                }
                Paging::Page {
                    offset: (number("PageNumber", 1)? - 1).saturating_mul(size),
                    size,
                }
            };
            if ids
                .as_deref()
                .is_some_and(|ids| state.refuses_describe_of(ids))
            {
                return Err(EcsFault::new(
                    400,
                    "InvalidInstanceIds.Malformed",
                    "The specified parameter InstanceIds is not valid.",
                ));
            }
            let mut all = state.describe_matching(region, ids.as_deref(), &tags)?;
            if state.describe_denied(access_key_id) {
                // ECS's answer to an identity without ecs:DescribeInstances: nothing, not an error.
                all.clear();
            }
            let mut answer = json!({
                "RequestId": request_id,
                "TotalCount": all.len(),
            });
            let page = match paging {
                Paging::Token { after, size } => {
                    // Keyset paging on the instance ID: instances added or released between two
                    // pages shift nothing, so a caller sees no duplicate and misses none that
                    // stayed. The token is empty on the last page ("If NextToken is empty, no
                    // next page exists").
                    let rest: Vec<_> = all
                        .iter()
                        .filter(|i| after.as_deref().is_none_or(|a| i.id.as_str() > a))
                        .collect();
                    let page: Vec<_> = rest.iter().take(size).copied().collect();
                    answer["NextToken"] = json!(match page.last() {
                        Some(last) if rest.len() > size => state.next_token(&last.id),
                        _ => String::new(),
                    });
                    page
                }
                Paging::Page { offset, size } => {
                    answer["PageNumber"] = json!(offset / size + 1);
                    answer["PageSize"] = json!(size);
                    all.iter().skip(offset).take(size).collect()
                }
            };
            let items: Vec<Value> = page.into_iter().map(render::instance_json).collect();
            answer["Instances"] = json!({"Instance": items});
            Ok(answer)
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
            state.reboot(param(params, "RegionId"), id)?;
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

async fn list_instances(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.instances()).into_response()
}

async fn add_instance(
    State(state): State<Arc<SimState>>,
    axum::Json(config): axum::Json<InstanceConfig>,
) -> Response {
    if !super::state::STATUSES.contains(&config.status.as_str()) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown status {:?}; one of {:?}",
                config.status,
                super::state::STATUSES
            ),
        );
    }
    if config.id.is_empty() || config.region.is_empty() {
        return admin_error(StatusCode::BAD_REQUEST, "id and region are required".into());
    }
    if let Err(e) = super::config::validate_tags(&config.tags) {
        return admin_error(StatusCode::BAD_REQUEST, e);
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
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

/// Replaces the instance's tags with the JSON map (`{}` removes them all).
async fn set_tags(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    axum::Json(tags): axum::Json<BTreeMap<String, String>>,
) -> Response {
    if state.instance(&id).is_none() {
        return admin_error(StatusCode::NOT_FOUND, format!("no instance {id}"));
    }
    match state.set_tags(&id, tags) {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn console_reboot(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    match state.console_reboot(&id) {
        Ok(view) => axum::Json(view).into_response(),
        Err(fault) => admin_error(
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_REQUEST),
            format!("{}: {}", fault.code, fault.message),
        ),
    }
}

async fn get_instance(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    match state.instance(&id) {
        Some(view) => axum::Json(view).into_response(),
        None => admin_error(StatusCode::NOT_FOUND, format!("no instance {id}")),
    }
}

fn admin_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
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

async fn fail_next(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<super::config::FailNext>,
) -> Response {
    state.fail_next(body);
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
