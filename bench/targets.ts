/**
 * The targets twill must reach, checked against this run's measurements.
 *
 * How it works: a dataplane target compares one mode's median with its
 * reference's median, both measured in this run on the **real** host
 * profile (hosts.ts) — bare hosts are reported without targets. The
 * verdict is PASS or MISSED on that ratio of medians; beside it the
 * per-repetition ratios (each repetition of the mode divided by the
 * reference's sample of the same repetition) are shown as min / median /
 * max, and when they straddle the bound the row says the result is within
 * the run's noise, so a reader knows a rerun could flip it. A mode or
 * metric that was not measured reads NOT MEASURED, never PASS.
 * "kernel host-gw" is kernel-direct (flannel's DirectRouting routes are the
 * host-gw backend's routes; modes.ts). The control-plane speed target is
 * checked twice: on the whole first reconcile a starting daemon runs (what
 * a user waits for) and on a bare upsert of all peers (what a batch of
 * lease events costs); it does not depend on the host profile.
 */
import { cpRows, entriesPerPeer, hostView, metricRow, type CpRow } from "./analysis.js";
import type { ModeId } from "./modes.js";
import type { RunResults } from "./results.js";
import type { Summary } from "./stats.js";

export type Verdict = "PASS" | "MISSED" | "NOT MEASURED";

export interface TargetResult {
  readonly target: string;
  readonly op: "<=" | ">=" | "==";
  readonly bound: number;
  /** Ratio of medians (or the measured value for "=="). */
  readonly measured?: number;
  /** Per-repetition ratios: min / median / max. */
  readonly perRep?: Summary;
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

const LABELS: Readonly<Record<string, string>> = {
  "latency.p50": "latency p50", "latency.p99": "latency p99", "latency.p999": "latency p99.9",
  "tcp1.gbps": "TCP throughput, 1 stream", "tcp4.gbps": "TCP throughput, 4 streams",
  "tcp1.cpuPerGB": "CPU per GB (1-stream run)", "udp64.kpps": "64-byte UDP rate",
};

const REF_NAMES: Partial<Record<ModeId, string>> = { "kernel-direct": "kernel host-gw (kernel-direct)" };

const t = (mode: ModeId, baseline: ModeId, metric: string, op: "<=" | ">=", bound: number): RatioTarget =>
  ({ mode, baseline, metric, label: LABELS[metric] ?? metric, op, bound });

/** The dataplane targets, real hosts. */
export const DATAPLANE_TARGETS: readonly RatioTarget[] = [
  t("twill-vxlan", "kernel-vxlan", "latency.p50", "<=", 0.8),
  t("twill-vxlan", "kernel-vxlan", "latency.p99", "<=", 0.85),
  t("twill-vxlan", "kernel-vxlan", "latency.p999", "<=", 0.9),
  t("twill-vxlan", "kernel-vxlan", "tcp1.gbps", ">=", 1.1),
  t("twill-vxlan", "kernel-vxlan", "tcp4.gbps", ">=", 1.1),
  t("twill-vxlan", "kernel-vxlan", "tcp1.cpuPerGB", "<=", 0.9),
  t("twill-vxlan", "kernel-vxlan", "udp64.kpps", ">=", 1.1),
  t("twill-vxlan-fast", "kernel-direct", "latency.p50", "<=", 0.9),
  t("twill-vxlan-fast", "kernel-vxlan", "latency.p50", "<=", 0.65),
  t("twill-vxlan-fast", "kernel-vxlan", "latency.p999", "<=", 0.75),
  t("twill-vxlan-fast", "kernel-vxlan", "tcp1.gbps", ">=", 1.3),
  t("twill-vxlan-fast", "kernel-vxlan", "tcp4.gbps", ">=", 1.3),
  t("twill-direct", "kernel-direct", "latency.p50", "<=", 0.8),
  t("twill-direct", "kernel-direct", "tcp1.gbps", ">=", 1.1),
  t("twill-direct", "kernel-direct", "tcp4.gbps", ">=", 1.1),
];

function meets(v: number, op: "<=" | ">=" | "==", bound: number): boolean {
  return op === "<=" ? v <= bound : op === ">=" ? v >= bound : v === bound;
}

function verdictOf(measured: number | undefined, op: "<=" | ">=" | "==", bound: number, range?: { min: number; max: number }): Pick<TargetResult, "verdict" | "withinNoise"> {
  if (measured === undefined || !Number.isFinite(measured)) return { verdict: "NOT MEASURED", withinNoise: false };
  const withinNoise = range !== undefined && op !== "==" && range.min <= bound && range.max >= bound;
  return { verdict: meets(measured, op, bound) ? "PASS" : "MISSED", withinNoise };
}

export function evaluateTargets(r: RunResults): TargetResult[] {
  const out: TargetResult[] = [];
  const real = r.hostProfiles.includes("real") ? hostView(r, "real") : undefined;
  for (const x of DATAPLANE_TARGETS) {
    const target = `${x.mode} ${x.label} vs ${REF_NAMES[x.baseline] ?? x.baseline}`;
    const row = real && real.modes.includes(x.mode) && real.modes.includes(x.baseline) ? metricRow(real, x.mode, x.metric, x.baseline) : undefined;
    const perRep = row?.paired;
    out.push({ target, op: x.op, bound: x.bound, ...(row?.ratio !== undefined ? { measured: row.ratio } : {}), ...(perRep ? { perRep } : {}), ...verdictOf(row?.ratio, x.op, x.bound, perRep) });
  }
  const rows = cpRows(r);
  for (const [what, pick] of [["reconcile on a fresh node", (y: CpRow) => y.time], ["upsert, the lease-event path", (y: CpRow) => y.upsert]] as const) {
    const k = pick(rows.find((y) => y.dataplane === "kernel" && y.peers === 10000) ?? ({} as CpRow));
    const b = pick(rows.find((y) => y.dataplane === "bpf" && y.peers === 10000) ?? ({} as CpRow));
    const speedup = k && b && b.median > 0 ? k.median / b.median : undefined;
    const range = k && b && b.min > 0 && b.max > 0 ? { n: Math.min(k.n, b.n), min: k.min / b.max, median: speedup ?? NaN, max: k.max / b.min } : undefined;
    out.push({ target: `programming 10,000 peers (${what}): kernel time ÷ bpf time`, op: ">=", bound: 50, ...(speedup !== undefined ? { measured: speedup } : {}), ...(range ? { perRep: range } : {}), ...verdictOf(speedup, ">=", 50, range) });
  }
  const per = entriesPerPeer(r, "bpf");
  out.push({ target: "bpf: kernel entries (route+neigh+FDB) added per peer", op: "==", bound: 0, ...(per !== undefined ? { measured: per } : {}), ...verdictOf(per, "==", 0) });
  return out;
}
