/**
 * twill run exactly as upstream kube-flannel.yml (v0.28) runs flanneld, only
 * the image changed: the same command, args, env and mounts, against the
 * simulated API server (sim/kubeapi.ts) over in-cluster config.
 *
 *   netns imXXXX-k / imXXXX-b (one per case)
 *   ┌───────────────────────────────────────────────────────────────────────┐
 *   │ imeth0 (veth, peer imeth0p) 192.168.77.2/24, default via 192.168.77.1 onlink       │
 *   │ fake kube-apiserver https://192.168.77.2:6443 (self-signed, a token)  │
 *   │                                                                       │
 *   │ "container": unshare --mount --uts (private propagation), hostname =  │
 *   │ the node name (a hostNetwork pod has the node's), its own /run        │
 *   │ (tmpfs), /etc and /opt overlaid (writes stay in the run's folder):    │
 *   │   /run/flannel                              <- <case>/run-flannel     │
 *   │   /etc/kube-flannel (ro)                    <- <case>/kube-flannel    │
 *   │   /run/xtables.lock                         <- <case>/xtables.lock    │
 *   │   /var/run/secrets/kubernetes.io/serviceaccount (ro) <- <case>/sa     │
 *   │   /etc/cni/net.d                            <- <case>/cni-net.d       │
 *   │   /opt/bin/{flanneld,install-conf}  -> the built tree's bin/          │
 *   │   /proc/sys read-only, as in an unprivileged container                │
 *   │ capabilities: the runtime's defaults + NET_ADMIN, NET_RAW (kube-      │
 *   │ flannel's), + BPF, PERFMON (twill's DaemonSet); never SYS_ADMIN       │
 *   └───────────────────────────────────────────────────────────────────────┘
 *
 * The init container install-cni (`/opt/bin/install-conf
 * /etc/kube-flannel/cni-conf.json /etc/cni/net.d/10-flannel.conflist`) runs
 * first, then the daemon: `/opt/bin/flanneld --ip-masq --kube-subnet-mgr
 * --healthz-port=8081` with POD_NAME, POD_NAMESPACE, EVENT_QUEUE_DEPTH=5000,
 * CONT_WHEN_CACHE_NOT_READY=false and the service's KUBERNETES_SERVICE_HOST
 * and _PORT (the kubelet's), nothing else (env -i).
 *
 *   1) kube-flannel's capabilities: the kernel dataplane; the log says why
 *      once; /metrics twill_dataplane_info{dataplane="kernel",reason};
 *      `twill status` (run in the container's namespaces, as kubectl exec)
 *      prints the reason; subnet.env in the bind-mounted /run/flannel; the
 *      node's annotations; /readyz on 8081.
 *   2) twill's DaemonSet's capabilities (its capabilities.add, read from
 *      deploy/kubernetes/30-daemonset.yaml: + BPF and PERFMON, no
 *      SYS_ADMIN) with the host's /sys/fs/bpf visible: bpf, pins under
 *      /sys/fs/bpf/twill/<node name>, removed afterwards.
 *
 * Deviation from a real pod: none in the spec; the node name is per-run
 * (im prefix), so is the hostname, which the default --bpf-pin-dir follows.
 * net.ipv4.ip_forward is set beforehand (as the node or an init container
 * does), since /proc/sys is read-only here.
 * Also: install-conf replaces the file atomically (a reader never sees a
 * partial file) and behaves like flannel's on errors.
 *
 * With TWILL_IMAGE=<image built by `make image`>, both cases run a second
 * time in that image with podman (runc), the same spec as `podman run`
 * flags: --network host (from the case's netns), the same volumes, env,
 * capabilities (--cap-drop all + the list), --entrypoint /opt/bin/flanneld.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { FakeKubeProcess } from "../lib/fakekube-main.js";
import { onCleanup, run, spawnIn, stopProcess, waitFor } from "../lib/exec.js";

const ROOT = resolve(fileURLToPath(import.meta.url), "../../../..");
const RUN = `im${randomBytes(3).toString("hex")}`;
const A = "flannel.alpha.coreos.com";
const IP = "192.168.77.2";
const PORT = 6443;
const TOKEN = `${RUN}-token`;
const POD_NS = "kube-flannel";
const CNI_CONF = JSON.stringify({
  name: "cbr0", cniVersion: "0.3.1",
  plugins: [{ type: "flannel", delegate: { hairpinMode: true, isDefaultGateway: true } }, { type: "portmap", capabilities: { portMappings: true } }],
}, null, 2);
const NET_CONF = JSON.stringify({ Network: "10.244.0.0/16", EnableNFTables: false, Backend: { Type: "vxlan" } }, null, 2);

/** The container runtime's default capabilities (containerd/CRI-O), lower case for setpriv. */
const RUNTIME_DEFAULT_CAPS = ["chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid", "setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write"];
/** kube-flannel.yml: capabilities.add [NET_ADMIN, NET_RAW]. */
const KUBE_FLANNEL_CAPS = [...RUNTIME_DEFAULT_CAPS, "net_admin", "net_raw"];
/** twill's DaemonSet: the runtime's defaults + its capabilities.add, read from deploy/kubernetes/30-daemonset.yaml. */
const TWILL_CAPS = (() => {
  const ds = parseAllDocuments(readFileSync(join(ROOT, "deploy/kubernetes/30-daemonset.yaml"), "utf8")).map((d) => d.toJS()).find((o) => o?.kind === "DaemonSet");
  const add: string[] = ds.spec.template.spec.containers[0].securityContext.capabilities.add;
  return [...new Set([...RUNTIME_DEFAULT_CAPS, ...add.map((c) => c.toLowerCase())])];
})();

/**
 * What the container runtime does before it runs the container's command
 * ($1 = the case's folder, $2 = the hostname, $3 = setpriv's bounding set,
 * then the command), in a fresh mount and UTS namespace.
 */
const CONTAINER_SH = `
set -eu
C=$1; host=$2; caps=$3; shift 3
echo "$host" >/proc/sys/kernel/hostname
mount -t tmpfs -o mode=0755 ${RUN}run /run
mkdir -p /run/flannel /run/secrets/kubernetes.io/serviceaccount
touch /run/xtables.lock
mount --bind "$C/run-flannel" /run/flannel
mount --bind "$C/xtables.lock" /run/xtables.lock
mount --bind "$C/sa" /run/secrets/kubernetes.io/serviceaccount
mount -o remount,bind,ro /run/secrets/kubernetes.io/serviceaccount
for d in etc opt; do
  mkdir -p "$C/ovl/$d/up" "$C/ovl/$d/work"
  mount -t overlay ${RUN}$d -o "lowerdir=/$d,upperdir=$C/ovl/$d/up,workdir=$C/ovl/$d/work" "/$d"
done
mkdir -p /etc/kube-flannel /etc/cni/net.d /opt/bin
mount --bind "$C/kube-flannel" /etc/kube-flannel
mount -o remount,bind,ro /etc/kube-flannel
mount --bind "$C/cni-net.d" /etc/cni/net.d
mount --bind "$C/opt-bin" /opt/bin
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
exec setpriv --bounding-set "-all,$caps" --inh-caps -all --ambient-caps -all -- "$@"
`;

type RuntimeKind = "unshare" | "podman";

interface Case {
  readonly name: string;
  readonly kind: "kernel" | "bpf";
  readonly runtime: RuntimeKind;
  readonly netns: string;
  readonly node: string;
  readonly pod: string;
  readonly dir: string;
  readonly caps: readonly string[];
  kube?: FakeKubeProcess;
  daemon?: ChildProcess;
}

/** An image built from the Dockerfile (`make image`): the same cases then also run in it with podman. */
const IMAGE = process.env.TWILL_IMAGE;
const RUNTIMES: RuntimeKind[] = IMAGE ? ["unshare", "podman"] : ["unshare"];

const base = mkdtempSync(`/tmp/${RUN}-`);
const pinDir = (c: Case) => `/sys/fs/bpf/twill/${c.node}`;
const hadTwillPinParent = existsSync("/sys/fs/bpf/twill");

/** The environment kube-flannel.yml's container has (plus the kubelet's service variables), nothing else. */
function podEnv(c: Case): string[] {
  return [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    `POD_NAME=${c.pod}`, `POD_NAMESPACE=${POD_NS}`,
    "EVENT_QUEUE_DEPTH=5000", "CONT_WHEN_CACHE_NOT_READY=false",
    `KUBERNETES_SERVICE_HOST=${IP}`, `KUBERNETES_SERVICE_PORT=${PORT}`,
  ];
}

/** argv (for nsenter) that runs `cmd` in the case's "container" (a new mount + UTS namespace in its netns). */
function inContainer(c: Case, cmd: string[]): string[] {
  return [`--net=/run/netns/${c.netns}`, "--", "unshare", "--mount", "--uts", "--propagation", "private", "--",
    "sh", "-c", CONTAINER_SH, "sh", c.dir, c.node, c.caps.map((x) => `+${x}`).join(","), "env", "-i", ...podEnv(c), ...cmd];
}

/**
 * podman (with TWILL_IMAGE): the same spec as `podman run` flags. runc, not
 * crun: crun refuses this machine's hybrid cgroup v1/v2 layout. The rlimits
 * are lowered because podman's defaults (1048576 open files and processes)
 * are above this machine's hard limits and raising them needs
 * CAP_SYS_RESOURCE, which root lacks here; twill needs neither.
 */
const PODMAN = ["--runtime", "runc"];
const PODMAN_RUN = ["run", "--rm", "--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
  // The kubelet runs containers without a seccomp filter unless the pod asks
  // for one (or --seccomp-default is on); podman's default profile
  // (containers-common's, also CRI-O's RuntimeDefault) refuses bpf() to
  // anything without CAP_SYS_ADMIN. twill's DaemonSet says Unconfined.
  "--security-opt", "seccomp=unconfined"];
const capFlags = (c: Case) => ["--cap-drop", "all", ...c.caps.flatMap((x) => ["--cap-add", x.toUpperCase()])];
const envFlags = (c: Case) => podEnv(c).filter((e) => !e.startsWith("PATH=")).flatMap((e) => ["-e", e]);
const podmanName = (c: Case) => `${RUN}-${c.kind}`;

/** The init container install-cni. */
async function installCni(c: Case): Promise<void> {
  const [src, dst] = ["/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"];
  const r = c.runtime === "unshare"
    ? await run("nsenter", inContainer(c, ["/opt/bin/install-conf", src, dst]), { allowFail: true })
    : await run("nsenter", [`--net=/run/netns/${c.netns}`, "--", "podman", ...PODMAN, ...PODMAN_RUN, ...capFlags({ ...c, caps: RUNTIME_DEFAULT_CAPS }),
      "-v", `${c.dir}/cni-net.d:/etc/cni/net.d`, "-v", `${c.dir}/kube-flannel:/etc/kube-flannel`,
      "--entrypoint", "/opt/bin/install-conf", IMAGE!, src, dst], { allowFail: true, timeoutMs: 120_000 });
  assert.equal(r.code, 0, `install-cni: ${r.stdout}${r.stderr}`);
}

/** The kube-flannel container: command, args, env, mounts of kube-flannel.yml. */
function startDaemon(c: Case): ChildProcess {
  const args = ["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"];
  const logFile = join(c.dir, "twill.log");
  if (c.runtime === "unshare") return spawnIn(undefined, "nsenter", inContainer(c, ["/opt/bin/flanneld", ...args]), { logFile });
  return spawnIn(undefined, "nsenter", [`--net=/run/netns/${c.netns}`, "--", "podman", ...PODMAN, ...PODMAN_RUN, "--name", podmanName(c),
    "--uts", "private", "--hostname", c.node, ...capFlags(c), ...envFlags(c),
    "-v", `${c.dir}/run-flannel:/run/flannel`, "-v", `${c.dir}/kube-flannel:/etc/kube-flannel:ro`,
    "-v", `${c.dir}/xtables.lock:/run/xtables.lock`, "-v", `${c.dir}/sa:/var/run/secrets/kubernetes.io/serviceaccount:ro`,
    // twill's addition for bpf (docs/migrate-from-flannel.md): the host's bpffs, HostToContainer.
    ...(c.kind === "bpf" ? ["-v", "/sys/fs/bpf:/sys/fs/bpf:rslave"] : []),
    "--entrypoint", "/opt/bin/flanneld", IMAGE!, ...args], { logFile });
}

/** Runs `cmd` in the running daemon's container, as `kubectl exec`. */
function execInPod(c: Case, cmd: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // A host-network container has no network namespace of its own to join: exec from the case's.
  if (c.runtime === "podman") return run("podman", [...PODMAN, "exec", podmanName(c), ...cmd], { netns: c.netns, allowFail: true });
  const pid = String(c.daemon!.pid);
  return run("nsenter", ["-t", pid, "--net", "--mount", "--uts", "--", "setpriv", "--bounding-set", `-all,${c.caps.map((x) => `+${x}`).join(",")}`, "--",
    "env", "-i", ...podEnv(c), ...cmd], { allowFail: true });
}

async function curl(c: Case, path: string): Promise<{ code: number; body: string }> {
  const r = await run("curl", ["-s", "-m", "3", "-o", "-", "-w", "\n%{http_code}", `http://127.0.0.1:8081${path}`], { netns: c.netns, allowFail: true });
  const i = r.stdout.lastIndexOf("\n");
  return { code: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, i) };
}

async function setUp(c: Case): Promise<void> {
  // The node's network namespace: one uplink with a default route.
  await run("ip", ["netns", "add", c.netns]);
  for (const args of [
    ["link", "set", "lo", "up"],
    ["link", "add", "imeth0", "type", "veth", "peer", "name", "imeth0p"],
    ["link", "set", "imeth0p", "up"],
    ["addr", "add", `${IP}/24`, "dev", "imeth0"],
    ["link", "set", "imeth0", "up"],
    ["route", "add", "default", "via", "192.168.77.1", "dev", "imeth0", "onlink"],
  ]) await run("ip", args, { netns: c.netns });
  await run("sysctl", ["-qw", "net.ipv4.ip_forward=1"], { netns: c.netns });

  // The pod's volumes and the service account.
  for (const d of ["run-flannel", "kube-flannel", "cni-net.d", "sa", "opt-bin"]) mkdirSync(join(c.dir, d), { recursive: true });
  writeFileSync(join(c.dir, "xtables.lock"), "");
  writeFileSync(join(c.dir, "kube-flannel", "net-conf.json"), NET_CONF);
  writeFileSync(join(c.dir, "kube-flannel", "cni-conf.json"), CNI_CONF);
  symlinkSync(join(ROOT, "bin", "twill"), join(c.dir, "opt-bin", "flanneld"));
  symlinkSync(join(ROOT, "bin", "install-conf"), join(c.dir, "opt-bin", "install-conf"));
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", join(c.dir, "apiserver.key"), "-out", join(c.dir, "sa", "ca.crt"), "-days", "1",
    "-subj", "/CN=kubernetes", "-addext", `subjectAltName=IP:${IP}`], { stdio: "ignore" });
  writeFileSync(join(c.dir, "sa", "token"), TOKEN);
  writeFileSync(join(c.dir, "sa", "namespace"), POD_NS);

  c.kube = await FakeKubeProcess.start(c.netns, IP, PORT, { certFile: join(c.dir, "sa", "ca.crt"), keyFile: join(c.dir, "apiserver.key"), tokens: [TOKEN] });
  await c.kube.call("addNode", { name: c.node, podCIDR: c.kind === "kernel" ? "10.244.7.0/24" : "10.244.8.0/24", internalIP: IP });
  await c.kube.call("addPod", POD_NS, c.pod, c.node);
}

/** install-cni, then kube-flannel: returns when /readyz is 200. */
async function startPod(c: Case): Promise<void> {
  await installCni(c);
  c.daemon = startDaemon(c);
  try {
    await waitFor(async () => (await curl(c, "/readyz")).code === 200, { what: `/readyz on 8081 (${c.name})`, timeoutMs: 60_000 });
  } catch (e) {
    assert.fail(`${(e as Error).message}\n--- twill.log\n${readFileSync(join(c.dir, "twill.log"), "utf8")}`);
  }
}

async function tearDown(c: Case): Promise<void> {
  if (c.daemon) await stopProcess(c.daemon, { graceMs: 5000 }).catch(() => undefined);
  if (c.runtime === "podman") await run("podman", [...PODMAN, "rm", "-f", "--ignore", podmanName(c)], { allowFail: true });
  if (c.kind === "bpf") {
    await run(join(ROOT, "bin", "twill"), ["teardown", `--bpf-pin-dir=${pinDir(c)}`, "--node-name", c.node], { netns: c.netns, allowFail: true });
  }
  await c.kube?.stop().catch(() => undefined);
  await run("ip", ["netns", "del", c.netns], { allowFail: true });
  rmSync(pinDir(c), { recursive: true, force: true });
}

function cleanupSync(cases: readonly Case[]): void {
  for (const c of cases) {
    if (c.runtime === "podman") try { execFileSync("podman", [...PODMAN, "rm", "-f", "--ignore", podmanName(c)], { stdio: "ignore" }); } catch { /* gone */ }
    try { execFileSync("ip", ["netns", "del", c.netns], { stdio: "ignore" }); } catch { /* gone */ }
    rmSync(pinDir(c), { recursive: true, force: true });
  }
  if (!hadTwillPinParent) try { rmdirSync("/sys/fs/bpf/twill"); } catch { /* not ours, or not empty */ }
  rmSync(base, { recursive: true, force: true });
}

function makeCase(kind: "kernel" | "bpf", runtime: RuntimeKind, caps: readonly string[]): Case {
  const tag = `${kind[0]}${runtime[0]}`;
  const dir = join(base, tag);
  mkdirSync(dir);
  return { name: `${kind}, ${runtime}`, kind, runtime, netns: `${RUN}-${tag}`, node: `${RUN}-${tag}-node`, pod: `kube-flannel-ds-${RUN}${tag}`, dir, caps };
}

const cases: Case[] = [];
onCleanup(() => cleanupSync(cases));

function log(c: Case): string {
  return readFileSync(join(c.dir, "twill.log"), "utf8");
}

async function checkCommon(c: Case): Promise<void> {
  // The CNI config as install-cni writes it, and no temp file left.
  assert.equal(readFileSync(join(c.dir, "cni-net.d", "10-flannel.conflist"), "utf8"), CNI_CONF);
  assert.deepEqual(readdirSync(join(c.dir, "cni-net.d")), ["10-flannel.conflist"]);
  // The subnet file, in the bind-mounted /run/flannel.
  const env = readFileSync(join(c.dir, "run-flannel", "subnet.env"), "utf8");
  const sub = c.kind === "kernel" ? "10.244.7.1/24" : "10.244.8.1/24";
  assert.match(env, /^FLANNEL_NETWORK=10\.244\.0\.0\/16$/m);
  assert.match(env, new RegExp(`^FLANNEL_SUBNET=${sub.replace(/\./g, "\\.")}$`, "m"));
  assert.match(env, /^FLANNEL_IPMASQ=true$/m);
  assert.ok(!existsSync("/run/flannel/subnet.env") || !readFileSync("/run/flannel/subnet.env", "utf8").includes(sub), "the host's /run/flannel was written");
  // The node, found through the pod, annotated as flanneld does.
  const node = await c.kube!.call<{ metadata: { annotations?: Record<string, string> }; status: { conditions?: { type: string; status: string }[] } }>("node", c.node);
  const a = node.metadata.annotations ?? {};
  assert.equal(a[`${A}/kube-subnet-manager`], "true");
  assert.equal(a[`${A}/backend-type`], "vxlan");
  assert.equal(a[`${A}/public-ip`], IP);
  assert.match(JSON.parse(a[`${A}/backend-data`] ?? "{}").VtepMAC ?? "", /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  assert.equal(node.status.conditions?.find((x) => x.type === "NetworkUnavailable")?.status, "False");
  assert.match(log(c), /node name from our pod/);
}

describe("kube-flannel.yml's container spec runs twill", { concurrency: false }, () => {
  before(() => {
    for (const tool of ["setpriv", "unshare", "nsenter", "openssl", "curl"]) execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  });
  after(async () => {
    for (const c of cases) await tearDown(c).catch(() => undefined);
    cleanupSync(cases);
  });

  test("install-conf: usage, flannel's messages, atomic replacement", async () => {
    const ic = join(ROOT, "bin", "install-conf");
    const d = join(base, "install-conf");
    mkdirSync(d);
    const usage = await run(ic, [], { allowFail: true });
    assert.equal(usage.code, 1);
    assert.match(usage.stderr, /^usage: .*install-conf <src> <dest>$/m);
    const missing = await run(ic, [join(d, "nope"), join(d, "dest")], { allowFail: true });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error installing ".*\/nope": cannot open file ".*\/nope": /);
    assert.deepEqual(readdirSync(d), [], "a failed install leaves no temp file");

    // A stale temp file (flannel's fixed name) is removed; the mode is the source's.
    const a = "a".repeat(300_000) + "\n";
    const b = "b".repeat(200_000) + "\n";
    writeFileSync(join(d, "a"), a, { mode: 0o640 });
    writeFileSync(join(d, "b"), b, { mode: 0o640 });
    mkdirSync(join(d, "net.d"));
    writeFileSync(join(d, "net.d", ".10-flannel.conflist.tmp"), "stale");
    await run(ic, [join(d, "a"), join(d, "net.d", "10-flannel.conflist")]);
    assert.deepEqual(readdirSync(join(d, "net.d")), ["10-flannel.conflist"]);
    assert.equal(execFileSync("stat", ["-c", "%a", join(d, "net.d", "10-flannel.conflist")], { encoding: "utf8" }).trim(), "640");

    // Atomic: a reader polling the file while it is replaced 40 times sees only whole versions.
    const dest = join(d, "net.d", "10-flannel.conflist");
    let stop = false;
    let reads = 0;
    const partial: number[] = [];
    const reader = (async () => {
      while (!stop) {
        const t = readFileSync(dest, "utf8");
        reads++;
        if (t !== a && t !== b) partial.push(t.length);
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 0; i < 40; i++) await run(ic, [join(d, i % 2 ? "a" : "b"), dest]);
    stop = true;
    await reader;
    assert.ok(reads > 40, `the reader read only ${reads} times`);
    assert.deepEqual(partial, [], `partial files seen (lengths) in ${reads} reads`);
    assert.deepEqual(readdirSync(join(d, "net.d")), ["10-flannel.conflist"]);
  });

  for (const runtime of RUNTIMES) {
  test(`${runtime}: kube-flannel's capabilities (NET_ADMIN, NET_RAW): the kernel dataplane, and it says why`, async (t) => {
    const c = makeCase("kernel", runtime, KUBE_FLANNEL_CAPS);
    cases.push(c);
    await setUp(c);
    await startPod(c);
    await checkCommon(c);

    const why = log(c).split("\n").filter((l) => l.includes("running the kernel dataplane"));
    assert.equal(why.length, 1, `the reason once in the log:\n${log(c)}`);
    assert.match(why[0]!, /bpf unavailable: the process lacks CAP_BPF/);

    const metrics = (await curl(c, "/metrics")).body;
    const info = metrics.split("\n").find((l) => l.startsWith("twill_dataplane_info{"));
    assert.match(info ?? "", /dataplane="kernel"/);
    assert.match(info ?? "", /reason="bpf unavailable: the process lacks CAP_BPF[^"]*"/);

    const st = await execInPod(c, ["/opt/bin/flanneld", "status", "--kube-subnet-mgr"]);
    assert.match(st.stdout, /^Dataplane: +kernel .*the process lacks CAP_BPF/m, `twill status:\n${st.stdout}\n${st.stderr}`);
    assert.equal(st.code, 0, `twill status exit ${st.code}:\n${st.stdout}\n${st.stderr}`);
    t.diagnostic(`log: ${why[0]}`);
    t.diagnostic(`metrics: ${info}`);
    t.diagnostic(`status: ${st.stdout.split("\n").find((l) => l.startsWith("Dataplane:"))}`);
    // flannel's kernel state: the regular vxlan device.
    const link = await run("ip", ["-d", "link", "show", "flannel.1"], { netns: c.netns });
    assert.match(link.stdout, /vxlan id 1 local 192\.168\.77\.2 dev imeth0/);
    assert.ok(!existsSync(pinDir(c)), "no pins in kernel mode");
  });

  test(`${runtime}: with twill's DaemonSet's capabilities (+ BPF, PERFMON; no SYS_ADMIN) and the host's bpffs: the bpf dataplane`, async (t) => {
    assert.ok(!TWILL_CAPS.includes("sys_admin"));
    const c = makeCase("bpf", runtime, TWILL_CAPS);
    cases.push(c);
    await setUp(c);
    await startPod(c);
    await checkCommon(c);
    // /proc/sys is read-only in the container and the bpf dataplane sets
    // net.ipv4.ip_forward: that it started at all shows a value already set
    // is not written again.
    assert.doesNotMatch(log(c), /running the kernel dataplane|ERR_SYSCTL/);
    const info = (await curl(c, "/metrics")).body.split("\n").find((l) => l.startsWith("twill_dataplane_info{"));
    assert.match(info ?? "", /dataplane="bpf"/);
    assert.match(info ?? "", /reason=""/);
    const st = await execInPod(c, ["/opt/bin/flanneld", "status", "--kube-subnet-mgr"]);
    assert.match(st.stdout, new RegExp(`^Dataplane: +bpf .*pins ${pinDir(c)}`, "m"), `twill status:\n${st.stdout}\n${st.stderr}`);
    assert.ok(readdirSync(pinDir(c)).length > 0, `pins under ${pinDir(c)}`);
    t.diagnostic(`metrics: ${info}`);
    t.diagnostic(`status: ${st.stdout.split("\n").find((l) => l.startsWith("Dataplane:"))}`);
    t.diagnostic(`pins: ${readdirSync(pinDir(c)).join(" ")}`);
  });
  }
});
