/**
 * `make demo`: a three-host twill cluster on this machine, left running.
 *
 *   pods    twdemoh1-p1  twdemoh1-p2   twdemoh2-p1  twdemoh2-p2   twdemoh3-p1  twdemoh3-p2
 *                   \    /                    \    /                    \    /
 *   hosts   twdemoh1: cni0 10.244.a.1   twdemoh2: cni0 10.244.b.1   twdemoh3: cni0 10.244.c.1
 *             twill (bpf, fast path)      twill                       twill
 *             flannel.1                   flannel.1                   flannel.1
 *             eth0 192.168.50.11          eth0 192.168.50.12          eth0 192.168.50.13
 *                     \___________________________|___________________________/
 *   underlay                       br0 in netns twdemoul (one L2 segment)
 *
 * How it works:
 * 1) The hosts are built by Cluster.create (test/lib/cluster.ts), the same
 *    topology the integration tests use, with the fixed prefix "twdemo", so
 *    `make demo-down` finds everything: namespaces twdemo*, /tmp/twdemo*,
 *    /sys/fs/bpf/twdemo*.
 * 2) Each host runs `bin/twill` (bpf dataplane, --fast-path, --ip-masq,
 *    healthz on 127.0.0.1:10756 inside the host) on one shared lease
 *    directory, /tmp/twdemo/leases. The daemons are started here, not with
 *    TwillCluster/spawnIn, because those kill what they started when this
 *    process exits: they are detached (own session) and log to
 *    /tmp/twdemo/<host>/twill.log.
 * 3) Pods are added with the real CNI bridge plugin once a host's subnet
 *    file exists (test/lib/cluster.ts addPod), as flannel's CNI plugin does.
 * 4) Traffic: every pod pings every pod on the other hosts; one 8 MiB TCP
 *    transfer is hashed at both ends. Then, per host: the lease, the BPF maps
 *    (`twill maps`), the counters and the per-peer kernel state.
 * 5) Hand-over. Cluster.create arms an exit safety net that sweeps the
 *    cluster; it stays armed while the demo builds, so ^C removes a
 *    half-built cluster. Once the demo is up (or failed after the build, for
 *    inspection) `cluster.keep()` takes it off the net and the cluster
 *    outlives this process.
 *
 * `make demo-down` is a shell sweep in scripts/demo.sh, so it works without
 * a build; scripts/demo.sh also removes an earlier demo before `up`.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { Cluster, addPod, leftovers, readSubnetFile, type Host, type Pod } from "../test/lib/cluster.js";
import { run, runJson, waitFor } from "../test/lib/exec.js";
import { kernelStateCounts, ping, tcpTransfer, type KernelStateCounts } from "../test/lib/traffic.js";
import { DEFAULT_NET_CONFIG, ROOT, TWILL, type BpfState } from "../test/lib/twill.js";
import { parseLease } from "../src/lease/parse.js";
import { formatIP, formatPrefix } from "../src/net/ip.js";
import type { Lease } from "../src/lease/types.js";

const PREFIX = "twdemo";
const HOSTS = 3;
const PODS_PER_HOST = 2;
const HEALTHZ_PORT = 10756;
const VXLAN_DEV = "flannel.1";
const TRANSFER_BYTES = 8 * 1024 * 1024;
const PIN_ROOT = `/sys/fs/bpf/${PREFIX}`;
const LEASE_DIR = `/tmp/${PREFIX}/leases`;

interface Node {
  host: Host;
  subnetFile: string;
  pinDir: string;
  logFile: string;
  pid?: number;
  /** Set when the daemon died while this process watched: "exited with code 1". */
  died?: string;
}

// ---------------------------------------------------------------------------
// Output

const started = Date.now();
const say = (line = ""): void => void process.stdout.write(line + "\n");
const bold = (text: string): string => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const heading = (text: string): void => say(`\n${bold(text)}`);
const plural = (n: number | string, one: string, many = `${one}s`): string => `${n} ${Number(n) === 1 ? one : many}`;
const secs = (ms: number): string => (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);
const repo = (p: string): string => relative(process.cwd(), p) || ".";

function size(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

function table(rows: string[][], indent = "   "): void {
  if (rows.length === 0) return say(`${indent}(none)`);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  for (const r of rows) say(indent + r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd());
}

// ---------------------------------------------------------------------------
// The daemons

function daemonArgs(n: Node): string[] {
  // TwillCluster.args(), but with the default reconcile period and log level:
  // this cluster runs until someone tears it down.
  return [
    TWILL, "--lease-dir", LEASE_DIR, "--iface", "eth0", "--subnet-file", n.subnetFile,
    "--bpf-pin-dir", n.pinDir, "--node-name", n.host.name, "--dataplane", "bpf",
    "--fast-path=true", "--healthz-ip", "127.0.0.1", "--healthz-port", String(HEALTHZ_PORT), "--ip-masq",
  ];
}

/** Starts twill in the host's namespace, detached from this process. */
function startDaemon(n: Node): void {
  writeFileSync(n.logFile, `--- start ${new Date().toISOString()}\n`, { flag: "a" });
  const fd = openSync(n.logFile, "a");
  const child = spawn("nsenter", [`--net=/run/netns/${n.host.netns}`, "--", ...daemonArgs(n)], {
    stdio: ["ignore", fd, fd],
    detached: true,
    cwd: ROOT,
  });
  closeSync(fd);
  n.pid = child.pid;
  child.on("exit", (code, signal) => (n.died = signal ? `was killed by ${signal}` : `exited with code ${code}`));
  child.on("error", (e) => (n.died = `could not start (${e.message})`));
  child.unref();
}

async function http(n: Node, path: string): Promise<string> {
  const r = await run("curl", ["-s", "-m", "2", `http://127.0.0.1:${HEALTHZ_PORT}${path}`], { netns: n.host.netns, allowFail: true });
  return r.code === 0 ? r.stdout : "";
}

function logTail(n: Node, lines = 15): string {
  if (!existsSync(n.logFile)) return "(no log)";
  return readFileSync(n.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
}

async function waitReady(n: Node): Promise<number> {
  const t0 = Date.now();
  await waitFor(async () => n.died !== undefined || (await http(n, "/readyz")).startsWith("ready"), {
    timeoutMs: 20_000, intervalMs: 100, what: `twill on ${n.host.name} to be ready (log: ${n.logFile})`,
  });
  if (n.died) throw new Error(`twill on ${n.host.name} ${n.died} before it was ready (log: ${n.logFile})`);
  return Date.now() - t0;
}

/** Counter name → its comment in bpf/shared.h ("encapsulated straight from a pod veth (fast path)"). */
function counterMeanings(): Map<string, string> {
  const out = new Map<string, string>();
  const header = join(ROOT, "bpf", "shared.h");
  if (!existsSync(header)) return out;
  for (const m of readFileSync(header, "utf8").matchAll(/TWILL_C_(\w+)\s*=\s*\d+\s*,\s*\/\*\s*(.*?)\s*\*\//g)) {
    out.set(m[1]!.toLowerCase(), m[2]!);
  }
  return out;
}

async function maps(n: Node): Promise<BpfState> {
  const r = await run(process.execPath, [TWILL, "maps", "--json", "--bpf-pin-dir", n.pinDir], { netns: n.host.netns });
  return JSON.parse(r.stdout) as BpfState;
}

function readLeases(): Lease[] {
  const dir = join(LEASE_DIR, "subnets");
  return readdirSync(dir)
    .filter((k) => !k.startsWith("."))
    .map((k) => parseLease(k, readFileSync(join(dir, k), "utf8")));
}

// ---------------------------------------------------------------------------
// Sections

async function buildHosts(): Promise<{ cluster: Cluster; nodes: Node[] }> {
  heading(`1. Building ${HOSTS} hosts on one L2 segment`);
  const t0 = Date.now();
  const cluster = await Cluster.create({ prefix: PREFIX, hosts: HOSTS });
  cluster.hosts.forEach((h, i) => {
    const joint = i === 0 ? "─┐" : i === HOSTS - 1 ? "─┘" : "─┤";
    const tail = i === Math.floor((HOSTS - 1) / 2) ? `── br0 (a bridge in netns ${cluster.underlayNetns}: the "switch")` : "";
    say(`   netns ${h.netns}  eth0 ${h.underlayIP}/${h.underlayPrefixLen} ${joint}${tail}`);
  });
  say(`   built in ${secs(Date.now() - t0)}`);
  const nodes = cluster.hosts.map((host) => ({
    host,
    subnetFile: join(host.dir, "subnet.env"),
    pinDir: join(PIN_ROOT, host.name),
    logFile: join(host.dir, "twill.log"),
  }));
  return { cluster, nodes };
}

async function startTwill(nodes: Node[]): Promise<void> {
  heading("2. Starting twill on each host");
  say(`   one lease directory shared by all hosts (their "etcd"): ${LEASE_DIR}`);
  mkdirSync(join(LEASE_DIR, "subnets"), { recursive: true });
  writeFileSync(join(LEASE_DIR, "config"), JSON.stringify(DEFAULT_NET_CONFIG, null, 2));
  say(`   network config: ${JSON.stringify(DEFAULT_NET_CONFIG)}`);
  say(`   flags: --dataplane bpf --fast-path --ip-masq --healthz-ip 127.0.0.1 --healthz-port ${HEALTHZ_PORT}`);
  nodes.forEach(startDaemon);
  const took = await Promise.all(nodes.map(waitReady));
  const rows = nodes.map((n, i) => {
    const env = readSubnetFile(n.subnetFile);
    return [n.host.name, `pid ${n.pid}`, `ready in ${secs(took[i]!)}`, `subnet ${env.subnet}`, `MTU ${env.mtu}`, `log ${n.logFile}`];
  });
  table(rows);
}

async function addPods(cluster: Cluster, nodes: Node[]): Promise<void> {
  heading("3. Pods");
  say("   made by the CNI bridge plugin from each host's subnet.env, as flannel's CNI plugin does");
  for (let p = 1; p <= PODS_PER_HOST; p++) {
    await Promise.all(nodes.map((n) => addPod(cluster, n.host, `p${p}`, n.subnetFile)));
  }
  table(nodes.map((n) => [
    n.host.name, `cni0 ${readSubnetFile(n.subnetFile).subnet}`,
    ...n.host.pods.map((p) => `${p.name} ${p.ip} (netns ${p.netns})`),
  ]));
}

const label = (p: Pod): string => `${p.host.name}-${p.name}`;

/** Pings every pod on other hosts from every pod; returns the failures. */
async function pingAll(pods: Pod[]): Promise<string[]> {
  const rtt = new Map<string, string>();
  const averages: number[] = [];
  const failures: string[] = [];
  await Promise.all(pods.flatMap((a) => pods.filter((b) => b.host !== a.host).map(async (b) => {
    const r = await ping(a.netns, b.ip, { count: 5, intervalMs: 20, timeoutMs: 5000 });
    rtt.set(`${a.netns}>${b.netns}`, r.received ? r.rttAvgMs.toFixed(3) : "LOST");
    if (r.received) averages.push(r.rttAvgMs);
    if (r.received < r.sent || r.received === 0) failures.push(`ping ${label(a)} -> ${label(b)} (${b.ip}): ${r.received}/${r.sent || 5} replies`);
  })));
  say("   ping: average round trip in ms, 5 packets each, from row to column (· same host: not twill's job)");
  table([
    ["", ...pods.map(label)],
    ...pods.map((a) => [label(a), ...pods.map((b) => (a.host === b.host ? "·" : rtt.get(`${a.netns}>${b.netns}`)!))]),
  ], "     ");
  const pairs = pods.length * (pods.length - pods.length / HOSTS);
  const mean = averages.reduce((x, y) => x + y, 0) / (averages.length || 1);
  say(`   ${pairs - failures.length}/${pairs} pairs of pods on different hosts answered every packet; mean round trip ${mean.toFixed(3)} ms`);
  return failures;
}

async function transfer(from: Pod, to: Pod): Promise<string[]> {
  const r = await tcpTransfer(from.netns, to.netns, to.ip, TRANSFER_BYTES, { timeoutMs: 30_000 });
  const ok = r.bytes === r.sentBytes && r.sentSha256 === r.receivedSha256;
  const gbits = (r.bytes * 8) / (r.ms / 1000) / 1e9;
  say(`   tcp:  ${label(from)} -> ${label(to)} (${to.ip}): ${size(r.bytes)} in ${r.ms.toFixed(0)} ms = ${gbits.toFixed(2)} Gbit/s`);
  say(`         sha256 sent ${r.sentSha256.slice(0, 16)}…, received ${r.receivedSha256.slice(0, 16)}… ${ok ? "(match)" : "(DIFFERENT)"}`);
  say(`         the receiver saw the connection come from ${r.peer}${r.peer === from.ip ? " (the pod itself: no NAT between pods)" : ""}`);
  return ok ? [] : [`tcp ${label(from)} -> ${label(to)}: sent ${r.sentBytes} bytes (${r.sentSha256}), received ${r.bytes} (${r.receivedSha256})`];
}

async function traffic(nodes: Node[]): Promise<string[]> {
  heading("4. Traffic between pods on different hosts");
  const pods = nodes.flatMap((n) => n.host.pods);
  const failures = await pingAll(pods);
  const from = nodes[0]!.host.pods[0]!;
  const to = nodes[nodes.length - 1]!.host.pods[PODS_PER_HOST - 1]!;
  failures.push(...(await transfer(from, to).catch((e: Error) => [`tcp ${label(from)} -> ${label(to)}: ${e.message}`])));
  return failures;
}

/** "1 route (10.244.0.0/16: the whole cluster), 1 neighbour (10.244.0.0 NOARP), 0 FDB entries". */
function describeKernelState(k: KernelStateCounts): string {
  const routes = k.detail.routes.map((r) => (JSON.parse(r) as { dst: string }).dst)
    .map((dst) => (dst === DEFAULT_NET_CONFIG.Network ? `${dst}: the whole cluster` : dst));
  // "10.244.0.0 <lladdr> NOARP" → "10.244.0.0 NOARP"
  const neighbours = k.detail.neighbours.map((n) => n.split(" ").filter((_, i) => i !== 1).join(" "));
  const list = (items: string[]): string => (items.length ? ` (${items.join(", ")})` : "");
  return [
    plural(k.routes, "route") + list(routes),
    plural(k.neighbours, "neighbour") + list(neighbours),
    plural(k.fdb, "FDB entry", "FDB entries"),
  ].join(", ");
}

/** Kernel entries on the vxlan device that name a peer (not the cluster network as a whole). */
function perPeerEntries(k: KernelStateCounts): string[] {
  const network = DEFAULT_NET_CONFIG.Network;
  const networkAddress = network.split("/")[0]!;
  return [
    ...k.detail.routes.filter((r) => (JSON.parse(r) as { dst: string }).dst !== network).map((r) => `route ${r}`),
    ...k.detail.neighbours.filter((n) => n.split(" ")[0] !== networkAddress).map((n) => `neighbour ${n}`),
    ...k.detail.fdb.map((f) => `fdb ${f}`),
  ];
}

/** Prints one host's section; returns problems (per-peer kernel state). */
async function showHost(n: Node, leases: Lease[], peersCount: number): Promise<string[]> {
  const m = await maps(n);
  const lease = leases.find((l) => l.publicIP && formatIP(l.publicIP) === n.host.underlayIP);
  say(`\n   ${bold(n.host.name)} (netns ${n.host.netns}, pins ${n.pinDir})`);
  if (lease) {
    say(`   lease     ${lease.subnet ? formatPrefix(lease.subnet) : "-"}  public IP ${n.host.underlayIP}  VTEP MAC ${lease.backendData?.vtepMAC ?? "-"}  (${LEASE_DIR}/subnets/${lease.key})`);
  } else {
    say(`   lease     none found for public IP ${n.host.underlayIP}`);
  }

  const order: Record<string, number> = { local: 0, vxlan: 1, direct: 2, cluster: 3 };
  const peers = [...m.peers].sort((a, b) => (order[a.kind] ?? 9) - (order[b.kind] ?? 9) || a.prefix.localeCompare(b.prefix, "en", { numeric: true }));
  const where = (p: BpfState["peers"][number]): string => {
    switch (p.kind) {
      case "vxlan": return `-> host ${p.remote}, VTEP ${p.vtepMAC}`;
      case "direct": return `-> host ${p.remote}, routed directly`;
      case "local": return "this host's pods: left to the bridge";
      case "cluster": return "the rest of the cluster network: a miss";
      default: return "";
    }
  };
  say("   peers     (longest-prefix match on a packet's destination)");
  table(peers.map((p) => [p.prefix, p.kind, where(p)]), "             ");

  const links = await runJson<{ ifindex: number; ifname: string }[]>("ip", ["-j", "link", "show"], { netns: n.host.netns });
  const ifname = (i: number): string => links.find((l) => l.ifindex === i)?.ifname ?? `ifindex ${i}`;
  say("   endpoints (local pods: where a decapsulated packet is delivered)");
  const endpoints = [...m.endpoints].sort((a, b) => a.ip.localeCompare(b.ip, "en", { numeric: true }));
  table(endpoints.map((e) => [e.ip, `-> ${ifname(e.ifindex)}`, `MAC ${e.mac}`]), "             ");

  const meaning = counterMeanings();
  const counters = Object.entries(m.counters).filter(([, c]) => c.packets !== "0");
  say("   counters  (the nonzero ones)");
  table(counters.map(([name, c]) => [name, plural(c.packets, "packet"), size(Number(c.bytes)), meaning.get(name) ?? ""]), "             ");

  const k = await kernelStateCounts(n.host.netns, VXLAN_DEV);
  const perPeer = perPeerEntries(k);
  say(`   kernel    on ${VXLAN_DEV}: ${describeKernelState(k)}`);
  say(`             per-peer: ${perPeer.length}${perPeer.length ? ` (${perPeer.join("; ")})` : ""}. ` +
    `flannel would hold ${peersCount} peers × 3 (route, neighbour, FDB) = ${peersCount * 3}, and 3 more per host added`);
  return perPeer.length ? [`${n.host.name}: ${plural(perPeer.length, "per-peer kernel entry", "per-peer kernel entries")} on ${VXLAN_DEV}: ${perPeer.join("; ")}`] : [];
}

async function whatTwillProgrammed(nodes: Node[]): Promise<string[]> {
  heading("5. What twill programmed");
  const leases = readLeases();
  say(`   ${leases.length} leases in ${LEASE_DIR}/subnets: ${leases.map((l) => l.key).join(", ")}`);
  const problems: string[] = [];
  for (const n of nodes) problems.push(...(await showHost(n, leases, nodes.length - 1)));
  return problems;
}

function hints(nodes: Node[], ok: boolean): void {
  const [h1] = nodes;
  const target = nodes[nodes.length - 1]!.host.pods[0];
  heading(ok ? "The cluster is still running. Poke at it:" : "The cluster is left as it is, for inspection:");
  if (target) say(`   nsenter --net=/run/netns/${h1!.host.netns}-p1 ping ${target.ip}          # a pod on ${h1!.host.name} pings one on ${target.host.name}`);
  say(`   nsenter --net=/run/netns/${h1!.host.netns} node ${repo(TWILL)} maps --bpf-pin-dir ${h1!.pinDir}`);
  say(`   nsenter --net=/run/netns/${h1!.host.netns} curl -s 127.0.0.1:${HEALTHZ_PORT}/metrics`);
  say(`   less ${h1!.logFile}`);
  say(`Tear it down with: make demo-down`);
}

// ---------------------------------------------------------------------------

async function up(): Promise<void> {
  const left = await leftovers(PREFIX);
  if (left.length) {
    throw new Error(`An earlier demo is still here (${left.slice(0, 3).join(", ")}${left.length > 3 ? ", ..." : ""}): run make demo-down first`);
  }
  say(`twill demo: ${HOSTS} hosts × ${PODS_PER_HOST} pods in network namespaces on this machine (prefix ${PREFIX})`);
  const { cluster, nodes } = await buildHosts();
  let failures: string[];
  try {
    await startTwill(nodes);
    await addPods(cluster, nodes);
    failures = await traffic(nodes);
    failures.push(...(await whatTwillProgrammed(nodes)));
  } catch (e) {
    failures = [e instanceof Error ? e.message : String(e)];
  }
  cluster.keep();
  if (failures.length) {
    heading("The demo found a problem");
    for (const f of failures) say(`   ✗ ${f}`);
    for (const n of nodes) say(`\n   --- last lines of ${n.logFile}\n${logTail(n).replace(/^/gm, "   ")}`);
    hints(nodes, false);
    process.exitCode = 1;
    return;
  }
  say(`\nUp in ${secs(Date.now() - started)}: ${HOSTS} twill daemons, ${HOSTS * PODS_PER_HOST} pods.`);
  hints(nodes, true);
}

const command = process.argv[2];
if (command === "up") {
  up().catch((e: unknown) => {
    process.stderr.write(`demo: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
} else {
  process.stderr.write("usage: node dist/scripts/demo.js up   (make demo; make demo-down removes it)\n");
  process.exitCode = 2;
}
