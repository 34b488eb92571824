# shellcheck shell=bash
# The node half of `start DIR --with-node` (sourced by start; uses its dir, pki, bin_dir, api_ip,
# api_port and helpers): kube-controller-manager, kube-scheduler, containerd + runc + CNI, a kubelet
# and kube-proxy, each a background process with DIR/<name>.pid and DIR/<name>.log.
#
# One such node per machine at a time (node_claim below: a second start waits for the first node to
# be stopped): the Pod network is the bridge ecsvnc0 with 10.88.0.0/24, the Service network
# 10.0.0.0/24 is programmed by kube-proxy into the host's iptables. What is host-wide, and what stop
# (node-stop.sh) undoes: the kernel settings a kubelet changes (vm.overcommit_memory, kernel.panic,
# kernel.panic_on_oops; protectKernelDefaults in
# https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/) and net.ipv4.ip_forward
# (set by the CNI bridge plugin), saved in DIR/host-state; the iptables chains of kube-proxy
# (`kube-proxy --cleanup`), of the kubelet and of the bridge plugin; the bridge; the kubepods cgroups.

node_name=ecs-vnc-test-node
pod_cidr=10.88.0.0/24
cni_bridge=ecsvnc0
# The sandbox ("pause") image every Pod starts with is build-pause's (Kubernetes' own pause.c), named
# registry.k8s.io/pause:<tag> and imported by start, since no registry is reachable.

node_preflight() {
  [ "$(id -u)" = 0 ] || { echo "FATAL: --with-node needs root (kubelet, containerd, iptables)" >&2; exit 1; }
  local tool
  for tool in containerd containerd-shim-runc-v2 runc iptables ip flock; do
    command -v "$tool" >/dev/null || {
      echo "FATAL: --with-node needs $tool (Debian: apt-get install containerd runc containernetworking-plugins iptables iproute2; scripts/test installs them)" >&2
      exit 1
    }
  done
  cni_bin_dir=
  local d
  for d in /usr/lib/cni /opt/cni/bin; do
    if [ -x "$d/bridge" ] && [ -x "$d/host-local" ] && [ -x "$d/loopback" ] && [ -x "$d/portmap" ]; then
      cni_bin_dir=$d
      break
    fi
  done
  [ -n "$cni_bin_dir" ] || { echo "FATAL: no CNI plugins (bridge, host-local, loopback, portmap) in /usr/lib/cni or /opt/cni/bin (Debian: containernetworking-plugins)" >&2; exit 1; }
  grep -q cgroup /proc/mounts || { echo "FATAL: no cgroup file system mounted" >&2; exit 1; }
  # The host's address: Pods reach the API server (and the tests' ECS simulator) there.
  node_ip=${ECS_VNC_NODE_IP:-$(ip -4 -o route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
  [ -n "$node_ip" ] && [ "$node_ip" != 127.0.0.1 ] || node_ip=$(ip -4 -o route show default | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  if [ -z "$node_ip" ]; then
    node_ip=$(ip -4 -o addr show scope global | awk '{print $4; exit}' | cut -d/ -f1)
  fi
  [ -n "$node_ip" ] || { echo "FATAL: no non-loopback IPv4 address on this host; set ECS_VNC_NODE_IP" >&2; exit 1; }
}

# One node per machine: the directory /run/ecs-vnc-test-node names the DIR whose node runs (and the
# pid of the start that claimed it). Another start waits (up to 20 min) until that node is stopped,
# or takes the claim over when neither that start nor that node's containerd/kubelet runs any more.
node_marker=/run/ecs-vnc-test-node
node_claim() {
  local owner pid announced="" deadline=$((SECONDS + 1200))
  while ! mkdir "$node_marker" 2>/dev/null; do
    owner=$(cat "$node_marker/dir" 2>/dev/null || true)
    pid=$(cat "$node_marker/pid" 2>/dev/null || true)
    if [ -n "$owner" ] && ! node_alive "$owner" "$pid"; then
      echo ">> the test node of $owner is gone; taking its claim over" >&2
      rm -rf "$node_marker"
      continue
    fi
    [ $SECONDS -lt $deadline ] || { echo "FATAL: another test node ($owner) still runs on this machine after 20 min" >&2; exit 1; }
    if [ -z "$announced" ]; then
      echo ">> another test node runs on this machine ($owner); waiting until it is stopped" >&2
      announced=1
    fi
    sleep 1
  done
  echo "$$" >"$node_marker/pid"
  echo "$dir" >"$node_marker/dir"
  # A bridge left by a node that was not stopped (its processes are gone: the claim was free).
  if ip link show "$cni_bridge" >/dev/null 2>&1; then
    echo ">> deleting the stale bridge $cni_bridge" >&2
    ip link del "$cni_bridge" || true
  fi
}
node_alive() { # dir start-pid: the start that claimed it, or that node's containerd or kubelet, runs
  local p
  [ -n "$2" ] && kill -0 "$2" 2>/dev/null && return 0
  for p in containerd kubelet; do
    p=$(cat "$1/$p.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null && return 0
  done
  return 1
}

# wait_until what timeout process cmd... : polls cmd every 0.2 s while process (a name of
# DIR/<name>.pid) runs
wait_until() {
  local what=$1 timeout=$2 proc=$3 deadline
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$(cat "$dir/$proc.pid")" 2>/dev/null || fail "$proc exited during startup (waiting for $what)"
    [ $SECONDS -lt $deadline ] || fail "$what not within $timeout s"
    sleep 0.2
  done
}

api_get() { # path -> body (admin)
  curl -sS --fail --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$api_ip:$api_port$1"
}

node_ready() {
  api_get "/api/v1/nodes/$node_name" | python3 -c '
import json, sys
node = json.load(sys.stdin)
ok = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
sys.exit(0 if ok else 1)'
}

healthz_ok() { # url [curl args]: "ok" from a component's /healthz
  local url=$1
  shift
  [ "$(curl -sS --max-time 2 "$@" "$url")" = ok ]
}

node_start() {
  local t0=$SECONDS
  mkdir -p "$dir/node"
  local nd="$dir/node"
  echo "$bin_dir" >"$nd/bin_dir"
  pause_ref=$(tar -xOf "$bin_dir/pause.oci.tar" index.json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["io.containerd.image.name"])')

  # --- saved host state (restored by stop) -----------------------------------------------------
  {
    local key
    for key in vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward net.ipv4.conf.all.route_localnet; do
      echo "$key=$(sysctl -n "$key")"
    done
  } >"$dir/host-state"

  # --- certificates and kubeconfigs -----------------------------------------------------------------
  # Users the bootstrap RBAC policy knows: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#core-component-roles
  # A kubelet is system:node:<name> in system:nodes, for the Node authorizer:
  # https://kubernetes.io/docs/reference/access-authn-authz/node/
  local client="extendedKeyUsage=clientAuth"
  local usage="keyUsage=critical,digitalSignature,keyEncipherment"
  issue kubelet "/O=system:nodes/CN=system:node:$node_name" "$client" "$usage"
  issue kubelet-serving "/CN=$node_name" "subjectAltName=IP:$node_ip,IP:127.0.0.1,DNS:$node_name" \
    "extendedKeyUsage=serverAuth" "$usage"
  issue kube-controller-manager "/CN=system:kube-controller-manager" "$client" "$usage"
  issue kube-scheduler "/CN=system:kube-scheduler" "$client" "$usage"
  issue kube-proxy "/CN=system:kube-proxy" "$client" "$usage"
  chmod 600 "$pki"/*.key
  local c
  for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    write_kubeconfig "$nd/$c.kubeconfig" "$c" "$pki/$c.crt" "$pki/$c.key"
  done

  local kcm_port sched_port kubelet_port kubelet_healthz_port proxy_healthz_port proxy_metrics_port
  read -r kcm_port sched_port kubelet_port kubelet_healthz_port proxy_healthz_port proxy_metrics_port < <(free_ports 6)

  # --- kube-controller-manager, kube-scheduler ---------------------------------------------------------
  # The token controller signs nothing itself (tokens are TokenRequest-bound), but the service
  # account controller creates each namespace's "default" ServiceAccount and root-ca-cert-publisher
  # the kube-root-ca.crt ConfigMap a projected token volume mounts:
  # https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/
  start_bg kube-controller-manager "$bin_dir/kube-controller-manager" \
    --kubeconfig "$nd/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$nd/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$nd/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --cert-dir "$nd/kcm-certs" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials \
    --service-cluster-ip-range 10.0.0.0/24 \
    --leader-elect=false
  start_bg kube-scheduler "$bin_dir/kube-scheduler" \
    --kubeconfig "$nd/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$nd/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$nd/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --cert-dir "$nd/scheduler-certs" \
    --leader-elect=false

  # --- containerd -------------------------------------------------------------------------------------------
  # CRI plugin config (version 2 format of containerd 1.6/1.7):
  # https://github.com/containerd/containerd/blob/release/1.6/docs/cri/config.md
  mkdir -p "$nd/cni/net.d" "$nd/containerd"
  cat >"$nd/cni/net.d/10-ecs-vnc-test.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "ecs-vnc-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$cni_bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$nd/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  containerd_sock="$nd/containerd/containerd.sock"
  # CAP_SYS_RESOURCE is bit 24 of the effective capability set.
  local restrict_oom=false
  (( (0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 )) || restrict_oom=true
  cat >"$nd/containerd/config.toml" <<TOML
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
[grpc]
  address = "$containerd_sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$nd/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  # This machine's root lacks CAP_SYS_RESOURCE (a container itself): runc may not lower a process's
  # oom_score_adj (the kubelet asks -998 for sandboxes), so scores are clamped to containerd's own.
  restrict_oom_score_adj = $restrict_oom
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin_dir"
    conf_dir = "$nd/cni/net.d"
TOML
  start_bg containerd "$(command -v containerd)" --config "$nd/containerd/config.toml"
  wait_until "containerd answering on $containerd_sock" 30 containerd ctr --address "$containerd_sock" version
  node_import "$bin_dir/pause.oci.tar" "$pause_ref"

  # --- kubelet ------------------------------------------------------------------------------------------------
  # https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/
  # failCgroupV1: false, since kubelet 1.35 refuses cgroup v1 hosts otherwise
  # (https://kubernetes.io/docs/concepts/architecture/cgroups/); cgroupfs, as containerd's runc
  # options above (no systemd here); failSwapOn: false, whatever the host's swap.
  cat >"$nd/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$containerd_sock
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $pki/ca.crt
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $nd/pod-logs
podCIDR: $pod_cidr
evictionHard:
  memory.available: 50Mi
  nodefs.available: 2%
  imagefs.available: 2%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
YAML
  start_bg kubelet "$bin_dir/kubelet" --config "$nd/kubelet-config.yaml" \
    --kubeconfig "$nd/kubelet.kubeconfig" --root-dir "$nd/kubelet" --cert-dir "$nd/kubelet-certs" \
    --hostname-override "$node_name" --node-ip "$node_ip" --v 2

  # --- kube-proxy ------------------------------------------------------------------------------------------
  # iptables mode: https://kubernetes.io/docs/reference/networking/virtual-ips/
  cat >"$nd/kube-proxy-config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $nd/kube-proxy.kubeconfig
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
conntrack:
  maxPerCore: 0
YAML
  start_bg kube-proxy "$bin_dir/kube-proxy" --config "$nd/kube-proxy-config.yaml" --v 2

  wait_until "kube-controller-manager /healthz" 60 kube-controller-manager \
    healthz_ok "https://127.0.0.1:$kcm_port/healthz" -k
  wait_until "kube-scheduler /healthz" 60 kube-scheduler healthz_ok "https://127.0.0.1:$sched_port/healthz" -k
  # The service account controller has run once Pods can be created in "default".
  wait_until "the ServiceAccount default/default" 60 kube-controller-manager \
    api_get /api/v1/namespaces/default/serviceaccounts/default
  wait_until "the node $node_name Ready" 120 kubelet node_ready
  # kube-proxy's /healthz answers 200 once it has programmed the Services (503 before).
  wait_until "kube-proxy /healthz" 60 kube-proxy \
    curl -sS --fail --max-time 2 "http://127.0.0.1:$proxy_healthz_port/healthz"
  cat >"$dir/node.env" <<ENV
NODE_NAME=$node_name
NODE_IP=$node_ip
CONTAINERD_ADDRESS=$containerd_sock
POD_CIDR=$pod_cidr
ENV
  echo ">> node $node_name ($node_ip) Ready in $((SECONDS - t0)) s" >&2
}

# node_import tarball [name]: an OCI archive into containerd's CRI namespace (k8s.io), where the
# kubelet finds it: https://github.com/containerd/containerd/blob/main/docs/cri/crictl.md
node_import() {
  local tarball=$1 name=${2:-}
  ctr --address "$containerd_sock" -n k8s.io images import "$tarball" >&2 || fail "ctr images import $tarball failed"
  if [ -n "$name" ]; then
    local names
    names=$(ctr --address "$containerd_sock" -n k8s.io images ls -q)
    grep -qxF "$name" <<<"$names" || fail "$tarball did not import as $name"
  fi
}
