//go:build tools

// Package tools pins the node-side components this wrapper module builds from the same
// k8s.io/kubernetes version as ../kube-apiserver (see ../build): kube-controller-manager,
// kube-scheduler, kubelet and kube-proxy.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
