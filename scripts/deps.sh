#!/usr/bin/env bash
# Installs what twill needs on Debian 12: the packages named on the command
# line (only the missing ones; apt-get update first), then `npm ci`, and
# mounts bpffs if it is not mounted. Safe to run again.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Node.js >= 20 (koffi, @kubernetes/client-node). Debian 12's own nodejs is 18:
# machines built for twill ship Node 20 (or install it from NodeSource).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( node_major < 20 )); then
  echo "deps: twill needs Node.js >= 20 (found: ${node_major}); install Node 20, e.g. from NodeSource (see vagrant/provision/node20.sh)" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
