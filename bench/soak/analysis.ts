/**
 * What the soak's measurements say: lost pings attributed to fault
 * windows, repair times per fault kind, and the PASS/MISSED lines.
 *
 * How it works:
 * - A fault's window runs from its injection until WINDOW_TAIL_MS after it
 *   was repaired (when it never was: after the checker gave up on it).
 * - Each lost ping of pair a→b is "expected" when it falls in the window of
 *   a fault that cuts paths by nature (vxlan-delete, tc-detach) on a's or
 *   b's node; otherwise it counts against the target, attributed to the
 *   window it fell in (by fault kind), or to "no fault" outside every window.
 *   The real nodes' leases never change during the soak, so the target is
 *   0 unexpected losses on every pair.
 * - Repair times are summarised per kind with stats.ts (min / median / max);
 *   the bound is one reconcile period plus 5 s (etcd: plus its outage).
 */
import { summarize, type Summary } from "../stats.js";
import { RECONCILE_SECONDS } from "./cluster.js";
import { CUTS_PATHS, FAULT_KINDS, REPAIR_LIMIT_MS, type FaultKind, type FaultRecord } from "./faults.js";
import type { PairResult } from "./pings.js";
import type { RssVerdict } from "./rss.js";
import type { FinalCheck } from "./final.js";

export const WINDOW_TAIL_MS = 3000;
export const REPAIR_BOUND_MS: Readonly<Record<FaultKind, number>> = {
  sigkill: (RECONCILE_SECONDS + 5) * 1000,
  "etcd-restart": (RECONCILE_SECONDS + 10) * 1000,
  "vxlan-delete": (RECONCILE_SECONDS + 5) * 1000,
  "tc-detach": (RECONCILE_SECONDS + 5) * 1000,
};

export type LossBucket = FaultKind | "none";

export interface PairLoss {
  readonly pair: string;
  readonly received: number;
  readonly lost: number;
  /** Lost in the window of a fault that cuts this pair's path by nature. */
  readonly expected: number;
  /** The others, by the kind of the window they fell in ("none": outside every window). */
  readonly unexpected: Readonly<Record<LossBucket, number>>;
  readonly unexpectedTotal: number;
}

export interface FaultLoss { readonly k: number; readonly expected: number; readonly unexpected: number }

/** Unexpected losses of one pair that came one after the other (less than BURST_GAP_MS apart). */
export interface LossBurst { readonly pair: string; readonly from: number; readonly to: number; readonly count: number; readonly fault?: number }
const BURST_GAP_MS = 200;

export interface KindSummary {
  readonly kind: FaultKind;
  readonly count: number;
  readonly repaired: number;
  readonly repairMs?: Summary;
  readonly boundMs: number;
  readonly withinBound: number;
  readonly pingsExpected: number;
  readonly pingsUnexpected: number;
}

export interface Verdict { readonly what: string; readonly ok: boolean; readonly measured: string; readonly target: string }

const windowEnd = (f: FaultRecord): number => (f.repairedAt ?? f.endedAt ?? f.injectedAt + REPAIR_LIMIT_MS) + WINDOW_TAIL_MS;
const touches = (pair: PairResult, target: string): boolean => target === "etcd" || pair.from === target || pair.to === target;

export function attributeLosses(pairs: readonly PairResult[], faults: readonly FaultRecord[]): { pairs: PairLoss[]; faults: FaultLoss[]; bursts: LossBurst[] } {
  const perFault = new Map(faults.map((f) => [f.k, { k: f.k, expected: 0, unexpected: 0 }]));
  const bursts: LossBurst[] = [];
  const out = pairs.map((p): PairLoss => {
    const unexpected: Record<LossBucket, number> = { sigkill: 0, "etcd-restart": 0, "vxlan-delete": 0, "tc-detach": 0, none: 0 };
    let expected = 0;
    let burst: { pair: string; from: number; to: number; count: number; fault?: number } | undefined;
    const note = (t: number, fault: number | undefined): void => {
      if (burst && t - burst.to < BURST_GAP_MS && burst.fault === fault) {
        burst.to = t;
        burst.count++;
        return;
      }
      burst = { pair: `${p.from}→${p.to}`, from: t, to: t, count: 1, ...(fault !== undefined ? { fault } : {}) };
      bursts.push(burst);
    };
    for (const t of p.lostAt) {
      const open = faults.filter((f) => t >= f.injectedAt && t <= windowEnd(f));
      const cutting = open.find((f) => CUTS_PATHS[f.kind] && touches(p, f.target));
      if (cutting) {
        expected++;
        perFault.get(cutting.k)!.expected++;
      } else if (open.length) {
        unexpected[open[0]!.kind]++;
        perFault.get(open[0]!.k)!.unexpected++;
        note(t, open[0]!.k);
      } else {
        unexpected.none++;
        note(t, undefined);
      }
    }
    const unexpectedTotal = Object.values(unexpected).reduce((a, b) => a + b, 0);
    return { pair: `${p.from}→${p.to}`, received: p.received, lost: p.lost, expected, unexpected, unexpectedTotal };
  });
  return { pairs: out, faults: [...perFault.values()], bursts: bursts.sort((a, b) => a.from - b.from) };
}

export function kindSummaries(faults: readonly FaultRecord[], losses: readonly FaultLoss[]): KindSummary[] {
  return FAULT_KINDS.map((kind) => {
    const mine = faults.filter((f) => f.kind === kind);
    const times = mine.filter((f) => f.repairMs !== undefined).map((f) => f.repairMs!);
    const lossOf = (f: FaultRecord) => losses.find((l) => l.k === f.k);
    return {
      kind, count: mine.length, repaired: times.length, repairMs: summarize(times), boundMs: REPAIR_BOUND_MS[kind],
      withinBound: times.filter((t) => t <= REPAIR_BOUND_MS[kind]).length,
      pingsExpected: mine.reduce((a, f) => a + (lossOf(f)?.expected ?? 0), 0),
      pingsUnexpected: mine.reduce((a, f) => a + (lossOf(f)?.unexpected ?? 0), 0),
    };
  });
}

export function verdicts(pairs: readonly PairLoss[], kinds: readonly KindSummary[], rss: readonly RssVerdict[], final: FinalCheck | undefined, pingsRan: boolean): Verdict[] {
  const unexpected = pairs.reduce((a, p) => a + p.unexpectedTotal, 0);
  const sent = pairs.reduce((a, p) => a + p.received + p.lost, 0);
  const faults = kinds.reduce((a, k) => a + k.count, 0);
  const within = kinds.reduce((a, k) => a + k.withinBound, 0);
  const worst = kinds.filter((k) => k.repairMs).map((k) => `${k.kind} max ${(k.repairMs!.max / 1000).toFixed(1)} s`).join(", ");
  const out: Verdict[] = [
    {
      what: "Pings lost outside the windows of faults that cut the path (every pair)",
      ok: pingsRan && unexpected === 0, measured: `${unexpected} of ${sent.toLocaleString("en-US")}`, target: "0",
    },
    {
      what: "Every fault repaired within one reconcile period + 5 s (etcd: + its outage)",
      ok: faults > 0 && within === faults, measured: `${within} of ${faults}${worst ? ` (${worst})` : ""}`, target: `all (≤ ${RECONCILE_SECONDS + 5} s; etcd ≤ ${RECONCILE_SECONDS + 10} s)`,
    },
    {
      what: "RSS flat: end within 10 % of 1 minute in (per node, longest incarnation)",
      ok: rss.length > 0 && rss.every((r) => r.ok),
      measured: rss.map((r) => `${r.node} ${r.growth >= 1 ? "+" : ""}${((r.growth - 1) * 100).toFixed(1)} %`).join(", ") || "–", target: "within ±10 %",
    },
    {
      what: "Maps / kernel tables equal the leases in etcd at the end",
      ok: !!final && final.nodes.length > 0 && final.nodes.every((n) => n.equal),
      measured: final ? final.nodes.map((n) => `${n.node} ${n.equal ? "equal" : `${n.differences.length} differences`}`).join(", ") : "not checked", target: "equal on every twill node",
    },
  ];
  return out;
}
