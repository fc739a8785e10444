/**
 * The controller's part of the benchmark (issue 10's targets): an idle node
 * per lease source, start-to-ready by peer count and lease source, and one
 * node facing 10,000 peers in etcd — lease events, the soak at 200 events/s,
 * a /metrics scrape — plus the targets table that puts each figure beside
 * its target.
 *
 * How it works: runController runs scale/idle.ts, scale/startup.ts and
 * scale/scale.ts one after the other with the profile's sizes (quick: small
 * sizes, every scenario; full: the real ones) and returns what they
 * measured, for results.json. controllerTargets reads those results and the
 * control-plane rows (analysis.ts) and gives one row per target: the figure,
 * the bound, PASS / MISSED, or NOT MEASURED with the reason. renderController
 * writes the report's section. A figure measured at a smaller size than the
 * target names (the quick profile) says its size; its verdict is against
 * the same bound.
 */
import { mkdirSync } from "node:fs";
import { cpRows } from "./analysis.js";
import { bytes, f, table, x } from "./markdown.js";
import type { Profile } from "./profiles.js";
import type { RunResults } from "./results.js";
import { runIdle, type IdleResult } from "./scale/idle.js";
import { runScale } from "./scale/scale.js";
import { runStartup, type StartupCell } from "./scale/startup.js";
import type { ScaleResult } from "./scale/types.js";
import { ratio } from "./stats.js";

export interface ControllerResults {
  readonly idle?: readonly IdleResult[];
  readonly startup?: readonly StartupCell[];
  readonly scale?: ScaleResult;
  readonly errors: string[];
}

export interface ControllerTarget {
  readonly target: string;
  readonly bound: string;
  readonly measured: string;
  readonly verdict: "PASS" | "MISSED" | "NOT MEASURED";
  readonly note?: string;
}

const MiB = 2 ** 20;
const n = (v: number): string => v.toLocaleString("en-US");

export async function runController(p: Profile, workDir: string, log: (l: string) => void): Promise<ControllerResults> {
  mkdirSync(workDir, { recursive: true });
  const out: { -readonly [K in keyof ControllerResults]: ControllerResults[K] } = { errors: [] };
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (e) {
      const msg = e instanceof Error ? e.message.split("\n")[0]! : String(e);
      out.errors.push(`${what}: ${msg}`);
      log(`${what} FAILED: ${msg}`);
      return undefined;
    }
  };
  log(`controller: idle node, ${p.idlePeers} peers, ${p.idleSeconds} s windows, per lease source`);
  out.idle = await step("idle node", () => runIdle({ peers: p.idlePeers, seconds: p.idleSeconds, workDir, log }));
  log(`controller: start-to-ready with ${p.startupPeers.map(n).join(" / ")} peers`);
  out.startup = await step("start-up", () => runStartup({
    peers: p.startupPeers, sources: ["dir", "etcd", "kube"], eventsAt: p.startupEventsAt, events: p.startupEvents, kernelMaxPeers: p.kernelMaxPeers,
    kubeMaxPeers: p.kubeMaxPeers, log,
  }));
  log(`controller: one node, ${n(p.scalePeers)} peers in etcd; bpf soaks ${p.soakSeconds} s at 200 events/s`);
  out.scale = await step("scale", () => runScale({
    peers: p.scalePeers, events: p.scaleEvents, churnSeconds: p.churnSeconds, soakSeconds: p.soakSeconds, rate: 200, scrapes: p.scrapes, log,
  }));
  return out;
}

function verdict(v: number | undefined, ok: (v: number) => boolean): ControllerTarget["verdict"] {
  return v === undefined || !Number.isFinite(v) ? "NOT MEASURED" : ok(v) ? "PASS" : "MISSED";
}

export function controllerTargets(r: RunResults): ControllerTarget[] {
  const c = r.controller;
  if (!c) return [];
  const rows: ControllerTarget[] = [];
  for (const i of c.idle ?? []) {
    const src = { dir: "lease directory", etcd: "etcd", kube: "Kubernetes" }[i.source];
    const what = `Idle node (3-node cluster, ${i.peers} peers, ${src})`;
    const note = i.error;
    rows.push({ target: `${what}: processes started in ${i.seconds} s`, bound: "0", measured: i.processes === undefined ? "–" : String(i.processes), verdict: verdict(i.processes, (v) => v === 0), ...(note ? { note } : {}) });
    rows.push({ target: `${what}: CPU, % of a core`, bound: "≤ 0.1 %", measured: i.cpuPercent === undefined ? "–" : `${f(i.cpuPercent, 3)} %`, verdict: verdict(i.cpuPercent, (v) => v <= 0.1), ...(note ? { note } : {}) });
    rows.push({ target: `${what}: RSS after ${i.seconds} s`, bound: "≤ 72 MiB", measured: bytes(i.rssBytes), verdict: verdict(i.rssBytes, (v) => v <= 72 * MiB), ...(note ? { note } : {}) });
  }
  const bpf = c.scale?.modes.find((m) => m.mode === "bpf");
  if (c.scale) {
    const peers = n(c.scale.options.peers);
    rows.push({ target: `RSS with ${peers} peers (bpf, etcd, right after ready)`, bound: "reported", measured: bytes(bpf?.rss.afterProgrammedBytes), verdict: verdict(bpf?.rss.afterProgrammedBytes, () => true) });
    const refB = bpf?.rss.soakReferenceBytes, endB = bpf?.rss.afterChurnBytes;
    const growth = ratio(endB, refB);
    const soakS = bpf?.churn?.seconds;
    rows.push({
      target: `Soak: 200 lease events/s for ${soakS === undefined ? "?" : f(soakS / 60, soakS >= 120 ? 0 : 1)} min at ${peers} peers: RSS at the end vs at ${bpf?.rss.soakReferenceS ?? "?"} s`,
      bound: "within 10 %", measured: growth === undefined ? "–" : `${bytes(refB)} → ${bytes(endB)} (${growth >= 1 ? "+" : ""}${f((growth - 1) * 100, 1)} %)`,
      verdict: verdict(growth, (g) => Math.abs(g - 1) <= 0.1),
    });
    rows.push({
      target: "Soak: at the end the pinned twill_peers map equals the leases in etcd", bound: "equal",
      measured: bpf?.finalMatchesEtcd === undefined ? "–" : bpf.finalMatchesEtcd ? "equal" : `differs: ${(bpf.finalMismatch ?? []).slice(0, 2).join("; ")}`,
      verdict: bpf?.finalMatchesEtcd === undefined ? "NOT MEASURED" : bpf.finalMatchesEtcd ? "PASS" : "MISSED",
    });
    const s = bpf?.scrape;
    rows.push({
      target: `/metrics scrape at ${s ? n(s.peers) : peers} peers: event-loop block`, bound: "≤ 20 ms",
      measured: s ? `${f(s.blockMs, 1)} ms` : "–", verdict: verdict(s?.blockMs, (v) => v <= 20),
      ...(s ? { note: `${s.scrapes.n} scrapes of ${bytes(s.bytes)}, ${f(s.scrapes.p50, 1)} ms each (median)` } : {}),
    });
  }
  const cells = c.startup ?? [];
  for (const source of ["dir", "etcd"] as const) {
    const mine = cells.filter((x) => x.source === source && x.mode === "bpf" && x.readyMs !== undefined);
    const zero = mine.find((x) => x.peers === 0), big = mine.filter((x) => x.peers > 0).sort((a, b) => b.peers - a.peers)[0];
    const top = Math.max(0, ...cells.filter((x) => x.source === source && x.mode === "bpf").map((x) => x.peers));
    const missing = cells.find((x) => x.source === source && x.mode === "bpf" && x.peers === top && (x.skipped || x.error));
    const d = zero && big ? big.readyMs! - zero.readyMs! : undefined;
    rows.push({
      target: `Start-to-ready with ${n(big?.peers ?? top)} peers vs 0 (bpf, ${source === "dir" ? "lease directory" : "etcd"})`, bound: "≤ +2 s",
      measured: d === undefined ? "–" : `${f(zero!.readyMs!, 0)} → ${f(big!.readyMs!, 0)} ms (+${f(d / 1000, 2)} s)`, verdict: verdict(d, (v) => v <= 2000),
      ...(missing ? { note: `${n(missing.peers)} peers: ${missing.skipped ?? missing.error}` } : {}),
    });
  }
  // From the event (the driver's own watch received it, after etcd's commit) when the driver timed that; else from the put.
  const ev = cells.find((x) => x.source === "etcd" && x.mode === "bpf" && x.events);
  const evp = ev?.fromEvent ?? ev?.events;
  rows.push({
    target: `Lease event → map p99 while reconciles run (bpf, etcd, ${ev ? n(ev.peers) : "?"} peers, reconcile every 1 s)`, bound: "≤ 10 ms",
    measured: evp ? `${f(evp.p99, 2)} ms` : "–", verdict: verdict(evp?.p99, (v) => v <= 10),
    ...(ev?.events ? {
      note: `${ev.events.n} events${ev.fromEvent ? `, from the event (the driver's watch) p50 ${f(ev.fromEvent.p50, 2)} ms, max ${f(ev.fromEvent.max, 2)} ms` : ""}; ` +
        `from the put sent p50 ${f(ev.events.p50, 2)} ms, p99 ${f(ev.events.p99, 2)} ms, max ${f(ev.events.max, 2)} ms` +
        `${ev.etcdAck ? ` (etcd acknowledged the put in p50 ${f(ev.etcdAck.p50, 2)} ms, p99 ${f(ev.etcdAck.p99, 2)} ms)` : ""}; ` +
        `${ev.reconciles?.count} reconciles of ${f(ev.reconciles?.meanMs, 1)} ms mean`,
    } : {}),
  });
  const cp = cpRows(r);
  const at = (dp: "bpf" | "kernel", peers: number): number | undefined => cp.find((y) => y.dataplane === dp && y.peers === peers)?.time?.median;
  const sp = ratio(at("kernel", 10000), at("bpf", 10000));
  rows.push({ target: "Programming 10,000 peers: kernel ÷ bpf (first reconcile, medians)", bound: "≥ 100×", measured: x(sp), verdict: verdict(sp, (v) => v >= 100) });
  const bigBpf = cp.filter((y) => y.dataplane === "bpf" && !cp.some((k) => k.dataplane === "kernel" && k.peers === y.peers)).sort((a, b) => b.peers - a.peers)[0];
  const failedBig = r.controlPlane.samples.find((s) => s.dataplane === "bpf" && s.error && !cp.some((k) => k.dataplane === "kernel" && k.peers === s.peers));
  rows.push({
    target: `Programming ${bigBpf ? n(bigBpf.peers) : failedBig ? n(failedBig.peers) : "100,000"} peers into the bpf map (first reconcile, median)`, bound: "≤ 250 ms",
    measured: bigBpf?.time ? `${f(bigBpf.time.median, 1)} ms` : "–", verdict: verdict(bigBpf?.time?.median, (v) => v <= 250),
    ...(failedBig && !bigBpf?.time ? { note: failedBig.error!.split("\n")[0]!.slice(0, 200) } : {}),
  });
  return rows;
}

function startupTable(cells: readonly StartupCell[]): string {
  const peers = [...new Set(cells.map((c) => c.peers))].sort((a, b) => a - b);
  const rows: string[][] = [];
  const names = { dir: "lease directory", etcd: "etcd", kube: "Kubernetes (real-sized nodes)" } as const;
  for (const source of ["dir", "etcd", "kube"] as const) {
    if (!cells.some((y) => y.source === source)) continue;
    for (const mode of ["bpf", "kernel"] as const) {
      const line = peers.map((p) => {
        const c = cells.find((y) => y.source === source && y.mode === mode && y.peers === p);
        if (!c) return "–";
        if (c.skipped) return `not run¹`;
        if (c.error) return `FAILED`;
        return `${f(c.readyMs, 0)} ms (${bytes(c.rssBytes)})`;
      });
      rows.push([names[source], mode, ...line]);
    }
  }
  return table(["Lease source", "Dataplane", ...peers.map((p) => `${n(p)} peers: ready (RSS)`)], rows, "ll" + "r".repeat(peers.length));
}

export function renderController(r: RunResults): string {
  const c = r.controller;
  if (!c) return "";
  const md: string[] = ["## Controller targets", ""];
  const t = controllerTargets(r);
  md.push(table(["Figure", "target", "measured", "verdict", "note"],
    t.map((y) => [y.target, y.bound, y.measured, y.verdict === "PASS" ? "**PASS**" : y.verdict === "MISSED" ? "**MISSED**" : y.bound === "reported" ? "" : "NOT MEASURED", y.note ?? ""]), "lrrll"));
  md.push("");
  const missed = t.filter((y) => y.verdict === "MISSED");
  md.push(missed.length ? `**${missed.length} controller targets MISSED**: ${missed.map((y) => y.target).join("; ")}.` : "No controller target missed in this run.");
  md.push("");
  for (const e of c.errors) md.push(`> ${e}\n`);
  if (c.startup?.length) {
    md.push("### Start-to-ready by peer count and lease source", "");
    md.push(startupTable(c.startup), "");
    const skipped = [...new Set(c.startup.filter((y) => y.skipped).map((y) => `${y.source} ${y.mode} ${n(y.peers)}: ${y.skipped}`))];
    if (skipped.length) md.push(`¹ ${skipped.join("; ")}.`, "");
    for (const y of c.startup.filter((z) => z.error)) md.push(`- ${y.source} ${y.mode} ${n(y.peers)} peers FAILED: ${y.error}`);
    for (const y of c.startup.filter((z) => z.events)) {
      md.push(`- ${y.source} ${y.mode} ${n(y.peers)} peers, reconcile every 1 s: put sent → dataplane p50 ${f(y.events!.p50, 2)} ms, p99 ${f(y.events!.p99, 2)} ms, max ${f(y.events!.max, 2)} ms over ${y.events!.n} events` +
        (y.fromEvent ? `; from the event (the driver's own watch received it) p50 ${f(y.fromEvent.p50, 2)} ms, p99 ${f(y.fromEvent.p99, 2)} ms, max ${f(y.fromEvent.max, 2)} ms` : "") +
        (y.etcdAck ? `; etcd acknowledged a put in p50 ${f(y.etcdAck.p50, 2)} ms, p99 ${f(y.etcdAck.p99, 2)} ms` : "") +
        `; ${y.reconciles?.count} full reconciles of ${f(y.reconciles?.meanMs, 1)} ms on average.`);
    }
    md.push("");
  }
  md.push("How these were measured:", "");
  md.push("- **Idle node**: a 3-node cluster per lease source (lease directory; a real etcd-server; the fake Kubernetes API server of sim/kubeapi.ts with real-sized nodes, over HTTPS, bench/scale/kubenodes.ts), every daemon bpf with the default 10 s reconcile, plus the leases of that many other nodes (no hosts behind them). The three clusters run side by side; h1's daemon is measured after 30 s of settling (V8's memory reducer runs its one-time full collections 5–15 s after start, bench/scale/idle.ts), in two windows one after the other: CPU = Δ(utime+stime+cutime+cstime) from /proc/<pid>/stat over the first window (nothing attached), RSS = VmRSS at its end; processes = execve/execveat calls of the daemon's process tree under `strace -f -e trace=execve,execveat -p <pid>` over the second (ptrace stops every syscall, hence a window of its own).");
  md.push("- **Start-to-ready**: a fresh 1-host cluster per cell; the leases are written before the daemon starts (directory: one file each; etcd: one transaction per 5,000; Kubernetes, up to 10,000 nodes in the full profile: real-sized Nodes, ~12 KB of JSON each — labels, three managedFields entries, conditions, nodeInfo, 25 images, CSI/kubeadm/cluster-api annotations — in the fake API server over HTTPS with a CA file and a bearer token, bench/scale/kubenodes.ts); daemon spawned → /readyz says ready (asked every 10 ms by one probe process in the node's namespace, bench/scale/readyprobe.ts), then the programmed peers are counted and must equal the leases. /26 subnets past 65,000 peers. Daemons run with `--reconcile-period 1`; in the etcd cell that times lease events, each event is put 1–50 ms after the previous one arrived (so events land at every point of the reconcile cycle) and timed until the dataplane shows it (bpf: the pinned map, polled; kernel: `ip monitor route`).");
  md.push("- **Soak** (bpf, in the one-node etcd scenario below): 200 lease events/s, open loop, alternately a put of a lease that is not there and a delete of one that is (a ring of keys, so the live set stays at the peer count); the daemon's VmRSS every 5 s; the reference is 1 minute in (half-way in runs under 2 minutes). At the end the pinned twill_peers map is read from the benchmark's process (vxlan entries: prefix, VTEP MAC, public IP) and compared with every lease `etcdctl get --prefix` returns, the node's own left out.");
  md.push("- **/metrics scrape** (same node, after the soak): measured from outside, in the node's namespace: one keep-alive connection asks `/healthz` back to back (1 ms apart) for 3 s alone, then while another connection scrapes `/metrics` N times in a row. A /healthz reply needs the daemon's event loop, so the longest round trip during the scrapes, less the median alone, bounds how long a scrape blocked the loop.");
  md.push("- **Programming 10,000 / 100,000 peers**: the control-plane runs above (one reconcile of all peers into a fresh dataplane, timed inside the process); 100,000 peers into bpf only, as /26 subnets, asking the dataplane for a peers map of that size (`peerCapacity`).");
  md.push("");
  return md.join("\n");
}
