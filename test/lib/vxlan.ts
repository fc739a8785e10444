/**
 * VXLAN on the wire, for tests of who encapsulates: a decoding capture, a
 * crafted VXLAN packet from a sender that is no twill node, and the
 * VTEP MAC a node publishes.
 *
 *   <prefix>ul: br<s> ── <name> ═ eth0 <prefix><name>  192.168.(50+s).<host>/24
 *   (a "stranger" on the underlay segment: no lease, no daemon)
 *
 * How it works:
 * - captureVxlan runs `tcpdump -n -e -T vxlan` on a device while `fn` makes
 *   traffic. With -e and -T vxlan, tcpdump prints each packet as two lines:
 *   the outer Ethernet/IP/UDP with "VXLAN, flags [I] (0x08), vni N", then the
 *   inner Ethernet header and what it carries; parseVxlanCapture pairs them.
 * - vxlanEchoRequest builds VXLAN header + inner Ethernet + IPv4 + ICMP echo
 *   request (checksums filled); sendUdp hands it to a UDP socket of Node's
 *   dgram inside a namespace, so the kernel adds the outer IPv4/UDP headers
 *   exactly like a VXLAN sender's.
 * - addStranger wires one more namespace into the cluster's underlay switch.
 *   Its names carry the cluster's prefix, so the cluster's destroy removes it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./exec.js";
import { tcpdumpWhile } from "./capture.js";
import type { Cluster } from "./cluster.js";
import type { TwillCluster, TwillNode } from "./twill.js";

export interface VxlanRecord {
  time: string;
  outerSrcMAC: string;
  outerDstMAC: string;
  outerSrc: string;
  outerDst: string;
  srcPort: number;
  dstPort: number;
  /** VXLAN flags byte as tcpdump prints it ("0x08"). */
  flags: string;
  vni: number;
  innerSrcMAC: string;
  innerDstMAC: string;
  /** The inner Ethernet type as tcpdump names it ("IPv4"). */
  innerType: string;
  /** What tcpdump says the inner frame carries ("10.244.1.2 > 10.244.2.2: ICMP echo request, ..."). */
  inner: string;
}

const MAC = "[0-9a-f]{2}(?::[0-9a-f]{2}){5}";
const OUTER = new RegExp(
  `^(\\d\\d:\\d\\d:\\d\\d\\.\\d+) (${MAC}) > (${MAC}), ethertype IPv4 \\(0x0800\\), length \\d+: ` +
  `(\\d+\\.\\d+\\.\\d+\\.\\d+)\\.(\\d+) > (\\d+\\.\\d+\\.\\d+\\.\\d+)\\.(\\d+): VXLAN, flags \\[[^\\]]*\\] \\((0x[0-9a-f]+)\\), vni (\\d+)`,
);
const INNER = new RegExp(`^(${MAC}) > (${MAC}), ethertype (\\S+) \\(0x[0-9a-f]{4}\\), length \\d+: (.*)$`);

/** Pairs tcpdump's outer and inner lines into records; lines that are no VXLAN packet are skipped. */
export function parseVxlanCapture(text: string): VxlanRecord[] {
  const out: VxlanRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const o = OUTER.exec(lines[i]!);
    if (!o) continue;
    const inner = INNER.exec(lines[i + 1] ?? "");
    if (!inner) continue;
    i++;
    out.push({
      time: o[1]!, outerSrcMAC: o[2]!, outerDstMAC: o[3]!, outerSrc: o[4]!, srcPort: Number(o[5]), outerDst: o[6]!,
      dstPort: Number(o[7]), flags: o[8]!, vni: Number(o[9]),
      innerSrcMAC: inner[1]!, innerDstMAC: inner[2]!, innerType: inner[3]!, inner: inner[4]!,
    });
  }
  return out;
}

/** Captures UDP to `port` on `iface` in `netns`, decoded as VXLAN, while `fn` runs. Returns the records and tcpdump's text. */
export async function captureVxlan(netns: string, iface: string, port: number, fn: () => Promise<unknown>): Promise<{ records: VxlanRecord[]; raw: string }> {
  const raw = await tcpdumpWhile(netns, iface, ["-e", "-T", "vxlan", `udp dst port ${port}`], fn);
  return { records: parseVxlanCapture(raw), raw };
}

// ---------------------------------------------------------------------------
// Crafting

function macBytes(mac: string): Buffer {
  const b = Buffer.from(mac.split(":").map((x) => Number.parseInt(x, 16)));
  if (b.length !== 6) throw new Error(`Cannot parse MAC ${mac}`);
  return b;
}

function ipv4Bytes(ip: string): Buffer {
  const b = Buffer.from(ip.split(".").map(Number));
  if (b.length !== 4) throw new Error(`Cannot parse IPv4 address ${ip}`);
  return b;
}

/** The Internet checksum (RFC 1071) of `b`. */
export function inetChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface CraftedEcho {
  vni: number;
  innerSrcMAC: string;
  innerDstMAC: string;
  innerSrc: string;
  innerDst: string;
  /** ICMP echo id and sequence: a capture filter can pick these out. */
  id: number;
  seq: number;
  payload?: Buffer;
}

/** A VXLAN payload (what follows the outer UDP header) carrying an ICMP echo request. */
export function vxlanEchoRequest(c: CraftedEcho): Buffer {
  const data = c.payload ?? Buffer.from("twill-test crafted vxlan from a stranger");
  const icmp = Buffer.alloc(8 + data.length);
  icmp.writeUInt8(8, 0); // echo request
  icmp.writeUInt16BE(c.id, 4);
  icmp.writeUInt16BE(c.seq, 6);
  data.copy(icmp, 8);
  icmp.writeUInt16BE(inetChecksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip.writeUInt16BE(c.seq, 4);
  ip.writeUInt16BE(0x4000, 6); // DF
  ip.writeUInt8(64, 8);
  ip.writeUInt8(1, 9); // ICMP
  ipv4Bytes(c.innerSrc).copy(ip, 12);
  ipv4Bytes(c.innerDst).copy(ip, 16);
  ip.writeUInt16BE(inetChecksum(ip), 10);
  const eth = Buffer.concat([macBytes(c.innerDstMAC), macBytes(c.innerSrcMAC), Buffer.from([0x08, 0x00])]);
  const vx = Buffer.alloc(8);
  vx.writeUInt8(0x08, 0); // I flag: the VNI is valid
  vx.writeUInt32BE((c.vni & 0xffffff) << 8, 4);
  return Buffer.concat([vx, eth, ip, icmp]);
}

const SEND_SCRIPT = `
const [hex, ip, port, count, gap] = process.argv.slice(1);
const s = require("node:dgram").createSocket("udp4");
const b = Buffer.from(hex, "hex");
let left = Number(count);
const next = () => {
  if (left-- <= 0) return s.close();
  s.send(b, Number(port), ip, (e) => { if (e) { console.error(e.message); process.exit(1); } setTimeout(next, Number(gap)); });
};
next();
`;

/** Sends `payload` `count` times as one UDP datagram each from `netns` to `ip`:`port`. */
export async function sendUdp(netns: string, ip: string, port: number, payload: Buffer, count = 1, gapMs = 20): Promise<void> {
  await run(process.execPath, ["-e", SEND_SCRIPT, payload.toString("hex"), ip, String(port), String(count), String(gapMs)], { netns });
}

// ---------------------------------------------------------------------------
// A stranger on the underlay

export interface Stranger {
  netns: string;
  ip: string;
  mac: string;
}

/**
 * Adds namespace "<prefix><name>" with eth0 = `ip`/24 on underlay segment
 * `segment` (the switch port in <prefix>ul is named `name`). No lease, no daemon.
 */
export async function addStranger(cluster: Cluster, name: string, ip: string, segment = 0): Promise<Stranger> {
  const netns = `${cluster.prefix}${name}`;
  if (netns.length > 15 || name.length > 15) throw new Error(`Cannot add stranger ${netns}: name too long`);
  const mtu = cluster.opts.mtu;
  await run("ip", ["netns", "add", netns]);
  await run("ip", ["link", "add", name, "mtu", String(mtu), "type", "veth", "peer", "name", "eth0", "mtu", String(mtu), "netns", netns], { netns: cluster.underlayNetns });
  await run("ip", ["link", "set", name, "master", `br${segment}`, "up"], { netns: cluster.underlayNetns });
  await run("ip", ["-batch", "-"], { netns, input: `link set lo up\nlink set eth0 up\naddr add ${ip}/24 dev eth0\n` });
  const [l] = JSON.parse((await run("ip", ["-j", "link", "show", "dev", "eth0"], { netns })).stdout) as Array<{ address: string }>;
  return { netns, ip, mac: l!.address };
}

// ---------------------------------------------------------------------------
// What a node publishes

/** The lease file name of a node's subnet: "10.244.3.1/24" → "10.244.3.0-24". */
function leaseKey(tc: TwillCluster, n: TwillNode): string {
  const [addr, len] = tc.subnet(n).split("/");
  const o = addr!.split(".");
  o[3] = "0"; // SubnetLen 24 in every test config here
  return `${o.join(".")}-${len}`;
}

/** The node's lease as the lease directory holds it. */
export function readLease(tc: TwillCluster, n: TwillNode): { PublicIP: string; BackendData?: { VNI: number; VtepMAC: string } } {
  return JSON.parse(readFileSync(join(tc.leaseDir, "subnets", leaseKey(tc, n)), "utf8"));
}

/** The VTEP MAC a node publishes in its lease. */
export function leaseVtepMAC(tc: TwillCluster, n: TwillNode): string {
  const mac = readLease(tc, n).BackendData?.VtepMAC;
  if (!mac) throw new Error(`The lease of ${n.host.name} has no VtepMAC`);
  return mac.toLowerCase();
}
