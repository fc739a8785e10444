/**
 * Start-to-ready by peer count and lease source: one twill node starting
 * with 0, 10,000, 100,000 … peers already in a lease directory, in etcd or
 * (up to kubeMaxPeers: Kubernetes clusters stop at 5,000-15,000 nodes) as
 * real-sized Nodes in the fake Kubernetes API (kubenodes.ts: ~12 KB of JSON
 * each, over HTTPS), bpf dataplane beside kernel (flannel's).
 *
 *   runStartup({ peers: [0, 10000, 100000], sources: ["dir", "etcd"], eventsAt: 10000, events: 1000, log })
 *
 * How it works: every cell (source, peers, dataplane) gets a fresh 1-host
 * cluster (and, for etcd, a fresh etcd in its router namespace); the leases
 * are written before the daemon starts (directory: one file per lease;
 * etcd: one transaction per 5,000), as /24s of 10.0.0.0/8 or, past 65,000
 * peers, /26s. The daemon is spawned and /readyz asked every 10 ms by one probe process
 * (run-mode.ts startDaemon); then the programmed peers are counted and must
 * equal the leases. Daemons run with --reconcile-period 1, so in the cell
 * (etcd, eventsAt) the lease → dataplane events that follow (one at a time,
 * 1–50 ms apart, so they land at every point of the reconcile cycle) meet
 * a full reconcile of eventsAt peers about once a second; the daemon's
 * /metrics says how long its reconciles took. Each event is timed twice
 * (driver.ts): from the put sent, and from the moment the driver's own
 * etcd watch received the event — after etcd's commit (its WAL fsync, a p99
 * of ~12 ms on this VM's disk), so the second is the node's part. Above 65,536 peers the bpf
 * node needs --peer-capacity (passed when `twill --help` lists it; otherwise
 * the cell says so), and the kernel cells stop at kernelMaxPeers (the
 * kernel takes minutes per 50,000 routes: see the control-plane table).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EtcdServer } from "../lib/etcd.js";
import { randomPrefix } from "../lib/cluster.js";
import { run } from "../lib/exec.js";
import { ROOT, TWILL, TwillCluster } from "../lib/twill.js";
import { percentiles, type Percentiles } from "../stats.js";
import { ETCD_PREFIX, MAX_INDEX, NET_CONFIG, OWN_GAP, WIDE_NET_CONFIG, leaseKey, leaseValue, putOps } from "./leases.js";
import { rssBytes } from "./memory.js";
import { eventMs, runDriver, startDaemon } from "./run-mode.js";
import { programmedCounts } from "./state.js";
import { startKube } from "./kubenodes.js";
import type { DriverOutput } from "./driver.js";
import type { ScaleMode } from "./types.js";

export type LeaseSourceId = "dir" | "etcd" | "kube";

export interface StartupOptions {
  readonly peers: readonly number[];
  readonly sources: readonly LeaseSourceId[];
  /** The cell (etcd, bpf and kernel) at this peer count also times lease events during reconciles. */
  readonly eventsAt: number;
  readonly events: number;
  readonly kernelMaxPeers: number;
  /** Kubernetes cells stop here. */
  readonly kubeMaxPeers: number;
  readonly log: (line: string) => void;
}

export interface StartupCell {
  readonly source: LeaseSourceId;
  readonly mode: ScaleMode;
  readonly peers: number;
  readonly readyMs?: number;
  readonly programmed?: number;
  readonly rssBytes?: number;
  /** Put sent → dataplane (ms), one event at a time, reconciles every second; includes etcd's commit. */
  readonly events?: Percentiles;
  /** The same events from the moment the driver's own etcd watch received them (etcd committed them) → dataplane: the node's part. */
  readonly fromEvent?: Percentiles;
  /** Put sent → etcd acknowledged it. */
  readonly etcdAck?: Percentiles;
  /** Full reconciles the daemon ran by the end of the events, and their mean duration (its /metrics). */
  readonly reconciles?: { readonly count: number; readonly meanMs: number };
  readonly skipped?: string;
  readonly error?: string;
}

const BULK = join(ROOT, "dist", "bench", "lib", "etcd-bulk.js");
const CHUNK = 20_000;

/** The --peer-capacity flag, when this twill has it. */
export function peerCapacityFlag(): boolean {
  return /--peer-capacity\b/.test(spawnSync(process.execPath, [TWILL, "--help"], { encoding: "utf8" }).stdout ?? "");
}

async function cell(source: LeaseSourceId, mode: ScaleMode, peers: number, o: StartupOptions, capacity: boolean): Promise<StartupCell> {
  const base = { source, mode, peers };
  const wide = peers + OWN_GAP > MAX_INDEX;
  if (mode === "kernel" && peers > o.kernelMaxPeers) return { ...base, skipped: `kernel cells stop at ${o.kernelMaxPeers.toLocaleString("en-US")} peers` };
  if (source === "kube" && peers > o.kubeMaxPeers) return { ...base, skipped: `Kubernetes cells stop at ${o.kubeMaxPeers.toLocaleString("en-US")} nodes` };
  if (mode === "bpf" && peers >= 65536 && !capacity) return { ...base, skipped: "twill_peers holds 65,536 entries and this twill has no --peer-capacity" };
  const extraArgs = mode === "bpf" && capacity && peers >= 65536 ? ["--peer-capacity", String(peers + 1024)] : [];
  let tc: TwillCluster | undefined;
  let etcd: EtcdServer | undefined;
  let kube: { stop: () => Promise<void> } | undefined;
  try {
    tc = await TwillCluster.create({
      prefix: randomPrefix("su"), hosts: 1, startNodes: false, reconcileSeconds: 1,
      nodes: [{ dataplane: mode, extraArgs }], netConfig: wide ? WIDE_NET_CONFIG : NET_CONFIG,
    });
    const n = tc.nodes[0]!;
    if (source === "dir") {
      const dir = join(tc.leaseDir, "subnets");
      mkdirSync(dir, { recursive: true });
      for (let i = 1; i <= peers; i++) writeFileSync(join(dir, leaseKey(i, wide)), leaseValue(i));
    } else if (source === "kube") {
      kube = await startKube(tc, peers);
    } else {
      etcd = await EtcdServer.start({ netns: tc.cluster.routerNetns, host: n.host.gateway });
      const e = etcd;
      tc.sourceArgs = () => ["--etcd-endpoints", e.endpoint];
      await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, JSON.stringify(wide ? WIDE_NET_CONFIG : NET_CONFIG)]);
      for (let from = 1; from <= peers; from += CHUNK) {
        await run(process.execPath, [BULK, etcd.endpoint], { netns: etcd.netns, input: JSON.stringify(putOps(from, Math.min(peers, from + CHUNK - 1), wide)), timeoutMs: 300_000 });
      }
    }
    const started = await startDaemon(tc, n, peers);
    const programmed = (await programmedCounts(tc, n, mode)).entries;
    const out: { -readonly [K in keyof StartupCell]: StartupCell[K] } = { ...base, readyMs: started.readyMs, programmed, rssBytes: rssBytes(started.pid) };
    if (programmed !== peers) throw new Error(`ready with ${programmed} peers programmed, want ${peers}`);
    if (source === "etcd" && peers === o.eventsAt && o.events > 0 && etcd) {
      const events = Array.from({ length: o.events }, (_, k) => peers + OWN_GAP + 1 + k);
      const r = await runDriver<DriverOutput>(n, { mode, endpoint: etcd.endpoint, pinDir: n.pinDir, phase: "events", events, gapMs: [1, 50] }, 120_000 + o.events * 1000);
      out.events = percentiles(r.samples.map((x) => x.latencyMs));
      out.fromEvent = percentiles(eventMs(r.samples));
      out.etcdAck = percentiles(r.samples.map((x) => x.ackMs));
      const count = await tc.metric(n, "twill_reconcile_duration_seconds_count");
      const sum = await tc.metric(n, "twill_reconcile_duration_seconds_sum");
      out.reconciles = { count, meanMs: count ? (sum / count) * 1000 : NaN };
    }
    return out;
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message.split("\n").slice(0, 3).join(" ") : String(e) };
  } finally {
    await tc?.destroy().catch(() => {});
    await etcd?.destroy().catch(() => {});
    await kube?.stop().catch(() => {});
  }
}

export async function runStartup(o: StartupOptions): Promise<StartupCell[]> {
  const capacity = peerCapacityFlag();
  const cells: StartupCell[] = [];
  for (const source of o.sources) {
    for (const peers of o.peers) {
      for (const mode of ["bpf", "kernel"] as const) {
        const c = await cell(source, mode, peers, o, capacity);
        cells.push(c);
        const what = `startup ${source} ${mode} ${peers} peers`;
        if (c.skipped) o.log(`${what}: not run (${c.skipped})`);
        else if (c.error) o.log(`${what}: FAILED: ${c.error}`);
        else {
          o.log(`${what}: ready in ${c.readyMs} ms, RSS ${((c.rssBytes ?? 0) / 2 ** 20).toFixed(1)} MiB` +
            (c.events ? `; ${c.events.n} events p50 ${c.events.p50.toFixed(2)} ms p99 ${c.events.p99.toFixed(2)} ms max ${c.events.max.toFixed(2)} ms` +
              (c.fromEvent ? ` (from the event: p50 ${c.fromEvent.p50.toFixed(2)} ms p99 ${c.fromEvent.p99.toFixed(2)} ms max ${c.fromEvent.max.toFixed(2)} ms)` : "") +
              `, ${c.reconciles?.count} reconciles of ${c.reconciles?.meanMs.toFixed(1)} ms` : ""));
        }
      }
    }
  }
  return cells;
}
