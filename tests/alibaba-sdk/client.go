package main

// The client: ECS calls made by Alibaba's generated ECS SDK (ecs-20140526/v7), exactly as an
// application using it would make them, against a given endpoint. The answer is what the SDK's
// typed response models decoded, or the SDKError it raised.

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	openapiutil "github.com/alibabacloud-go/darabonba-openapi/v2/utils"
	ecs "github.com/alibabacloud-go/ecs-20140526/v7/client"
	"github.com/alibabacloud-go/tea/dara"
	"github.com/alibabacloud-go/tea/tea"
)

// clientRequest is one call. Signature is "rpc" (the HMAC-SHA1 RPC signature; the SDK's
// SignatureAlgorithm "v2") or "v3" (ACS3-HMAC-SHA256, the SDK's default). Endpoint is host[:port];
// Protocol "http" or "https". Params are the action's own parameters, as strings.
type clientRequest struct {
	Endpoint        string            `json:"endpoint"`
	Protocol        string            `json:"protocol"`
	Signature       string            `json:"signature"`
	AccessKeyId     string            `json:"accessKeyId"`
	AccessKeySecret string            `json:"accessKeySecret"`
	SecurityToken   string            `json:"securityToken"`
	Action          string            `json:"action"`
	Params          map[string]string `json:"params"`
}

// clientAnswer: OK with the HTTP status and the decoded typed body, or the SDKError's fields.
type clientAnswer struct {
	OK         bool   `json:"ok"`
	StatusCode int    `json:"statusCode"`
	Body       any    `json:"body,omitempty"`
	Code       string `json:"code,omitempty"`
	Message    string `json:"message,omitempty"`
	RequestId  string `json:"requestId,omitempty"`
}

func client(line []byte) any {
	var req clientRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return fail("bad client request: %v", err)
	}
	config := &openapiutil.Config{
		AccessKeyId:     dara.String(req.AccessKeyId),
		AccessKeySecret: dara.String(req.AccessKeySecret),
		Endpoint:        dara.String(req.Endpoint),
		Protocol:        dara.String(req.Protocol),
		ReadTimeout:     dara.Int(10000),
		ConnectTimeout:  dara.Int(5000),
	}
	if req.SecurityToken != "" {
		config.SecurityToken = dara.String(req.SecurityToken)
	}
	switch req.Signature {
	case "rpc":
		config.SignatureAlgorithm = dara.String("v2")
	case "v3":
		// The SDK's default: ACS3-HMAC-SHA256.
	default:
		return fail("unknown signature %q (rpc or v3)", req.Signature)
	}
	c, err := ecs.NewClient(config)
	if err != nil {
		return fail("ecs.NewClient: %v", err)
	}
	p := req.Params
	str := func(name string) *string {
		if v, ok := p[name]; ok {
			return dara.String(v)
		}
		return nil
	}
	i32 := func(name string) (*int32, error) {
		v, ok := p[name]
		if !ok {
			return nil, nil
		}
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return nil, err
		}
		return dara.Int32(int32(n)), nil
	}
	boolean := func(name string) (*bool, error) {
		v, ok := p[name]
		if !ok {
			return nil, nil
		}
		b, err := strconv.ParseBool(v)
		return dara.Bool(b), err
	}

	var status *int32
	var body any
	switch req.Action {
	case "ModifyInstanceVncPasswd":
		var r *ecs.ModifyInstanceVncPasswdResponse
		r, err = c.ModifyInstanceVncPasswd(&ecs.ModifyInstanceVncPasswdRequest{
			RegionId: str("RegionId"), InstanceId: str("InstanceId"), VncPassword: str("VncPassword"),
		})
		if r != nil {
			status, body = r.StatusCode, r.Body
		}
	case "DescribeInstances":
		number, e1 := i32("PageNumber")
		size, e2 := i32("PageSize")
		maxResults, e3 := i32("MaxResults")
		tags, e4 := tagFilters(p)
		if e := errors.Join(e1, e2, e3, e4); e != nil {
			return fail("%v", e)
		}
		var r *ecs.DescribeInstancesResponse
		r, err = c.DescribeInstances(&ecs.DescribeInstancesRequest{
			RegionId: str("RegionId"), InstanceIds: str("InstanceIds"), PageNumber: number, PageSize: size,
			MaxResults: maxResults, NextToken: str("NextToken"), Tag: tags,
		})
		if r != nil {
			status, body = r.StatusCode, r.Body
		}
	case "DescribeInstanceAttribute":
		var r *ecs.DescribeInstanceAttributeResponse
		r, err = c.DescribeInstanceAttribute(&ecs.DescribeInstanceAttributeRequest{InstanceId: str("InstanceId")})
		if r != nil {
			status, body = r.StatusCode, r.Body
		}
	case "RebootInstance":
		force, e1 := boolean("ForceStop")
		dry, e2 := boolean("DryRun")
		if e := errors.Join(e1, e2); e != nil {
			return fail("%v", e)
		}
		var r *ecs.RebootInstanceResponse
		r, err = c.RebootInstance(&ecs.RebootInstanceRequest{InstanceId: str("InstanceId"), ForceStop: force, DryRun: dry})
		if r != nil {
			status, body = r.StatusCode, r.Body
		}
	default:
		return fail("unsupported action %q", req.Action)
	}
	if err != nil {
		var sdkErr *tea.SDKError
		if !errors.As(err, &sdkErr) {
			return fail("not an SDKError: %T %v", err, err)
		}
		answer := clientAnswer{
			Code:       dara.StringValue(sdkErr.Code),
			StatusCode: dara.IntValue(sdkErr.StatusCode),
			Message:    dara.StringValue(sdkErr.Message),
		}
		var data map[string]any
		if sdkErr.Data != nil && json.Unmarshal([]byte(*sdkErr.Data), &data) == nil {
			if id, ok := data["RequestId"].(string); ok {
				answer.RequestId = id
			}
		}
		return answer
	}
	return clientAnswer{OK: true, StatusCode: int(dara.Int32Value(status)), Body: body}
}

// tagFilters turns the params "Tag.N.Key" and "Tag.N.Value" into the SDK's typed Tag list, in the
// order of N. The SDK numbers the list itself when it puts it on the wire (Tag.1.Key, Tag.2.Key,
// ...), so N only orders the filters here; a filter given only a Value is sent without a Key.
func tagFilters(params map[string]string) ([]*ecs.DescribeInstancesRequestTag, error) {
	byN := map[int]*ecs.DescribeInstancesRequestTag{}
	for name, value := range params {
		rest, ok := strings.CutPrefix(name, "Tag.")
		if !ok {
			continue
		}
		n, field, ok := strings.Cut(rest, ".")
		index, err := strconv.Atoi(n)
		if !ok || err != nil || (field != "Key" && field != "Value") {
			return nil, fmt.Errorf("unsupported tag parameter %q (Tag.N.Key or Tag.N.Value)", name)
		}
		tag := byN[index]
		if tag == nil {
			tag = &ecs.DescribeInstancesRequestTag{}
			byN[index] = tag
		}
		if field == "Key" {
			tag.Key = dara.String(value)
		} else {
			tag.Value = dara.String(value)
		}
	}
	if len(byN) == 0 {
		return nil, nil
	}
	indexes := make([]int, 0, len(byN))
	for n := range byN {
		indexes = append(indexes, n)
	}
	sort.Ints(indexes)
	tags := make([]*ecs.DescribeInstancesRequestTag, 0, len(indexes))
	for _, n := range indexes {
		tags = append(tags, byN[n])
	}
	return tags, nil
}
