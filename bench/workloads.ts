/**
 * The traffic workloads and the metrics they yield: the one registry the
 * runner, the report and the charts read.
 *
 * How it works: a workload runs once per (repetition, mode) from the client
 * namespace to the server namespace of that mode's testbed and returns its
 * metrics in the units shown here. The tools (iperf3, sockperf) are wrapped
 * in iperf.ts and sockperf.ts; this file only says what each workload is.
 *
 *   tcp1     iperf3, 1 TCP stream: Gbit/s, and machine CPU-s per GB moved
 *   tcp4     iperf3, 4 TCP streams: Gbit/s, CPU-s per GB
 *   latency  sockperf ping-pong (UDP, 64 B), client and server pinned to
 *            the same CPU: round-trip p50 / p99 / p99.9 in µs
 *   udp64    iperf3 -u -l 64 -b 0: 64-byte UDP datagrams received per second
 */
import { tcpThroughput, udpRate } from "./iperf.js";
import { pingPong } from "./sockperf.js";

export const WORKLOAD_IDS = ["tcp1", "tcp4", "latency", "udp64"] as const;
export type WorkloadId = (typeof WORKLOAD_IDS)[number];

/** Where a workload's traffic flows: two namespaces this benchmark created. */
export interface Endpoints {
  readonly clientNetns: string;
  readonly serverNetns: string;
  readonly serverIP: string;
  readonly iperfPort: number;
  readonly sockperfPort: number;
  /** The CPU both latency ends are pinned to. */
  readonly latencyCpu: number;
}

/** One run's outcome: metrics by id (see METRICS), tool details, the exact command. */
export interface Measured {
  readonly metrics: Record<string, number>;
  readonly extra: Record<string, number | string>;
  readonly command: string;
}

export interface Workload {
  readonly id: WorkloadId;
  readonly title: string;
  run(e: Endpoints, seconds: number): Promise<Measured>;
}

export interface MetricDef {
  /** "<workload>.<name>", the key in Measured.metrics. */
  readonly id: string;
  readonly workload: WorkloadId;
  readonly title: string;
  /** Column heading in the at-a-glance table. */
  readonly short: string;
  readonly unit: string;
  readonly better: "higher" | "lower";
  readonly digits: number;
}

export const WORKLOADS: Readonly<Record<WorkloadId, Workload>> = {
  tcp1: { id: "tcp1", title: "TCP throughput, 1 stream (iperf3)", run: (e, s) => tcpThroughput(e, 1, s) },
  tcp4: { id: "tcp4", title: "TCP throughput, 4 streams (iperf3 -P 4)", run: (e, s) => tcpThroughput(e, 4, s) },
  latency: { id: "latency", title: "Request/response latency (sockperf ping-pong, UDP 64 B, both ends on one CPU)", run: (e, s) => pingPong(e, s) },
  udp64: { id: "udp64", title: "Small-packet rate (iperf3 -u -l 64 -b 0)", run: (e, s) => udpRate(e, s) },
};

export const METRICS: readonly MetricDef[] = [
  { id: "tcp1.gbps", workload: "tcp1", title: "TCP throughput, 1 stream", short: "TCP 1 stream, Gbit/s ↑", unit: "Gbit/s", better: "higher", digits: 2 },
  { id: "tcp4.gbps", workload: "tcp4", title: "TCP throughput, 4 streams", short: "TCP 4 streams, Gbit/s ↑", unit: "Gbit/s", better: "higher", digits: 2 },
  { id: "latency.p50", workload: "latency", title: "Round-trip latency p50", short: "RTT p50, µs ↓", unit: "µs", better: "lower", digits: 1 },
  { id: "latency.p99", workload: "latency", title: "Round-trip latency p99", short: "RTT p99, µs ↓", unit: "µs", better: "lower", digits: 1 },
  { id: "latency.p999", workload: "latency", title: "Round-trip latency p99.9", short: "RTT p99.9, µs ↓", unit: "µs", better: "lower", digits: 1 },
  { id: "udp64.kpps", workload: "udp64", title: "64-byte UDP packets received", short: "UDP 64 B, kpps ↑", unit: "kpps", better: "higher", digits: 0 },
  { id: "tcp1.cpuPerGB", workload: "tcp1", title: "CPU per GB moved (1-stream run)", short: "CPU-s/GB, 1 stream ↓", unit: "CPU-s/GB", better: "lower", digits: 3 },
  { id: "tcp4.cpuPerGB", workload: "tcp4", title: "CPU per GB moved (4-stream run)", short: "CPU-s/GB, 4 streams ↓", unit: "CPU-s/GB", better: "lower", digits: 3 },
];

export function metric(id: string): MetricDef {
  const m = METRICS.find((x) => x.id === id);
  if (!m) throw new Error(`No metric ${id}`);
  return m;
}
