//! Simulator configuration: access keys, instances and faults, from flags or a YAML/JSON file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SimulatorConfig {
    pub access_keys: Vec<AccessKeyConfig>,
    pub instances: Vec<InstanceConfig>,
    pub faults: FaultConfig,
    /// Seconds a rebooted instance stays `Starting` before it is `Running` again (0: at once).
    pub reboot_seconds: f64,
    /// When above `rebootSeconds`, each reboot takes a random time between the two.
    pub reboot_seconds_max: f64,
    /// STS `AssumeRoleWithOIDC` at `/sts` (off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts: Option<StsConfig>,
    /// The instance metadata service's RAM role at `/latest/...` (off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataConfig>,
}

/// What the simulated STS trusts: one OIDC issuer (its JWKS given inline, e.g. a Kubernetes API
/// server's `/openid/v1/jwks`) and RAM roles that trust it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StsConfig {
    /// The tokens' `iss`.
    pub issuer: String,
    /// The issuer's JSON Web Key Set (`{"keys": [...]}`).
    pub jwks: serde_json::Value,
    /// The tokens' required `aud`.
    #[serde(default = "sts_audience")]
    pub audience: String,
    pub roles: Vec<RoleConfig>,
    /// Issued credentials live at most this long, below STS's 900 s minimum if need be (tests of
    /// refresh); absent: as asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u32>,
}

fn sts_audience() -> String {
    "sts.aliyuncs.com".into()
}

/// A RAM role and its trust policy: the OIDC provider ARN and the token subjects it admits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleConfig {
    pub arn: String,
    pub oidc_provider_arn: String,
    /// `sub` values admitted (`system:serviceaccount:<namespace>:<name>`); empty: any.
    #[serde(default)]
    pub subjects: Vec<String>,
}

/// The instance's RAM role as the metadata service hands it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataConfig {
    pub role_name: String,
    /// Lifetime of the credentials it hands out.
    #[serde(default = "metadata_duration")]
    pub duration_seconds: u32,
    /// The account the role (and so every key it hands out) belongs to; default
    /// [`DEFAULT_ACCOUNT_ID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// The account of keys (and of the metadata service's role) that name none, so that configs from
/// before `accountId` keep working: one simulated tenant.
pub const DEFAULT_ACCOUNT_ID: &str = "1000000000000001";

fn metadata_duration() -> u32 {
    3600
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub id: String,
    pub secret: String,
    /// When set, the key is temporary (STS) and every call must carry this `SecurityToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token: Option<String>,
    /// The Alibaba Cloud account the key belongs to: what STS `GetCallerIdentity` answers, and
    /// what the per-API limits (`qpsPerApi`) count by, as ECS does. Default [`DEFAULT_ACCOUNT_ID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

impl AccessKeyConfig {
    /// The key's account ([`DEFAULT_ACCOUNT_ID`] when the config names none).
    pub fn account(&self) -> &str {
        self.account_id.as_deref().unwrap_or(DEFAULT_ACCOUNT_ID)
    }
}

impl std::fmt::Debug for AccessKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyConfig")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl std::str::FromStr for AccessKeyConfig {
    type Err = String;
    /// `ID:SECRET[:SECURITY_TOKEN]` (the token may itself contain `:`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let id = parts.next().unwrap_or_default();
        let secret = parts.next().unwrap_or_default();
        if id.is_empty() || secret.is_empty() {
            return Err("expected ID:SECRET[:SECURITY_TOKEN]".into());
        }
        Ok(Self {
            id: id.into(),
            secret: secret.into(),
            security_token: parts.next().filter(|t| !t.is_empty()).map(str::to_string),
            account_id: None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceConfig {
    pub id: String,
    pub region: String,
    pub io_optimized: bool,
    /// `Pending`, `Running`, `Starting`, `Stopping`, `Stopped`, or `Released`.
    #[serde(default = "running")]
    pub status: String,
    /// The instance's ECS tags, key → value (none by default); see [`validate_tags`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Tags a resource may carry, as ECS limits them.
pub const MAX_TAGS_PER_INSTANCE: usize = 20;
/// Characters in a tag key, and in a tag value.
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 128;

/// ECS's rules for the tags a user sets on a resource (TagResources,
/// https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-tagresources):
/// at most 20 tags; a key is 1 to 128 characters, does not start with `aliyun` or `acs:` and
/// contains no `http://` or `https://`; a value is 0 to 128 characters, does not start with `acs:`
/// and contains no `http://` or `https://`.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > MAX_TAGS_PER_INSTANCE {
        return Err(format!(
            "{} tags: an instance carries at most {MAX_TAGS_PER_INSTANCE}",
            tags.len()
        ));
    }
    let has_url = |s: &str| s.contains("http://") || s.contains("https://");
    for (key, value) in tags {
        if key.is_empty()
            || key.chars().count() > MAX_TAG_KEY_CHARS
            || key.starts_with("aliyun")
            || key.starts_with("acs:")
            || has_url(key)
        {
            return Err(format!(
                "tag key {key:?}: 1 to {MAX_TAG_KEY_CHARS} characters, not starting with \"aliyun\" or \"acs:\", without http:// or https://"
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS
            || value.starts_with("acs:")
            || has_url(value)
        {
            return Err(format!(
                "tag value {value:?} of {key:?}: at most {MAX_TAG_VALUE_CHARS} characters, not starting with \"acs:\", without http:// or https://"
            ));
        }
    }
    Ok(())
}

impl SimulatorConfig {
    /// Refuses what ECS would not hold (today: instance tags outside ECS's limits).
    pub fn validate(&self) -> Result<(), String> {
        for instance in &self.instances {
            validate_tags(&instance.tags).map_err(|e| format!("instance {}: {e}", instance.id))?;
        }
        Ok(())
    }
}

fn running() -> String {
    "Running".into()
}

impl std::str::FromStr for InstanceConfig {
    type Err = String;
    /// `ID,REGION,io-optimized|non-io-optimized[,STATUS]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let usage = "expected ID,REGION,io-optimized|non-io-optimized[,STATUS]";
        if !(3..=4).contains(&parts.len()) || parts[0].is_empty() || parts[1].is_empty() {
            return Err(usage.into());
        }
        let io_optimized = match parts[2] {
            "io-optimized" => true,
            "non-io-optimized" => false,
            _ => return Err(usage.into()),
        };
        let status = parts.get(3).map_or_else(running, |s| s.to_string());
        if !super::state::STATUSES.contains(&status.as_str()) {
            return Err(format!(
                "unknown status {status:?}; one of {:?}",
                super::state::STATUSES
            ));
        }
        Ok(Self {
            id: parts[0].into(),
            region: parts[1].into(),
            io_optimized,
            status,
            tags: BTreeMap::new(),
        })
    }
}

/// Injected faults. All default to off; unknown fields are refused so a typo never silently
/// disables a fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Answer the next N authenticated calls with `Throttling.User`.
    pub throttle_next: u32,
    /// Only throttle this action (all when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_action: Option<String>,
    /// A token bucket per AccessKey, in calls per second (burst = one second's worth);
    /// calls beyond it get `Throttling.User` as ECS's flow control answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qps_per_access_key: Option<f64>,
    /// A token bucket per account and action (ECS limits each API separately, per account: RAM
    /// users and roles of one account share it), in calls per second (burst = one second's worth);
    /// calls beyond it get `Throttling.User`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qps_per_api: Option<f64>,
    /// Probability (0..1) of answering `ServiceUnavailable` 503 / `InternalError` 500.
    pub error_rate: f64,
    /// Probability (0..1) of closing the connection without an answer.
    pub drop_rate: f64,
    /// Added latency: fixed milliseconds plus up to `latency_jitter_ms` more.
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    /// Answer the next calls with these errors (after authentication), one rule after another.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fail_next: Vec<FailNext>,
    /// AccessKeyIds without `ecs:DescribeInstances`: ECS answers them an empty list, not an error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub describe_denied_keys: Vec<String>,
    /// Refuse a VNC password without an upper-case letter, a lower-case letter and a digit
    /// (`IncorrectVncPassword.Malformed`), as Alibaba's Chinese documentation states the rule.
    pub password_requires_all_kinds: bool,
    /// Instance IDs that make a whole DescribeInstances fail with `InvalidInstanceIds.Malformed`
    /// when they are among its `InstanceIds` (one bad ID in a batch).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refuse_describe_ids: Vec<String>,
}

/// Answer the next `count` calls of `action` with ECS error `code` and HTTP `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailNext {
    pub action: String,
    pub code: String,
    #[serde(default = "default_fail_status")]
    pub status: u16,
    #[serde(default = "default_fail_count")]
    pub count: u32,
}

fn default_fail_status() -> u16 {
    403
}

fn default_fail_count() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_refuse_nonsense() {
        let k: AccessKeyConfig = "LTAI:sec:CAIS:tok".parse().unwrap();
        assert_eq!(
            (
                k.id.as_str(),
                k.secret.as_str(),
                k.security_token.as_deref()
            ),
            ("LTAI", "sec", Some("CAIS:tok"))
        );
        assert!(!format!("{k:?}").contains("sec\""), "{k:?}");
        assert!("LTAI".parse::<AccessKeyConfig>().is_err());
        let i: InstanceConfig = "i-1,cn-hangzhou,non-io-optimized".parse().unwrap();
        assert_eq!((i.io_optimized, i.status.as_str()), (false, "Running"));
        let i: InstanceConfig = "i-1,cn-hangzhou,io-optimized,Released".parse().unwrap();
        assert_eq!(i.status, "Released");
        for bad in [
            "i-1,cn-hangzhou",
            "i-1,cn-hangzhou,fast",
            "i-1,cn-hangzhou,io-optimized,Dancing",
            ",cn-hangzhou,io-optimized",
        ] {
            assert!(bad.parse::<InstanceConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn files_are_yaml_or_json_and_typos_are_errors() {
        let c: SimulatorConfig = serde_yaml::from_str(
            "accessKeys: [{id: a, secret: b}]\ninstances: [{id: i-1, region: cn-hangzhou, ioOptimized: true}]\nfaults: {throttleNext: 2, errorRate: 0.5}\nrebootSeconds: 0.2\n",
        )
        .unwrap();
        assert_eq!(
            (c.faults.throttle_next, c.instances[0].status.as_str()),
            (2, "Running")
        );
        let j: SimulatorConfig = serde_yaml::from_str(r#"{"faults": {"dropRate": 0.1}}"#).unwrap();
        assert_eq!(j.faults.drop_rate, 0.1);
        assert!(serde_yaml::from_str::<SimulatorConfig>("faults: {errorrate: 1}").is_err());
    }

    #[test]
    fn instance_tags_come_from_files_and_keep_to_ecs_limits() {
        let c: SimulatorConfig = serde_yaml::from_str(
            "instances: [{id: i-1, region: cn-hangzhou, ioOptimized: true, tags: {ecsvnc.io/namespace: team-a, empty: ''}}, {id: i-2, region: cn-hangzhou, ioOptimized: true}]\n",
        )
        .unwrap();
        assert_eq!(c.instances[0].tags["ecsvnc.io/namespace"], "team-a");
        assert_eq!(c.instances[0].tags["empty"], "");
        assert!(c.instances[1].tags.is_empty());
        assert_eq!(c.validate(), Ok(()));
        let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let long = "k".repeat(MAX_TAG_KEY_CHARS);
        assert_eq!(validate_tags(&tags(&[(&long, &long)])), Ok(()));
        let twenty: BTreeMap<String, String> =
            (0..20).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(validate_tags(&twenty), Ok(()));
        let mut twenty_one = twenty.clone();
        twenty_one.insert("k20".into(), String::new());
        assert!(validate_tags(&twenty_one).is_err());
        let too_long = "k".repeat(MAX_TAG_KEY_CHARS + 1);
        for bad in [
            tags(&[("", "v")]),
            tags(&[(&too_long, "v")]),
            tags(&[("k", &too_long)]),
            tags(&[("aliyun-x", "v")]),
            tags(&[("acs:x", "v")]),
            tags(&[("see https://x", "v")]),
            tags(&[("k", "acs:v")]),
            tags(&[("k", "http://v")]),
        ] {
            assert!(validate_tags(&bad).is_err(), "{bad:?}");
        }
        let mut c = c;
        c.instances[1].tags = tags(&[("acs:x", "v")]);
        assert!(c.validate().unwrap_err().contains("i-2"));
    }
}
