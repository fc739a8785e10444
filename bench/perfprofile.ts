/**
 * Where the cycles go: a system-wide `perf record` over one TCP sample per
 * mode, summarised as the top kernel symbols and a few symbol families.
 *
 * How it works: for each profiled mode (kernel-vxlan, twill-vxlan,
 * twill-vxlan-fast — on the first host profile of the run), with only that
 * mode's daemons running, `perf record -a -g` samples every CPU (cpu-clock
 * when the machine has no hardware counters) for the length of one
 * 1-stream iperf3 run (tcpThroughput, as the tcp1 workload) plus a second.
 * `perf report --no-children --sort sym` then gives each symbol's share of
 * the samples; idle-loop symbols are set aside and every share is of the
 * busy samples (the CPUs doing anything at all). perf sees the whole
 * machine — both simulated hosts, both pods, iperf3, and anything else
 * running — so on a shared machine other work shows up too. These samples
 * are not in the workload statistics; the perf.data files stay in the
 * results directory (perf/<hosts>-<mode>.data) for `perf report -i`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./lib/exec.js";
import type { HostProfileId } from "./hosts.js";
import { tcpThroughput } from "./iperf.js";
import type { ModeId } from "./modes.js";
import type { Testbed } from "./testbed.js";

export const PROFILED_MODES: readonly ModeId[] = ["kernel-vxlan", "twill-vxlan", "twill-vxlan-fast"];
const TOP = 12;
const SETTLE_MS = 200;

export interface PerfSymbol {
  readonly symbol: string;
  /** Percent of the busy (non-idle) samples. */
  readonly pct: number;
}

export interface PerfProfile {
  readonly hosts: HostProfileId;
  readonly mode: ModeId;
  readonly seconds: number;
  readonly command: string;
  /** Busy samples of the traffic's commands: the denominator of every share. */
  readonly samples?: number;
  /** Percent of all samples (every command) that were the traffic's (TRAFFIC_COMMS). */
  readonly trafficPct?: number;
  /** Percent of busy samples in kernel code. */
  readonly kernelPct?: number;
  readonly top?: readonly PerfSymbol[];
  /** Symbol families (see GROUPS), percent of busy samples. */
  readonly groups?: Readonly<Record<string, number>>;
  /** The measured TCP throughput of the profiled sample (perf costs some). */
  readonly gbps?: number;
  readonly error?: string;
}

/** The commands whose samples are the traffic's (see the top of this file). */
export const TRAFFIC_COMMS = /^(iperf3|ksoftirqd\/\d+|swapper)$/;

const IDLE = /^(pv_native_safe_halt|native_safe_halt|default_idle|default_idle_call|arch_cpu_idle|cpu_idle_poll|poll_idle|do_idle|cpuidle_enter_state|acpi_idle|intel_idle|mwait_idle|amd_e400_idle|halt)/;

/** Symbol families reported as one share each. */
export const GROUPS: Readonly<Record<string, RegExp>> = {
  "netfilter + conntrack": /^(__)?(nf|nft|ipt|ip6t|xt|iptable|nf_conntrack|nf_nat|ipv4_conntrack)_|conntrack|^resolve_normal_ct|^hash_conntrack|^nft_do_chain/,
  "vxlan driver": /^(__)?(vxlan|udp_tunnel|gro_cell)/,
  "BPF programs and helpers": /^(bpf_|__bpf|____bpf|sk_skb_|skb_do_redirect|tcx_|cls_bpf|tc_run)/,
  "copies and checksums": /(copy_user|memcpy|memmove|csum_partial|copy_to_|copy_from_|_copy_|skb_copy)/,
};

/** Parses `perf report --stdio -n --sort sym` lines ("  12.34%  1234  [k] symbol"). */
export function parseSymbols(text: string): { symbol: string; samples: number; kernel: boolean }[] {
  const rows: { symbol: string; samples: number; kernel: boolean }[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*([\d.]+)%\s+(\d+)\s+\[([k.])\]\s+(.+?)\s*$/.exec(line);
    if (m) rows.push({ symbol: m[4]!, samples: Number(m[2]), kernel: m[3] === "k" });
  }
  return rows;
}

/** Parses `perf report --stdio -n --sort comm` lines ("  61.56%  24578  node"): samples per command. */
export function parseComms(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^\s*([\d.]+)%\s+(\d+)\s+(.+?)\s*$/.exec(line);
    if (m) out.set(m[3]!, (out.get(m[3]!) ?? 0) + Number(m[2]));
  }
  return out;
}

/** Shares of the traffic's busy samples: `symbols` is the report restricted to TRAFFIC_COMMS, `comms` the per-command counts. */
export function summarizeProfile(symbols: string, comms: string): Pick<PerfProfile, "samples" | "trafficPct" | "kernelPct" | "top" | "groups"> {
  const busy = parseSymbols(symbols).filter((r) => !(r.kernel && IDLE.test(r.symbol)));
  const samples = busy.reduce((n, r) => n + r.samples, 0);
  const perComm = [...parseComms(comms)];
  const all = perComm.reduce((n, [, v]) => n + v, 0);
  const traffic = perComm.filter(([c]) => TRAFFIC_COMMS.test(c)).reduce((n, [, v]) => n + v, 0);
  const pct = (n: number): number => (samples > 0 ? (100 * n) / samples : NaN);
  const kernel = busy.filter((r) => r.kernel);
  const top = [...kernel].sort((a, b) => b.samples - a.samples).slice(0, TOP).map((r) => ({ symbol: r.symbol, pct: pct(r.samples) }));
  const groups = Object.fromEntries(Object.entries(GROUPS).map(([name, re]) => [name, pct(kernel.filter((r) => re.test(r.symbol)).reduce((n, r) => n + r.samples, 0))]));
  return { samples, trafficPct: all > 0 ? (100 * traffic) / all : NaN, kernelPct: pct(kernel.reduce((n, r) => n + r.samples, 0)), top, groups };
}

async function profileOne(tb: Testbed, hosts: HostProfileId, seconds: number, dir: string): Promise<PerfProfile> {
  const data = join(dir, `${hosts}-${tb.mode.id}.data`);
  const record = ["record", "-a", "-g", "-o", data, "--", "sleep", String(seconds + 1)];
  const command = `perf ${record.join(" ")}  &  ${tb.mode.id}: iperf3 -c ${tb.endpoints.serverIP} -t ${seconds} (1 stream)`;
  const base = { hosts, mode: tb.mode.id, seconds, command };
  const perf = run("perf", record, { timeoutMs: (seconds + 30) * 1000, allowFail: true });
  await new Promise((r) => setTimeout(r, 300)); // perf is recording before the traffic starts
  let gbps: number | undefined;
  let error: string | undefined;
  try {
    gbps = (await tcpThroughput(tb.endpoints, 1, seconds)).metrics["tcp1.gbps"];
  } catch (e) {
    error = `iperf3: ${e instanceof Error ? e.message : String(e)}`;
  }
  const rec = await perf;
  if (rec.code !== 0) return { ...base, error: `perf record exited ${rec.code}: ${rec.stderr.trim().slice(0, 300)}` };
  const report = (args: string[]) => run("perf", ["report", "-i", data, "--no-children", "--stdio", "-n", "-g", "none", "--percent-limit", "0", ...args], { timeoutMs: 120000, allowFail: true });
  const comms = await report(["--sort", "comm"]);
  const names = [...parseComms(comms.stdout).keys()].filter((c) => TRAFFIC_COMMS.test(c));
  const syms = await report(["--sort", "sym", "--comms", names.join(",") || "iperf3"]);
  writeFileSync(join(dir, `${hosts}-${tb.mode.id}.txt`), `${comms.stdout}\n${syms.stdout}`);
  const bad = [comms, syms].find((x) => x.code !== 0);
  if (bad) return { ...base, error: `perf report exited ${bad.code}: ${bad.stderr.trim().slice(0, 300)}` };
  return { ...base, ...summarizeProfile(syms.stdout, comms.stdout), ...(gbps !== undefined ? { gbps } : {}), ...(error ? { error } : {}) };
}

/** Profiles one TCP sample on each of PROFILED_MODES that has a testbed; the daemons of the others stay paused. */
export async function runPerfProfiles(
  testbeds: readonly Testbed[], hosts: HostProfileId, seconds: number, dir: string, log: (line: string) => void,
): Promise<PerfProfile[]> {
  mkdirSync(dir, { recursive: true });
  const out: PerfProfile[] = [];
  for (const tb of testbeds) tb.pause();
  try {
    for (const id of PROFILED_MODES) {
      const tb = testbeds.find((t) => t.mode.id === id);
      if (!tb) continue;
      tb.resume();
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const p: PerfProfile = await profileOne(tb, hosts, seconds, dir).catch((e: unknown) => ({ hosts, mode: id, seconds, command: "perf record -a -g", error: String(e) }));
      tb.pause();
      out.push(p);
      log(`perf ${hosts} ${id.padEnd(16)} ${p.error ? `FAILED: ${p.error}` : `${p.samples} traffic samples (${p.trafficPct?.toFixed(0)}% of all), top ${p.top?.slice(0, 3).map((s) => `${s.symbol} ${s.pct.toFixed(1)}%`).join(", ")}`}`);
    }
  } finally {
    for (const tb of testbeds) tb.resume();
  }
  return out;
}
