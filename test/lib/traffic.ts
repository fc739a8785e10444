/**
 * Real traffic between the test cluster's namespaces beyond a ping: a ping
 * stream that accounts for every lost request, and TCP checks. Every address
 * used here belongs to a namespace the test made; nothing is sent anywhere
 * else. The ping and the kernel state a test asserts on (ping, parsePing,
 * kernelStateCounts, dumpState) are the benchmark's, re-exported from
 * bench/lib/traffic.ts.
 *
 * How it works:
 * - pingStream runs iputils `ping` inside the source namespace with `-O`,
 *   which reports each unanswered request before the next is sent, so every
 *   sequence number but the last is accounted for.
 * - tcpTransfer / startEchoServer / tcpRequest / tcpConnect run the small
 *   tcpcheck.mjs script (JSON lines on stdout) with this Node binary.
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import type { ChildProcess } from "node:child_process";
import { run, spawnIn, stopProcess } from "../../bench/lib/exec.js";
import { isV6 } from "../../bench/lib/traffic.js";

export * from "../../bench/lib/traffic.js";

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
