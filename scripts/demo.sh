#!/usr/bin/env bash
# `make demo` / `make demo-down`.
#
#   demo.sh up     remove an earlier demo, then build and show one (scripts/demo.ts)
#   demo.sh down   remove the demo: kill what runs in the twdemo* namespaces,
#                  delete them, and remove /tmp/twdemo* and /sys/fs/bpf/twdemo*
#
# `down` is plain shell on purpose: it works with a stale or missing dist/ and
# on a half-built demo. Everything the demo makes is named with PREFIX.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=twdemo

die() { echo "demo: $*" >&2; exit 1; }
plural() { if (($1 == 1)); then echo "$1 $2"; else echo "$1 $3"; fi; }

demo_namespaces() { ip netns list 2>/dev/null | awk -v p="$PREFIX" 'index($1, p) == 1 { print $1 }'; }

demo_paths() { compgen -G "/tmp/$PREFIX*" || true; compgen -G "/sys/fs/bpf/$PREFIX*" || true; }

# Prints what it removes; silent when there is nothing.
sweep() {
  local ns pids killed=0 namespaces paths
  mapfile -t namespaces < <(demo_namespaces)
  for ns in "${namespaces[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    for pid in $pids; do
      if kill -KILL "$pid" 2>/dev/null; then killed=$((killed + 1)); fi
    done
  done
  if ((${#namespaces[@]})); then
    printf 'netns del %s\n' "${namespaces[@]}" | ip -force -batch - 2>/dev/null || true
    ((killed == 0)) || echo "   stopped $(plural "$killed" process processes) (the twill daemons and their helpers)"
    echo "   deleted $(plural "${#namespaces[@]}" "network namespace" "network namespaces") $PREFIX* (and the devices in them)"
  fi
  mapfile -t paths < <(demo_paths)
  if ((${#paths[@]})); then
    rm -rf -- "${paths[@]}"
    echo "   removed ${paths[*]}"
  fi
}

is_up() { [[ -n $(demo_namespaces) || -n $(demo_paths) ]]; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, BPF): run it as root or with sudo"

case "${1:-}" in
  up)
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    if is_up; then
      echo "A demo is already up: tearing it down first."
      sweep
      echo
    fi
    [[ -f dist/scripts/demo.js ]] || die "dist/scripts/demo.js is missing: run make demo (it builds first)"
    exec node dist/scripts/demo.js up
    ;;
  down)
    if is_up; then
      echo "Removing the twill demo:"
      sweep
      is_up && die "something is left: $(demo_namespaces | tr '\n' ' ') $(demo_paths | tr '\n' ' ')"
      echo "Done."
    else
      echo "No twill demo is running."
    fi
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
