/**
 * iperf3 workloads: TCP throughput (with the machine's CPU cost per GB) and
 * the 64-byte UDP packet rate.
 *
 * How it works: a long-running `iperf3 -s` waits in each testbed's server
 * namespace (testbed.ts); here the client runs in the client namespace with
 * `-J` and we read its JSON summary. TCP: bits and bytes as the receiver
 * counted them (end.sum_received); CPU is /proc/stat busy time over the
 * client's whole run, divided by the GB received. UDP: datagrams the
 * receiver got (sent − lost) per second of the test. The clients are not
 * pinned: throughput on two cores is what the scheduler makes of it.
 */
import { run } from "./lib/exec.js";
import { busyPercent, busySeconds, readCpu } from "./cpu.js";
import type { Endpoints, Measured } from "./workloads.js";

type Json = Record<string, any>; // iperf3's own JSON: read defensively below

function command(netns: string, tool: string, args: readonly string[]): string {
  return `nsenter --net=/run/netns/${netns} ${tool} ${args.join(" ")}`;
}

async function iperf(e: Endpoints, args: string[], seconds: number): Promise<{ json: Json; busyS: number; busyPct: number; command: string }> {
  const full = ["-c", e.serverIP, "-p", String(e.iperfPort), "-t", String(seconds), "--connect-timeout", "3000", "-J", ...args];
  const c0 = readCpu();
  const r = await run("iperf3", full, { netns: e.clientNetns, timeoutMs: (seconds + 20) * 1000, allowFail: true });
  const c1 = readCpu();
  let json: Json;
  try {
    json = JSON.parse(r.stdout) as Json;
  } catch {
    throw new Error(`iperf3 exited ${r.code} without JSON: ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
  }
  if (typeof json.error === "string") throw new Error(`iperf3: ${json.error}`);
  return { json, busyS: busySeconds(c0, c1), busyPct: busyPercent(c0, c1), command: command(e.clientNetns, "iperf3", full) };
}

export async function tcpThroughput(e: Endpoints, streams: number, seconds: number): Promise<Measured> {
  const { json, busyS, busyPct, command } = await iperf(e, ["-P", String(streams)], seconds);
  const recv = json.end?.sum_received as Json | undefined;
  const bytes = Number(recv?.bytes);
  const bps = Number(recv?.bits_per_second);
  if (!(bytes > 0) || !(bps > 0)) throw new Error(`iperf3 reported no received bytes: ${JSON.stringify(json.end ?? {}).slice(0, 300)}`);
  const key = `tcp${streams}`;
  return {
    metrics: { [`${key}.gbps`]: bps / 1e9, [`${key}.cpuPerGB`]: busyS / (bytes / 1e9) },
    extra: {
      bytes, seconds: Number(recv?.seconds), retransmits: Number(json.end?.sum_sent?.retransmits ?? NaN),
      machineBusyPct: busyPct, machineBusyCpuS: busyS,
      senderCpuPct: Number(json.end?.cpu_utilization_percent?.host_total ?? NaN),
      receiverCpuPct: Number(json.end?.cpu_utilization_percent?.remote_total ?? NaN),
    },
    command,
  };
}

export async function udpRate(e: Endpoints, seconds: number): Promise<Measured> {
  const { json, busyPct, command } = await iperf(e, ["-u", "-l", "64", "-b", "0"], seconds);
  // The receiver's view: `packets` is what the sender numbered up to the last
  // datagram seen, `lost_packets` the gaps, so what arrived is their difference.
  // (iperf3 3.12 has end.sum_received; older versions only end.sum, the same numbers.)
  const recv = (json.end?.sum_received ?? json.end?.sum) as Json | undefined;
  const secs = Number(recv?.seconds);
  const received = Number(recv?.packets) - Number(recv?.lost_packets ?? 0);
  const sentPackets = Number(json.end?.sum_sent?.packets ?? recv?.packets);
  if (!(secs > 0) || !(received >= 0)) throw new Error(`iperf3 reported no UDP counts: ${JSON.stringify(json.end ?? {}).slice(0, 300)}`);
  return {
    metrics: { "udp64.kpps": received / secs / 1000 },
    extra: {
      receivedPackets: received, sentPackets, seconds: secs,
      lostPct: sentPackets > 0 ? (100 * Math.max(0, sentPackets - received)) / sentPackets : NaN, machineBusyPct: busyPct,
    },
    command,
  };
}
