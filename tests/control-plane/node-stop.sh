# shellcheck shell=bash
# The node half of `stop DIR` (sourced by stop; uses its dir, stop_one, ours, running, wait_gone).
# Every step is best effort and safe to repeat: stop must always get the host back.

node_stop() {
  local nd="$dir/node" sock="$dir/node/containerd/containerd.sock"
  stop_one kube-controller-manager
  stop_one kube-scheduler

  # Pods deleted through the API, so that the kubelet stops their containers and releases their
  # network (CNI DEL) as on any node; a kubelet that is gone cannot, the steps below then clean up.
  local kubeconfig="$dir/kubeconfig"
  [ -f "$kubeconfig" ] || kubeconfig="$dir/admin.kubeconfig"
  if [ -f "$kubeconfig" ] && [ -f "$dir/kubelet.pid" ] && running "$(cat "$dir/kubelet.pid")"; then
    if node_delete_pods; then
      local i
      for ((i = 0; i < 300; i++)); do
        [ "$(node_api GET /api/v1/pods 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null)" = 0 ] && break
        sleep 0.1
      done
    fi
  fi
  stop_one kubelet 10
  stop_one kube-proxy

  # Containers still running (a kubelet that died first): killed through containerd.
  if [ -S "$sock" ] && command -v ctr >/dev/null; then
    local id
    for id in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_one containerd 10
  # Shims are started by containerd with its address on their command line.
  local pid cmd
  for pid in $(pgrep -f containerd-shim 2>/dev/null || true); do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    if [[ "$cmd" == *"$sock"* ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  # kube-proxy's iptables chains (https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/ --cleanup).
  if [ -f "$nd/kube-proxy-config.yaml" ]; then
    local kp
    kp="$(cat "$nd/bin_dir" 2>/dev/null)/kube-proxy"
    [ -x "$kp" ] && "$kp" --cleanup --v 0 >/dev/null 2>&1 || true
  fi

  # Mounts under DIR (kubelet volumes, container root file systems), deepest first; then the Pods'
  # network namespaces that containerd created for this node (recorded in their sandboxes' state).
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)

  if ip link show ecsvnc0 >/dev/null 2>&1; then
    ip link del ecsvnc0 2>/dev/null || true
  fi
  # The bridge plugin's masquerade rules name the network ("ecs-vnc-test") in their comments.
  local table=nat chain
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/ecs-vnc-test/ && $1=="-A" && $2=="POSTROUTING" {for (i=1;i<=NF;i++) if ($i=="-j") print $(i+1)}' | sort -u); do
    while iptables -t "$table" -S POSTROUTING | grep -q -- "-j $chain"; do
      local rule
      rule=$(iptables -t "$table" -S POSTROUTING | grep -m1 -- "-j $chain" | sed 's/^-A /-D /')
      # shellcheck disable=SC2086
      iptables -t "$table" $rule 2>/dev/null || break
    done
    iptables -t "$table" -F "$chain" 2>/dev/null || true
    iptables -t "$table" -X "$chain" 2>/dev/null || true
  done

  # The kubelet's own chains: KUBE-FIREWALL (drops non-loopback packets to 127.0.0.0/8) and the
  # canaries by which it notices a flushed table.
  local cmd_ipt t c
  for cmd_ipt in iptables ip6tables; do
    command -v "$cmd_ipt" >/dev/null || continue
    for t in filter nat mangle; do
      for c in INPUT OUTPUT; do
        while "$cmd_ipt" -t "$t" -D "$c" -j KUBE-FIREWALL 2>/dev/null; do :; done
      done
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$cmd_ipt" -t "$t" -F "$c" 2>/dev/null && "$cmd_ipt" -t "$t" -X "$c" 2>/dev/null || true
      done
    done
  done

  # The kubelet's cgroups (cgroupfs driver), once empty.
  local cg
  for cg in /sys/fs/cgroup/*/kubepods; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done

  # Kernel settings the kubelet and the CNI bridge plugin changed.
  if [ -f "$dir/host-state" ]; then
    local line
    while read -r line; do
      [ -n "$line" ] && sysctl -q -w "$line" >/dev/null 2>&1 || true
    done <"$dir/host-state"
  fi
}

node_release_claim() { # the machine-wide claim of start's node_claim, if it names DIR
  local marker=/run/ecs-vnc-test-node
  if [ "$(cat "$marker/dir" 2>/dev/null)" = "$dir" ]; then rm -rf "$marker"; fi
}

node_api() { # method path: a request as admin, with the client certificate start wrote
  local pki="$dir/pki" server
  server=$(awk '$1=="server:" {print $2; exit}' "$kubeconfig")
  curl -sS --fail --max-time 10 -X "$1" --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server$2"
}

node_delete_pods() { # every Pod of every namespace, with a 5 s grace period
  local ns
  for ns in $(node_api GET /api/v1/namespaces | python3 -c 'import json,sys; [print(i["metadata"]["name"]) for i in json.load(sys.stdin)["items"]]'); do
    node_api DELETE "/api/v1/namespaces/$ns/pods?gracePeriodSeconds=5" >/dev/null 2>&1 || true
  done
}
