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
    /// The instance's tags, key → value, from DescribeInstances' `Tags.Tag[]` of
    /// `{TagKey, TagValue}`; absent (or `null`): none.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Tags,
}

impl Instance {
    pub fn started_at(&self) -> Option<jiff::Timestamp> {
        self.start_time.as_deref().and_then(parse_start_time)
    }
}

/// An instance's tags, key → value, in ECS's order: a list rather than a map, since an instance
/// carries at most a few dozen and the controller keeps one of them for every instance it looks up
/// (a `BTreeMap` allocates a node of eleven entries for one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    /// The value of tag `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// Key and value of each tag.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Keeps the tags `keep` accepts, without spare room.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
        self.0.shrink_to_fit();
    }
}

/// A key given twice keeps its last value, as a map would.
impl FromIterator<(String, String)> for Tags {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut tags: Vec<(String, String)> = Vec::new();
        for (key, value) in iter {
            match tags.iter_mut().find(|(k, _)| *k == key) {
                Some(tag) => tag.1 = value,
                None => tags.push((key, value)),
            }
        }
        tags.shrink_to_fit();
        Self(tags)
    }
}

impl<const N: usize> From<[(String, String); N]> for Tags {
    fn from(tags: [(String, String); N]) -> Self {
        tags.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Tags {
    type Output = String;

    fn index(&self, key: &str) -> &String {
        self.get(key).expect("no such tag")
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

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Tags, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Tags {
        #[serde(default)]
        tag: Option<Vec<Tag>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Tag {
        tag_key: String,
        #[serde(default)]
        tag_value: Option<String>,
    }
    Ok(Option::<Tags>::deserialize(d)?
        .and_then(|t| t.tag)
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.tag_key, t.tag_value.unwrap_or_default()))
        .collect())
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
        assert!(r.instances.instance[0].tags.is_empty(), "no Tags: none");
    }

    #[test]
    fn describe_instances_reads_tags_and_the_next_token() {
        // The shape of DescribeInstances' documented sample answer (system and user tags).
        let body = r#"{"RequestId":"473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E","TotalCount":1,"PageSize":10,"PageNumber":1,
            "NextToken":"caeba0bbb2be03f84eb48b699f0a4883","Instances":{"Instance":[
            {"InstanceId":"i-bp67acfmxazb4p****","RegionId":"cn-hangzhou","Status":"Running","IoOptimized":true,
             "StartTime":"2017-12-10T04:04Z","Tags":{"Tag":[
                {"TagValue":"asg-bp1d8uuut40f4qc4****","TagKey":"acs:autoscaling:scalingGroupId"},
                {"TagKey":"ecsvnc.io/namespace","TagValue":"team-a"},
                {"TagKey":"empty"}]}},
            {"InstanceId":"i-2","Tags":{}},
            {"InstanceId":"i-3","Tags":null},
            {"InstanceId":"i-4","Tags":{"Tag":[]}}]}}"#;
        let r: DescribeInstancesResponse = serde_json::from_str(body).unwrap();
        assert_eq!(
            r.next_token.as_deref(),
            Some("caeba0bbb2be03f84eb48b699f0a4883")
        );
        let tags = &r.instances.instance[0].tags;
        assert_eq!(tags.len(), 3);
        assert_eq!(tags["ecsvnc.io/namespace"], "team-a");
        assert_eq!(
            tags["acs:autoscaling:scalingGroupId"],
            "asg-bp1d8uuut40f4qc4****"
        );
        assert_eq!(tags["empty"], "");
        for i in &r.instances.instance[1..] {
            assert!(i.tags.is_empty(), "{}", i.instance_id);
        }
    }

    #[test]
    fn tags_keep_the_last_value_of_a_key_and_no_spare_room() {
        let mut tags: Tags = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "3".to_string()),
        ]
        .into();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags["a"], "3");
        assert_eq!(tags.get("c"), None);
        tags.retain(|k, _| k == "b");
        assert_eq!(tags.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(tags.0.capacity(), 1);
    }
}
