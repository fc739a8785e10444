/**
 * Pings between pods for the whole soak: one iputils `ping -i 0.01` per
 * ordered pair of pods, each loss kept with the time it happened.
 *
 * How it works: `ping -n -D -O -i 0.01 -W 1 <ip>` runs in the source pod's
 * namespace (spawnIn, so the cluster's cleanup kills it). -D stamps every
 * line with the epoch time; -O prints "no answer yet for icmp_seq=N" when
 * a request is still unanswered as the next one is sent. The output is
 * read line by line, never kept: a reply counts as received (and clears
 * its sequence number if it was reported late); a "no answer yet" or an
 * ICMP error ("From … icmp_seq=N …") makes the sequence pending; a pending
 * sequence still unanswered LATE_MS after it was reported is lost, at the
 * time of the report (≈ when it was due + 10 ms). Sequence numbers wrap at
 * 65,536 (11 minutes at 100/s): pending ones are settled long before.
 * Losses are kept as epoch ms; `lastReplyAt` says when the pair last saw a
 * reply (the fault checker waits for one after a repair).
 */
import { createInterface } from "node:readline";
import type { ChildProcess } from "node:child_process";
import { spawnIn, stopProcess } from "../lib/exec.js";
import type { Pod } from "../lib/cluster.js";

/** A request unanswered this long after it was reported is lost. */
const LATE_MS = 2000;

export interface PairResult {
  readonly from: string;
  readonly to: string;
  readonly received: number;
  readonly lost: number;
  /** Epoch ms of every loss. */
  readonly lostAt: readonly number[];
  readonly startedAt: number;
  readonly stoppedAt: number;
}

export class PingPair {
  received = 0;
  lastReplyAt = 0;
  readonly lostAt: number[] = [];
  private readonly pending = new Map<number, number>();
  private readonly waiters: { after: number; resolve: (at: number) => void }[] = [];
  private readonly child: ChildProcess;
  readonly startedAt = Date.now();
  private stderr = "";

  constructor(readonly from: Pod, readonly to: Pod, intervalMs: number) {
    const args = ["-n", "-D", "-O", "-i", (intervalMs / 1000).toFixed(3), "-W", "1", to.ip];
    this.child = spawnIn(from.netns, "ping", args);
    createInterface({ input: this.child.stdout! }).on("line", (line) => this.line(line));
    this.child.stderr!.on("data", (b: Buffer) => { if (this.stderr.length < 4000) this.stderr += b.toString("utf8"); });
  }

  get name(): string {
    return `${this.from.host.name}→${this.to.host.name}`;
  }

  /** Whether ping is still running (it should be for the whole soak). */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get errorOutput(): string {
    return this.stderr.trim();
  }

  private line(line: string): void {
    const ts = /^\[(\d+\.\d+)\]/.exec(line);
    if (!ts) return;
    const at = Number(ts[1]) * 1000;
    const reply = /bytes from .*icmp_seq=(\d+)/.exec(line);
    if (reply) {
      if (line.includes("(DUP!)")) return;
      this.received++;
      this.lastReplyAt = at;
      this.pending.delete(Number(reply[1]));
      for (const w of this.waiters.filter((x) => x.after < at)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(at);
      }
    } else {
      const missing = /no answer yet for icmp_seq=(\d+)/.exec(line) ?? /From .*icmp_seq=(\d+)/.exec(line);
      if (missing && !this.pending.has(Number(missing[1]))) this.pending.set(Number(missing[1]), at);
    }
    this.settle(at - LATE_MS);
  }

  /** Pending requests reported before `before` are lost. */
  private settle(before: number): void {
    for (const [seq, at] of this.pending) {
      if (at > before) continue;
      this.pending.delete(seq);
      this.lostAt.push(at);
    }
  }

  /** Resolves with the epoch ms of the first reply stamped after `after` (at once if one was seen already). */
  replyAfter(after: number): Promise<number> {
    if (this.lastReplyAt > after) return Promise.resolve(this.lastReplyAt);
    return new Promise((resolve) => this.waiters.push({ after, resolve }));
  }

  /** Losses so far (settled ones only). */
  get lost(): number {
    return this.lostAt.length;
  }

  async stop(): Promise<PairResult> {
    await stopProcess(this.child, { signal: "SIGINT", graceMs: 2000 });
    this.settle(Infinity);
    this.lostAt.sort((a, b) => a - b);
    return { from: this.from.host.name, to: this.to.host.name, received: this.received, lost: this.lostAt.length, lostAt: this.lostAt, startedAt: this.startedAt, stoppedAt: Date.now() };
  }
}

/** One PingPair per ordered pair of the pods. */
export function pingAllPairs(pods: readonly Pod[], intervalMs: number): PingPair[] {
  return pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => new PingPair(a, b, intervalMs)));
}
