//! Where ECS's RPC API lives for a region, as Alibaba's ECS SDK chooses it: the SDK's endpoint map
//! for the regions whose endpoint is not `ecs.<region>.aliyuncs.com`, else that regional rule.
//! Source: `client.EndpointMap` and `GetEndpoint` of github.com/alibabacloud-go/ecs-20140526 (v7.7.0,
//! client/client.go) with `GetEndpointRules` of github.com/alibabacloud-go/darabonba-openapi (v2,
//! utils/client.go) — the regional rule with the public network and no suffix.

/// (region, host) pairs of the SDK's endpoint map, in its order.
pub const ENDPOINT_MAP: &[(&str, &str)] = &[
    ("cn-hangzhou", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-shanghai-finance-1", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-shenzhen-finance-1", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-north-2-gov-1", "ecs.aliyuncs.com"),
    ("ap-northeast-2-pop", "ecs.aliyuncs.com"),
    ("cn-beijing-finance-pop", "ecs.aliyuncs.com"),
    ("cn-beijing-gov-1", "ecs.aliyuncs.com"),
    ("cn-beijing-nu16-b01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-edge-1", "ecs.cn-qingdao-nebula.aliyuncs.com"),
    ("cn-fujian", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-haidian-cm12-c01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-hangzhou-bj-b01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-hangzhou-finance", "ecs.aliyuncs.com"),
    (
        "cn-hangzhou-internal-prod-1",
        "ecs-cn-hangzhou.aliyuncs.com",
    ),
    (
        "cn-hangzhou-internal-test-1",
        "ecs-cn-hangzhou.aliyuncs.com",
    ),
    (
        "cn-hangzhou-internal-test-2",
        "ecs-cn-hangzhou.aliyuncs.com",
    ),
    (
        "cn-hangzhou-internal-test-3",
        "ecs-cn-hangzhou.aliyuncs.com",
    ),
    ("cn-hangzhou-test-306", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-hongkong-finance-pop", "ecs.aliyuncs.com"),
    (
        "cn-huhehaote-nebula-1",
        "ecs.cn-qingdao-nebula.aliyuncs.com",
    ),
    ("cn-shanghai-et15-b01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-shanghai-et2-b01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-shanghai-inner", "ecs.aliyuncs.com"),
    (
        "cn-shanghai-internal-test-1",
        "ecs-cn-hangzhou.aliyuncs.com",
    ),
    ("cn-shenzhen-inner", "ecs.aliyuncs.com"),
    ("cn-shenzhen-st4-d01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-shenzhen-su18-b01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-wuhan", "ecs.aliyuncs.com"),
    ("cn-yushanfang", "ecs.aliyuncs.com"),
    ("cn-zhangbei", "ecs.aliyuncs.com"),
    ("cn-zhangbei-na61-b01", "ecs-cn-hangzhou.aliyuncs.com"),
    ("cn-zhangjiakou-na62-a01", "ecs.cn-zhangjiakou.aliyuncs.com"),
    (
        "cn-zhengzhou-nebula-1",
        "ecs.cn-qingdao-nebula.aliyuncs.com",
    ),
    ("eu-west-1-oxs", "ecs.cn-shenzhen-cloudstone.aliyuncs.com"),
    ("rus-west-1-pop", "ecs.aliyuncs.com"),
];

/// The HTTPS base URL of ECS for `region`.
pub fn endpoint_for_region(region: &str) -> String {
    let host = ENDPOINT_MAP
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|| format!("ecs.{region}.aliyuncs.com"));
    format!("https://{host}")
}

/// An `--ecs-endpoint` value for `region`: `{region}` in it is replaced by the region ID (e.g.
/// `https://ecs-vpc.{region}.aliyuncs.com`); without it, one URL serves every region.
pub fn from_template(template: &str, region: &str) -> String {
    template.trim_end_matches('/').replace("{region}", region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_regions_use_the_sdk_map_others_the_regional_rule() {
        assert_eq!(
            endpoint_for_region("cn-hangzhou"),
            "https://ecs-cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(endpoint_for_region("cn-wuhan"), "https://ecs.aliyuncs.com");
        assert_eq!(
            endpoint_for_region("ap-southeast-1"),
            "https://ecs.ap-southeast-1.aliyuncs.com"
        );
        assert_eq!(ENDPOINT_MAP.len(), 35);
    }

    #[test]
    fn templates_take_the_region() {
        assert_eq!(
            from_template("https://ecs-vpc.{region}.aliyuncs.com/", "cn-beijing"),
            "https://ecs-vpc.cn-beijing.aliyuncs.com"
        );
        assert_eq!(
            from_template("http://127.0.0.1:8080/", "cn-beijing"),
            "http://127.0.0.1:8080"
        );
    }
}
