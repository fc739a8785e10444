#!/usr/bin/env bash
# Runs twill's benchmark: `bench/run.sh quick|full|soak [more options]`
# (make bench-quick / make bench / make bench-soak). Needs root and a built tree (make build).
# Everything it creates is named with a per-run prefix and removed at the
# end, on failure and on Ctrl-C; results go to bench/results/<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-full}"
shift || true
if [[ $(id -u) != 0 ]]; then echo "bench: needs root (network namespaces, BPF)" >&2; exit 2; fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
exec node dist/bench/main.js --profile "$profile" "$@"
