/**
 * One testbed per mode and host profile: two hosts on the underlay switch,
 * one pod on each, real twill daemons with the mode's flags, and the
 * traffic servers waiting.
 *
 *   [pod h1-p1 10.244.1.x] ── cni0 ── host h1 eth0 192.168.50.11 ─┐
 *        client                                                   br0 (underlay netns)
 *   [pod h2-p1 10.244.2.x] ── cni0 ── host h2 eth0 192.168.50.12 ─┘
 *        server: iperf3 -s, sockperf server (pinned)
 *
 * How it works:
 * 1) Every cluster mode gets the same leases: before its daemons start we
 *    write h1 → 10.244.1.0/24 and h2 → 10.244.2.0/24 with fixed VTEP MACs
 *    into its lease directory, and each daemon adopts the lease of its
 *    public IP. Same subnets, same MACs, same pod addresses, same topology
 *    and network config in every mode; only the twill flags and
 *    DirectRouting differ (modes.ts). The underlay reference is the same
 *    topology without daemons or pods: h1 eth0 → h2 eth0.
 * 2) Before the daemons start, both hosts get what the host profile says
 *    (hosts.ts: for "real", kube-proxy's and flannel's iptables rules).
 *    After start-up we check the mode is what it claims (the route or the
 *    BPF peer entry h1 uses to reach h2's subnet, and after a ping the BPF
 *    counters that moved) and that both hosts carry the same rules
 *    (counted per table), and refuse to measure a testbed that fails.
 * 3) Daemons of the modes not being measured are paused (SIGSTOP to their
 *    process group) so their periodic work does not land in another mode's
 *    samples; the dataplane forwards without them (the kernel's tables or
 *    the pinned BPF programs). The measured mode's daemons run normally.
 * 4) destroy() resumes and kills the daemons and removes the namespaces,
 *    pins and directories (bench/lib does this on exit and Ctrl-C too).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { Cluster } from "./lib/cluster.js";
import { run, spawnIn, stopProcess, waitFor } from "./lib/exec.js";
import { ping } from "./lib/traffic.js";
import { TwillCluster } from "./lib/twill.js";
import { checkHosts, prepareHost, type HostCheck, type HostProfileId } from "./hosts.js";
import type { Mode } from "./modes.js";
import type { Endpoints } from "./workloads.js";

export const IPERF_PORT = 5201;
export const SOCKPERF_PORT = 11111;
const VNI = 1;

/** The fixed leases every cluster mode runs on. */
export const LEASES = [
  { key: "10.244.1.0-24", publicIP: "192.168.50.11", vtepMAC: "0e:74:77:00:00:01" },
  { key: "10.244.2.0-24", publicIP: "192.168.50.12", vtepMAC: "0e:74:77:00:00:02" },
] as const;

export function netConfig(mode: Mode): object {
  return {
    Network: "10.244.0.0/16", SubnetLen: 24,
    Backend: { Type: "vxlan", VNI, Port: 8472, ...(mode.directRouting ? { DirectRouting: true } : {}) },
  };
}

/** What was checked and configured, for results.json. */
export interface TestbedFacts {
  readonly prefix: string;
  /** The host profile and both hosts' iptables rule counts, checked before any measurement. */
  readonly hosts: HostCheck;
  readonly client: { netns: string; ip: string; mtu: number };
  readonly server: { netns: string; ip: string; mtu: number };
  /** The command each daemon runs (both hosts run the same flags). */
  readonly daemonCommands: string[];
  readonly netConfig?: object;
  /** How h1 reaches the server: `ip route get` output, the BPF peer entry kind, counters after a ping. */
  readonly path: { route: string; peerKind?: string; counters?: Record<string, number>; warnings: string[] };
}

export interface Testbed {
  readonly mode: Mode;
  readonly hosts: HostProfileId;
  /** The two hosts' namespaces, h1 then h2. */
  readonly hostNetns: readonly string[];
  readonly endpoints: Endpoints;
  readonly facts: TestbedFacts;
  pause(): void;
  resume(): void;
  /** Restarts the traffic servers (after a failed sample: an iperf3 server can stay busy). */
  recover(): Promise<void>;
  destroy(): Promise<void>;
}

function signalGroup(p: ChildProcess | undefined, sig: NodeJS.Signals): void {
  if (!p?.pid || p.exitCode !== null || p.signalCode !== null) return;
  try {
    process.kill(-p.pid, sig);
  } catch {
    try {
      process.kill(p.pid, sig);
    } catch {
      /* gone */
    }
  }
}

async function mtuOf(netns: string, dev: string): Promise<number> {
  const r = await run("ip", ["-j", "link", "show", dev], { netns, allowFail: true });
  try {
    return Number((JSON.parse(r.stdout) as { mtu: number }[])[0]?.mtu ?? NaN);
  } catch {
    return NaN;
  }
}

async function routeGet(netns: string, ip: string): Promise<string> {
  const r = await run("ip", ["route", "get", ip], { netns, allowFail: true });
  return r.stdout.trim().split("\n")[0] ?? "";
}

/** The traffic servers of one testbed: iperf3 and a pinned sockperf server. */
class Servers {
  private iperf?: ChildProcess;
  private sockperf?: ChildProcess;
  constructor(readonly netns: string, readonly ip: string, readonly cpu: number) {}

  /** (Re)starts both servers and waits until both listen. */
  async start(): Promise<void> {
    await this.stop();
    this.iperf = spawnIn(this.netns, "iperf3", ["-s", "-B", this.ip, "-p", String(IPERF_PORT)]);
    this.sockperf = spawnIn(this.netns, "taskset", ["-c", String(this.cpu), "sockperf", "server", "-i", this.ip, "-p", String(SOCKPERF_PORT)]);
    await waitFor(async () => {
      const t = await run("ss", ["-Hlnt", `sport = :${IPERF_PORT}`], { netns: this.netns, allowFail: true });
      const u = await run("ss", ["-Hlnu", `sport = :${SOCKPERF_PORT}`], { netns: this.netns, allowFail: true });
      return t.stdout.trim() !== "" && u.stdout.trim() !== "";
    }, { timeoutMs: 10000, intervalMs: 100, what: `iperf3 and sockperf servers listening in ${this.netns}` });
  }

  async stop(): Promise<void> {
    for (const p of [this.iperf, this.sockperf]) if (p) await stopProcess(p, { graceMs: 2000 });
  }
}

function endpoints(clientNetns: string, serverNetns: string, serverIP: string, cpu: number): Endpoints {
  return { clientNetns, serverNetns, serverIP, iperfPort: IPERF_PORT, sockperfPort: SOCKPERF_PORT, latencyCpu: cpu };
}

async function buildUnderlay(mode: Mode, hosts: HostProfileId, prefix: string, cpu: number): Promise<Testbed> {
  const cluster = await Cluster.create({ prefix, hosts: 2 });
  try {
    const [h1, h2] = cluster.hosts as [typeof cluster.hosts[0], typeof cluster.hosts[0]];
    const hostNetns = [h1.netns, h2.netns];
    await Promise.all(hostNetns.map((n, i) => prepareHost(hosts, n, i)));
    const p = await ping(h1.netns, h2.underlayIP, { count: 3 });
    if (p.received === 0) throw new Error(`underlay reference: h1 cannot ping ${h2.underlayIP}`);
    const servers = new Servers(h2.netns, h2.underlayIP, cpu);
    await servers.start();
    const facts: TestbedFacts = {
      prefix,
      hosts: await checkHosts(hosts, hostNetns, `${mode.id} (${hosts} hosts)`),
      client: { netns: h1.netns, ip: h1.underlayIP, mtu: await mtuOf(h1.netns, "eth0") },
      server: { netns: h2.netns, ip: h2.underlayIP, mtu: await mtuOf(h2.netns, "eth0") },
      daemonCommands: [],
      path: { route: await routeGet(h1.netns, h2.underlayIP), warnings: [] },
    };
    return {
      mode, hosts, hostNetns, endpoints: endpoints(h1.netns, h2.netns, h2.underlayIP, cpu), facts, pause() {}, resume() {},
      recover: () => servers.start(), destroy: () => cluster.destroy(),
    };
  } catch (e) {
    await cluster.destroy();
    throw e;
  }
}

/**
 * Which BPF counter must move for a ping in this mode, and which must not
 * (bpf/shared.h): BPF encapsulation counts encap / encap_fast, the vxlan
 * driver path encap_device — so a mode that silently fell back to the
 * other encapsulation is flagged.
 */
function expectedCounters(mode: Mode): { moved: string; still: string[] } {
  if (mode.path === "direct") return { moved: "direct", still: [] };
  if (mode.encap === "device") return { moved: "encap_device", still: ["encap", "encap_fast"] };
  return mode.node?.fastPath ? { moved: "encap_fast", still: ["encap_device"] } : { moved: "encap", still: ["encap_fast", "encap_device"] };
}

async function buildCluster(mode: Mode, hosts: HostProfileId, prefix: string, cpu: number): Promise<Testbed> {
  const node = mode.node!;
  const config = netConfig(mode);
  const tc = await TwillCluster.create({ prefix, hosts: 2, netConfig: config, nodes: [node, node], reconcileSeconds: 10, startNodes: false });
  try {
    for (const l of LEASES) {
      const attrs = { PublicIP: l.publicIP, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI, VtepMAC: l.vtepMAC } };
      writeFileSync(join(tc.leaseDir, "subnets", l.key), JSON.stringify(attrs));
    }
    const hostNetns = tc.nodes.map((n) => n.host.netns);
    await Promise.all(hostNetns.map((n, i) => prepareHost(hosts, n, i)));
    await Promise.all(tc.nodes.map((n) => tc.start(n)));
    const [n1, n2] = tc.nodes as [typeof tc.nodes[0], typeof tc.nodes[0]];
    const client = await tc.addPod(n1, "p1");
    const server = await tc.addPod(n2, "p1");
    const warnings: string[] = [];
    const route = await routeGet(n1.host.netns, server.ip);
    let peerKind: string | undefined;
    let counters: Record<string, number> | undefined;
    // First contact resolves neighbours (and lets the fast path learn the pods);
    // a loss here is recorded, not fatal. After it, 10 of 10 must come back.
    const first = await ping(client.netns, server.ip, { count: 3, intervalMs: 200 });
    if (first.received < 3) warnings.push(`first contact: ${3 - first.received} of 3 pings lost`);
    const before = node.dataplane === "bpf" ? await tc.maps(n1) : undefined;
    const p = await ping(client.netns, server.ip, { count: 10 });
    if (p.received < 10) throw new Error(`${mode.id}: pod ping got ${p.received}/10 replies\n${await tc.diagnostics()}`);
    if (node.dataplane === "kernel") {
      const ok = mode.path === "direct" ? / via 192\.168\.50\.12 dev eth0/.test(route) : / dev flannel\.1/.test(route);
      if (!ok) throw new Error(`${mode.id}: h1 reaches ${server.ip} by "${route}", not by the ${mode.path} path`);
    } else {
      const m = await tc.maps(n1);
      peerKind = m.peers.find((x) => x.prefix === "10.244.2.0/24")?.kind;
      if (peerKind !== mode.path) throw new Error(`${mode.id}: h1's BPF peer entry for 10.244.2.0/24 is ${peerKind ?? "missing"}, want ${mode.path}`);
      // the counters the 10 checked pings moved
      counters = Object.fromEntries(Object.entries(m.counters).map(([k, v]) => [k, Number(v.packets) - Number(before?.counters[k]?.packets ?? 0)]));
      const want = expectedCounters(mode);
      if ((counters[want.moved] ?? 0) < 10) warnings.push(`10 pings moved h1's counter ${want.moved} by ${counters[want.moved] ?? 0} (expected 10)`);
      for (const c of want.still) if ((counters[c] ?? 0) > 0) warnings.push(`counter ${c} moved (${counters[c]}), which ${mode.id} should not use`);
    }
    const servers = new Servers(server.netns, server.ip, cpu);
    await servers.start();
    const facts: TestbedFacts = {
      prefix,
      hosts: await checkHosts(hosts, hostNetns, `${mode.id} (${hosts} hosts)`),
      client: { netns: client.netns, ip: client.ip, mtu: await mtuOf(client.netns, "eth0") },
      server: { netns: server.netns, ip: server.ip, mtu: await mtuOf(server.netns, "eth0") },
      daemonCommands: tc.nodes.map((n) => `nsenter --net=/run/netns/${n.host.netns} ${tc.args(n).join(" ")}`), // tc.start execs bin/twill itself
      netConfig: config,
      path: { route, ...(peerKind ? { peerKind } : {}), ...(counters ? { counters } : {}), warnings },
    };
    const procs = (): (ChildProcess | undefined)[] => tc.nodes.map((n) => n.proc);
    return {
      mode, hosts, hostNetns, facts, endpoints: endpoints(client.netns, server.netns, server.ip, cpu),
      pause: () => procs().forEach((x) => signalGroup(x, "SIGSTOP")),
      resume: () => procs().forEach((x) => signalGroup(x, "SIGCONT")),
      recover: () => servers.start(),
      async destroy() {
        procs().forEach((x) => signalGroup(x, "SIGCONT"));
        await tc.destroy();
      },
    };
  } catch (e) {
    await tc.destroy();
    throw e;
  }
}

export function buildTestbed(mode: Mode, hosts: HostProfileId, prefix: string, latencyCpu: number): Promise<Testbed> {
  return mode.node ? buildCluster(mode, hosts, prefix, latencyCpu) : buildUnderlay(mode, hosts, prefix, latencyCpu);
}
