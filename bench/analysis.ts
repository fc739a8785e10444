/**
 * Turns raw samples into the numbers the report and the targets print.
 *
 * How it works: per metric and mode, the successful samples' values are
 * summarised (stats.ts); the ratio is against kernel-vxlan's median in the
 * same run, and the paired ratios divide each repetition by kernel-vxlan's
 * sample of the same repetition (measured minutes apart at most). Modes
 * are compared only within one host profile: hostView(r, h) is the run as
 * if only profile h had been measured, and every function below works on
 * such a view (a view of a run with one profile is the run). For the
 * control plane, per dataplane and peer count: programming time, no-op
 * reconcile time, syscalls (from the strace run), kernel entries, and
 * memory per peer (BPF: growth of the maps' memlock; kernel: slab growth).
 */
import type { CpSample, DataplaneKind } from "./controlplane.js";
import type { Sample } from "./dataplane.js";
import type { HostProfileId } from "./hosts.js";
import type { ModeId } from "./modes.js";
import type { RunResults } from "./results.js";
import { pairedRatios, ratioOfMedians, summarize, type Summary } from "./stats.js";

export const BASELINE: ModeId = "kernel-vxlan";

/** The host profile of a sample (schema-1 samples had none: bare). */
export function hostsOf(s: Sample): HostProfileId {
  return s.hosts ?? "bare";
}

/** The modes that have a testbed or a sample on host profile h, in the run's order. */
export function modesOn(r: RunResults, h: HostProfileId): ModeId[] {
  return r.modes.filter((m) => r.testbeds[h]?.[m] !== undefined || r.samples.some((s) => s.mode === m && hostsOf(s) === h));
}

/** The run restricted to host profile h: its modes and its samples only. */
export function hostView(r: RunResults, h: HostProfileId): RunResults {
  return { ...r, modes: modesOn(r, h), samples: r.samples.filter((s) => hostsOf(s) === h) };
}

export interface MetricRow {
  readonly mode: ModeId;
  readonly summary?: Summary;
  /** median(mode) / median(baseline). */
  readonly ratio?: number;
  /** Per-repetition ratios against the baseline, summarised. */
  readonly paired?: Summary;
  readonly failures: number;
}

export function valuesByRep(r: RunResults, mode: ModeId, metricId: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of r.samples) {
    const v = s.metrics[metricId];
    if (s.mode === mode && !s.error && v !== undefined && Number.isFinite(v)) out.set(s.rep, v);
  }
  return out;
}

export function metricRow(r: RunResults, mode: ModeId, metricId: string, baseline: ModeId = BASELINE): MetricRow {
  const workload = metricId.split(".")[0];
  const mine = valuesByRep(r, mode, metricId);
  const base = valuesByRep(r, baseline, metricId);
  const summary = summarize([...mine.values()]);
  const ratio = ratioOfMedians([...mine.values()], [...base.values()]);
  const paired = summarize(pairedRatios(mine, base));
  const failures = r.samples.filter((s) => s.mode === mode && s.workload === workload && s.error).length;
  return { mode, failures, ...(summary ? { summary } : {}), ...(ratio !== undefined ? { ratio } : {}), ...(paired ? { paired } : {}) };
}

export interface CpRow {
  readonly dataplane: DataplaneKind;
  readonly peers: number;
  readonly time?: Summary;
  readonly noop?: Summary;
  readonly upsert?: Summary;
  /** Syscalls of the programming step: perf counts of the timed runs, else the strace run's total. */
  readonly syscallCount?: Summary;
  /** The strace run's breakdown. */
  readonly syscalls?: CpSample["syscalls"];
  /** Timed runs that succeeded. */
  readonly runs: number;
  readonly entries?: { routes: number; neighbours: number; fdb: number };
  /** BPF: memlock growth of all maps / peers; median over runs. */
  readonly mapBytesPerPeer?: number;
  /** Machine slab growth / peers; median over runs. */
  readonly slabBytesPerPeer?: Summary;
  readonly failures: number;
}

function sumValues(o: Record<string, number> | undefined): number {
  return Object.values(o ?? {}).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
}

export function cpRows(r: RunResults): CpRow[] {
  const rows: CpRow[] = [];
  const counts = [...new Set(r.controlPlane.samples.map((s) => s.peers))].sort((a, b) => a - b);
  for (const peers of counts) {
    for (const dataplane of ["kernel", "bpf"] as const) {
      const all = r.controlPlane.samples.filter((s) => s.dataplane === dataplane && s.peers === peers);
      if (all.length === 0) continue;
      const ok = all.filter((s) => !s.error);
      const timed = ok.filter((s) => !s.traced);
      const traced = ok.find((s) => s.traced);
      const time = summarize(timed.map((s) => s.programMs ?? NaN));
      const noop = summarize(timed.map((s) => s.noopMs ?? NaN));
      const upsert = summarize(timed.map((s) => s.upsertMs ?? NaN));
      const perfCounts = timed.map((s) => s.syscallCount).filter((v): v is number => v !== undefined);
      const syscallCount = summarize(perfCounts.length ? perfCounts : traced?.syscalls ? [traced.syscalls.total] : []);
      const entries = (timed[0] ?? traced)?.kernelEntries;
      const mem = summarize(ok.filter((s) => s.mapMemlockAfter).map((s) => (sumValues(s.mapMemlockAfter) - sumValues(s.mapMemlockBefore)) / peers));
      const slab = summarize(timed.map((s) => (s.slabDeltaBytes ?? NaN) / peers));
      rows.push({
        dataplane, peers, failures: all.length - ok.length, runs: timed.length,
        ...(syscallCount ? { syscallCount } : {}),
        ...(time ? { time } : {}), ...(noop ? { noop } : {}), ...(upsert ? { upsert } : {}),
        ...(traced?.syscalls ? { syscalls: traced.syscalls } : {}),
        ...(entries ? { entries } : {}),
        ...(dataplane === "bpf" && mem ? { mapBytesPerPeer: mem.median } : {}),
        ...(slab ? { slabBytesPerPeer: slab } : {}),
      });
    }
  }
  return rows;
}

/** Kernel entries (routes + neighbours + FDB on flannel.1) the programming step added per peer, largest over all runs. */
export function entriesPerPeer(r: RunResults, dataplane: DataplaneKind): number | undefined {
  const total = (e: { routes: number; neighbours: number; fdb: number }): number => e.routes + e.neighbours + e.fdb;
  const per = r.controlPlane.samples
    .filter((s) => s.dataplane === dataplane && !s.error && s.kernelEntries && s.kernelEntriesBefore)
    .map((s) => (total(s.kernelEntries!) - total(s.kernelEntriesBefore!)) / s.peers);
  return per.length ? Math.max(...per) : undefined;
}
