/**
 * One mode (bpf or kernel) of the scale scenario, on a cluster of its own:
 *
 *   router netns <p>rt: etcd on 192.168.50.1:2379 ─── underlay ─── host netns <p>h1:
 *                                                                  twill --etcd-endpoints …
 *                                                                  driver.js (etcd3 client + probe)
 *
 * How it works:
 * 1) Build a 1-host TwillCluster (daemon not started) and a real etcd in its
 *    router namespace; put flannel's config (10.0.0.0/8, /24 subnets) and the
 *    initial peers in one transaction per 5,000 (bench/lib/etcd-bulk.ts).
 * 2) Read kernel memory, spawn the daemon (`nsenter … bin/twill
 *    --etcd-endpoints …`, the flags TwillCluster gives every node, the
 *    daemon's default 10 s reconcile period), /readyz asked every 10 ms (readyprobe.ts); the
 *    daemon turns ready after its first full sync. Then kernel memory again,
 *    the daemon's RSS, the peers map's bytes_memlock, and the programmed
 *    counts (which must equal the number of peers).
 * 3) The driver (driver.ts) runs inside the host namespace: the 1,000-event
 *    latency phase, then churn. RSS after each; then the daemon's reconcile
 *    count/duration and heap from its /metrics.
 * 4) The dataplane is compared with etcd entry by entry (subnet, VTEP MAC,
 *    public IP).
 * 5) Memory per peer (memoryPhase): min(N, 10,000) new leases in bulk to the
 *    running node, slab memory read before and after.
 * Everything is torn down, also on failure; a failure is recorded in the
 * result and the next mode still runs.
 */
import { loadavg } from "node:os";
import { join } from "node:path";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { randomPrefix } from "../lib/cluster.js";
import { EtcdServer } from "../lib/etcd.js";
import { run, sleep, spawnIn, waitFor } from "../lib/exec.js";
import { ROOT, TwillCluster, type TwillNode } from "../lib/twill.js";
import type { DriverInput, DriverOutput, Sample, ScrapeOutput } from "./driver.js";
import { ETCD_PREFIX, NET_CONFIG, expectedPeers, makePlan, parseEtcdLeases, putOps, type Plan } from "./leases.js";
import { daemonPid, kernelMemory, kernelMemoryDelta, pinnedMapInfo, rssBytes, type KernelMemoryDelta } from "./memory.js";
import { differences, programmedCounts, programmedPeers, quietPeerCount } from "./state.js";
import { percentiles, type Percentiles } from "../stats.js";
import type { ChurnResult, DaemonStats, LatencyResult, MemoryResult, ModeResult, ScaleMode, ScaleOptions, ScrapeResult, StartResult } from "./types.js";

const mib = (b: number | undefined): string => (b === undefined ? "?" : `${(b / 2 ** 20).toFixed(1)} MiB`);

const DRIVER = join(ROOT, "dist", "bench", "scale", "driver.js");
const BULK = join(ROOT, "dist", "bench", "lib", "etcd-bulk.js");
const READY_PROBE = join(ROOT, "dist", "bench", "scale", "readyprobe.js");
/** "Keeps up": thresholds, also printed with the table. */
export const KEEPS_UP = { maxConvergenceLagMs: 1000, minRateFraction: 0.95, p50Factor: 2, p50SlackMs: 10, p99Factor: 2, p99SlackMs: 100 } as const;

type Log = (line: string) => void;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

interface Ctx {
  readonly mode: ScaleMode;
  readonly o: ScaleOptions;
  readonly plan: Plan;
  readonly tc: TwillCluster;
  readonly n: TwillNode;
  readonly etcd: EtcdServer;
  readonly log: Log;
}

/** The samples' event → dataplane times (driver.ts `eventMs`), where the driver's watch saw the event. */
export const eventMs = (samples: readonly Sample[]): number[] => samples.flatMap((s) => (s.eventMs === undefined ? [] : [s.eventMs]));

function latency(samples: readonly Sample[]): LatencyResult | undefined {
  const p = percentiles(samples.map((s) => s.latencyMs));
  const ack = percentiles(samples.map((s) => s.ackMs));
  const fromEvent = percentiles(eventMs(samples));
  return p && ack ? { ...p, etcdAckP50Ms: ack.p50, ...(fromEvent ? { fromEvent } : {}) } : undefined;
}

/** Runs the load driver (driver.ts) in the node's namespace; its one JSON line, or a thrown sentence. */
export async function runDriver<T = DriverOutput>(n: TwillNode, input: DriverInput, timeoutMs: number): Promise<T> {
  const r = await run(process.execPath, [DRIVER, JSON.stringify(input)], { netns: n.host.netns, timeoutMs, allowFail: true });
  const last = r.stdout.trim().split("\n").pop() ?? "";
  let out: T | { error: string };
  try {
    out = JSON.parse(last) as T | { error: string };
  } catch {
    throw new Error(`driver (${input.phase}) exited ${r.code} without a result: ${(r.stderr || r.stdout).trim().slice(-2000)}`);
  }
  if (typeof out === "object" && out !== null && "error" in out) throw new Error(`driver (${input.phase}): ${out.error}${r.stderr.trim() ? `\n${r.stderr.trim().slice(-2000)}` : ""}`);
  return out as T;
}

function driver(c: Ctx, input: Omit<DriverInput, "mode" | "endpoint" | "pinDir">, timeoutMs: number): Promise<DriverOutput> {
  return runDriver(c.n, { mode: c.mode, endpoint: c.etcd.endpoint, pinDir: c.n.pinDir, ...input }, timeoutMs);
}

/**
 * Spawns the daemon and waits for /readyz; the daemon's pid is the node
 * process nsenter became. /readyz is asked by one probe process in the
 * node's namespace (readyprobe.ts: every 10 ms, no process per poll),
 * started before the daemon; the clock starts when the daemon is spawned
 * and stops when the probe reports ready.
 */
export async function startDaemon(tc: TwillCluster, n: TwillNode, peers: number): Promise<{ readyMs: number; readyLogMs?: number; pid: number }> {
  writeFileSync(n.logFile, `--- start ${new Date().toISOString()}\n`, { flag: "a" });
  const probe = spawnIn(n.host.netns, process.execPath, [READY_PROBE, String(n.healthzPort), "10"]);
  try {
    let probeOut = "";
    let readyAt = 0;
    probe.stdout!.on("data", (b: Buffer) => {
      probeOut += b.toString("utf8");
      if (!readyAt && probeOut.includes("ready\n")) readyAt = Date.now();
    });
    await waitFor(() => probeOut.includes("probing"), { timeoutMs: 30_000, intervalMs: 5, what: "the readiness probe to start" });
    const t0 = Date.now();
    // bin/twill itself, as people run it: its #! line carries node's flags (a `node bin/twill` would drop them).
    const [entry, ...args] = tc.args(n);
    const proc = (n.proc = spawnIn(n.host.netns, entry!, args, { logFile: n.logFile }));
    const timeoutMs = 120_000 + peers * 20;
    while (!readyAt) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`twill exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${tc.log(n).slice(-3000)}`);
      }
      if (probe.exitCode !== null && !readyAt) throw new Error(`the readiness probe exited (${probe.exitCode}) without seeing ready`);
      if (Date.now() - t0 > timeoutMs) throw new Error(`twill not ready after ${timeoutMs} ms:\n${tc.log(n).slice(-3000)}`);
      await sleep(5);
    }
    return { ...readyTimes(tc, n, t0, readyAt), pid: daemonPid(proc.pid!) };
  } finally {
    if (probe.exitCode === null) probe.kill("SIGKILL");
  }
}

/** The ready time the probe saw, and the daemon's own "ready" log line's. */
function readyTimes(tc: TwillCluster, n: TwillNode, t0: number, readyAt: number): { readyMs: number; readyLogMs?: number } {
  const readyMs = readyAt - t0;
  let readyLogMs: number | undefined;
  for (const line of tc.log(n).split("\n")) {
    if (!line.includes('"msg":"ready"')) continue;
    try {
      const t = Date.parse((JSON.parse(line) as { time: string }).time);
      if (t >= t0 - 1000) readyLogMs = t - t0;
    } catch {
      /* not one of the daemon's JSON lines */
    }
  }
  return { readyMs, ...(readyLogMs !== undefined ? { readyLogMs } : {}) };
}

async function bpfEntries(c: Ctx): Promise<number> {
  return (await c.tc.maps(c.n)).peers.length;
}

/**
 * Kernel memory per peer on the running node: settle, read, add memoryAdds
 * new leases in bulk (one etcd transaction per 5,000), wait until all are
 * programmed, settle, read again.
 */
async function memoryPhase(c: Ctx, after: Parameters<typeof expectedPeers>[1]): Promise<{
  perPeerBytes: number; addedPeers: number; addDelta: KernelMemoryDelta; mapAfter?: { bytesMemlock: number; entries: number };
}> {
  const { from, to } = c.plan.memoryAdds;
  const want = expectedPeers(c.plan, after).size;
  await sleep(2000);
  const a = kernelMemory();
  await run(process.execPath, [BULK, c.etcd.endpoint], { netns: c.etcd.netns, input: JSON.stringify(putOps(from, to)), timeoutMs: 300_000 });
  await waitFor(async () => (await quietPeerCount(c.n, c.mode)) === want,
    { what: `${want} peers programmed after the bulk add`, timeoutMs: 120_000 + (to - from) * 20, intervalMs: 500 });
  await sleep(2000);
  const b = kernelMemory();
  const d = kernelMemoryDelta(a, b);
  const added = to - from + 1;
  const mapAfter = c.mode === "bpf"
    ? { bytesMemlock: (await pinnedMapInfo(join(c.n.pinDir, "maps", "twill_peers"))).bytesMemlock, entries: await bpfEntries(c) }
    : undefined;
  if ((await programmedCounts(c.tc, c.n, c.mode)).entries !== want) throw new Error(`after the bulk add the dataplane does not hold ${want} peers`);
  return { perPeerBytes: d.slabActiveBytes / added, addedPeers: added, addDelta: d, mapAfter };
}

/**
 * The dataplane against the leases etcd holds (read back with etcdctl, the
 * node's own lease left out): equal, or up to 8 differences in words.
 */
async function finalCheck(c: Ctx): Promise<{ ok: boolean; mismatch: string[]; leases: number }> {
  let mismatch: string[] = [];
  let leases = 0;
  const ok = await waitFor(async () => {
    const r = await c.etcd.etcdctl(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]);
    const want = parseEtcdLeases(r.stdout);
    for (const [p, sig] of want) if (sig.endsWith(` ${c.n.host.underlayIP}`)) want.delete(p);
    leases = want.size;
    mismatch = differences(want, await programmedPeers(c.tc, c.n, c.mode));
    return mismatch.length === 0;
  }, { what: "the dataplane to equal etcd", timeoutMs: 15_000, intervalMs: 1000 }).then(() => true, () => false);
  return { ok, mismatch, leases };
}

/** RSS of the daemon every 5 s while a phase runs; sets the soak's reference (1 minute in, or half-way for runs under 2 minutes). */
function sampleRss(pid: number, rss: Mutable<ModeResult["rss"]>): { stop(): void } {
  const t0 = Date.now();
  const series: { atS: number; bytes: number }[] = [];
  rss.churnSeries = series;
  const tick = (): void => {
    try {
      series.push({ atS: Math.round((Date.now() - t0) / 1000), bytes: rssBytes(pid) });
    } catch {
      /* the daemon is gone: the phase fails on its own */
    }
  };
  tick();
  const timer = setInterval(tick, 5000);
  return {
    stop(): void {
      clearInterval(timer);
      tick();
      const total = series[series.length - 1]!.atS;
      const refS = total >= 120 ? 60 : Math.round(total / 2);
      const ref = series.find((x) => x.atS >= refS) ?? series[series.length - 1]!;
      rss.soakReferenceS = ref.atS;
      rss.soakReferenceBytes = ref.bytes;
    },
  };
}

function scrapeResult(out: ScrapeOutput): ScrapeResult {
  const baseline = percentiles(out.baseline), during = percentiles(out.during), scrapes = percentiles(out.scrapes.map((x) => x.ms));
  if (!baseline || !during || !scrapes) throw new Error(`scrape: too few samples (${out.baseline.length} alone, ${out.during.length} during, ${out.scrapes.length} scrapes)`);
  const bytes = out.scrapes[out.scrapes.length - 1]!.bytes;
  return { baseline, during, scrapes, bytes, peers: 0, blockMs: Math.max(0, during.max - baseline.p50) };
}

function churnResult(o: ScaleOptions, seconds: number, out: DriverOutput, baseline: LatencyResult | undefined): ChurnResult {
  const lat = latency(out.samples);
  if (!lat) throw new Error("churn: no timed events");
  const of = (op: Sample["op"]): Percentiles | undefined => percentiles(out.samples.filter((s) => s.op === op).map((s) => s.latencyMs));
  const sent = out.sent ?? 0;
  const achievedRate = out.spanMs && sent > 1 ? (sent - 1) / (out.spanMs / 1000) : 0;
  const lag = out.convergenceLagMs ?? Infinity;
  const half = (seconds * 1000) / 2;
  const p99 = (f: (s: Sample) => boolean): number => percentiles(out.samples.filter(f).map((s) => s.latencyMs))?.p99 ?? NaN;
  const firstHalfP99Ms = p99((s) => s.atMs < half), secondHalfP99Ms = p99((s) => s.atMs >= half);
  const criteria = {
    rateSent: achievedRate >= KEEPS_UP.minRateFraction * o.rate,
    converged: lag < KEEPS_UP.maxConvergenceLagMs,
    noBacklog: !baseline || lat.p50 <= KEEPS_UP.p50Factor * baseline.p50 + KEEPS_UP.p50SlackMs,
    p99Bounded: !(secondHalfP99Ms > KEEPS_UP.p99Factor * firstHalfP99Ms + KEEPS_UP.p99SlackMs),
    firstHalfP99Ms, secondHalfP99Ms,
  };
  return {
    targetRate: o.rate, seconds, sent, achievedRate, maxSendLagMs: out.maxSendLagMs ?? NaN,
    latency: lat, puts: of("put"), deletes: of("delete"), convergenceLagMs: lag,
    keepsUp: criteria.rateSent && criteria.converged && criteria.noBacklog && criteria.p99Bounded, criteria,
  };
}

async function daemonStats(c: Ctx): Promise<DaemonStats> {
  const m = (name: string): Promise<number> => c.tc.metric(c.n, name);
  const [count, sum, events, heap] = await Promise.all([
    m("twill_reconcile_duration_seconds_count"), m("twill_reconcile_duration_seconds_sum"), m("twill_lease_events_total"), m("nodejs_heap_size_used_bytes"),
  ]);
  return { reconciles: count, reconcileMeanMs: count ? (sum / count) * 1000 : NaN, leaseEvents: events, heapUsedBytes: heap };
}

/** Runs one mode start to finish; never throws (a failure is the result's `error`). */
export async function runMode(mode: ScaleMode, o: ScaleOptions, log: Log): Promise<ModeResult> {
  // bpf soaks (the controller's target); kernel churns for churnSeconds
  const churnSeconds = mode === "bpf" && o.soakSeconds !== undefined ? o.soakSeconds : o.churnSeconds;
  const plan = makePlan({ peers: o.peers, events: o.events, churnEvents: Math.round(o.rate * churnSeconds) });
  const loadStart = loadavg();
  const rss: Mutable<ModeResult["rss"]> = {};
  const samples = { events: [] as Sample[], churn: [] as Sample[] };
  const r: Partial<Mutable<ModeResult>> = { mode, peers: o.peers, rss, samples };
  let tc: TwillCluster | undefined;
  let etcd: EtcdServer | undefined;
  const done = { events: false, churn: false };
  try {
    tc = await TwillCluster.create({
      prefix: randomPrefix("sc"), hosts: 1, startNodes: false, nodes: [{ dataplane: mode }], reconcileSeconds: o.reconcileSeconds ?? 10,
    });
    const n = tc.nodes[0]!;
    etcd = await EtcdServer.start({ netns: tc.cluster.routerNetns, host: n.host.gateway });
    const c: Ctx = { mode, o, plan, tc, n, etcd, log };
    const e = etcd;
    tc.sourceArgs = () => ["--etcd-endpoints", e.endpoint];
    await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, JSON.stringify(NET_CONFIG)]);
    const bulk = await run(process.execPath, [BULK, etcd.endpoint], { netns: etcd.netns, input: JSON.stringify(putOps(plan.initial.from, plan.initial.to)), timeoutMs: 300_000 });
    log(`[${mode}] ${o.peers} leases written to etcd (${bulk.stdout.trim()})`);

    await sleep(1000);
    const mem0 = kernelMemory();
    const started = await startDaemon(tc, n, o.peers);
    const mem1 = kernelMemory();
    rss.afterProgrammedBytes = rssBytes(started.pid);
    const pinPeers = join(n.pinDir, "maps", "twill_peers");
    const mapInfo = mode === "bpf" && existsSync(pinPeers) ? await pinnedMapInfo(pinPeers) : undefined;
    const programmed = await programmedCounts(tc, n, mode);
    const start: StartResult = {
      readyMs: started.readyMs, readyLogMs: started.readyLogMs, programmed,
      complete: [programmed.entries, programmed.routes, programmed.neighbours, programmed.fdb].every((x) => x === undefined || x === o.peers),
    };
    r.start = start;
    log(`[${mode}] ready after ${started.readyMs} ms (log: ${started.readyLogMs ?? "?"} ms), programmed ${JSON.stringify(programmed)}, daemon pid ${started.pid}`);
    if (!start.complete) throw new Error(`after ready the dataplane holds ${JSON.stringify(programmed)}, want ${o.peers} each`);
    const startDelta = kernelMemoryDelta(mem0, mem1);
    const memory: Mutable<MemoryResult> = { startPerPeerBytes: (startDelta.slabBytes + startDelta.vmallocBytes) / o.peers, startDelta };
    r.memory = memory;
    if (mapInfo) {
      const entries = await bpfEntries(c);
      memory.peersMap = { bytesMemlock: mapInfo.bytesMemlock, entries, perEntryBytes: mapInfo.bytesMemlock / entries, maxEntries: mapInfo.maxEntries };
    }

    if (o.events > 0) {
      const out = await driver(c, { phase: "events", events: plan.events }, 120_000 + o.events * 1000);
      samples.events = [...out.samples];
      r.events = latency(out.samples);
      rss.afterEventsBytes = rssBytes(started.pid);
      done.events = true;
      log(`[${mode}] ${o.events} events: p50 ${r.events?.p50.toFixed(2)} ms, p99 ${r.events?.p99.toFixed(2)} ms, max ${r.events?.max.toFixed(2)} ms`);
    }
    // a node that falls behind may need many times the churn's length to catch up: measure that, up to a limit
    const churnTimeout = Math.max(60_000, Math.min(10 * churnSeconds * 1000, 600_000));
    if (plan.churnEvents > 0) {
      const rssSampler = sampleRss(started.pid, rss);
      const out = await driver(c, {
        phase: "churn",
        churn: { ring: plan.ring, events: plan.churnEvents, intervalMs: 1000 / o.rate, sampleEvery: o.sampleEvery ?? 10, timeoutMs: churnTimeout },
      }, churnSeconds * 1000 + churnTimeout + 60_000).finally(() => rssSampler.stop());
      samples.churn = [...out.samples];
      r.churn = churnResult(o, churnSeconds, out, r.events);
      rss.afterChurnBytes = rssBytes(started.pid);
      done.churn = true;
      log(`[${mode}] churn: ${r.churn.sent} events at ${r.churn.achievedRate.toFixed(1)}/s for ${churnSeconds} s, p50 ${r.churn.latency.p50.toFixed(2)} ms, ` +
        `p99 ${r.churn.latency.p99.toFixed(2)} ms, convergence lag ${r.churn.convergenceLagMs.toFixed(1)} ms; RSS ${mib(rss.soakReferenceBytes)} at ${rss.soakReferenceS} s → ${mib(rss.afterChurnBytes)} at the end`);
    }
    if (o.scrapes) {
      const out = await runDriver<ScrapeOutput>(n, {
        mode, endpoint: etcd.endpoint, pinDir: n.pinDir, phase: "scrape", scrape: { port: n.healthzPort, scrapes: o.scrapes, baselineSeconds: 3 },
      }, 120_000 + o.scrapes * 10_000);
      r.scrape = { ...scrapeResult(out), peers: expectedPeers(plan, done).size };
      log(`[${mode}] /metrics at ${r.scrape.peers} peers: ${r.scrape.scrapes.n} scrapes, p50 ${r.scrape.scrapes.p50.toFixed(1)} ms, ${(r.scrape.bytes / 1024).toFixed(0)} KiB; ` +
        `/healthz p50 ${r.scrape.baseline.p50.toFixed(2)} ms alone, max ${r.scrape.during.max.toFixed(1)} ms during scrapes → loop blocked ≤ ${r.scrape.blockMs.toFixed(1)} ms`);
    }
    r.daemon = await daemonStats(c);
    log(`[${mode}] daemon: ${r.daemon.reconciles} full reconciles, mean ${r.daemon.reconcileMeanMs.toFixed(0)} ms; heap used ${(r.daemon.heapUsedBytes / 2 ** 20).toFixed(1)} MiB`);
    const fin = await finalCheck(c);
    r.finalMatchesEtcd = fin.ok;
    if (!fin.ok) r.finalMismatch = fin.mismatch;
    log(`[${mode}] dataplane (${fin.leases} leases) ${fin.ok ? "equals" : "DIFFERS FROM"} etcd${fin.ok ? "" : `: ${fin.mismatch.join("; ")}`}`);
    if (fin.ok) {
      const { mapAfter, ...m } = await memoryPhase(c, { ...done, memory: true });
      Object.assign(memory, m);
      if (mapAfter && memory.peersMap) memory.peersMap = { ...memory.peersMap, afterAdd: mapAfter };
      rss.afterBulkAddBytes = rssBytes(started.pid);
      log(`[${mode}] bulk add of ${memory.addedPeers} peers: ${memory.perPeerBytes?.toFixed(0)} B of kernel memory per peer`);
    }
  } catch (e) {
    r.error = e instanceof Error ? e.message : String(e);
    log(`[${mode}] FAILED: ${r.error}`);
    if (tc?.nodes[0]) {
      const lf = tc.nodes[0].logFile;
      if (existsSync(lf)) log(`[${mode}] daemon log tail:\n${readFileSync(lf, "utf8").split("\n").slice(-15).join("\n")}`);
    }
  } finally {
    await tc?.destroy().catch((e: unknown) => log(`[${mode}] cleanup: ${String(e)}`));
    await etcd?.destroy().catch((e: unknown) => log(`[${mode}] cleanup: ${String(e)}`));
  }
  return { ...r, loadavg: { start: loadStart, end: loadavg() } } as ModeResult;
}
