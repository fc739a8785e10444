# syntax=docker/dockerfile:1
#
# twill's image, as the DaemonSet runs it (the same shape as flannel's:
# ENTRYPOINT is the daemon, the DaemonSet passes flanneld's flags as args).
#
#   docker build -t twill .          (or: podman build -t twill .)
#
# The RUN lines use only POSIX sh (no SHELL: the OCI image format has none).
#
# Stages:
#   node     Node 20 from the official image (Debian 12's nodejs is 18; twill
#            needs >= 20). Only its binary (and npm, for the build) is copied.
#   build    clang/llvm/libbpf-dev/bpftool + Node 20: `npm ci`, `make build`
#            (BPF object + TypeScript), then `npm prune --omit=dev`.
#   runtime  BASE + Node 20 + libbpf1, iproute2, iptables, ca-certificates and
#            the built tree under /opt/twill; no compiler, no npm.
#            /opt/bin/flanneld and /opt/bin/install-conf as in flannel's image.
#
# On a machine without Docker Hub: `make image` (scripts/image.sh) makes both
# bases locally (debootstrap; this machine's node) and builds with buildah.
#
# build/bpf/vmlinux.h is generated in the build stage from
# /sys/kernel/btf/vmlinux, i.e. from the kernel of the machine that runs the
# build (container builds see the host's sysfs). The object is CO-RE, so it
# loads on other kernels too; the build fails with a clear message when that
# kernel has no BTF (CONFIG_DEBUG_INFO_BTF).
#
# Both base images are build args so that a mirror or a locally made image
# can stand in: --build-arg BASE=... --build-arg NODE_IMAGE=...
# NODE_IMAGE must hold node at /usr/local/bin/node and npm at
# /usr/local/lib/node_modules/npm (the layout of the official node images),
# built against a glibc no newer than BASE's.

ARG BASE=debian:12-slim
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${BASE} AS build
# hadolint ignore=DL3008
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      clang llvm libbpf-dev bpftool make ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
RUN node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
 || { echo "build: NODE_IMAGE must provide Node >= 20, it has $(node --version)" >&2; exit 1; }
WORKDIR /src
# Dependencies first, so that a source change does not re-run `npm ci`.
# Behind a TLS-intercepting proxy, hand its CA in as a build secret (never
# stored in a layer): --secret id=extra_ca,src=/path/to/ca.pem
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra_ca; fi \
 && npm ci --no-audit --no-fund
COPY . .
# `make build` normally runs scripts/deps.sh first (through build/.deps); here
# the packages are installed above and `npm ci` has run, and deps.sh would
# also apt-get the test/bench packages and mount bpffs, so mark it done.
RUN test -r /sys/kernel/btf/vmlinux \
 || { echo "build: /sys/kernel/btf/vmlinux is missing: the build host's kernel has no BTF, so build/bpf/vmlinux.h cannot be generated" >&2; exit 1; }
RUN mkdir -p build && touch build/.deps \
 && make build \
 && npm prune --omit=dev --no-audit --no-fund \
 && test -s build/bpf/twill.o && test -s dist/src/cli.js

FROM ${BASE} AS runtime
# libbpf1: loaded by koffi (libbpf.so.1). iproute2: for people debugging in
# the pod (twill itself talks rtnetlink, it runs no `ip`). iptables: flannel's masquerade/FORWARD rules
# (Debian's package has both backends, iptables-legacy* and iptables-nft*;
# twill picks the one kube-proxy uses on the host, src/net/masq.ts).
# nftables: `nft`, for "EnableNFTables": true (src/net/nft.ts).
# ca-certificates: TLS to etcd and the Kubernetes API.
# hadolint ignore=DL3008
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libbpf1 iproute2 iptables nftables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /opt/twill
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/build/bpf/twill.o ./build/bpf/twill.o
COPY --from=build /src/bin/twill /src/bin/install-conf ./bin/
# kube-flannel.yml's containers call /opt/bin/flanneld (the daemon) and
# /opt/bin/install-conf <src> <dest> (init container install-cni), so with
# only the image changed that spec runs twill. Symlinks: node runs a
# symlinked main script from its real path, so bin/twill finds ../dist.
# `kubectl exec <pod> -- twill status` needs twill on PATH.
RUN mkdir -p /opt/bin \
 && ln -s /opt/twill/bin/twill /opt/bin/flanneld \
 && ln -s /opt/twill/bin/install-conf /opt/bin/install-conf \
 && ln -s /opt/twill/bin/twill /usr/local/bin/twill \
 && twill --help >/dev/null && /opt/bin/flanneld --version
ENV NODE_ENV=production
# Metrics, /healthz, /readyz when the DaemonSet passes --healthz-port 10756.
EXPOSE 10756
# No HEALTHCHECK: the kubelet ignores it (and the OCI image format drops it);
# the DaemonSet's livenessProbe/readinessProbe use /healthz and /readyz.
# Root, as flanneld's image runs: the daemon needs CAP_NET_ADMIN and
# CAP_NET_RAW, host networking, and for the bpf dataplane CAP_BPF with
# CAP_PERFMON (or CAP_SYS_ADMIN) and /sys/fs/bpf; without those
# `--dataplane auto` (the default) runs the kernel dataplane and says why.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/opt/twill/bin/twill"]
