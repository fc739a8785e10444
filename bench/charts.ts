/**
 * The report's charts: one bar chart per metric (every mode's median with
 * min–max whiskers, the ratio to kernel-vxlan beside each bar, a dashed line
 * at kernel-vxlan's median) and one for the control plane (time to program
 * N peers, log scale, kernel beside bpf).
 *
 * How it works: the numbers come from analysis.ts, the drawing from svg.ts;
 * this file only chooses colours, labels and notes. A metric chart shows
 * one host profile (it is given hostView(r, h)) and its file name starts
 * with the profile ("real-latency-p50.svg"). Each chart is returned with
 * the file name report.md links to.
 */
import { BASELINE, metricRow, type CpRow } from "./analysis.js";
import { HOST_PROFILES, type HostProfileId } from "./hosts.js";
import type { ModeId } from "./modes.js";
import type { RunResults } from "./results.js";
import { barChart, type Group } from "./svg.js";
import type { MetricDef } from "./workloads.js";

export const MODE_COLORS: Record<ModeId, string> = {
  "kernel-vxlan": "#9e9e9e",
  "kernel-direct": "#616161",
  "twill-vxlan": "#90caf9",
  "twill-vxlan-fast": "#1e88e5",
  "twill-vxlan-device": "#ce93d8",
  "twill-vxlan-fast-device": "#8e24aa",
  "twill-direct": "#0d47a1",
  underlay: "#66bb6a",
};

export interface Chart {
  readonly file: string;
  readonly svg: string;
}

/** One metric on one host profile: `view` is hostView(r, hosts). */
export function metricChart(view: RunResults, m: MetricDef, hosts: HostProfileId): Chart {
  const r = view;
  const groups: Group[] = r.modes.map((mode) => {
    const row = metricRow(r, mode, m.id);
    const s = row.summary;
    const note = mode !== BASELINE && row.ratio !== undefined ? `${m.unit}, ${row.ratio.toFixed(2)}×` : m.unit;
    return {
      label: mode === "underlay" ? "underlay (reference)" : mode,
      bars: [{ label: m.id, min: s?.min ?? NaN, median: s?.median ?? NaN, max: s?.max ?? NaN, color: MODE_COLORS[mode], note }],
    };
  });
  const base = metricRow(r, BASELINE, m.id).summary;
  const n = Math.max(0, ...r.modes.map((mode) => metricRow(r, mode, m.id).summary?.n ?? 0));
  const svg = barChart({
    title: `${m.title} — ${HOST_PROFILES[hosts].title.toLowerCase()}`,
    subtitle: `median of ${n} runs per mode, whiskers min–max · ${m.better} is better · dashed: ${BASELINE} median`,
    unit: m.unit, groups, digits: m.digits,
    ...(base ? { baseline: { value: base.median, label: BASELINE } } : {}),
  });
  return { file: `${hosts}-${m.id.replace(".", "-")}.svg`, svg };
}

export function cpChart(rows: readonly CpRow[]): Chart {
  const counts = [...new Set(rows.map((r) => r.peers))];
  const groups: Group[] = counts.map((n) => ({
    label: `${n.toLocaleString("en-US")} peers`,
    bars: (["kernel", "bpf"] as const).map((dp) => {
      const t = rows.find((r) => r.peers === n && r.dataplane === dp)?.time;
      const k = rows.find((r) => r.peers === n && r.dataplane === "kernel")?.time;
      const note = dp === "bpf" && k && t ? `ms, ${(k.median / t.median).toFixed(1)}× faster` : "ms";
      return { label: dp, min: t?.min ?? NaN, median: t?.median ?? NaN, max: t?.max ?? NaN, color: dp === "kernel" ? MODE_COLORS["kernel-vxlan"] : MODE_COLORS["twill-vxlan-fast"], note };
    }),
  }));
  const svg = barChart({
    title: "Time to program N peers (one reconcile on a fresh node)",
    subtitle: "median, whiskers min–max · lower is better · kernel = flannel's entries, bpf = LPM trie batch",
    unit: "milliseconds", groups, digits: 1, log: true,
  });
  return { file: "controlplane-time.svg", svg };
}

