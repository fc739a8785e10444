# twill — the targets people use: make, make demo, make test, make bench, make image, make clean.
# `make deps` installs what a fresh Debian 12 machine lacks; the others call it.

SHELL        := /bin/bash
DEB_PKGS     := clang llvm libbpf-dev bpftool iproute2 iptables nftables etcd-server etcd-client \
                iperf3 sockperf containernetworking-plugins ethtool tcpdump procps \
                iputils-ping curl util-linux openssl strace linux-perf
BPF_CFLAGS   := -O2 -g -target bpf -Wall -Werror -I bpf -I build/bpf -I/usr/include/x86_64-linux-gnu
BPF_SRCS     := $(wildcard bpf/*.c)
BPF_HDRS     := $(wildcard bpf/*.h bpf/lib/*.h)
BPF_OBJS     := $(patsubst bpf/%.c,build/bpf/%.o,$(BPF_SRCS))
TS_SRCS      := $(shell find src test scripts bench sim -name '*.ts' 2>/dev/null)
STAMP        := build/.deps

.PHONY: all build deps test test-unit test-integration demo demo-down bench bench-quick bench-soak clean distclean image image-test

all: build

deps: $(STAMP)
$(STAMP): package.json package-lock.json scripts/deps.sh
	@bash scripts/deps.sh $(DEB_PKGS)
	@mkdir -p build && touch $@

build: $(STAMP) $(BPF_OBJS) dist/.built

build/bpf/vmlinux.h: | $(STAMP)
	@mkdir -p build/bpf
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

# Each program is compiled, then linked with bpftool (which also checks the BTF).
build/bpf/%.tmp.o: bpf/%.c $(BPF_HDRS) build/bpf/vmlinux.h
	clang $(BPF_CFLAGS) -c $< -o $@
build/bpf/%.o: build/bpf/%.tmp.o
	bpftool gen object $@ $<

dist/.built: $(TS_SRCS) tsconfig.json $(STAMP)
	npx tsc -p tsconfig.json
	@touch $@

test: build
	bash test/run.sh

test-unit: build
	bash test/run.sh unit

test-integration: build
	bash test/run.sh integration

demo: build
	bash scripts/demo.sh up

demo-down:
	bash scripts/demo.sh down

bench: build
	bash bench/run.sh full

bench-quick: build
	bash bench/run.sh quick

# The chaos soak alone (30 min; not part of make test): SOAK_ARGS="--soak-minutes 5 --seed 42 --no-publish".
bench-soak: build
	bash bench/run.sh soak $(SOAK_ARGS)

# The container image, with buildah from bases made here (scripts/image.sh):
# no Docker daemon and no Docker Hub needed. IMAGE=... names it.
image:
	bash scripts/image.sh build

image-test:
	bash scripts/image.sh test

clean:
	rm -rf build dist

distclean: clean
	rm -rf node_modules
