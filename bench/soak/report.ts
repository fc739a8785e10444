/**
 * The soak's report (report.md, and bench/LATEST-soak.md when published)
 * and its RSS chart.
 *
 * How it works: every figure is derived from SoakResults by analysis.ts
 * and rss.ts at render time; this file only lays them out: the verdicts
 * first, then the cluster, the churn, each fault with its repair, repair
 * times per kind, lost pings per pair and per fault kind, RSS at each
 * minute (and a grouped bar chart of RSS per node at 5-minute marks, via
 * svg.ts), and the final comparison with etcd.
 */
import { bytes, f, table } from "../markdown.js";
import { barChart, type Group } from "../svg.js";
import { attributeLosses, kindSummaries, verdicts, WINDOW_TAIL_MS, type Verdict } from "./analysis.js";
import { CUTS_PATHS, FAULT_KINDS, FAULT_TITLES } from "./faults.js";
import { BAD_KINDS } from "./leases.js";
import { minuteMarks, rssVerdicts } from "./rss.js";
import type { SoakResults } from "./types.js";

export interface SoakReport {
  readonly markdown: string;
  readonly charts: readonly { readonly file: string; readonly svg: string }[];
  readonly verdicts: readonly Verdict[];
}

const COLORS = ["#1e88e5", "#90caf9", "#9e9e9e", "#616161"];
const s1 = (ms: number | undefined): string => (ms === undefined ? "–" : (ms / 1000).toFixed(1));

function rssChart(r: SoakResults): { file: string; svg: string } | undefined {
  const names = r.nodes.map((n) => n.name);
  const marks = minuteMarks(r.rss, names).filter((m, i, all) => m.atS % 300 === 0 || i === all.length - 1);
  if (marks.length < 2) return undefined;
  const groups: Group[] = marks.map((m) => ({
    label: `${Math.round(m.atS / 60)} min`,
    bars: m.bytes.map((x, i) => ({
      label: `${names[i]} (${r.nodes[i]!.role})`, min: NaN, median: x ? x.bytes / 2 ** 20 : NaN, max: NaN, color: COLORS[i % COLORS.length]!,
      note: x && x.incarnation > 1 ? `#${x.incarnation}` : "",
    })),
  }));
  const svg = barChart({
    title: "twill daemons' RSS during the soak",
    subtitle: "VmRSS sampled every 5 s, shown at 5-minute marks · #N: the daemon's Nth process (after N−1 SIGKILL restarts)",
    unit: "MiB", groups, digits: 1,
  });
  return { file: "soak-rss.svg", svg };
}

export function renderSoak(r: SoakResults): SoakReport {
  const names = r.nodes.map((n) => n.name);
  const t0 = r.soakStartedAt ?? Date.parse(r.startedAt);
  const losses = attributeLosses(r.pings, r.faults);
  const kinds = kindSummaries(r.faults, losses.faults);
  const rss = rssVerdicts(r.rss, r.nodes.filter((n) => n.role !== "stock-flannel").map((n) => n.name));
  const v = verdicts(losses.pairs, kinds, rss, r.final, r.pings.length > 0);
  const chart = rssChart(r);
  const L: string[] = [];
  const minutes = r.options.seconds / 60;
  L.push(`# twill chaos soak — ${f(minutes, minutes % 1 ? 1 : 0)} minutes`, "");
  L.push(`Run ${r.startedAt} (${f((r.durationS ?? 0) / 60, 1)} min in all), prefix \`${r.prefix}\`, **seed ${r.options.seed}** ` +
    `(\`node dist/bench/main.js --profile soak --soak-minutes ${f(minutes, minutes % 1 ? 1 : 0)} --seed ${r.options.seed}\` replays the same faults and lease events). ` +
    `Machine: ${r.machine.cpuModel}, ${r.machine.cores} cores, kernel ${r.machine.kernel}; load average ${r.loadavg.before} before, ${r.loadavg.after ?? "?"} after ` +
    `(other work on the machine shares its CPUs). twill ${r.versions.twillCommit}${r.versions.twillDirty ? " (with uncommitted changes)" : ""}, node ${r.versions.node}.`, "");
  if (r.error) L.push(`**The soak failed and is incomplete:** ${r.error.split("\n")[0]}`, "");
  L.push("## Verdicts", "");
  L.push(table(["", "target", "measured", "target value"], v.map((x) => [x.ok ? "**PASS**" : "**MISSED**", x.what, x.measured, x.target]), "llll"), "");
  for (const c of r.crashes) L.push(`- **${c.node}'s daemon exited on its own** at ${c.atS} s (${c.exit}); restarted by the harness. Log tail:\n\n\`\`\`\n${c.logTail}\n\`\`\``, "");

  L.push("## The cluster", "");
  L.push("Four namespaced hosts on one underlay segment, one pod each made by the real CNI bridge plugin; leases in a real etcd " +
    `(http, in the router namespace), flannel's keys and JSON; every daemon with its default reconcile period (${r.reconcileSeconds} s).`, "");
  L.push(table(["node", "role", "dataplane", "underlay", "subnet", "pod", "tcx links pinned at start"],
    r.nodes.map((n) => [n.name, n.role, n.dataplane, n.underlayIP, n.subnet, n.podIP, n.pinnedLinks.join(", ") || "–"]), "lllllll"), "");
  L.push("h4 stands in for a stock flanneld: flannel's kernel state (route, permanent neighbour, FDB entry per peer) made by twill's kernel " +
    "dataplane from a private lease directory; its lease was put into etcd by the harness with `etcdctl` on a 24 h etcd lease, and the " +
    "harness copies h1–h3's leases from etcd into its directory every 2 s. It sees none of the fake leases and takes no fault.", "");

  L.push("## Lease churn", "");
  const ch = r.churn;
  if (ch) {
    L.push(`${f(r.options.rate, 0)} events/s for the whole run from a seeded generator (\`bench/soak/leases.ts\`): ${f(ch.sent, 0)} sent ` +
      `(${f(ch.okRate, 1)}/s acknowledged by etcd), ${f(ch.failed, 0)} failed (etcd down), ${f(ch.skipped, 0)} skipped (too many in flight), ` +
      `latest send ${f(ch.maxSendLagMs, 1)} ms behind its time.`, "");
    L.push(table(["event", "count"], Object.entries(ch.byWhat).map(([k, n]) => [k, f(n, 0)])), "");
    L.push(`Fake peers: 189 /24s of 10.244.0.0/16 (10.244.11–49.0/24 and 10.244.100–249.0/24), public IPs 172.20.x.y, never a real node's subnet or address. ` +
      `Bad leases (15 % of events, 10.244.50–99.0/24, one kind per slot): ${BAD_KINDS.join(", ")} ` +
      `(own-node names a real node's public IP; public-ip-conflict claims the public IP of the anchor lease 10.244.10.0/24, which is never changed). ` +
      `Every bad key sorts after the real nodes' and the anchor's (keys compare as strings), so the first owner of a conflicting public IP is the honest lease both by arrival and in key order. ` +
      `(Found with an earlier layout of this soak, where a bad key sorted *before* the honest one — 10.244.202.0/24 naming h3's address against h3's 10.244.3.0/24: ` +
      `a full re-list decided a public-IP conflict by key order, so each etcd reconnect and periodic re-list removed h3 from the other nodes for seconds. ` +
      `Fixed since: a re-list keeps the leases a node holds first. A node's first list after a restart still decides by key order.)`, "");
    if (ch.errors.length) L.push(`First write errors: ${ch.errors.map((e) => `\`${e}\``).join("; ")}`, "");
  } else L.push("The churn did not run to its end.", "");

  L.push("## Faults", "");
  L.push(`One fault at a time, kinds in a seeded random order cycling through all four, ${r.options.seconds >= 1800 ? "45–90" : "fewer than 45–90 (shortened run)"} s apart. ` +
    `Repaired = the node (every twill node for etcd) is whole again — daemon running and /readyz ready, flannel.1 up, its tcx links pinned ` +
    `again on the current devices, every other real node programmed (etcd: also a probe lease written after the restart programmed everywhere) — ` +
    `and every pair of pods through it has had a ping reply since. Checked every 200 ms (+ the checks' own time). ` +
    `A fault's window runs from injection to ${WINDOW_TAIL_MS / 1000} s after its repair.`, "");
  L.push(table(["#", "at (s)", "fault", "target", "what was done", "state back (s)", "last missing before that", "repaired (s)", "pings lost in window: expected / other"],
    r.faults.map((x) => {
      const l = losses.faults.find((y) => y.k === x.k);
      return [String(x.k), f((x.injectedAt - t0) / 1000, 0), x.kind, x.target, x.detail || "–",
        s1(x.stateBackAt === undefined ? undefined : x.stateBackAt - x.injectedAt), (x.lastProblems ?? []).join("; ") || "–", x.error ? `**not repaired**: ${x.error}` : s1(x.repairMs),
        `${l?.expected ?? 0} / ${l?.unexpected ?? 0}`];
    }), "rrlllllrr"), "");
  L.push("### Time to repair, per fault kind", "");
  L.push(table(["fault kind", "cuts the target's paths?", "count", "repaired", "min (s)", "median (s)", "max (s)", "bound (s)", "pings lost in windows: expected / other"],
    kinds.map((k) => [`${k.kind}: ${FAULT_TITLES[k.kind]}`, CUTS_PATHS[k.kind] ? "yes, until repaired" : "no: must cost 0 pings", String(k.count), String(k.repaired),
      s1(k.repairMs?.min), s1(k.repairMs?.median), s1(k.repairMs?.max), s1(k.boundMs), `${k.pingsExpected} / ${k.pingsUnexpected}`]), "llrrrrrrr"), "");

  L.push("## Pings", "");
  L.push(`Every ordered pair of the four pods, \`ping -i ${r.options.pingIntervalMs / 1000}\` for the whole run. "Expected" losses fell in the window ` +
    `of a fault that cuts that pair's path by nature (vxlan-delete or tc-detach on either end's node); every other loss counts against the target ` +
    `(by the kind of the fault window it fell in, or "no fault").`, "");
  const bucket = ["none", ...FAULT_KINDS] as const;
  L.push(table(["pair", "received", "lost", "expected", ...bucket.map((b) => `other: ${b === "none" ? "no fault" : b}`)],
    losses.pairs.map((p) => [p.pair, f(p.received, 0), f(p.lost, 0), f(p.expected, 0), ...bucket.map((b) => f(p.unexpected[b], 0))])), "");
  if (losses.bursts.length) {
    const shown = losses.bursts.slice(0, 60);
    L.push(`Losses against the target, as bursts (losses on one pair less than 200 ms apart)${losses.bursts.length > shown.length ? `, the first ${shown.length} of ${losses.bursts.length}` : ""}:`, "");
    L.push(table(["pair", "from (s)", "to (s)", "lost", "in the window of"], shown.map((b) => {
      const fault = r.faults.find((x) => x.k === b.fault);
      return [b.pair, f((b.from - t0) / 1000, 2), f((b.to - t0) / 1000, 2), String(b.count), fault ? `#${fault.k} ${fault.kind} ${fault.target}` : "no fault"];
    }), "lrrrl"), "");
  }

  L.push("## RSS", "");
  L.push("VmRSS of each daemon every 5 s. The verdict compares 1 minute into a daemon's longest-lived process with that process's last sample " +
    "(for a daemon never restarted: 1 minute into the run vs the end). #N marks the Nth process after restarts. h4 is the stock-flannel stand-in (no verdict).", "");
  const marks = minuteMarks(r.rss, names);
  L.push(table(["minute", ...r.nodes.map((n) => `${n.name} (${n.role})`)],
    marks.map((m) => [f(m.atS / 60, m.atS % 60 ? 1 : 0), ...m.bytes.map((x) => (x ? `${bytes(x.bytes)}${x.incarnation > 1 ? ` #${x.incarnation}` : ""}` : "–"))])), "");
  L.push(table(["node", "process", "1 min in", "end", "change", "restarts"],
    rss.map((x) => [x.node, `#${x.incarnation}`, `${bytes(x.refBytes)} at ${x.refS} s`, `${bytes(x.endBytes)} at ${x.endS} s`, `${x.growth >= 1 ? "+" : ""}${f((x.growth - 1) * 100, 1)} %`, String(x.restarts)])), "");
  if (chart) L.push(`![RSS](${chart.file})`, "");

  L.push("## Maps against the leases at the end", "");
  if (r.final) {
    L.push(`After the churn stopped: etcd held ${r.final.leases} leases (${r.final.badLeases} of them bad). Each twill node's dataplane ` +
      "(bpf: the pinned twill_peers map; kernel: flannel's route + neighbour + FDB entry) against the leases it must program — real nodes, " +
      "the anchor, the valid fake leases; no bad lease, not its own — decided from the plan, not by twill's validation.", "");
    L.push(table(["node", "dataplane", "expected", "programmed", "converged after (s)", "verdict", "differences"],
      r.final.nodes.map((n) => [n.node, n.dataplane, String(n.expected), String(n.programmed), s1(n.convergedMs), n.equal ? "equal" : "**NOT EQUAL**", n.differences.join("; ") || "–"]), "llrrrll"), "");
  } else L.push("Not checked (the soak did not reach its end).", "");
  if (r.notes.length) L.push("## Notes", "", ...r.notes.map((n) => (n.includes("\n") ? `\`\`\`\n${n}\n\`\`\`` : `- ${n}`)), "");
  return { markdown: L.join("\n") + "\n", charts: chart ? [chart] : [], verdicts: v };
}
