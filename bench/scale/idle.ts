/**
 * An idle node: what twill costs when nothing changes. A 3-node cluster per
 * lease source — lease directory, etcd (a real etcd-server), Kubernetes (the
 * fake API server with real-sized nodes, over HTTPS, a CA file and a bearer
 * token from a file: kubenodes.ts) — with `peers` other nodes' leases, all
 * daemons bpf with the default 10 s reconcile; measured on h1's daemon:
 *
 *   [h1 twill] [h2 twill] [h3 twill]  + N peer leases (no hosts behind them)
 *        \_________ underlay _________/── router netns: etcd / fake API server
 *
 * How it works: the three clusters are built and started at once and
 * measured side by side (idle daemons do not compete for the CPU). After
 * SETTLE_MS of settling, two windows of `seconds` each, one after the other.
 * (The settling is start-up, not idling: V8's memory reducer runs its
 * one-time full collections, 20-85 ms of CPU, 5-15 s after h1 is ready — h2
 * and h3 start after it, and their leases reach h1 as events. Measured on
 * h1's main thread in 5 s slices from ready: 2 | 60-85 | 1 | 4 | 1 | 4-9 ms …,
 * or 2 | 20 | 60 | 4 … when the collections came later; from 15 s on,
 * 1-13 ms per slice, the 10 s reconcile and the lease source's timers. A
 * window that began at 15 s could still catch the tail of them.)
 * 1) CPU and memory: utime+stime (+cutime+cstime: reaped children) of the
 *    daemon from /proc/<pid>/stat at both ends, as % of one core over the
 *    window; VmRSS at its end. Nothing is attached to the daemon.
 * 2) Processes: `strace -f -qq -e trace=execve,execveat -p <pid>` for the
 *    window; every execve the daemon's process tree makes (ip, bridge,
 *    iptables, …) is one line. (Under ptrace every syscall of the daemon
 *    stops, which is why the CPU window comes first and apart.)
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomPrefix } from "../lib/cluster.js";
import { EtcdServer } from "../lib/etcd.js";
import { sleep, spawnIn, stopProcess } from "../lib/exec.js";
import { ROOT, TwillCluster } from "../lib/twill.js";
import { ETCD_PREFIX, NET_CONFIG, leaseKey, leaseValue, putOps } from "./leases.js";
import { startKube } from "./kubenodes.js";
import { daemonPid, rssBytes } from "./memory.js";
import { run } from "../lib/exec.js";

export type IdleSourceId = "dir" | "etcd" | "kube";
export const IDLE_SOURCES: readonly IdleSourceId[] = ["dir", "etcd", "kube"];

export interface IdleResult {
  readonly source: IdleSourceId;
  readonly peers: number;
  readonly seconds: number;
  /** execve calls of the daemon's process tree in the strace window. */
  readonly processes?: number;
  /** The commands they ran (first 10). */
  readonly commands?: readonly string[];
  /** % of one core over the CPU window. */
  readonly cpuPercent?: number;
  readonly rssBytes?: number;
  readonly error?: string;
}

const BULK = join(ROOT, "dist", "bench", "lib", "etcd-bulk.js");
const CLK_TCK = 100;
/** From h1 ready to the first window: past the start-up collections (see the design note). */
const SETTLE_MS = 30_000;

/** utime+stime+cutime+cstime of pid, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK;
}

async function setupSource(tc: TwillCluster, source: IdleSourceId, peers: number): Promise<() => Promise<void>> {
  const gw = tc.nodes[0]!.host.gateway;
  if (source === "dir") {
    writeFileSync(join(tc.leaseDir, "config"), JSON.stringify(NET_CONFIG));
    for (let i = 1; i <= peers; i++) writeFileSync(join(tc.leaseDir, "subnets", leaseKey(i)), leaseValue(i));
    return async () => {};
  }
  if (source === "etcd") {
    const etcd = await EtcdServer.start({ netns: tc.cluster.routerNetns, host: gw });
    await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, JSON.stringify(NET_CONFIG)]);
    await run(process.execPath, [BULK, etcd.endpoint], { netns: etcd.netns, input: JSON.stringify(putOps(1, peers)), timeoutMs: 120_000 });
    tc.sourceArgs = () => ["--etcd-endpoints", etcd.endpoint];
    return () => etcd.destroy();
  }
  const kube = await startKube(tc, peers);
  return kube.stop;
}

async function one(source: IdleSourceId, peers: number, seconds: number, workDir: string): Promise<IdleResult> {
  const base = { source, peers, seconds };
  if (source === "kube" && !existsSync(fileURLToPath(new URL("../../sim/kubeapi.js", import.meta.url)))) {
    return { ...base, error: "not measured: the fake Kubernetes API server (sim/kubeapi.ts) is not in this tree yet" };
  }
  let tc: TwillCluster | undefined;
  let stopSource: (() => Promise<void>) | undefined;
  let tracer: ReturnType<typeof spawnIn> | undefined;
  try {
    tc = await TwillCluster.create({ prefix: randomPrefix("id"), hosts: 3, startNodes: false, reconcileSeconds: 10 });
    stopSource = await setupSource(tc, source, peers);
    for (const n of tc.nodes) await tc.start(n);
    const n = tc.nodes[0]!;
    const pid = daemonPid(n.proc!.pid!);
    await sleep(SETTLE_MS);
    const c0 = cpuSeconds(pid), t0 = performance.now();
    await sleep(seconds * 1000);
    const cpuPercent = ((cpuSeconds(pid) - c0) / ((performance.now() - t0) / 1000)) * 100;
    const rss = rssBytes(pid);
    const out = join(workDir, `idle-${source}-strace.txt`);
    tracer = spawnIn(undefined, "strace", ["-f", "-qq", "-e", "trace=execve,execveat", "-o", out, "-p", String(pid)]);
    await sleep(seconds * 1000);
    await stopProcess(tracer, { signal: "SIGINT", graceMs: 5000 });
    tracer = undefined;
    const lines = existsSync(out) ? readFileSync(out, "utf8").split("\n").filter((l) => /execve(at)?\(/.test(l) && !l.includes("resumed>")) : [];
    const commands = lines.slice(0, 10).map((l) => /execve(?:at)?\([^"]*"([^"]+)"/.exec(l)?.[1] ?? l.slice(0, 80));
    return { ...base, processes: lines.length, commands, cpuPercent, rssBytes: rss };
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message.split("\n").slice(0, 3).join(" ") : String(e) };
  } finally {
    if (tracer) await stopProcess(tracer, { signal: "SIGINT", graceMs: 5000 }).catch(() => {});
    await tc?.destroy().catch(() => {});
    await stopSource?.().catch(() => {});
  }
}

/** All sources at once; never throws (a failed source is its result's error). */
export async function runIdle(o: { peers: number; seconds: number; workDir: string; log: (l: string) => void }): Promise<IdleResult[]> {
  const results = await Promise.all(IDLE_SOURCES.map((s) => one(s, o.peers, o.seconds, o.workDir)));
  for (const r of results) {
    o.log(r.error ? `idle ${r.source}: ${r.error}` :
      `idle ${r.source}: ${r.processes} processes in ${r.seconds} s, CPU ${r.cpuPercent?.toFixed(3)} % of a core, RSS ${((r.rssBytes ?? 0) / 2 ** 20).toFixed(1)} MiB`);
  }
  return results;
}
