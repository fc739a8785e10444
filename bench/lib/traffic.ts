/**
 * What the tests and the benchmark read from, and send between, their own
 * namespaces: a ping between two of them, the per-peer state the kernel holds
 * for a vxlan device, and everything a person looks at when a test or a
 * testbed fails. Every address used belongs to a namespace the caller made.
 * (test/lib/traffic.ts adds the tests' streams and TCP checks.)
 *
 * How it works: iputils `ping` inside the source namespace; `ip -j`,
 * `bridge -j`, `tc` and `bpftool` for the state.
 */
import { run, runJson } from "./exec.js";

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

/** An IPv6 address (written with a colon). */
export function isV6(ip: string): boolean {
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
