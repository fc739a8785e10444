#!/usr/bin/env bash
# A "pod" on this VM: a network namespace wired to cni0 by the real CNI
# bridge plugin, with the config flannel's CNI plugin would delegate from
# /run/flannel/subnet.env (test/lib/cluster.ts does the same in TypeScript).
#   pod.sh add NAME   creates it and prints its IPv4 address
#   pod.sh del NAME   removes it (nothing to do if it does not exist)
set -euo pipefail
cmd="${1:?usage: pod.sh add|del NAME}"
name="${2:?usage: pod.sh add|del NAME}"
[[ $name =~ ^[a-z0-9-]{1,12}$ ]] || { echo "pod: bad name '$name'" >&2; exit 2; }
export CNI_PATH=/usr/lib/cni
state=/run/twill-pods
mkdir -p "$state"

# shellcheck disable=SC1091
. /run/flannel/subnet.env
ip2int() { local a b c d; IFS=. read -r a b c d <<<"$1"; echo $(((a << 24) | (b << 16) | (c << 8) | d)); }
int2ip() { echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"; }
network() { # 10.244.1.1/24 -> 10.244.1.0/24
  local addr=${1%/*} len=${1#*/}
  echo "$(int2ip $(($(ip2int "$addr") & (0xffffffff << (32 - len)) & 0xffffffff)))/$len"
}
ipmasq=true; [[ ${FLANNEL_IPMASQ:-false} == true ]] && ipmasq=false
conf=$(cat <<JSON
{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","bridge":"cni0","hairpinMode":true,
 "ipMasq":$ipmasq,"mtu":$FLANNEL_MTU,"isGateway":true,"isDefaultGateway":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"$(network "$FLANNEL_SUBNET")"}]],
         "routes":[{"dst":"$(network "$FLANNEL_NETWORK")"}],"dataDir":"$state/ipam"}}
JSON
)
cni() {
  CNI_COMMAND=$1 CNI_CONTAINERID="twill-pod-$name" CNI_NETNS="/run/netns/twpod-$name" \
    CNI_IFNAME=eth0 "$CNI_PATH/bridge" <<<"$conf"
}
case $cmd in
  add)
    ip netns add "twpod-$name"
    ip -n "twpod-$name" link set lo up
    if ! out=$(cni ADD); then
      echo "pod: bridge plugin failed: $out" >&2
      cni DEL >/dev/null 2>&1 || true
      ip netns del "twpod-$name"
      exit 1
    fi
    ip -n "twpod-$name" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }'
    ;;
  del)
    if [[ -e /run/netns/twpod-$name ]]; then
      cni DEL >/dev/null 2>&1 || true
      ip netns del "twpod-$name"
    fi
    ;;
  *) echo "usage: pod.sh add|del NAME" >&2; exit 2 ;;
esac
