//! ECS-shaped response bodies, JSON or XML.

use quick_xml::escape::escape;
use serde_json::{Value, json};

use super::state::{EcsFault, InstanceView};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// ECS answers XML unless `Format=JSON`.
    pub fn from_param(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Xml,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json;charset=utf-8",
            Self::Xml => "text/xml;charset=utf-8",
        }
    }
}

pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

pub fn error(format: Format, fault: &EcsFault, request_id: &str) -> String {
    let recommend = format!(
        "https://api.aliyun.com/troubleshoot?q={}&product=Ecs",
        fault.code
    );
    match format {
        Format::Json => json!({
            "RequestId": request_id,
            "HostId": "ecs.aliyuncs.com",
            "Code": fault.code,
            "Message": fault.message,
            "Recommend": recommend,
        })
        .to_string(),
        Format::Xml => format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>{}</RequestId><HostId>ecs.aliyuncs.com</HostId><Code>{}</Code><Message>{}</Message><Recommend>{}</Recommend></Error>",
            escape(request_id),
            escape(fault.code),
            escape(fault.message.as_str()),
            escape(recommend.as_str())
        ),
    }
}

/// A success body: `fields` as JSON, or as `<{action}Response>` XML.
pub fn success(format: Format, action: &str, fields: Value) -> String {
    match format {
        Format::Json => fields.to_string(),
        Format::Xml => {
            let mut out = String::from("<?xml version='1.0' encoding='UTF-8'?>");
            xml_element(&mut out, &format!("{action}Response"), &fields);
            out
        }
    }
}

/// ECS's XML mirrors its JSON: objects become nested elements, arrays repeat their parent's
/// item element (`Instances/Instance`).
fn xml_element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                xml_element(out, name, item);
            }
        }
        Value::Object(map) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in map {
                xml_element(out, k, v);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Null => out.push_str(&format!("<{name}/>")),
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", escape(s.as_str()))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

pub fn instance_json(i: &InstanceView) -> Value {
    let mut instance = json!({
        "InstanceId": i.id,
        "InstanceName": format!("sim-{}", i.id),
        "RegionId": i.region,
        "ZoneId": format!("{}-a", i.region),
        "Status": i.status,
        "IoOptimized": i.io_optimized,
        "StartTime": i.start_time,
        "InstanceType": if i.io_optimized { "ecs.g7.large" } else { "ecs.t1.small" },
        "InstanceNetworkType": "vpc",
    });
    // `Tags.Tag[]` of `{TagKey, TagValue}` (DescribeInstances' response,
    // https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-describeinstances);
    // left out for an instance without tags, so clients must treat an absent `Tags` as none.
    if !i.tags.is_empty() {
        let tags: Vec<Value> = i
            .tags
            .iter()
            .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
            .collect();
        instance["Tags"] = json!({ "Tag": tags });
    }
    instance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_success_wraps_in_action_response_and_repeats_items() {
        let body = success(
            Format::Xml,
            "DescribeInstances",
            json!({"RequestId": "R", "Instances": {"Instance": [{"InstanceId": "i-1"}, {"InstanceId": "i-2"}]}}),
        );
        assert!(body.contains("<DescribeInstancesResponse><Instances><Instance><InstanceId>i-1</InstanceId></Instance><Instance><InstanceId>i-2</InstanceId></Instance></Instances><RequestId>R</RequestId></DescribeInstancesResponse>"), "{body}");
    }

    #[test]
    fn instance_tags_render_as_tags_tag_in_json_and_xml() {
        let view = InstanceView {
            id: "i-1".into(),
            region: "cn-hangzhou".into(),
            io_optimized: true,
            status: "Running".into(),
            set_password: None,
            effective_password: None,
            reboot_count: 0,
            start_time: "2026-01-01T00:00Z".into(),
            tags: [("a&b".to_string(), "v<1>".to_string())].into(),
        };
        let json = instance_json(&view);
        assert_eq!(
            json["Tags"],
            json!({"Tag": [{"TagKey": "a&b", "TagValue": "v<1>"}]})
        );
        let body = success(
            Format::Xml,
            "DescribeInstances",
            json!({"Instances": {"Instance": [json]}}),
        );
        assert!(
            body.contains(
                "<Tags><Tag><TagKey>a&amp;b</TagKey><TagValue>v&lt;1&gt;</TagValue></Tag></Tags>"
            ),
            "{body}"
        );
        let untagged = InstanceView {
            tags: Default::default(),
            ..view
        };
        assert!(instance_json(&untagged).get("Tags").is_none());
    }

    #[test]
    fn xml_errors_escape_text() {
        let body = error(Format::Xml, &EcsFault::new(400, "X", "a<b&c"), "R");
        assert!(body.contains("<Message>a&lt;b&amp;c</Message>"));
    }
}
