/**
 * Real traffic between the test cluster's namespaces, and the kernel state a
 * test asserts on. Every address used here belongs to a namespace the test
 * made; nothing is sent anywhere else.
 *
 * How it works:
 * - ping / pingStream run iputils `ping` inside the source namespace.
 *   pingStream uses `-O`, which reports each unanswered request before the
 *   next is sent, so every sequence number but the last is accounted for.
 * - tcpTransfer / startEchoServer / tcpRequest / tcpConnect run the small
 *   tcpcheck.mjs script (JSON lines on stdout) with this Node binary.
 * - kernelStateCounts / dumpState read `ip -j`, `bridge -j`, `tc`.
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import type { ChildProcess } from "node:child_process";
import { run, runJson, spawnIn, stopProcess } from "./exec.js";

// ---------------------------------------------------------------------------
// ping

export interface PingOptions {
  count?: number; // default 5
  intervalMs?: number; // default 10
  /** ICMP payload size (ping -s); default 56. */
  size?: number;
  /** Set DF (-M do, the default) or allow fragmentation (-M dont). */
  df?: boolean;
  /** Seconds to wait for each reply after the last request (ping -W); default 1. */
  waitS?: number;
  /** Kill ping after this long; default count*interval + wait + 5 s. */
  timeoutMs?: number;
}

export interface PingResult {
  sent: number;
  received: number;
  /** ICMP errors received (unreachable, frag needed...). */
  errors: number;
  rttAvgMs: number; // NaN without replies
  rttMinMs: number;
  rttMaxMs: number;
  /** The MTU of an ICMP "frag needed" or local "message too long" error, if any. */
  fragNeededMtu?: number;
  raw: string;
}

function isV6(ip: string): boolean {
  return ip.includes(":");
}

/** Parses iputils ping output (summary and rtt lines). */
export function parsePing(raw: string): PingResult {
  const sum = /(\d+) packets transmitted, (\d+) received(?:, \+(\d+) errors)?/.exec(raw);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/[\d.]+ ms/.exec(raw);
  const mtu = /mtu ?= ?(\d+)/.exec(raw);
  const r: PingResult = {
    sent: sum ? Number(sum[1]) : 0,
    received: sum ? Number(sum[2]) : 0,
    errors: sum?.[3] ? Number(sum[3]) : 0,
    rttMinMs: rtt ? Number(rtt[1]) : NaN,
    rttAvgMs: rtt ? Number(rtt[2]) : NaN,
    rttMaxMs: rtt ? Number(rtt[3]) : NaN,
    raw,
  };
  if (mtu) r.fragNeededMtu = Number(mtu[1]);
  return r;
}

/** Pings `toIP` from namespace `fromNetns` (IPv6 when the address has a colon). Never throws on loss. */
export async function ping(fromNetns: string, toIP: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 5;
  const intervalMs = opts.intervalMs ?? 10;
  const waitS = opts.waitS ?? 1;
  const args = [
    ...(isV6(toIP) ? ["-6"] : []),
    "-n",
    "-c", String(count),
    "-i", (intervalMs / 1000).toFixed(3),
    "-W", String(waitS),
    "-M", opts.df === false ? "dont" : "do",
    "-s", String(opts.size ?? 56),
    toIP,
  ];
  const timeoutMs = opts.timeoutMs ?? count * intervalMs + waitS * 1000 + 5000;
  const r = await run("ping", args, { netns: fromNetns, allowFail: true, timeoutMs });
  return parsePing(r.stdout + r.stderr);
}

export interface PingStreamResult {
  /** Requests accounted for: answered, or reported unanswered before the next was sent. */
  sent: number;
  received: number;
  lost: number;
  lostSeqs: number[];
  /** The longest time between two consecutive replies, in ms: the outage a user saw
   *  (about one send interval when nothing was lost). */
  longestGapMs: number;
  /** Epoch ms of each lost request's "no answer yet" report (≈ when it was due). */
  lostAtMs: number[];
  startedAtMs: number;
  durationMs: number;
  raw: string;
}

export interface PingStream {
  /** Stops ping (SIGINT) and reports what was lost. */
  stop(): Promise<PingStreamResult>;
}

/** Parses the per-packet lines of `ping -D -O` output into a loss report. */
export function parsePingStream(raw: string, startedAtMs: number, durationMs: number): PingStreamResult {
  const replied = new Map<number, number>(); // seq → epoch ms of the reply
  const reported = new Map<number, number>(); // seq → epoch ms of "no answer yet"
  let maxSeq = 0;
  for (const line of raw.split("\n")) {
    const ts = /^\[(\d+\.\d+)\]/.exec(line);
    const at = ts ? Number(ts[1]) * 1000 : NaN;
    const reply = /bytes from .*icmp_seq=(\d+)/.exec(line);
    if (reply) {
      const seq = Number(reply[1]);
      if (!replied.has(seq)) replied.set(seq, at);
      maxSeq = Math.max(maxSeq, seq);
      continue;
    }
    const missing = /no answer yet for icmp_seq=(\d+)/.exec(line) ?? /From .*icmp_seq=(\d+)/.exec(line);
    if (missing) {
      const seq = Number(missing[1]);
      if (!reported.has(seq)) reported.set(seq, at);
      maxSeq = Math.max(maxSeq, seq);
    }
  }
  const lostSeqs: number[] = [];
  const lostAtMs: number[] = [];
  for (let seq = 1; seq <= maxSeq; seq++) {
    if (!replied.has(seq)) {
      lostSeqs.push(seq);
      lostAtMs.push(reported.get(seq) ?? NaN);
    }
  }
  // gaps between replies in arrival order; the stream's start and end count as replies
  const times = [startedAtMs, ...[...replied.values()].filter((t) => !Number.isNaN(t)).sort((a, b) => a - b)];
  if (lostSeqs.length && lostSeqs[lostSeqs.length - 1] === maxSeq) times.push(startedAtMs + durationMs);
  let longestGapMs = 0;
  for (let i = 1; i < times.length; i++) longestGapMs = Math.max(longestGapMs, times[i]! - times[i - 1]!);
  return {
    sent: maxSeq,
    received: maxSeq - lostSeqs.length,
    lost: lostSeqs.length,
    lostSeqs,
    longestGapMs: Math.round(longestGapMs * 10) / 10,
    lostAtMs,
    startedAtMs,
    durationMs,
    raw,
  };
}

/**
 * Starts pinging `toIP` from `fromNetns` every `intervalMs` until stop().
 * A test asserts "nothing lost while X happened" with `lost === 0`, or
 * bounds an outage with `longestGapMs`. Note: asked for 10 ms, iputils sends
 * about every 15 ms on this machine; `sent` tells what really went out.
 * Runs at most ~15 minutes at 10 ms (icmp_seq wraps at 65536).
 */
export function pingStream(fromNetns: string, toIP: string, intervalMs = 10): PingStream {
  const args = [...(isV6(toIP) ? ["-6"] : []), "-n", "-D", "-O", "-i", (intervalMs / 1000).toFixed(3), "-W", "1", toIP];
  const child = spawnIn(fromNetns, "ping", args);
  const started = Date.now();
  const chunks: Buffer[] = [];
  child.stdout?.on("data", (b: Buffer) => chunks.push(b));
  child.stderr?.on("data", (b: Buffer) => chunks.push(b));
  return {
    async stop(): Promise<PingStreamResult> {
      const durationMs = Date.now() - started;
      await stopProcess(child, { signal: "SIGINT", graceMs: 2000 });
      return parsePingStream(Buffer.concat(chunks).toString("utf8"), started, durationMs);
    },
  };
}

// ---------------------------------------------------------------------------
// TCP

function helperPath(): string {
  const candidates = [
    fileURLToPath(new URL("./tcpcheck.mjs", import.meta.url)),
    // compiled to dist/test/lib/: the script stays in test/lib/
    fileURLToPath(new URL("../../../test/lib/tcpcheck.mjs", import.meta.url)),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`Cannot find tcpcheck.mjs (looked in ${candidates.join(", ")})`);
  return found;
}

/** Reads JSON lines from a child's stdout; `next(pred)` resolves with the first line matching. */
class JsonLines {
  private readonly seen: Record<string, unknown>[] = [];
  private readonly waiters: { pred: (o: Record<string, unknown>) => boolean; resolve: (o: Record<string, unknown>) => void }[] = [];
  private stderr = "";
  private exited = false;
  private readonly onExit: (() => void)[] = [];

  constructor(readonly child: ChildProcess, readonly what: string) {
    if (child.stdout) {
      createInterface({ input: child.stdout }).on("line", (line) => {
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return;
        }
        this.seen.push(o);
        for (const w of [...this.waiters]) {
          if (w.pred(o)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(o);
          }
        }
      });
    }
    child.stderr?.on("data", (b: Buffer) => (this.stderr += b.toString("utf8")));
    child.on("exit", () => {
      this.exited = true;
      for (const f of this.onExit) f();
    });
  }

  all(): Record<string, unknown>[] {
    return [...this.seen];
  }

  next(pred: (o: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>> {
    const hit = this.seen.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const fail = (why: string): void => reject(new Error(`${this.what}: ${why}${this.stderr ? `: ${this.stderr.trim()}` : ""}`));
      const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
      const waiter = {
        pred,
        resolve: (o: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(o);
        },
      };
      this.waiters.push(waiter);
      const onExit = (): void => {
        // let a final line still in the pipe arrive first
        setTimeout(() => {
          if (this.waiters.includes(waiter)) {
            clearTimeout(timer);
            this.waiters.splice(this.waiters.indexOf(waiter), 1);
            fail("exited");
          }
        }, 50);
      };
      if (this.exited) onExit();
      else this.onExit.push(onExit);
    });
  }
}

function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 20000);
}

function helperArgs(...args: (string | number)[]): string[] {
  return [helperPath(), ...args.map(String)];
}

export interface TransferResult {
  /** Bytes the receiver got. */
  bytes: number;
  sentBytes: number;
  sentSha256: string;
  receivedSha256: string;
  /** Client-side time from connect to the server's close. */
  ms: number;
  /** The source address the receiver saw. */
  peer: string;
}

/**
 * Sends `bytes` random bytes over one TCP connection from `fromNetns` to a
 * receiver listening in `toNetns` on `toIP`; both ends hash the stream.
 * Assert `sentSha256 === receivedSha256` and `bytes === sentBytes`.
 */
export async function tcpTransfer(
  fromNetns: string,
  toNetns: string,
  toIP: string,
  bytes = 8 * 1024 * 1024,
  opts: { port?: number; timeoutMs?: number } = {},
): Promise<TransferResult> {
  const port = opts.port ?? randomPort();
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const server = spawnIn(toNetns, process.execPath, helperArgs("sink", port));
  const lines = new JsonLines(server, `tcp receiver in ${toNetns} on port ${port}`);
  try {
    await lines.next((o) => "listening" in o, 10_000);
    const client = await run(process.execPath, helperArgs("send", toIP, port, bytes), {
      netns: fromNetns,
      timeoutMs,
    });
    const sent = JSON.parse(client.stdout.trim().split("\n").pop() ?? "{}") as { bytes: number; sha256: string; ms: number };
    const got = await lines.next((o) => "sha256" in o, 5000);
    return {
      bytes: Number(got.bytes),
      sentBytes: sent.bytes,
      sentSha256: sent.sha256,
      receivedSha256: String(got.sha256),
      ms: sent.ms,
      peer: String(got.peer),
    };
  } finally {
    await stopProcess(server, { graceMs: 1000 });
  }
}

export interface EchoServer {
  netns: string;
  port: number;
  /** One entry per accepted connection: the client address and port the server saw. */
  peers(): { peer: string; port: number }[];
  stop(): Promise<void>;
}

/** Starts a TCP echo server (each connection gets back what it sent) in `netns`. */
export async function startEchoServer(netns: string, port: number): Promise<EchoServer> {
  const child = spawnIn(netns, process.execPath, helperArgs("echo", port));
  const lines = new JsonLines(child, `echo server in ${netns} on port ${port}`);
  try {
    await lines.next((o) => "listening" in o, 10_000);
  } catch (e) {
    await stopProcess(child);
    throw e;
  }
  return {
    netns,
    port,
    peers: () =>
      lines
        .all()
        .filter((o) => "peer" in o)
        .map((o) => ({ peer: String(o.peer), port: Number(o.port) })),
    stop: () => stopProcess(child, { graceMs: 1000 }),
  };
}

/** Connects from `fromNetns`, sends `payload`, half-closes, and returns what came back. Throws on failure. */
export async function tcpRequest(
  fromNetns: string,
  ip: string,
  port: number,
  payload: string | Buffer,
  opts: { timeoutMs?: number } = {},
): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const b64 = Buffer.from(payload).toString("base64");
  const r = await run(process.execPath, helperArgs("request", ip, port, b64, timeoutMs), {
    netns: fromNetns,
    timeoutMs: timeoutMs + 5000,
  });
  const o = JSON.parse(r.stdout.trim()) as { reply: string };
  return Buffer.from(o.reply, "base64").toString("utf8");
}

/** Tries one TCP connect from `fromNetns`; never throws for a refused or silent peer. */
export async function tcpConnect(
  fromNetns: string,
  ip: string,
  port: number,
  opts: { timeoutMs?: number } = {},
): Promise<{ connected: boolean; ms?: number; error?: string }> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const r = await run(process.execPath, helperArgs("connect", ip, port, timeoutMs), {
    netns: fromNetns,
    timeoutMs: timeoutMs + 5000,
    allowFail: true,
  });
  try {
    return JSON.parse(r.stdout.trim()) as { connected: boolean; ms?: number; error?: string };
  } catch {
    return { connected: false, error: (r.stderr || r.stdout).trim() };
  }
}

// ---------------------------------------------------------------------------
// Kernel state

interface RouteJson {
  dst: string;
  type?: string;
  table?: string;
  protocol?: string;
}
interface NeighJson {
  dst: string;
  lladdr?: string;
  state?: string[];
}
interface FdbJson {
  mac: string;
  dst?: string;
}

export interface KernelStateCounts {
  /** IPv4 + IPv6 routes on the device in any table, except the kernel's own local/broadcast/multicast ones and fe80::/64. */
  routes: number;
  /** Neighbour entries on the device, any state (`nud all`), both families, except multicast
   *  destinations (the kernel's own MLD/IGMP entries such as ff02::16, which are not per peer). */
  neighbours: number;
  /** fdb entries on the device that carry a remote `dst`. */
  fdb: number;
  /** The entries counted, one line each, for failure messages. */
  detail: { routes: string[]; neighbours: string[]; fdb: string[] };
}

function isMulticast(ip: string): boolean {
  if (ip.includes(":")) return ip.toLowerCase().startsWith("ff");
  const first = Number(ip.split(".")[0]);
  return first >= 224 && first <= 239;
}

/** Counts the per-peer state the kernel holds for a vxlan device (flannel: 3 per peer; twill: constant). */
export async function kernelStateCounts(netns: string, vxlanDev: string): Promise<KernelStateCounts> {
  const [r4, r6, neigh, fdb] = await Promise.all([
    runJson<RouteJson[]>("ip", ["-j", "-4", "route", "show", "table", "all", "dev", vxlanDev], { netns }),
    runJson<RouteJson[]>("ip", ["-j", "-6", "route", "show", "table", "all", "dev", vxlanDev], { netns }),
    runJson<NeighJson[]>("ip", ["-j", "neigh", "show", "nud", "all", "dev", vxlanDev], { netns }),
    runJson<FdbJson[]>("bridge", ["-j", "fdb", "show", "dev", vxlanDev], { netns }),
  ]);
  const routes = [...r4, ...r6].filter(
    (r) =>
      r.table !== "local" &&
      !["local", "broadcast", "multicast", "anycast"].includes(r.type ?? "unicast") &&
      !(r.dst === "fe80::/64" && r.protocol === "kernel"),
  );
  const withDst = fdb.filter((f) => f.dst !== undefined);
  const unicastNeigh = neigh.filter((n) => !isMulticast(n.dst));
  return {
    routes: routes.length,
    neighbours: unicastNeigh.length,
    fdb: withDst.length,
    detail: {
      routes: routes.map((r) => JSON.stringify(r)),
      neighbours: unicastNeigh.map((n) => `${n.dst} ${n.lladdr ?? "-"} ${(n.state ?? []).join(",")}`),
      fdb: withDst.map((f) => `${f.mac} dst ${f.dst}`),
    },
  };
}

/** Everything a person would look at in a namespace when a test fails, as text. */
export async function dumpState(netns: string): Promise<string> {
  const cmds: [string, string[]][] = [
    ["ip", ["-d", "link", "show"]],
    ["ip", ["addr", "show"]],
    ["ip", ["route", "show", "table", "all"]],
    ["ip", ["-6", "route", "show", "table", "all"]],
    ["ip", ["neigh", "show", "nud", "all"]],
    ["bridge", ["fdb", "show"]],
    ["tc", ["qdisc", "show"]],
    ["bpftool", ["net", "show"]], // tc and tcx attachments
  ];
  const links = await runJson<{ ifname: string }[]>("ip", ["-j", "link", "show"], { netns, allowFail: true }).catch(() => []);
  for (const l of links) {
    for (const dir of ["ingress", "egress"]) cmds.push(["tc", ["filter", "show", "dev", l.ifname, dir]]);
  }
  const outs = await Promise.all(
    cmds.map(async ([cmd, args]) => {
      const r = await run(cmd, args, { netns, allowFail: true }).catch((e: Error) => ({ code: -1, stdout: "", stderr: e.message }));
      const body = (r.stdout + r.stderr).trimEnd();
      if (cmd === "tc" && args[1] === "show" && args[0] === "filter" && body === "") return "";
      return `--- ${cmd} ${args.join(" ")}${r.code ? ` (exit ${r.code})` : ""}\n${body}\n`;
    }),
  );
  return `===== netns ${netns}\n` + outs.filter(Boolean).join("");
}
