#!/usr/bin/env bash
# Runs twill's tests with node's test runner: unit tests first (fast, no
# privileges needed), then the integration tests, which build namespaced
# clusters and need root. `test/run.sh unit` or `test/run.sh integration`
# runs one group. Integration tests run one file at a time: they share the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
group="${1:-all}"
files=()
if [[ $group == all || $group == unit ]]; then
  files+=(dist/test/unit/*.test.js)
fi
if [[ $group == all || $group == integration ]]; then
  if [[ $(id -u) != 0 ]]; then echo "integration tests need root (network namespaces, BPF)" >&2; exit 1; fi
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  files+=(dist/test/integration/*.test.js)
fi
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
