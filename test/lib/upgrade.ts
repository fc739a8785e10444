/**
 * Helpers for upgrade tests: other builds of twill's BPF object, a daemon
 * started on one of them, the programs the pinned links run, and a bulk TCP
 * stream measured per 100 ms at the receiver.
 *
 * How it works:
 * 1) buildObject copies bpf/ into a directory of the test (under the
 *    cluster's /tmp/<prefix>, removed with it), lets the caller edit the copy
 *    (a changed map layout), and compiles it exactly as the Makefile does
 *    (clang -O2 -g -target bpf, then bpftool gen object) plus extra flags
 *    (e.g. -mcpu=v3: other instructions, the same behaviour, other tags).
 * 2) startOn starts a node's daemon like TwillCluster.start, but with
 *    TWILL_BPF_OBJECT set, and reports either "ready" or the exit code.
 * 3) linkProgs names the program each pinned link runs, with its tag
 *    (bpftool prog show), so a test can tell which build is attached.
 * 4) tcpStream runs iperf3: the server (receiver) in one namespace with
 *    `-i 0.1 --json`, so its intervals say what arrived in each 100 ms.
 *    Both ends run at real-time priority (SCHED_RR, chrt): the stream is a
 *    probe of the dataplane, and on this 2-core machine two daemons booting
 *    at once (node's start-up, each in its own session's autogroup) once
 *    kept the sender off the CPU for ~170 ms — measured with perf sched: a
 *    120 ms scheduling delay of iperf3 while the pings, the same path, were
 *    answered within 42 ms. A dataplane that holds or drops packets still
 *    shows as a stall whatever the probe's priority; a starved probe no
 *    longer does. The sender's own intervals are kept, so a stall's report
 *    says whether the sender was running then.
 */
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { run, spawnIn, stopProcess, waitFor } from "./exec.js";
import { ROOT, type TwillCluster, type TwillNode } from "./twill.js";

/** The object `make build` made: what the daemon loads without TWILL_BPF_OBJECT. */
export const DEFAULT_OBJECT = join(ROOT, "build", "bpf", "twill.o");

export interface BuildOptions {
  /** Flags added after the Makefile's (e.g. ["-mcpu=v3"]). */
  cflags?: string[];
  /** Edits the copied bpf/ directory before compiling. */
  edit?: (bpfDir: string) => void;
}

/** Compiles bpf/twill.c (a copy, in `dir`/`name`) into `dir`/`name`/twill.o; returns that path. */
export async function buildObject(dir: string, name: string, o: BuildOptions = {}): Promise<string> {
  const out = join(dir, name);
  const src = join(out, "bpf");
  mkdirSync(out, { recursive: true });
  cpSync(join(ROOT, "bpf"), src, { recursive: true });
  o.edit?.(src);
  const tmp = join(out, "twill.tmp.o");
  const obj = join(out, "twill.o");
  await run("clang", [
    "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I", src, "-I", join(ROOT, "build", "bpf"),
    "-I/usr/include/x86_64-linux-gnu", ...(o.cflags ?? []), "-c", join(src, "twill.c"), "-o", tmp,
  ], { timeoutMs: 120_000 });
  await run("bpftool", ["gen", "object", obj, tmp]);
  return obj;
}

/** Replaces `pattern` in a file of the copied tree; throws when it does not occur (the source moved on). */
export function editFile(path: string, pattern: RegExp, replacement: string): void {
  const text = readFileSync(path, "utf8");
  if (!pattern.test(text)) throw new Error(`Cannot make the variant: ${pattern} not found in ${path}`);
  writeFileSync(path, text.replace(pattern, replacement));
}

/** A layout change: struct twill_ep (value of twill_endpoints) grows by 4 bytes. */
export function growEndpointValue(bpfDir: string): void {
  editFile(join(bpfDir, "shared.h"), /(struct twill_ep \{[^}]*)\};/, "$1\t__u32 generation; /* only in the test's variant */\n};");
}

/** A layout change of the same size: struct twill_ep's fields in another order (ifindex after the MAC). */
export function reorderEndpointValue(bpfDir: string): void {
  editFile(join(bpfDir, "shared.h"), /struct twill_ep \{\n(\t__u32 ifindex;[^\n]*\n)(\t__u8  mac\[6\];[^\n]*\n\t__u8  pad\[2\];\n)\};/,
    "struct twill_ep {\n$2$1};");
}

export type StartResult = { ready: true } | { ready: false; exitCode: number };

/** Starts `n`'s daemon on `object` (TWILL_BPF_OBJECT); resolves when it is ready or has exited. */
export async function startOn(tc: TwillCluster, n: TwillNode, object: string): Promise<StartResult> {
  writeFileSync(n.logFile, `--- start ${new Date().toISOString()} object ${object}\n`, { flag: "a" });
  const proc: ChildProcess = spawnIn(n.host.netns, process.execPath, tc.args(n), { logFile: n.logFile, env: { TWILL_BPF_OBJECT: object } });
  n.proc = proc;
  await waitFor(async () => proc.exitCode !== null || (await tc.http(n, "/readyz")).startsWith("ready"),
    { timeoutMs: 30000, intervalMs: 100, what: `twill on ${n.host.name} ready or exited (object ${object})` });
  if (proc.exitCode === null) return { ready: true };
  n.proc = undefined;
  return { ready: false, exitCode: proc.exitCode };
}

/** The log of the daemon's latest start. */
export function lastRunLog(tc: TwillCluster, n: TwillNode): string {
  return tc.log(n).split("--- start").pop() ?? "";
}

export interface LinkProg { linkId: number; progId: number; prog: string; tag: string }

/** For each pinned link (by pin name): its id and the program it runs (name, tag). */
export async function linkProgs(links: Record<string, { id: number; progId: number }>): Promise<Record<string, LinkProg>> {
  const out: Record<string, LinkProg> = {};
  for (const [name, l] of Object.entries(links)) {
    const r = await run("bpftool", ["prog", "show", "id", String(l.progId), "--json"]);
    const p = JSON.parse(r.stdout) as { name: string; tag: string };
    out[name] = { linkId: l.id, progId: l.progId, prog: p.name, tag: p.tag };
  }
  return out;
}

export interface StreamInterval { startS: number; endS: number; bytes: number }

export interface StreamResult {
  /** What the receiver got in each interval (iperf3 server, -i 0.1). */
  intervals: StreamInterval[];
  /** What the sender wrote in each of its intervals (iperf3 client, -i 0.1): one longer than 100 ms is a sender that was not running. */
  sent: StreamInterval[];
  /** Retransmitted segments the sender counted. */
  retransmits: number;
  bytes: number;
  startedAtMs: number;
}

export interface TcpStream {
  done: Promise<StreamResult>;
  stop(): Promise<void>;
}

/** chrt's arguments for the stream's two ends: round-robin real-time priority 10 (see the top of this file). */
const PROBE_PRIORITY = ["--rr", "10"];

const toInterval = (i: { sum: { start: number; end: number; bytes: number } }): StreamInterval =>
  ({ startS: i.sum.start, endS: i.sum.end, bytes: i.sum.bytes });

/**
 * Starts a `seconds`-long iperf3 TCP stream from `fromNetns` to `toIP` (a
 * server started in `toNetns`), paced at `bitrate` so it does not starve the
 * 2-core machine of the CPU the daemons need.
 */
export async function tcpStream(fromNetns: string, toNetns: string, toIP: string, o: { seconds: number; bitrate: string }): Promise<TcpStream> {
  const port = String(20000 + Math.floor(Math.random() * 20000));
  const server = spawnIn(toNetns, "chrt", [...PROBE_PRIORITY, "iperf3", "-s", "-1", "-p", port, "-i", "0.1", "--json"]);
  const serverOut: Buffer[] = [];
  server.stdout?.on("data", (b: Buffer) => serverOut.push(b));
  const serverExit = new Promise<void>((resolve) => (server.exitCode !== null ? resolve() : server.once("exit", () => resolve())));
  await waitFor(async () => (await run("ss", ["-Hltn", `sport = :${port}`], { netns: toNetns })).stdout.trim() !== "",
    { timeoutMs: 10000, intervalMs: 50, what: `iperf3 server listening on ${toNetns}:${port}` });
  const startedAtMs = Date.now();
  const client = run("chrt", [...PROBE_PRIORITY, "iperf3", "-c", toIP, "-p", port, "-t", String(o.seconds), "-i", "0.1", "-b", o.bitrate, "--json"],
    { netns: fromNetns, timeoutMs: (o.seconds + 30) * 1000 });
  const done = (async (): Promise<StreamResult> => {
    const c = await client;
    await Promise.race([serverExit, new Promise((r) => setTimeout(r, 5000))]);
    const sent = JSON.parse(c.stdout) as {
      intervals: Array<{ sum: { start: number; end: number; bytes: number } }>;
      end: { sum_sent: { retransmits?: number } };
    };
    const got = JSON.parse(Buffer.concat(serverOut).toString("utf8")) as {
      intervals: Array<{ sum: { start: number; end: number; bytes: number } }>;
      end: { sum_received: { bytes: number } };
    };
    return {
      intervals: got.intervals.map(toInterval),
      sent: sent.intervals.map(toInterval),
      retransmits: sent.end.sum_sent.retransmits ?? 0,
      bytes: got.end.sum_received.bytes,
      startedAtMs,
    };
  })();
  return { done, stop: () => stopProcess(server, { graceMs: 1000 }) };
}

export interface StallReport {
  medianBytes: number;
  /** The interval that carried the least, and its share of the median. */
  min: StreamInterval;
  minShare: number;
  /** The 200 ms (two intervals) that carried the least, as a share of two medians:
   *  a stall over 100 ms would leave at most 0.5 here. */
  minPairShare: number;
  /** Intervals that carried ~nothing (under 5% of the median): each a stall of ≥ ~100 ms. */
  stalled: StreamInterval[];
}

/** Reads stalls from the receiver's full 100 ms intervals (the last, partial one is left out). */
export function stalls(r: StreamResult): StallReport {
  const full = r.intervals.filter((i) => i.endS - i.startS > 0.095);
  if (full.length < 3) throw new Error(`iperf3 reported only ${full.length} full intervals`);
  const sorted = full.map((i) => i.bytes).sort((a, b) => a - b);
  const medianBytes = sorted[Math.floor(sorted.length / 2)]!;
  const min = full.reduce((a, b) => (b.bytes < a.bytes ? b : a));
  let minPairShare = Infinity;
  for (let i = 1; i < full.length; i++) minPairShare = Math.min(minPairShare, (full[i - 1]!.bytes + full[i]!.bytes) / (2 * medianBytes));
  return {
    medianBytes, min, minShare: min.bytes / medianBytes, minPairShare,
    stalled: full.filter((i) => i.bytes < 0.05 * medianBytes),
  };
}

/**
 * Each stalled interval with what the sender wrote around it, for an
 * assertion's message: a sender interval much longer than 100 ms means the
 * sender was not running (a starved probe), one of ~100 ms with few bytes
 * means it was running and blocked (the path held its data).
 */
export function describeStalls(r: StreamResult, st: StallReport): string {
  const span = (i: StreamInterval): string => `${i.startS.toFixed(3)}–${i.endS.toFixed(3)} s`;
  return st.stalled.map((i) => {
    const around = r.sent.filter((s) => s.endS > i.startS - 0.1 && s.startS < i.endS + 0.1);
    return `received ${i.bytes} B in ${span(i)}; the sender wrote ${around.map((s) => `${s.bytes} B in ${span(s)}`).join(", ") || "nothing it reported"}`;
  }).join("; ");
}

/** Mbit/s of `bytes` over `seconds`. */
export function mbps(bytes: number, seconds: number): number {
  return Math.round((bytes * 8) / seconds / 1e5) / 10;
}
