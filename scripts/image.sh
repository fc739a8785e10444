#!/usr/bin/env bash
# Builds twill's image with Debian's daemonless tools (buildah, podman), from
# base images made on this machine, so that no registry but Debian's mirror
# and npm's is needed (Docker Hub may be out of reach):
#
#   BASE        Debian 12 made with debootstrap (--variant=minbase), imported
#               as localhost/twill-base:bookworm
#   NODE_IMAGE  FROM scratch + this machine's Node 20 binary at
#               /usr/local/bin/node and its npm at /usr/local/lib/node_modules/npm
#               (the official node image's layout, which the Dockerfile expects),
#               tagged localhost/twill-node:20
#   the image   `buildah bud` of the repository's Dockerfile with those two as
#               build args, tagged $IMAGE (default localhost/twill:dev)
#
#   bash scripts/image.sh build        (make image)
#   bash scripts/image.sh test         (make image-test) kube-flannel.yml's
#                                      container spec in the image, with podman
#
# What this machine needed (and the script and the test do): RUN steps
# with --isolation chroot and containers run by runc, because crun refuses a
# host with cgroup v1 and v2 controllers both mounted ("cgroups in hybrid
# mode not supported"); rlimits no higher than the machine's (root here has
# no CAP_SYS_RESOURCE, so podman's default 1048576
# cannot be set); the proxy's CA for npm (EXTRA_CA below).
#
# Needs root (debootstrap, and rootful buildah/podman: rootless would need
# subuid ranges and fuse-overlayfs). Scratch files live in a temporary folder
# removed on exit; the bases are kept in the local store and rebuilt only
# when missing (FORCE_BASE=1 rebuilds them).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/twill:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/twill-base:bookworm}
NODE_IMAGE=${NODE_IMAGE:-localhost/twill-node:20}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

need() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  if ((${#missing[@]})); then
    echo "image: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

have_image() { podman image exists "$1"; }

build() {
  [ "$(id -u)" = 0 ] || { echo "image: run as root (debootstrap and rootful buildah)" >&2; exit 1; }
  need buildah podman debootstrap
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/twill-image.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT

  if [ -n "${FORCE_BASE:-}" ] || ! have_image "$BASE_IMAGE"; then
    echo "image: debootstrap bookworm from $MIRROR"
    debootstrap --variant=minbase bookworm "$tmp/rootfs" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 \
      || { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
    # The official debian image's sources, so the Dockerfile's apt-get works.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
      "$MIRROR" "$MIRROR" >"$tmp/rootfs/etc/apt/sources.list"
    rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*
    tar -C "$tmp/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$tmp/rootfs"
  fi

  if [ -n "${FORCE_BASE:-}" ] || ! have_image "$NODE_IMAGE"; then
    node=$(command -v node)
    npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
    "$node" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
      || { echo "image: this machine's node is $("$node" --version); the image needs >= 20" >&2; exit 1; }
    mkdir -p "$tmp/node/usr/local/bin" "$tmp/node/usr/local/lib/node_modules"
    cp "$node" "$tmp/node/usr/local/bin/node"
    cp -a "$npm_dir" "$tmp/node/usr/local/lib/node_modules/npm"
    printf 'FROM scratch\nCOPY usr /usr\n' >"$tmp/node/Containerfile"
    buildah bud -q --isolation "${ISOLATION:-chroot}" -f "$tmp/node/Containerfile" -t "$NODE_IMAGE" "$tmp/node" >/dev/null
  fi

  echo "image: building $IMAGE"
  # --isolation chroot: RUN steps run chrooted, without an OCI runtime. The
  # Dockerfile's RUN steps need nothing more (host network), and crun, the
  # default, refuses hosts with cgroup v1 and v2 controllers both mounted
  # ("cgroups in hybrid mode not supported"). ISOLATION=oci to override.
  # Behind a TLS-intercepting proxy npm needs its CA: EXTRA_CA (default
  # $NODE_EXTRA_CA_CERTS, what this machine's node uses) goes in as the
  # Dockerfile's build secret, never into a layer.
  local ca=${EXTRA_CA:-${NODE_EXTRA_CA_CERTS:-}} secret=()
  [ -n "$ca" ] && [ -s "$ca" ] && secret=(--secret "id=extra_ca,src=$ca")
  buildah bud --isolation "${ISOLATION:-chroot}" --network host "${secret[@]}" \
    --build-arg BASE="$BASE_IMAGE" --build-arg NODE_IMAGE="$NODE_IMAGE" \
    -t "$IMAGE" .
  # buildah 1.28 keeps a working container for a stage that is only a FROM
  # (the node stage, read by COPY --from): remove those.
  buildah containers -q --filter "ancestor=$NODE_IMAGE" | xargs -r buildah rm >/dev/null
}

# kube-flannel.yml's container spec in the image, with podman (runc) against
# the simulated API server: test/integration/kube-flannel-spec.test.ts with
# TWILL_IMAGE set (it also runs the spec on the built tree).
test_image() {
  need podman runc
  podman image exists "$IMAGE" || { echo "image: no $IMAGE; run: $0 build" >&2; exit 1; }
  make build
  TWILL_IMAGE=$IMAGE node --test dist/test/integration/kube-flannel-spec.test.js
}

case "${1:-build}" in
  build) build ;;
  test) test_image ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
