package main

// The signing oracle: what Alibaba's SDK computes for a given request.
//
// The exported functions of github.com/alibabacloud-go/darabonba-openapi/v2/utils give the final
// results: GetRPCSignature (the HMAC-SHA1 RPC signature, "SignatureVersion 1.0", which Alibaba's
// newer documents call V2) and GetAuthorization (the ACS3-HMAC-SHA256 "V3" Authorization header).
// The intermediate pieces are computed by unexported functions of the same package; they are
// reached with go:linkname so that every stage compared is Alibaba's own code, not a copy:
// buildRpcStringToSign, getCanonicalQueryString and getCanonicalHeaders. The V3 canonical request
// and string to sign are then assembled the way GetAuthorization assembles them, and the answer is
// only given when their signature reproduces GetAuthorization's byte for byte (so the assembly
// cannot drift from the SDK's). The three declarations below must match the pinned SDK's
// functions exactly: when go.mod moves to another darabonba-openapi, check them first.

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	_ "unsafe" // go:linkname

	openapiutil "github.com/alibabacloud-go/darabonba-openapi/v2/utils"
	"github.com/alibabacloud-go/tea/dara"
)

//go:linkname sdkBuildRpcStringToSign github.com/alibabacloud-go/darabonba-openapi/v2/utils.buildRpcStringToSign
func sdkBuildRpcStringToSign(signedParam map[string]*string, method string) string

//go:linkname sdkCanonicalQueryString github.com/alibabacloud-go/darabonba-openapi/v2/utils.getCanonicalQueryString
func sdkCanonicalQueryString(query map[string]*string) string

//go:linkname sdkCanonicalHeaders github.com/alibabacloud-go/darabonba-openapi/v2/utils.getCanonicalHeaders
func sdkCanonicalHeaders(headers map[string]*string) (string, []string)

const acs3 = "ACS3-HMAC-SHA256"

// oracleRequest is one case: Kind "rpc" uses Method, Params and Secret; Kind "v3" uses Method,
// Path, Query, Headers, Body, AccessKeyId and Secret. Pairs are [name, value]; names must be
// distinct (the SDK takes maps).
type oracleRequest struct {
	Kind        string      `json:"kind"`
	Method      string      `json:"method"`
	Params      [][2]string `json:"params"`
	Path        string      `json:"path"`
	Query       [][2]string `json:"query"`
	Headers     [][2]string `json:"headers"`
	Body        string      `json:"body"`
	AccessKeyId string      `json:"accessKeyId"`
	Secret      string      `json:"secret"`
}

type rpcAnswer struct {
	StringToSign string `json:"stringToSign"`
	Signature    string `json:"signature"`
}

type v3Answer struct {
	HashedPayload    string `json:"hashedPayload"`
	CanonicalQuery   string `json:"canonicalQuery"`
	CanonicalHeaders string `json:"canonicalHeaders"`
	SignedHeaders    string `json:"signedHeaders"`
	CanonicalRequest string `json:"canonicalRequest"`
	StringToSign     string `json:"stringToSign"`
	Signature        string `json:"signature"`
	Authorization    string `json:"authorization"`
}

func pairs(list [][2]string) (map[string]*string, error) {
	m := make(map[string]*string, len(list))
	for _, p := range list {
		if _, dup := m[p[0]]; dup {
			return nil, &dupError{p[0]}
		}
		m[p[0]] = dara.String(p[1])
	}
	return m, nil
}

type dupError struct{ name string }

func (e *dupError) Error() string { return "duplicate name " + e.name + " (the SDK signs maps)" }

func oracle(line []byte) any {
	var req oracleRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return fail("bad oracle request: %v", err)
	}
	switch req.Kind {
	case "rpc":
		params, err := pairs(req.Params)
		if err != nil {
			return fail("%v", err)
		}
		return rpcAnswer{
			StringToSign: sdkBuildRpcStringToSign(params, req.Method),
			Signature:    dara.StringValue(openapiutil.GetRPCSignature(params, dara.String(req.Method), dara.String(req.Secret))),
		}
	case "v3":
		return v3(req)
	default:
		return fail("unknown kind %q (rpc or v3)", req.Kind)
	}
}

func v3(req oracleRequest) any {
	query, err := pairs(req.Query)
	if err != nil {
		return fail("%v", err)
	}
	headers, err := pairs(req.Headers)
	if err != nil {
		return fail("%v", err)
	}
	request := dara.NewRequest()
	request.Method = dara.String(req.Method)
	request.Pathname = dara.String(req.Path)
	request.Query = query
	request.Headers = headers
	// As DoRequest does: the payload hash is Hash(body) hex-encoded, passed to GetAuthorization.
	hashed := hex.EncodeToString(openapiutil.Hash([]byte(req.Body), dara.String(acs3)))
	authorization := dara.StringValue(openapiutil.GetAuthorization(request, dara.String(acs3), dara.String(hashed),
		dara.String(req.AccessKeyId), dara.String(req.Secret)))

	// The pieces, by the SDK's own (unexported) functions, assembled as GetAuthorization does.
	canonicalQuery := sdkCanonicalQueryString(query)
	canonicalHeaders, signed := sdkCanonicalHeaders(headers)
	uri := req.Path
	if uri == "" {
		uri = "/"
	}
	uri = strings.NewReplacer("+", "%20", "*", "%2A", "%7E", "~").Replace(uri)
	canonicalRequest := req.Method + "\n" + uri + "\n" + canonicalQuery + "\n" + canonicalHeaders + "\n" +
		strings.Join(signed, ";") + "\n" + hashed
	stringToSign := acs3 + "\n" + hex.EncodeToString(openapiutil.Hash([]byte(canonicalRequest), dara.String(acs3)))
	signature := hex.EncodeToString(openapiutil.SignatureMethod(req.Secret, stringToSign, acs3))
	expected := acs3 + " Credential=" + req.AccessKeyId + ",SignedHeaders=" + strings.Join(signed, ";") +
		",Signature=" + signature
	if expected != authorization {
		return fail("the oracle's assembly of the canonical request no longer reproduces the SDK's GetAuthorization (SDK %q, assembled %q): update oracle.go to the pinned SDK",
			authorization, expected)
	}
	return v3Answer{
		HashedPayload:    hashed,
		CanonicalQuery:   canonicalQuery,
		CanonicalHeaders: canonicalHeaders,
		SignedHeaders:    strings.Join(signed, ";"),
		CanonicalRequest: canonicalRequest,
		StringToSign:     stringToSign,
		Signature:        signature,
		Authorization:    authorization,
	}
}
