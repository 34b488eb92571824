//go:build tools

// Package tools pins the kube-apiserver this wrapper module builds: `go build
// k8s.io/kubernetes/cmd/kube-apiserver` from this directory (see ../build).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
)
