/**
 * The report's "where the cycles go" parts for one host profile: conntrack
 * entries on each host after the run, and the perf profiles (top kernel
 * symbols and symbol families, modes side by side).
 *
 * How it works: both read results.json's conntrack snapshots and perf
 * profiles (conntrack.ts, perfprofile.ts) of that host profile and print
 * them as tables; a part with nothing recorded prints nothing or says why.
 */
import { HOST_PROFILES, type HostProfileId } from "./hosts.js";
import { f, table } from "./markdown.js";
import { GROUPS } from "./perfprofile.js";
import type { RunResults } from "./results.js";

export function conntrackTable(r: RunResults, h: HostProfileId): string[] {
  const snaps = (r.conntrack ?? []).filter((s) => s.hosts === h);
  if (snaps.length === 0) return [];
  const md: string[] = [];
  md.push(`### Conntrack entries on each host — ${HOST_PROFILES[h].title.toLowerCase()}`, "");
  md.push("Read from `/proc/net/nf_conntrack` in each host's namespace right after the mode's last sample (the same sequence of samples had run on every mode). " +
    "Outer VXLAN: UDP entries to port 8472, made by the kernel vxlan driver's packets crossing the host's netfilter hooks. h1 is the client pod's host, h2 the server's. " +
    "All zero means conntrack never started in that namespace (no nat or conntrack rule there).", "");
  const cell = (c: { total: number; vxlan: number; unreplied: number } | undefined): string[] => (c ? [f(c.total, 0), f(c.vxlan, 0), f(c.unreplied, 0)] : ["–", "–", "–"]);
  const rows = r.modes.filter((m) => snaps.some((s) => s.mode === m)).map((m) => {
    const s = snaps.find((y) => y.mode === m)!;
    return [m, ...cell(s.perHost[0]), ...cell(s.perHost[1])];
  });
  md.push(table(["Mode", "h1 entries", "h1 outer VXLAN", "h1 [UNREPLIED]", "h2 entries", "h2 outer VXLAN", "h2 [UNREPLIED]"], rows), "");
  return md;
}

export function perfSection(r: RunResults, h: HostProfileId): string[] {
  const profiles = (r.perf?.profiles ?? []).filter((p) => p.hosts === h);
  if (profiles.length === 0) return [];
  const md: string[] = [];
  md.push(`### Where the cycles go — ${HOST_PROFILES[h].title.toLowerCase()}`, "");
  md.push(`\`perf record -a -g\` over one ${profiles[0]!.seconds}-second 1-stream TCP run per mode (iperf3, pod → pod), only that mode's daemons running; \`perf report --no-children --sort sym\`. ` +
    "perf samples the whole machine, so only the traffic's own commands are counted: iperf3 (both ends; in its softirqs both hosts' stacks and the overlay), ksoftirqd and softirq work that interrupted the idle task; idle-loop symbols are set aside. Shares are of those busy traffic samples, self time only; the last rows say how much of all samples they were (the rest: other processes on the machine). " +
    "The raw data is in the results directory (perf/<hosts>-<mode>.data, `perf report -i`).", "");
  const ok = profiles.filter((p) => !p.error && p.top);
  for (const p of profiles.filter((y) => y.error)) md.push(`> perf for ${p.mode}: ${p.error}`, "");
  if (ok.length === 0) return md;
  const depth = Math.max(...ok.map((p) => p.top!.length));
  const rows = Array.from({ length: depth }, (_, i) => [String(i + 1), ...ok.map((p) => {
    const s = p.top![i];
    return s ? `\`${s.symbol}\` ${f(s.pct, 1)}%` : "";
  })]);
  md.push(table(["#", ...ok.map((p) => p.mode)], rows, "r" + "l".repeat(ok.length)), "");
  const fam = [
    ...Object.keys(GROUPS).map((g) => [g, ...ok.map((p) => `${f(p.groups?.[g], 1)}%`)]),
    ["all kernel code", ...ok.map((p) => `${f(p.kernelPct, 1)}%`)],
    ["busy traffic samples", ...ok.map((p) => f(p.samples, 0))],
    ["traffic commands' share of all samples", ...ok.map((p) => `${f(p.trafficPct, 0)}%`)],
    ["TCP Gbit/s during the profile", ...ok.map((p) => f(p.gbps, 2))],
  ];
  md.push(table(["Symbol family (share of busy samples)", ...ok.map((p) => p.mode)], fam), "");
  return md;
}
