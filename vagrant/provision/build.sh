#!/usr/bin/env bash
# Builds twill in the rsync'd tree: `make build` runs scripts/deps.sh first
# (the Debian packages of the Makefile's DEB_PKGS — clang, libbpf, etcd,
# iperf3, sockperf, the CNI plugins, ... — then `npm ci`, and bpffs), then
# compiles the BPF object against this VM's kernel BTF and the TypeScript.
set -euo pipefail
cd /srv/twill
make build
ln -sf /srv/twill/bin/twill /usr/local/bin/twill
echo "build: $(twill --version 2>/dev/null || echo built) on $(uname -r)"
