/**
 * Request/response latency with sockperf ping-pong.
 *
 * How it works: a `sockperf server` waits in the server namespace, pinned
 * with taskset to one CPU (testbed.ts); the client runs `sockperf ping-pong`
 * pinned to the same CPU. On this 2-core machine a wake-up across CPUs adds
 * ~50 µs and hides every dataplane difference; on one CPU the packet's whole
 * path — both stacks, the veths, the bridge, the overlay — runs back to back
 * and is what we measure. UDP, 64-byte messages, one in flight, for
 * `seconds`; `--full-rtt` reports the round trip (not sockperf's default
 * half of it). We read sockperf's percentile lines. sockperf itself spends
 * ~2 s before the test and drops the first ~0.45 s as warm-up, so a
 * sample of `seconds` holds about seconds − 0.45 s of round trips.
 */
import { run } from "./lib/exec.js";
import type { Endpoints, Measured } from "./workloads.js";

/** Parses sockperf's summary: percentiles ("---> percentile 99.900 = 12.3"), min, max, average, message counts. */
export function parseSockperf(text: string): { percentiles: Record<string, number>; avg: number; min: number; max: number; received: number } {
  const percentiles: Record<string, number> = {};
  for (const m of text.matchAll(/percentile\s+([\d.]+)\s*=\s*([\d.]+)/g)) percentiles[Number(m[1]).toString()] = Number(m[2]);
  const num = (re: RegExp): number => {
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  return {
    percentiles,
    avg: num(/avg-(?:rtt|lat(?:ency)?)\s*=\s*([\d.]+)/),
    min: num(/<MIN> observation\s*=\s*([\d.]+)/),
    max: num(/<MAX> observation\s*=\s*([\d.]+)/),
    received: num(/ReceivedMessages=(\d+)/),
  };
}

export async function pingPong(e: Endpoints, seconds: number): Promise<Measured> {
  const args = ["-c", String(e.latencyCpu), "sockperf", "ping-pong", "-i", e.serverIP, "-p", String(e.sockperfPort),
    "-t", String(seconds), "-m", "64", "--full-rtt"];
  const r = await run("taskset", args, { netns: e.clientNetns, timeoutMs: (seconds + 20) * 1000, allowFail: true });
  const text = r.stdout + r.stderr;
  const s = parseSockperf(text);
  const p50 = s.percentiles["50"], p99 = s.percentiles["99"], p999 = s.percentiles["99.9"];
  if (r.code !== 0 || p50 === undefined || p99 === undefined || p999 === undefined) {
    throw new Error(`sockperf exited ${r.code} without percentiles: ${text.trim().split("\n").slice(-5).join(" | ").slice(0, 400)}`);
  }
  return {
    metrics: { "latency.p50": p50, "latency.p99": p99, "latency.p999": p999 },
    extra: { avgUs: s.avg, minUs: s.min, maxUs: s.max, roundTrips: s.received, cpu: e.latencyCpu },
    command: `nsenter --net=/run/netns/${e.clientNetns} taskset ${args.join(" ")}`,
  };
}
