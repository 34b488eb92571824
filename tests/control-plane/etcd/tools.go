//go:build tools

// Package tools pins the etcd this wrapper module builds: `go build go.etcd.io/etcd/server/v3`
// from this directory (see ../build).
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
)
