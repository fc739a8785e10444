/**
 * The chaos soak, start to finish (`twill bench --profile soak`).
 *
 * How it works:
 * 1) Build the 4-node cluster with etcd (cluster.ts), put the anchor lease,
 *    wait until every twill node is whole and record its pinned links
 *    (nodestate.ts), start a ping stream on every ordered pair of pods
 *    (pings.ts) and check each gets replies.
 * 2) Time 0: RSS sampling every 5 s (rss.ts) and the lease churn at 200
 *    events/s (churn-driver.ts, in the router namespace) start.
 * 3) Faults (faults.ts), one every 45–90 s (scaled down for runs shorter
 *    than 30 minutes, never under 15–25 s), kinds in seeded random order
 *    cycling through all four, target node at random; each is waited on
 *    until repaired before the next. No fault starts in the last 30 s
 *    (short runs: the last 15 %). A watchdog notes (and restarts) a daemon
 *    that exits when no fault asked it to.
 * 4) At the end: stop the churn, stop the pings, stop sampling, wait for
 *    convergence and compare each twill node with etcd (final.ts).
 * Everything lives under the per-run prefix "ck" + 4 hex and is removed at
 * the end, on failure and on Ctrl-C (the cluster's cleanup). A failure is
 * recorded in the results (`error`) with the cluster's state, never thrown.
 */
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { randomPrefix } from "../lib/cluster.js";
import { sleep, spawnIn, waitFor } from "../lib/exec.js";
import { ROOT } from "../lib/twill.js";
import { machineInfo, versions } from "../machine.js";
import type { ChurnInput, ChurnOutput } from "./churn-driver.js";
import { RECONCILE_SECONDS, SoakCluster } from "./cluster.js";
import { FAULT_KINDS, FAULT_TITLES, awaitRepair, chooseTarget, inject, type FaultContext, type FaultKind } from "./faults.js";
import { compareWithEtcd } from "./final.js";
import { ANCHOR_SLOT, anchorLease, etcdKey } from "./leases.js";
import { baseline, problems, realPeers, type NodeBaseline } from "./nodestate.js";
import { pingAllPairs, type PingPair } from "./pings.js";
import { between, mulberry32, shuffled } from "../lib/prng.js";
import { sampleRss } from "./rss.js";
import type { SoakOptions, SoakResults } from "./types.js";

const DRIVER = join(ROOT, "dist", "bench", "soak", "churn-driver.js");
type Log = (line: string) => void;

/** The gap between two faults: 45–90 s for a 30-minute run, proportionally less for shorter ones (at least 15–25 s). */
function gapRange(seconds: number): [number, number] {
  const f = Math.min(1, seconds / 1800);
  return [Math.max(15, 45 * f) * 1000, Math.max(25, 90 * f) * 1000];
}

function startChurn(c: SoakCluster, input: ChurnInput, log: Log): { stop(): Promise<ChurnOutput> } {
  const child = spawnIn(c.etcd.netns, process.execPath, [DRIVER, JSON.stringify(input)]);
  let final: ChurnOutput | { error: string } | undefined;
  let lastLog = 0;
  const done = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => { if (stderr.length < 4000) stderr += b.toString("utf8"); });
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (o.final) final = o as unknown as ChurnOutput;
    else if (o.progress && Date.now() - lastLog >= 60_000) {
      lastLog = Date.now();
      log(`churn: ${o.sent} events sent, ${o.ok} acknowledged, ${o.failed} failed, ${o.skipped} skipped, ${o.inFlight} in flight`);
    }
  });
  return {
    async stop(): Promise<ChurnOutput> {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGTERM");
      await Promise.race([done, sleep(30_000)]);
      if (!final) throw new Error(`the churn driver gave no result (exit ${child.exitCode ?? child.signalCode}): ${stderr.trim().slice(-1000)}`);
      if ("error" in final) throw new Error(`the churn driver failed: ${final.error}`);
      return final;
    },
  };
}

/** Copies every daemon's log and etcd's into <dir>/logs/ (the cluster's own directory goes with it). */
function keepLogs(c: SoakCluster, dir: string): void {
  const to = join(dir, "logs");
  mkdirSync(to, { recursive: true });
  for (const s of c.nodes) if (existsSync(s.n.logFile)) copyFileSync(s.n.logFile, join(to, `${s.name}.log`));
  if (existsSync(c.etcd.logFile)) copyFileSync(c.etcd.logFile, join(to, "etcd.log"));
}

export async function runSoak(o: SoakOptions, commandLine: string, dir: string, log: Log): Promise<SoakResults> {
  const prefix = randomPrefix("ck");
  const rand = mulberry32(o.seed);
  const r: SoakResults = {
    schema: "soak-1", commandLine, startedAt: new Date().toISOString(), prefix, options: o,
    machine: machineInfo(), versions: versions(ROOT), loadavg: { before: loadavg().map((x) => x.toFixed(2)).join(" ") },
    reconcileSeconds: RECONCILE_SECONDS, nodes: [], faults: [], pings: [], rss: [], crashes: [], notes: [],
  };
  log(`soak ${prefix}: ${o.seconds / 60} min, seed ${o.seed}, ${o.rate} lease events/s, pings every ${o.pingIntervalMs} ms`);
  let c: SoakCluster | undefined;
  let pairs: PingPair[] = [];
  let watchdog: NodeJS.Timeout | undefined;
  try {
    c = await SoakCluster.create(prefix, log);
    const cl = c;
    await c.etcd.etcdctl(["put", etcdKey(ANCHOR_SLOT), anchorLease()]);
    const real = await realPeers(c);
    const baselines = new Map<string, NodeBaseline>();
    // The pod watcher attaches from_pod within a second or so; then every twill node must be whole.
    await waitFor(async () => {
      for (const s of cl.twillNodes) baselines.set(s.name, await baseline(s));
      const bad = (await Promise.all(cl.twillNodes.map((s) => problems(cl, s, baselines.get(s.name)!, real)))).flat();
      const fromPods = cl.twillNodes.filter((s) => s.dataplane === "bpf").every((s) => baselines.get(s.name)!.links.some((l) => l.role === "from_pod"));
      return bad.length === 0 && fromPods;
    }, { what: "every twill node whole (daemon ready, flannel.1 up, links pinned, the real peers programmed)", timeoutMs: 30_000, intervalMs: 500 });
    r.nodes = c.nodes.map((s) => ({
      name: s.name, role: s.role, dataplane: s.dataplane, underlayIP: s.n.host.underlayIP, subnet: `10.244.${s.slot}.0/24`, podIP: s.pod!.ip,
      pinnedLinks: (baselines.get(s.name)?.links ?? []).map((l) => `${l.role} on ${l.dev}`),
    }));
    for (const s of c.twillNodes) log(`${s.name} (${s.role}) pinned links: ${r.nodes.find((x) => x.name === s.name)!.pinnedLinks.join(", ") || "none"}`);

    pairs = pingAllPairs(c.nodes.map((s) => s.pod!), o.pingIntervalMs);
    await sleep(2000);
    const silent = pairs.filter((p) => p.received === 0);
    if (silent.length) throw new Error(`pods do not reach each other before the soak: ${silent.map((p) => `${p.name}${p.errorOutput ? ` (${p.errorOutput})` : ""}`).join(", ")}`);
    log(`${pairs.length} ping streams running, every pair answers`);

    const t0 = Date.now();
    r.soakStartedAt = t0;
    const end = t0 + o.seconds * 1000;
    const rss = sampleRss(c.nodes, t0);
    r.rss = rss.samples;
    const churn = startChurn(c, { endpoint: c.etcd.endpoint, rate: o.rate, seed: o.seed, realIPs: c.nodes.map((s) => s.n.host.underlayIP) }, log);

    // A daemon that exits on its own is a bug: note it (with its log) and restart it, so the soak goes on.
    let sigkilling: string | undefined;
    let restarting = false;
    watchdog = setInterval(() => {
      if (restarting) return;
      for (const s of cl.nodes) {
        const p = s.n.proc;
        if (!p || s.name === sigkilling || (p.exitCode === null && p.signalCode === null)) continue;
        restarting = true;
        r.crashes.push({ node: s.name, atS: Math.round((Date.now() - t0) / 1000), exit: String(p.exitCode ?? p.signalCode), logTail: cl.tc.log(s.n).split("\n").slice(-30).join("\n") });
        log(`WARNING: ${s.name}'s daemon exited (${p.exitCode ?? p.signalCode}) without a fault asking it to; restarting it`);
        s.incarnation++;
        void cl.tc.start(s.n).catch((e: Error) => log(`cannot restart ${s.name}: ${e.message.split("\n")[0]}`)).finally(() => (restarting = false));
        break;
      }
    }, 1000);

    const x: FaultContext = { c, pairs, baselines, real, log };
    const [gapLo, gapHi] = gapRange(o.seconds);
    const margin = Math.min(30_000, o.seconds * 150);
    let round: FaultKind[] = [];
    let next = t0 + between(rand, gapLo, gapHi);
    while (next < end - margin) {
      await sleep(next - Date.now());
      if (round.length === 0) round = shuffled(rand, FAULT_KINDS);
      const kind = round.shift()!;
      const target = chooseTarget(rand, c, kind);
      sigkilling = kind === "sigkill" ? target?.name : undefined;
      const rec = await inject(x, r.faults.length + 1, kind, target);
      sigkilling = undefined;
      r.faults.push(rec);
      const at = ((rec.injectedAt - t0) / 1000).toFixed(0);
      log(`fault ${rec.k} at ${at} s: ${FAULT_TITLES[kind]} → ${rec.target}${rec.detail ? ` (${rec.detail})` : ""}`);
      await awaitRepair(x, rec);
      if (rec.error) log(`fault ${rec.k}: ${rec.error}`);
      else log(`fault ${rec.k}: repaired after ${rec.repairMs} ms (state back after ${rec.stateBackAt! - rec.injectedAt} ms${rec.lastProblems ? `; last missing: ${rec.lastProblems.join("; ")}` : ""})`);
      next = Math.max(rec.injectedAt + between(rand, gapLo, gapHi), Date.now() + 5000);
    }
    await sleep(end - Date.now());

    r.churn = await churn.stop();
    const stoppedAt = Date.now();
    r.soakEndedAt = stoppedAt;
    log(`churn stopped: ${r.churn.sent} events sent (${r.churn.okRate.toFixed(1)}/s acknowledged), ${r.churn.failed} failed, ${r.churn.skipped} skipped`);
    clearInterval(watchdog);
    watchdog = undefined;
    r.pings = await Promise.all(pairs.splice(0).map((p) => p.stop()));
    rss.stop();
    r.final = await compareWithEtcd(c, stoppedAt);
    for (const n of r.final.nodes) log(`${n.node}: ${n.programmed} peers programmed, ${n.expected} expected from etcd: ${n.equal ? "equal" : `DIFFERENT: ${n.differences.join("; ")}`}`);
  } catch (e) {
    r.error = e instanceof Error ? e.message : String(e);
    log(`soak FAILED: ${r.error}`);
    if (c) r.notes.push(`State when it failed:\n${(await c.tc.diagnostics().catch((d: Error) => d.message)).slice(0, 20_000)}`);
  } finally {
    if (watchdog) clearInterval(watchdog);
    if (pairs.length) r.pings = await Promise.all(pairs.map((p) => p.stop().catch(() => undefined))).then((x) => x.filter((p) => p !== undefined));
    if (c) {
      try {
        keepLogs(c, dir);
      } catch (e) {
        log(`cannot keep the daemons' logs: ${String(e)}`);
      }
    }
    await c?.destroy();
  }
  r.loadavg.after = loadavg().map((x) => x.toFixed(2)).join(" ");
  r.finishedAt = new Date().toISOString();
  r.durationS = (Date.parse(r.finishedAt) - Date.parse(r.startedAt)) / 1000;
  return r;
}
