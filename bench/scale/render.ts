/**
 * The scale result as text: a table for the terminal (modes as rows,
 * metrics as columns) and a markdown section for the benchmark report.
 * Both are built from the same rows (`tableRows`), so they always agree;
 * a number that was not measured prints as "–".
 */
import type { KernelMemoryDelta } from "./memory.js";
import type { ModeResult, ScaleResult } from "./types.js";

const DASH = "–";
const ms = (v: number | undefined, digits = 1): string => (v === undefined || !Number.isFinite(v) ? DASH : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(digits)} ms`);
const mib = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? DASH : `${(v / 2 ** 20).toFixed(1)} MiB`);
const bytes = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? DASH : `${Math.round(v)} B`);

export const COLUMNS = [
  "mode", "programmed", "start→programmed", "event p50", "event p99", "event max",
  "churn sent/s", "churn p50", "churn p99", "conv. lag", "keeps up",
  "RSS ready", "RSS churn", "kernel mem/peer", "map B/entry", "= etcd",
] as const;

function row(m: ModeResult): string[] {
  const keeps = m.churn ? (m.churn.keepsUp ? "yes" : "NO") : DASH;
  return [
    m.mode + (m.error ? " (FAILED)" : ""),
    m.start ? `${m.start.programmed.entries}/${m.peers}` : DASH,
    ms(m.start?.readyMs, 0),
    ms(m.events?.p50, 2), ms(m.events?.p99, 2), ms(m.events?.max, 2),
    m.churn ? m.churn.achievedRate.toFixed(1) : DASH,
    ms(m.churn?.latency.p50, 2), ms(m.churn?.latency.p99, 2), ms(m.churn?.convergenceLagMs, 1), keeps,
    mib(m.rss.afterProgrammedBytes), mib(m.rss.afterChurnBytes),
    bytes(m.memory?.perPeerBytes), m.memory?.peersMap ? bytes(m.memory.peersMap.perEntryBytes) : DASH,
    m.finalMatchesEtcd === undefined ? DASH : m.finalMatchesEtcd ? "yes" : "NO",
  ];
}

export function tableRows(r: ScaleResult): string[][] {
  return r.modes.map(row);
}

function title(r: ScaleResult): string {
  const o = r.options;
  return `Scale: one node, ${o.peers.toLocaleString("en-US")} peers in etcd; ${o.events.toLocaleString("en-US")} lease events one at a time; ` +
    `churn ${o.rate} events/s for ${o.churnSeconds} s`;
}

function loadLine(r: ScaleResult): string {
  const la = r.modes.map((m) => `${m.mode} ${m.loadavg.start[0]?.toFixed(2)} → ${m.loadavg.end[0]?.toFixed(2)}`).join(", ");
  return `Machine: ${r.machine.cpus} CPUs, kernel ${r.machine.kernel}, node ${r.machine.node}; 1-min load average at start → end of each mode: ${la}.`;
}

/** A plain-text table for the terminal. */
export function renderTable(r: ScaleResult): string {
  const rows = [[...COLUMNS], ...tableRows(r)];
  const width = COLUMNS.map((_, i) => Math.max(...rows.map((x) => x[i]!.length)));
  const line = (x: string[]): string => x.map((c, i) => c.padEnd(width[i]!)).join("  ").trimEnd();
  const out = [title(r), "", line(rows[0]!), width.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line), "", loadLine(r)];
  for (const m of r.modes) {
    if (m.error) out.push(`${m.mode} failed: ${m.error.split("\n")[0]}`);
    if (m.finalMismatch?.length) out.push(`${m.mode} differs from etcd: ${m.finalMismatch.join("; ")}`);
  }
  return out.join("\n") + "\n";
}

/** The same result as a markdown section (for the benchmark report). */
export function renderMarkdown(r: ScaleResult, heading = "##"): string {
  const esc = (s: string): string => s.replace(/\|/g, "\\|");
  const rows = tableRows(r);
  const out = [
    `${heading} ${title(r)}`, "",
    `| ${COLUMNS.join(" | ")} |`, `|${COLUMNS.map(() => " --- ").join("|")}|`,
    ...rows.map((x) => `| ${x.map(esc).join(" | ")} |`), "",
    loadLine(r), "",
  ];
  const detail: string[] = [];
  for (const m of r.modes) {
    const bits: string[] = [];
    if (m.start?.readyLogMs !== undefined) bits.push(`ready per the daemon's log after ${ms(m.start.readyLogMs, 0)}`);
    if (m.start?.programmed.routes !== undefined) bits.push(`kernel entries ${m.start.programmed.routes} routes / ${m.start.programmed.neighbours} neighbours / ${m.start.programmed.fdb} FDB`);
    if (m.events) {
      bits.push(`etcd acknowledged a put in ${ms(m.events.etcdAckP50Ms, 2)} (median)` +
        (m.events.fromEvent ? `; from the event (the driver's own watch received it) p50/p99 ${ms(m.events.fromEvent.p50, 2)}/${ms(m.events.fromEvent.p99, 2)}` : ""));
    }
    if (m.churn) {
      bits.push(`churn puts p50/p99 ${ms(m.churn.puts?.p50, 2)}/${ms(m.churn.puts?.p99, 2)}, deletes ${ms(m.churn.deletes?.p50, 2)}/${ms(m.churn.deletes?.p99, 2)}, ` +
        (m.churn.latency.fromEvent ? `from the event p50/p99 ${ms(m.churn.latency.fromEvent.p50, 2)}/${ms(m.churn.latency.fromEvent.p99, 2)}, ` : "") +
        `${m.churn.latency.n} timed of ${m.churn.sent} sent, worst send lateness ${ms(m.churn.maxSendLagMs, 1)}; p99 first/second half ` +
        `${ms(m.churn.criteria.firstHalfP99Ms, 1)}/${ms(m.churn.criteria.secondHalfP99Ms, 1)}; keeps up: ` +
        Object.entries(m.churn.criteria).filter(([, v]) => typeof v === "boolean").map(([k, v]) => `${k} ${v ? "yes" : "NO"}`).join(", "));
    }
    if (m.daemon) {
      bits.push(`after churn the daemon had run ${m.daemon.reconciles} full reconciles of ${ms(m.daemon.reconcileMeanMs, 0)} on average, ` +
        `applied ${m.daemon.leaseEvents} peer changes, V8 heap in use ${mib(m.daemon.heapUsedBytes)}`);
    }
    if (m.rss.afterEventsBytes !== undefined) bits.push(`RSS after the events ${mib(m.rss.afterEventsBytes)}`);
    if (m.rss.afterBulkAddBytes !== undefined) bits.push(`RSS after the bulk add ${mib(m.rss.afterBulkAddBytes)}`);
    const delta = (what: string, d: KernelMemoryDelta): string =>
      `${what}: Slab ${mib(d.slabBytes)}, slab active ${mib(d.slabActiveBytes)}, VmallocUsed ${mib(d.vmallocBytes)}, Percpu ${mib(d.percpuBytes)}; ` +
      `grew most: ${d.topCaches.slice(0, 4).map((c) => `${c.cache} ${mib(c.bytes)}`).join(", ")}`;
    if (m.memory?.addDelta) bits.push(delta(`kernel memory Δ for the bulk add of ${m.memory.addedPeers} peers`, m.memory.addDelta));
    if (m.memory) {
      bits.push(delta(`Δ from before start to ready (${bytes(m.memory.startPerPeerBytes)} per initial peer, fixed cost included)`, m.memory.startDelta));
    }
    const pm = m.memory?.peersMap;
    if (pm) {
      bits.push(`twill_peers bytes_memlock ${mib(pm.bytesMemlock)} for ${pm.entries} entries (max ${pm.maxEntries})` +
        (pm.afterAdd ? `, ${mib(pm.afterAdd.bytesMemlock)} for ${pm.afterAdd.entries} after the bulk add` : ""));
    }
    if (m.error) bits.push(`FAILED: ${m.error.split("\n")[0]}`);
    if (m.finalMismatch?.length) bits.push(`differs from etcd: ${m.finalMismatch.join("; ")}`);
    detail.push(`- **${m.mode}**: ${bits.join("; ")}.`);
  }
  out.push(...detail, "", "How it was measured:", "", ...r.method.map((x) => `- ${x}`), "");
  return out.join("\n");
}
