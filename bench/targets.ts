/**
 * The targets twill must reach, checked against this run's measurements.
 *
 * How it works: a dataplane target compares one mode's median with its
 * baseline's median from the same run (ratio ≤ or ≥ a bound). The verdict
 * is PASS or MISS on that ratio alone; when the per-repetition ratios
 * (min–max) straddle the bound the row also says the result is within the
 * run's noise, so a reader knows a rerun could flip it. A mode or metric
 * that was not measured reads NOT MEASURED, never PASS. Both VXLAN variants
 * (with and without --fast-path) are held to the twill-vxlan targets. The
 * control-plane speed target is checked twice: on the whole first reconcile
 * a starting daemon runs (what a user waits for) and on a bare upsert of all
 * peers (what a batch of lease events costs).
 */
import { cpRows, entriesPerPeer, metricRow, type CpRow } from "./analysis.js";
import type { ModeId } from "./modes.js";
import type { RunResults } from "./results.js";

export type Verdict = "PASS" | "MISS" | "NOT MEASURED";

export interface TargetResult {
  readonly target: string;
  readonly op: "<=" | ">=" | "==";
  readonly bound: number;
  readonly measured?: number;
  readonly range?: readonly [number, number];
  readonly verdict: Verdict;
  /** The per-repetition range crosses the bound. */
  readonly withinNoise: boolean;
}

interface RatioTarget {
  readonly mode: ModeId;
  readonly baseline: ModeId;
  readonly metric: string;
  readonly label: string;
  readonly op: "<=" | ">=";
  readonly bound: number;
}

const VXLAN: RatioTarget[] = (["twill-vxlan", "twill-vxlan-fast"] as const).flatMap((mode) => [
  { mode, baseline: "kernel-vxlan", metric: "latency.p50", label: "latency p50", op: "<=", bound: 0.75 },
  { mode, baseline: "kernel-vxlan", metric: "latency.p99", label: "latency p99", op: "<=", bound: 0.9 },
  { mode, baseline: "kernel-vxlan", metric: "tcp1.gbps", label: "TCP throughput, 1 stream", op: ">=", bound: 1.0 },
  { mode, baseline: "kernel-vxlan", metric: "tcp4.gbps", label: "TCP throughput, 4 streams", op: ">=", bound: 1.0 },
  { mode, baseline: "kernel-vxlan", metric: "tcp1.cpuPerGB", label: "CPU per GB (1-stream run)", op: "<=", bound: 0.9 },
]);

const DIRECT: RatioTarget[] = [
  { mode: "twill-direct", baseline: "kernel-direct", metric: "latency.p50", label: "latency p50", op: "<=", bound: 0.9 },
  { mode: "twill-direct", baseline: "kernel-direct", metric: "tcp1.gbps", label: "TCP throughput, 1 stream", op: ">=", bound: 1.0 },
  { mode: "twill-direct", baseline: "kernel-direct", metric: "tcp4.gbps", label: "TCP throughput, 4 streams", op: ">=", bound: 1.0 },
];

function meets(v: number, op: "<=" | ">=" | "==", bound: number): boolean {
  return op === "<=" ? v <= bound : op === ">=" ? v >= bound : v === bound;
}

function verdictOf(measured: number | undefined, op: "<=" | ">=" | "==", bound: number, range?: readonly [number, number]): Pick<TargetResult, "verdict" | "withinNoise"> {
  if (measured === undefined || !Number.isFinite(measured)) return { verdict: "NOT MEASURED", withinNoise: false };
  const withinNoise = range !== undefined && op !== "==" && range[0] <= bound && range[1] >= bound;
  return { verdict: meets(measured, op, bound) ? "PASS" : "MISS", withinNoise };
}

export function evaluateTargets(r: RunResults): TargetResult[] {
  const out: TargetResult[] = [];
  for (const t of [...VXLAN, ...DIRECT]) {
    const target = `${t.mode} ${t.label} vs ${t.baseline}`;
    const row = r.modes.includes(t.mode) && r.modes.includes(t.baseline) ? metricRow(r, t.mode, t.metric, t.baseline) : undefined;
    const range = row?.paired ? ([row.paired.min, row.paired.max] as const) : undefined;
    out.push({ target, op: t.op, bound: t.bound, ...(row?.ratio !== undefined ? { measured: row.ratio } : {}), ...(range ? { range } : {}), ...verdictOf(row?.ratio, t.op, t.bound, range) });
  }
  const rows = cpRows(r);
  for (const [what, pick] of [["reconcile on a fresh node", (x: CpRow) => x.time], ["upsert, the lease-event path", (x: CpRow) => x.upsert]] as const) {
    const k = pick(rows.find((x) => x.dataplane === "kernel" && x.peers === 10000) ?? ({} as CpRow));
    const b = pick(rows.find((x) => x.dataplane === "bpf" && x.peers === 10000) ?? ({} as CpRow));
    const speedup = k && b && b.median > 0 ? k.median / b.median : undefined;
    const range = k && b && b.min > 0 && b.max > 0 ? ([k.min / b.max, k.max / b.min] as const) : undefined;
    out.push({ target: `programming 10,000 peers (${what}): kernel time ÷ bpf time`, op: ">=", bound: 50, ...(speedup !== undefined ? { measured: speedup } : {}), ...(range ? { range } : {}), ...verdictOf(speedup, ">=", 50, range) });
  }
  const per = entriesPerPeer(r, "bpf");
  out.push({ target: "bpf: kernel entries (route+neigh+FDB) added per peer", op: "==", bound: 0, ...(per !== undefined ? { measured: per } : {}), ...verdictOf(per, "==", 0) });
  return out;
}
