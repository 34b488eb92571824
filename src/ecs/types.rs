//! Response shapes of the ECS actions the controller uses (JSON, `Format=JSON`).

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestIdResponse {
    pub request_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstancesResponse {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub instances: InstanceList,
    /// The next page's token; empty or absent on the last page.
    #[serde(default)]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceList {
    #[serde(default)]
    pub instance: Vec<Instance>,
}

/// The fields of an instance the controller reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    pub instance_id: String,
    #[serde(default)]
    pub region_id: String,
    /// `Pending`, `Running`, `Starting`, `Stopping`, `Stopped`.
    #[serde(default)]
    pub status: String,
    /// A boolean in DescribeInstances; `optimized`/`none` in DescribeInstanceAttribute.
    #[serde(default, deserialize_with = "io_optimized")]
    pub io_optimized: bool,
    /// The last start, `yyyy-MM-ddTHH:mmZ` (seconds seen too).
    #[serde(default)]
    pub start_time: Option<String>,
}

impl Instance {
    pub fn started_at(&self) -> Option<jiff::Timestamp> {
        self.start_time.as_deref().and_then(parse_start_time)
    }
}

fn io_optimized<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Flag>::deserialize(d)? {
        Some(Flag::Bool(b)) => b,
        Some(Flag::Text(t)) => matches!(t.as_str(), "optimized" | "true" | "True"),
        None => false,
    })
}

/// Parses ECS's `StartTime`: `2017-12-10T04:04Z`, or with seconds `2017-12-10T04:04:05Z`.
pub fn parse_start_time(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let minutes = text.strip_suffix('Z')?;
    format!("{minutes}:00Z").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_with_and_without_seconds() {
        assert_eq!(
            parse_start_time("2017-12-10T04:04Z").map(|t| t.to_string()),
            Some("2017-12-10T04:04:00Z".into())
        );
        assert_eq!(
            parse_start_time("2017-12-10T04:04:05Z").map(|t| t.to_string()),
            Some("2017-12-10T04:04:05Z".into())
        );
        assert_eq!(parse_start_time(""), None);
        assert_eq!(parse_start_time("yesterday"), None);
    }

    #[test]
    fn describe_instances_reads_the_documented_shape() {
        let body = r#"{"RequestId":"R","TotalCount":2,"PageNumber":1,"PageSize":100,"Instances":{"Instance":[
            {"InstanceId":"i-1","RegionId":"cn-hangzhou","Status":"Running","IoOptimized":true,"StartTime":"2017-12-10T04:04Z"},
            {"InstanceId":"i-2","RegionId":"cn-hangzhou","Status":"Stopped","IoOptimized":"none"}]}}"#;
        let r: DescribeInstancesResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.total_count, 2);
        assert!(r.instances.instance[0].io_optimized);
        assert!(r.instances.instance[0].started_at().is_some());
        assert!(!r.instances.instance[1].io_optimized);
        assert_eq!(r.instances.instance[1].started_at(), None);
    }
}
