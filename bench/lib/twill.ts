/**
 * Runs twill daemons on the hosts of a namespaced cluster (the tests'
 * clusters, the benchmark's testbeds and scale scenarios; test/lib/twill.ts
 * adds the tests' all-pairs checks).
 *
 * How it works: a TwillCluster owns a Cluster (cluster.ts), one
 * embedded lease directory shared by all hosts (their "etcd"), and per host
 * a daemon started with `nsenter --net=/run/netns/<host> bin/twill`, a
 * subnet file, a BPF pin directory /sys/fs/bpf/<prefix>/<host> and a log
 * file. Pods are added once a host's subnet file exists, exactly as the
 * flannel CNI plugin would. destroy() stops the daemons, removes the pins
 * and the cluster, even after a failed test (it is registered for exit too).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { ChildProcess } from "node:child_process";
import type { dumpBpfState } from "../../src/dataplane/bpf.js";
import { Cluster, addPod, randomPrefix, type ClusterOptions, type Host, type Pod } from "./cluster.js";
import { onCleanup, run, spawnIn, stopProcess, waitFor } from "./exec.js";
import { type KernelStateCounts, dumpState, kernelStateCounts } from "./traffic.js";

export const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "..", "..", "..");
export const TWILL = join(ROOT, "bin", "twill");

export type BpfState = ReturnType<typeof dumpBpfState>;

export const DEFAULT_NET_CONFIG = {
  Network: "10.244.0.0/16",
  SubnetLen: 24,
  Backend: { Type: "vxlan", VNI: 1, Port: 8472 },
};

export interface NodeOptions {
  dataplane?: "bpf" | "kernel";
  fastPath?: boolean;
  extraArgs?: string[];
  /** The daemon's entry script (default TWILL, this tree's bin/twill): e.g. another
   *  build's bin/twill, for upgrades from a released version. `maps` uses it too. */
  entry?: string;
}

export interface TwillNode {
  host: Host;
  opts: NodeOptions;
  proc?: ChildProcess;
  subnetFile: string;
  pinDir: string;
  logFile: string;
  healthzPort: number;
}

export interface TwillClusterOptions extends Omit<ClusterOptions, "prefix"> {
  prefix?: string;
  netConfig?: object;
  /** Per host (by index); default bpf without fast path. */
  nodes?: NodeOptions[];
  podsPerHost?: number;
  reconcileSeconds?: number;
  /** Start the daemons in create() (default true). */
  startNodes?: boolean;
}

const HEALTHZ_PORT = 10756;

export class TwillCluster {
  readonly nodes: TwillNode[] = [];
  readonly leaseDir: string;
  readonly pinRoot: string;
  /** How daemons find their leases; default the shared lease directory. */
  sourceArgs: (n: TwillNode) => string[] = () => ["--lease-dir", this.leaseDir];
  /** Made by create() (or a subclass's, through build()). */
  protected constructor(readonly cluster: Cluster, private readonly o: TwillClusterOptions) {
    this.leaseDir = join(cluster.dir, "leases");
    this.pinRoot = `/sys/fs/bpf/${cluster.prefix}`;
  }

  static create(o: TwillClusterOptions): Promise<TwillCluster> {
    return TwillCluster.build(o, (cluster) => new TwillCluster(cluster, o));
  }

  /** Makes the cluster, its lease directory and its nodes; `make` makes the (sub)class. */
  protected static async build<T extends TwillCluster>(o: TwillClusterOptions, make: (cluster: Cluster) => T): Promise<T> {
    // TWILL_TEST_PREFIX: the start of every name a run makes (namespaces, pins, /tmp), so runs beside each other cannot collide.
    const prefix = o.prefix ?? randomPrefix(process.env.TWILL_TEST_PREFIX ?? "tw");
    const pinRoot = `/sys/fs/bpf/${prefix}`;
    onCleanup(() => rmSync(pinRoot, { recursive: true, force: true }));
    const cluster = await Cluster.create({ ...o, prefix });
    const tc = make(cluster);
    try {
      mkdirSync(join(tc.leaseDir, "subnets"), { recursive: true });
      writeFileSync(join(tc.leaseDir, "config"), JSON.stringify(o.netConfig ?? DEFAULT_NET_CONFIG, null, 2));
      cluster.hosts.forEach((host, i) => {
        tc.nodes.push({
          host, opts: o.nodes?.[i] ?? {},
          subnetFile: join(host.dir, "subnet.env"), pinDir: join(pinRoot, host.name),
          logFile: join(host.dir, "twill.log"), healthzPort: HEALTHZ_PORT,
        });
      });
      if (o.startNodes === false) return tc;
      await Promise.all(tc.nodes.map((n) => tc.start(n)));
      for (let p = 0; p < (o.podsPerHost ?? 0); p++) {
        await Promise.all(tc.nodes.map((n) => addPod(cluster, n.host, `p${p + 1}`, n.subnetFile)));
      }
    } catch (e) {
      await tc.destroy();
      throw e;
    }
    return tc;
  }

  args(n: TwillNode): string[] {
    return [
      n.opts.entry ?? TWILL, ...this.sourceArgs(n), "--iface", "eth0", "--subnet-file", n.subnetFile,
      "--bpf-pin-dir", n.pinDir, "--node-name", n.host.name, "--dataplane", n.opts.dataplane ?? "bpf",
      `--fast-path=${n.opts.fastPath ? "true" : "false"}`, "--healthz-ip", "127.0.0.1", "--healthz-port", String(n.healthzPort),
      "--reconcile-period", String(this.o.reconcileSeconds ?? 1), "--log-level", "info", "--ip-masq", ...(n.opts.extraArgs ?? []),
    ];
  }

  /** Starts (or restarts) a node's daemon and waits until it is ready. */
  async start(n: TwillNode): Promise<void> {
    writeFileSync(n.logFile, `--- start ${new Date().toISOString()}\n`, { flag: "a" });
    // The entry script runs as people run it (its #! line carries node's flags).
    const [entry, ...args] = this.args(n);
    n.proc = spawnIn(n.host.netns, entry!, args, { logFile: n.logFile });
    const proc = n.proc;
    await waitFor(async () => proc.exitCode !== null || (await this.http(n, "/readyz")).startsWith("ready"),
      { timeoutMs: 20000, intervalMs: 100, what: `twill ready on ${n.host.name}` });
    if (proc.exitCode !== null) throw new Error(`twill on ${n.host.name} exited ${proc.exitCode}:\n${this.log(n).slice(-3000)}`);
  }

  async stop(n: TwillNode, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (n.proc) await stopProcess(n.proc, { signal, graceMs: 5000 });
    n.proc = undefined;
  }

  log(n: TwillNode): string {
    return existsSync(n.logFile) ? readFileSync(n.logFile, "utf8") : "";
  }

  async http(n: TwillNode, path: string): Promise<string> {
    const r = await run("curl", ["-s", "-m", "2", `http://127.0.0.1:${n.healthzPort}${path}`], { netns: n.host.netns, allowFail: true });
    return r.code === 0 ? r.stdout : "";
  }

  /** A Prometheus sample's value (summed over label sets matching `labels`). */
  async metric(n: TwillNode, name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await this.http(n, "/metrics");
    let sum = 0;
    for (const line of text.split("\n")) {
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      if (Object.entries(labels).every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`))) sum += Number(m[3]);
    }
    return sum;
  }

  /** `twill maps` for a bpf node (run by the node's own build, see NodeOptions.entry). */
  async maps(n: TwillNode): Promise<BpfState> {
    const r = await run(process.execPath, [n.opts.entry ?? TWILL, "maps", "--json", "--bpf-pin-dir", n.pinDir], { netns: n.host.netns });
    return JSON.parse(r.stdout);
  }

  counter(m: Awaited<ReturnType<TwillCluster["maps"]>>, name: string): number {
    return Number(m.counters[name]?.packets ?? 0);
  }

  subnet(n: TwillNode): string {
    const m = /^FLANNEL_SUBNET=(\S+)$/m.exec(readFileSync(n.subnetFile, "utf8"));
    if (!m) throw new Error(`no FLANNEL_SUBNET in ${n.subnetFile}`);
    return m[1]!;
  }

  pods(): Pod[] {
    return this.nodes.flatMap((n) => n.host.pods);
  }

  async addPod(n: TwillNode, name: string): Promise<Pod> {
    return addPod(this.cluster, n.host, name, n.subnetFile);
  }

  /** What a person would look at when a test or a testbed fails. */
  async diagnostics(): Promise<string> {
    const parts: string[] = [];
    for (const n of this.nodes) {
      parts.push(`===== ${n.host.name} (${n.opts.dataplane ?? "bpf"}) =====`);
      parts.push(await dumpState(n.host.netns).catch((e) => String(e)));
      if ((n.opts.dataplane ?? "bpf") === "bpf") parts.push(JSON.stringify(await this.maps(n).catch((e) => String(e)), null, 1));
      parts.push(this.log(n).split("\n").slice(-40).join("\n"));
    }
    parts.push("===== leases =====");
    parts.push((await run("sh", ["-c", `head -v ${this.leaseDir}/subnets/*`], { allowFail: true })).stdout);
    return parts.join("\n");
  }

  async kernelState(n: TwillNode): Promise<KernelStateCounts> {
    return kernelStateCounts(n.host.netns, "flannel.1");
  }

  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.stop(n, "SIGKILL").catch(() => {})));
    rmSync(this.pinRoot, { recursive: true, force: true });
    await this.cluster.destroy();
  }
}
