/**
 * Conntrack entries in a host's namespace: how many, and of which kind.
 *
 * How it works: a process in the host's namespace reads
 * /proc/sys/net/netfilter/nf_conntrack_count and /proc/net/nf_conntrack
 * (both per namespace; no conntrack tool needed) and counts the entries by
 * protocol, the outer VXLAN ones (UDP to port 8472: the kernel vxlan
 * driver's packets cross the host's netfilter hooks, BPF encapsulation's do
 * not) and the [UNREPLIED] ones. In a namespace without nat or conntrack
 * rules conntrack never starts: every count is 0.
 */
import { run } from "./lib/exec.js";

export interface ConntrackCounts {
  readonly total: number;
  readonly tcp: number;
  readonly udp: number;
  /** UDP entries to the VXLAN port: outer packets of the kernel's vxlan driver. */
  readonly vxlan: number;
  readonly unreplied: number;
}

/** Parses /proc/net/nf_conntrack lines ("ipv4 2 udp 17 29 src=… dst=… sport=… dport=8472 [UNREPLIED] …"). */
export function parseConntrack(text: string, vxlanPort: number): Omit<ConntrackCounts, "total"> {
  let tcp = 0, udp = 0, vxlan = 0, unreplied = 0;
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    if (f[2] === "tcp") tcp++;
    if (f[2] === "udp") {
      udp++;
      if (f.find((x) => x.startsWith("dport=")) === `dport=${vxlanPort}`) vxlan++;
    }
    if (line.includes("[UNREPLIED]")) unreplied++;
  }
  return { tcp, udp, vxlan, unreplied };
}

export async function conntrackCounts(netns: string, vxlanPort = 8472): Promise<ConntrackCounts> {
  const count = await run("cat", ["/proc/sys/net/netfilter/nf_conntrack_count"], { netns, allowFail: true });
  const table = await run("cat", ["/proc/net/nf_conntrack"], { netns, allowFail: true, timeoutMs: 30000 });
  const total = Number(count.stdout.trim());
  return { total: Number.isFinite(total) ? total : NaN, ...parseConntrack(table.stdout, vxlanPort) };
}
