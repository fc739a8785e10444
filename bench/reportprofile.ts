/**
 * The report's section for one host profile: what the hosts carried, every
 * mode's numbers at a glance, what BPF encapsulation bought, one chart and
 * table per metric, conntrack entries and (when profiled) where the cycles go.
 *
 * How it works: it reads hostView(r, h) only, so every ratio in a section
 * compares modes measured side by side on the same kind of host. The
 * charts it draws are appended to `charts` for report.ts to write.
 */
import { BASELINE, hostView, metricRow } from "./analysis.js";
import { metricChart, type Chart } from "./charts.js";
import { HOST_PROFILES, type HostProfileId } from "./hosts.js";
import { f, table, x } from "./markdown.js";
import type { ModeId } from "./modes.js";
import { conntrackTable, perfSection } from "./reportcycles.js";
import type { RunResults } from "./results.js";
import { summarize } from "./stats.js";
import { METRICS, WORKLOADS, type MetricDef } from "./workloads.js";

/** Extra per-sample details shown as a median column beside a metric. */
const EXTRA: Record<string, { key: string; title: string; digits: number }[]> = {
  "tcp1.gbps": [{ key: "retransmits", title: "retransmits", digits: 0 }],
  "tcp4.gbps": [{ key: "retransmits", title: "retransmits", digits: 0 }],
  "tcp1.cpuPerGB": [{ key: "machineBusyPct", title: "machine busy %", digits: 0 }],
  "tcp4.cpuPerGB": [{ key: "machineBusyPct", title: "machine busy %", digits: 0 }],
  "udp64.kpps": [{ key: "lostPct", title: "lost %", digits: 1 }],
};

/** BPF encapsulation against the vxlan driver, same flags otherwise. */
const ENCAP_PAIRS: readonly (readonly [ModeId, ModeId])[] = [["twill-vxlan", "twill-vxlan-device"], ["twill-vxlan-fast", "twill-vxlan-fast-device"]];

function metricTable(v: RunResults, m: MetricDef): string {
  const extras = EXTRA[m.id] ?? [];
  const rows = v.modes.map((mode) => {
    const row = metricRow(v, mode, m.id);
    const s = row.summary;
    const ex = extras.map((e) => {
      const vals = v.samples.filter((sm) => sm.mode === mode && sm.workload === m.workload && !sm.error).map((sm) => Number(sm.extra[e.key]));
      return f(summarize(vals)?.median, e.digits);
    });
    const ratio = mode === BASELINE ? "1.00× (baseline)" : x(row.ratio);
    const paired = mode === BASELINE || !row.paired ? "" : `${x(row.paired.min)} – ${x(row.paired.max)}`;
    return [mode, String(s?.n ?? 0) + (row.failures ? ` (+${row.failures} failed)` : ""), f(s?.min, m.digits), `**${f(s?.median, m.digits)}**`, f(s?.max, m.digits), ratio, paired, ...ex];
  });
  return table(["Mode", "runs", `min ${m.unit}`, `median ${m.unit}`, `max ${m.unit}`, `× ${BASELINE} (medians)`, "per-rep ratio min – max", ...extras.map((e) => `${e.title} (median)`)], rows);
}

/** One row per mode: every metric's median and its ratio to the baseline. */
function glanceTable(v: RunResults): string {
  const metrics = METRICS.filter((m) => v.workloads.includes(m.workload));
  const rows = v.modes.map((mode) => [mode, ...metrics.map((m) => {
    const row = metricRow(v, mode, m.id);
    if (!row.summary) return "–";
    return mode === BASELINE || row.ratio === undefined ? f(row.summary.median, m.digits) : `${f(row.summary.median, m.digits)} (${row.ratio.toFixed(2)}×)`;
  })]);
  return table(["Mode", ...metrics.map((m) => m.short)], rows);
}

/** twill-vxlan ÷ twill-vxlan-device and the fast pair, per metric. */
function encapTable(v: RunResults): string | undefined {
  const pairs = ENCAP_PAIRS.filter(([a, b]) => v.modes.includes(a) && v.modes.includes(b));
  if (pairs.length === 0) return undefined;
  const metrics = METRICS.filter((m) => v.workloads.includes(m.workload));
  const rows = metrics.map((m) => [m.short, ...pairs.map(([a, b]) => {
    const row = metricRow(v, a, m.id, b);
    return row.ratio === undefined ? "–" : `${x(row.ratio)}${row.paired ? ` (${x(row.paired.min)} – ${x(row.paired.max)})` : ""}`;
  })]);
  return table(["Metric", ...pairs.map(([a, b]) => `${a} ÷ ${b}`)], rows);
}

/** The Markdown lines of host profile h's section; its charts are pushed to `charts`. */
export function hostSection(r: RunResults, h: HostProfileId, charts: Chart[], withTargets: boolean): string[] {
  const v = hostView(r, h);
  const p = HOST_PROFILES[h];
  const md: string[] = [];
  md.push(`## ${p.title}${withTargets ? " (the targets above are measured here)" : " (without targets)"}`, "");
  md.push(p.what, "");
  const counts = Object.entries(r.testbeds[h] ?? {}).map(([m, t]) => [m, t?.hosts?.rules?.[0]] as const);
  const show = (c: NonNullable<(typeof counts)[number][1]>): string => `filter ${c.filter}, nat ${c.nat}${c.kubeServices ? ` (${c.kubeServices} in KUBE-SERVICES)` : ""}, mangle ${c.mangle}`;
  const kinds = new Map<string, string[]>();
  for (const [m, c] of counts) if (c) kinds.set(show(c), [...(kinds.get(show(c)) ?? []), m]);
  if (kinds.size === 1) md.push(`iptables rules on each host, counted on both hosts of every testbed before the first sample: ${[...kinds.keys()][0]} — the same on every testbed.`, "");
  else if (kinds.size > 1) md.push(`iptables rules on each host, counted on both hosts of every testbed before the first sample (both hosts alike): ${[...kinds].map(([k, ms]) => `${k} on ${ms.join(", ")}`).join("; ")}.`, "");
  if (v.workloads.length && v.samples.length) {
    md.push(`### At a glance — ${p.title.toLowerCase()}`, "");
    md.push(`Medians over the repetitions; in parentheses the ratio to ${BASELINE}'s median on the same hosts. ↑ higher is better, ↓ lower is better.`, "");
    md.push(glanceTable(v), "");
    const enc = encapTable(v);
    if (enc) {
      md.push(`### What BPF encapsulation bought — ${p.title.toLowerCase()}`, "");
      md.push("Each mode with `--encap bpf` divided by the same mode with `--encap device` (the kernel's vxlan driver encapsulates); ratio of medians, per-repetition range in parentheses. For ↑ metrics above 1× is better, for ↓ metrics below 1×.", "");
      md.push(enc, "");
    }
  }
  for (const w of v.workloads) {
    md.push(`### ${WORKLOADS[w].title} — ${p.title.toLowerCase()}`, "");
    for (const m of METRICS.filter((y) => y.workload === w)) {
      const c = metricChart(v, m, h);
      charts.push(c);
      md.push(`#### ${m.title}`, "", `![${m.title}, ${p.title.toLowerCase()}](${c.file})`, "", metricTable(v, m), "");
    }
  }
  md.push(...conntrackTable(r, h));
  md.push(...perfSection(r, h));
  return md;
}
