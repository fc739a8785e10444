/**
 * Writes report.md and its SVG charts from a run's results.
 *
 * How it works: the report leads with the targets (PASS/MISSED against
 * ratios measured in this run on real-node hosts), then one section per
 * host profile (reportprofile.ts: at a glance, what BPF encapsulation
 * bought, a chart and a table per metric, conntrack entries, perf
 * profiles) — real nodes first, bare hosts "without targets" — then the
 * control plane, how everything was measured, the testbeds with their
 * iptables rule counts, the machine and the exact commands. Every number
 * comes from results.json through analysis.ts; nothing here is hard-coded.
 */
import { cpRows, modesOn, type CpRow } from "./analysis.js";
import { cpChart, type Chart } from "./charts.js";
import { HOST_PROFILES, KUBE_SERVICES } from "./hosts.js";
import { bytes, f, table, x } from "./markdown.js";
import { MODES } from "./modes.js";
import { hostSection } from "./reportprofile.js";
import type { RunResults } from "./results.js";
import { evaluateTargets, type TargetResult } from "./targets.js";

function targetsTable(t: readonly TargetResult[]): string {
  const rows = t.map((y) => {
    const measured = y.measured === undefined ? "–" : y.op === "==" ? y.measured.toFixed(3) : `${y.measured.toFixed(2)}×`;
    const r = y.perRep;
    const range = r ? `${r.min.toFixed(2)} / ${r.median.toFixed(2)} / ${r.max.toFixed(2)}` : "";
    const bound = y.op === "==" ? `= ${y.bound}` : `${y.op === "<=" ? "≤" : "≥"} ${y.bound}×`;
    const verdict = y.verdict === "PASS" ? "**PASS**" : y.verdict === "MISSED" ? "**MISSED**" : "NOT MEASURED";
    return [y.target, bound, measured, range, verdict + (y.withinNoise ? " (within noise)" : "")];
  });
  return table(["Target", "target", "ratio of medians", "per-rep ratio min / median / max", "Verdict"], rows, "lrrrl");
}

function cpTable(rows: readonly CpRow[]): string {
  const n = (v: number): string => Math.round(v).toLocaleString("en-US");
  const out = rows.map((row) => {
    const kr = rows.find((x) => x.dataplane === "kernel" && x.peers === row.peers);
    const speed = row.dataplane === "bpf" && kr?.time && row.time ? x(kr.time.median / row.time.median) : "";
    const uspeed = row.dataplane === "bpf" && kr?.upsert && row.upsert ? ` (${x(kr.upsert.median / row.upsert.median)})` : "";
    const e = row.entries;
    const sc = row.syscallCount;
    const sys = sc ? (sc.n > 1 && sc.min !== sc.max ? `${n(sc.median)} (${n(sc.min)} – ${n(sc.max)})` : n(sc.median)) : "–";
    const top = row.syscalls ? row.syscalls.top.slice(0, 3).map((s) => `${s.name} ${n(s.calls)}`).join(", ") : "–";
    return [
      row.dataplane, n(row.peers), String(row.runs) + (row.failures ? ` (+${row.failures} failed)` : ""),
      row.time ? `${f(row.time.min, 1)} / **${f(row.time.median, 1)}** / ${f(row.time.max, 1)}` : "–",
      speed, row.upsert ? `${f(row.upsert.median, 1)}${uspeed}` : "–", f(row.noop?.median, 1), sys, top,
      e ? `${n(e.routes)} / ${n(e.neighbours)} / ${n(e.fdb)}` : "–",
      row.dataplane === "bpf" ? bytes(row.mapBytesPerPeer) : "–",
      row.slabBytesPerPeer ? `${bytes(row.slabBytesPerPeer.median)} (${bytes(row.slabBytesPerPeer.min)} – ${bytes(row.slabBytesPerPeer.max)})` : "–",
    ];
  });
  return table(["Dataplane", "peers", "runs", "program ms min / median / max", "kernel ÷ bpf", "upsert ms (kernel ÷ bpf)", "no-op reconcile ms", "syscalls", "top syscalls (strace)", "flannel.1 routes / neigh / FDB", "BPF map memory per peer", "slab growth per peer (machine-wide)"], out);
}

export function writeReport(r: RunResults): { markdown: string; charts: Chart[] } {
  const charts: Chart[] = [];
  const md: string[] = [];
  const p = r.profile;
  const targets = evaluateTargets(r);
  const failed = r.samples.filter((s) => s.error).length;
  md.push(`# twill benchmark — ${r.startedAt.replace("T", " ").replace(/\.\d+Z$/, " UTC")}`);
  md.push("");
  const hostsText = r.hostProfiles.map((h) => HOST_PROFILES[h].title.toLowerCase()).join(" and ");
  md.push(`Profile **${p.name}**, on ${hostsText}: ${p.reps} interleaved repetitions of every workload on every mode, ${p.seconds} s per sample; control plane ${p.peers.map((n) => n.toLocaleString("en-US")).join(" / ")} peers × ${p.cpReps} runs. ` +
    `Took ${r.durationS !== undefined ? Math.round(r.durationS) : "?"} s on ${r.machine.cpuModel} (${r.machine.cores} cores, ${r.machine.memoryGiB} GiB), kernel ${r.machine.kernel}, twill ${r.versions.twillCommit.slice(0, 12)}${r.versions.twillDirty ? " (uncommitted changes)" : ""}. ` +
    `Load average before: ${r.loadavg.before.split(" ").slice(0, 3).join(" ")}; after: ${(r.loadavg.after ?? "?").split(" ").slice(0, 3).join(" ")}.`);
  md.push("");
  if (p.name === "quick") md.push("> **Quick profile: a first look.** Few, short samples; quote the full profile (`make bench`) instead.\n");
  if (p.reps < 5) md.push(`> Only ${p.reps} repetitions: medians and ranges are rough.\n`);
  const load = Number(r.loadavg.before.split(" ")[0]);
  if (load > r.machine.cores / 4) md.push(`> The machine was not idle when the run started (1-minute load average ${load} on ${r.machine.cores} cores): something else was running, and every number here is noisier for it.\n`);
  if (failed) md.push(`> ${failed} of ${r.samples.length} samples failed and are left out (listed under "Failures").\n`);
  for (const n of r.notes) md.push(`> ${n}\n`);
  md.push("Every number below was measured in this run; ratios compare medians of modes measured side by side, interleaved, in this same run, on the same kind of host.");
  md.push("");
  md.push("## Targets (real nodes)");
  md.push("");
  if (!r.hostProfiles.includes("real")) md.push("> The real-node host profile did not run (`--hosts bare`): the dataplane targets are not measured.\n");
  md.push(targetsTable(targets));
  md.push("");
  const missed = targets.filter((t) => t.verdict === "MISSED");
  const unmeasured = targets.filter((t) => t.verdict === "NOT MEASURED");
  md.push(missed.length ? `**${missed.length} of ${targets.length} targets MISSED** in this run: ${missed.map((t) => t.target).join("; ")}.` : `No target missed in this run${unmeasured.length ? ` (${unmeasured.length} not measured)` : ""}.`);
  md.push("");
  md.push("Dataplane targets are measured on the real-node hosts only. The ratio is median(mode) ÷ median(reference), both from this run; the verdict is on it. " +
    "The per-rep ratios divide each repetition by the reference's sample of the same repetition (min / median / max); \"within noise\" means they straddle the target, so a rerun may flip the verdict. " +
    "\"kernel host-gw\" is kernel-direct: flannel's DirectRouting routes between hosts on one segment are the host-gw backend's routes. " +
    "For the control-plane rows the range is the extreme ratio of the two dataplanes' fastest and slowest runs.");
  md.push("");

  const order = [...r.hostProfiles].sort((a, b) => (a === "real" ? -1 : b === "real" ? 1 : 0));
  for (const h of order) md.push(...hostSection(r, h, charts, h === "real"));

  const rows = cpRows(r);
  md.push("## Control plane: programming peers");
  md.push("");
  md.push("Programming N peers into one node's dataplane (`--dataplane kernel`: flannel's neighbour + FDB entry + route per peer; `--dataplane bpf`: one LPM-trie entry per peer), measured without a cluster.");
  md.push("");
  if (r.controlPlane.skipped) md.push(`Not run: ${r.controlPlane.skipped}`);
  else if (rows.length) {
    const c = cpChart(rows);
    charts.push(c);
    md.push(`![Time to program N peers](${c.file})`);
    md.push("");
    md.push(cpTable(rows));
    md.push("");
    for (const dp of ["kernel", "bpf"] as const) {
      const per = rows.filter((x) => x.dataplane === dp && x.time).map((x) => `${f((x.time!.median * 1000) / x.peers, 1)} µs at ${x.peers.toLocaleString("en-US")}`);
      if (per.length > 1) md.push(`- ${dp}: programming time per peer ${per.join(", ")} peers.`);
    }
    md.push("");
    md.push("Each run: a fresh namespace with one veth pair as the underlay, the dataplane set up as the daemon does, then **one reconcile with all N peers** (what a daemon starting in a cluster of N+1 nodes does), timed inside the process. " +
      "\"upsert\" is the lease-event path: the same N peers written again with one `upsert` call (kernel: `ip -batch`/`bridge -batch` replace; bpf: one map batch update). " +
      "\"no-op reconcile\" is a reconcile with nothing to change: twill's periodic reconcile (every `--reconcile-period`, default 10 s) costs this in steady state. " +
      `Syscalls: ${r.controlPlane.perf ? "counted in every timed run with `perf stat -e raw_syscalls:sys_enter -p`, attached after set-up and stopped after the step (median, min – max); " : ""}` +
      `${r.controlPlane.samples.some((s) => s.traced) ? "the breakdown comes from one extra run per row up to 10,000 peers under `strace -c -f -p` (its time is not used); " : r.controlPlane.strace ? "" : "no breakdown: strace is not installed; "}child processes (ip, bridge) included. ` +
      "Upsert and strace runs are skipped above 10,000 peers, and a (dataplane, peers) row starts no further run once it has used its time budget: the kernel needs minutes for 50,000 routes (`runs` says how many there were). " +
      "Kernel entries: routes, neighbours and FDB entries on flannel.1 after programming (before it: the device's own, e.g. bpf's one cluster route). BPF map memory: growth of the pinned maps' `bytes_memlock` (bpftool; the maps' real usage on this kernel). " +
      "Slab growth: the machine's SReclaimable+SUnreclaim before/after — machine-wide, so other activity is noise; the BPF trie's nodes count here too.");
  }
  md.push("");

  md.push("## How this was measured");
  md.push("");
  md.push("Modes (each its own namespaced cluster: 2 hosts on one L2 underlay switch, one pod per host made by the real CNI bridge plugin, real twill daemons; all built at the start of their host profile):");
  md.push("");
  for (const id of r.modes) md.push(`- **${id}** — ${MODES[id].what}.`);
  md.push("");
  md.push("Host profiles (each mode runs on each profile the run asked for; profiles run one after the other, each with its own freshly built testbeds):");
  md.push("");
  for (const h of r.hostProfiles) md.push(`- **${h}** (${HOST_PROFILES[h].title.toLowerCase()}) — ${HOST_PROFILES[h].what}`);
  md.push("");
  md.push("- **Same leases everywhere.** Before the daemons start, the lease directory of every cluster gets the same two leases (h1 10.244.1.0/24, h2 10.244.2.0/24, fixed VTEP MACs); the daemons adopt them, so subnets, MACs and pod addresses are identical across modes. Network config: 10.244.0.0/16, /24 subnets, VNI 1, port 8472, plus `DirectRouting: true` for the direct modes. Daemons run with `--ip-masq` (flannel's usual deployment; the test harness always passes it) and `--reconcile-period 10`. On real-node hosts the kube-proxy rules (" + KUBE_SERVICES + " Services) and flannel's chains are written with one `iptables-restore --noflush` per host before its daemon starts.");
  md.push("- **The reference** is `underlay`: host to host on the underlay, eth0 to eth0. It is the wire every other mode's packets cross, with nothing else: no pod namespace and veth, no cni0 bridge, no encapsulation (on bare hosts no netfilter rules either; on real-node hosts it carries the same rules as every other mode). Any pod-to-pod path is this path plus at least one veth crossing per side, so on this machine no overlay can beat it; a mode that appears to is within the noise.");
  md.push("- **Interleaving.** For each repetition, each workload runs on every mode back to back; the mode order rotates by one every repetition. Only the measured mode's twill daemons run during its sample; the other clusters' daemons are paused (SIGSTOP) — their dataplanes keep forwarding without them.");
  md.push(`- **Latency** (sockperf ping-pong, UDP, 64-byte messages, one in flight, \`--full-rtt\`: round-trip times): **client and server are both pinned to CPU ${r.latencyCpu} with taskset**. On this ${r.machine.cores}-core machine a wake-up across CPUs adds tens of µs and hides the dataplane; on one CPU the whole path runs back to back and is what is measured.`);
  md.push("- **Throughput** (iperf3, 1 and 4 TCP streams, pod on h1 → pod on h2): receiver-side bits per second; not pinned.");
  md.push("- **Small packets** (iperf3 -u -l 64 -b 0): datagrams the receiver got per second (the sender floods; loss is the rest).");
  md.push("- **CPU per GB**: both hosts, both pods and both iperf3 ends run on this machine, so the cost is the machine's busy CPU time (user+nice+system+irq+softirq from /proc/stat) during the throughput run, divided by the GB received. When the machine is saturated (busy % near 100) this is simply cores ÷ throughput; the busy column shows which case applies. Anything else running at the time counts too.");
  md.push("");

  md.push("## Testbeds");
  md.push("");
  const tbRows = r.hostProfiles.flatMap((h) => modesOn(r, h).map((id) => {
    const t = r.testbeds[h]?.[id];
    if (!t) return [h, id, "–", "not built", "", "", ""];
    const rules = t.hosts?.rules?.map((c) => `${c.filter} / ${c.nat} / ${c.mangle}`).join(" · ") ?? "–";
    return [h, id, String(t.client.mtu), `\`${t.path.route.trim()}\``, t.path.peerKind ?? "", rules, t.path.warnings.length ? `⚠ ${t.path.warnings.join("; ")}` : "ok"];
  }));
  md.push(table(["Hosts", "Mode", "pod MTU", "h1 → server route", "BPF peer kind", "iptables rules filter / nat / mangle (h1 · h2)", "checks (10 pings after first contact)"], tbRows, "llrllll"));
  md.push("");

  md.push("## Machine and versions");
  md.push("");
  md.push(`- CPU: ${r.machine.cpuModel}, ${r.machine.cores} cores; memory ${r.machine.memoryGiB} GiB; ${r.machine.os}; kernel ${r.machine.kernel}; virtualization: ${r.machine.virtualization}`);
  const v = r.versions;
  md.push(`- node ${v.node}; ${v.clang}; ${v.iperf3}; ${v.sockperf}; ${v.iproute2}; ${v.bpftool}; ${v.strace}`);
  md.push(`- twill commit ${v.twillCommit}${v.twillDirty ? " (working tree had uncommitted changes)" : ""}`);
  md.push(`- command: \`${r.commandLine}\``);
  md.push("");

  const failures = r.samples.filter((s) => s.error);
  const cpFailures = r.controlPlane.samples.filter((s) => s.error);
  if (failures.length || cpFailures.length) {
    md.push("## Failures");
    md.push("");
    for (const s of failures) md.push(`- ${s.hosts ?? "bare"} hosts, rep ${s.rep} ${s.workload} ${s.mode}: ${s.error}`);
    for (const s of cpFailures) md.push(`- control plane ${s.dataplane} ${s.peers} peers${s.traced ? " (strace)" : ""}: ${s.error}`);
    md.push("");
  }

  md.push("## Commands");
  md.push("");
  md.push("<details><summary>Exact commands (one sample each; every sample's command is in results.json)</summary>");
  md.push("");
  md.push("```");
  for (const id of r.modes) {
    const h = r.hostProfiles.find((y) => r.testbeds[y]?.[id]);
    const t = h ? r.testbeds[h]?.[id] : undefined;
    md.push(`# ${id}`);
    for (const c of t?.daemonCommands.slice(0, 1) ?? []) md.push(c);
    for (const w of r.workloads) {
      const s = r.samples.find((y) => y.mode === id && y.workload === w && !y.error);
      if (s) md.push(s.command);
    }
  }
  const perf = r.perf?.profiles.find((y) => !y.error);
  if (perf) md.push("# perf profile", perf.command);
  const cp = r.controlPlane.samples.find((s) => !s.error);
  if (cp) md.push("# control plane", cp.command);
  md.push("```");
  md.push("");
  md.push("</details>");
  md.push("");
  return { markdown: md.join("\n"), charts };
}
