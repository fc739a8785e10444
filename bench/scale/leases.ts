/**
 * The leases of the scale scenarios: who is peer number i, and which numbers
 * each phase uses.
 *
 * How it works: peer i owns, in the cluster network 10.0.0.0/8, either
 * 10.<i/256>.<i%256>.0/24 (SubnetLen 24, 1 ≤ i ≤ 65535) or, for more peers
 * than /24s fit, 10.<i/1024>.<(i/4)%256>.<(i%4)·64>/26 (`wide`, SubnetLen
 * 26, up to 262,143); public IP 172.<16+i/65536>.<(i/256)%256>.<i%256>, VTEP
 * MAC 02:5c:00:<i/65536>:<(i/256)%256>:<i%256>, all VXLAN — flannel's etcd
 * key and LeaseAttrs JSON exactly (the lease directory holds the same JSON
 * in a file named by the key). The plan gives every phase its own numbers:
 *
 *   1 … N                     the initial peers (written before the node starts)
 *   N+1 … N+GAP               left free: the node acquires one of the first
 *                             100 free subnets (flannel's rule), i.e. one of these
 *   events                    the new leases of the latency phase
 *   churn spares              the churn ring's keys beyond the initial peers
 *   memory adds               new keys added in bulk at the end (min(N, 10,000)),
 *                             for the kernel memory per peer
 *
 * Churn (and the long soak) walks a ring of the initial peers followed by
 * the spares: event 2j puts ring position N+j, event 2j+1 deletes ring
 * position j (positions modulo the ring's size), so the live set is always
 * a window of N keys sliding round the ring, however long the run.
 * Subnet 10.0.0.0/24 (i = 0) is never used: it is below SubnetMin.
 */

export const ETCD_PREFIX = "/coreos.com/network";
export const NET_CONFIG = { Network: "10.0.0.0/8", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1 } };
/** For more peers than /24s fit in 10.0.0.0/8. */
export const WIDE_NET_CONFIG = { ...NET_CONFIG, SubnetLen: 26 };
/** Free subnets kept after the initial peers, for the node's own lease (it takes one of the first 100). */
export const OWN_GAP = 150;
export const MAX_INDEX = 65535;
export const MAX_WIDE_INDEX = 262143;

const b2 = (i: number): number => (i >> 16) & 255;
const hi = (i: number): number => (i >> 8) & 255;
const lo = (i: number): number => i & 255;
const hex = (n: number): string => n.toString(16).padStart(2, "0");
const subnet = (i: number, wide: boolean): [string, number] =>
  wide ? [`10.${(i >> 10) & 255}.${(i >> 2) & 255}.${(i & 3) * 64}`, 26] : [`10.${hi(i)}.${lo(i)}.0`, 24];

/** "10.39.16.0-24": the lease's key under <prefix>/subnets/ (and its file name in a lease directory). */
export const leaseKey = (i: number, wide = false): string => subnet(i, wide).join("-");
/** "10.39.16.0/24" */
export const leasePrefix = (i: number, wide = false): string => subnet(i, wide).join("/");
export const leasePublicIP = (i: number): string => `172.${16 + b2(i)}.${hi(i)}.${lo(i)}`;
export const leaseMAC = (i: number): string => `02:5c:00:${hex(b2(i))}:${hex(hi(i))}:${hex(lo(i))}`;
/** flannel's LeaseAttrs JSON for peer i. */
export const leaseValue = (i: number): string =>
  JSON.stringify({ PublicIP: leasePublicIP(i), PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: leaseMAC(i) } });
export const etcdKey = (i: number, wide = false): string => `${ETCD_PREFIX}/subnets/${leaseKey(i, wide)}`;

export interface PlanInput {
  readonly peers: number;
  readonly events: number;
  /** Churn events in total (rate × seconds); half puts, half deletes. */
  readonly churnEvents: number;
}

/** The churn ring: positions 0 … initial-1 are peers 1 … initial, then the spares. */
export interface Ring {
  readonly initial: number;
  readonly spareFrom: number;
  readonly spares: number;
}

export interface Plan {
  /** Initial peers: 1 … peers. */
  readonly initial: { readonly from: number; readonly to: number };
  /** The latency phase's new leases, in order. */
  readonly events: readonly number[];
  readonly ring: Ring;
  /** Churn events in total: event 2j puts ring position initial+j, event 2j+1 deletes position j. */
  readonly churnEvents: number;
  /** Added in bulk at the end, to measure memory per peer on a running node. */
  readonly memoryAdds: { readonly from: number; readonly to: number };
}

/** Peers added in bulk for the memory measurement. */
export const memoryAddCount = (peers: number): number => Math.min(peers, 10_000);
/** The churn ring's spare keys: as many as churn puts, at most this many (then the ring wraps). */
export const MAX_SPARES = 10_000;

const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, k) => from + k);

/** The peer at ring position r. */
export const ringPeer = (ring: Ring, r: number): number => {
  const p = r % (ring.initial + ring.spares);
  return p < ring.initial ? p + 1 : ring.spareFrom + (p - ring.initial);
};

/** Churn event k: put or delete, of which peer. */
export function churnEvent(ring: Ring, k: number): { put: boolean; peer: number } {
  const j = k >> 1;
  return k % 2 === 0 ? { put: true, peer: ringPeer(ring, ring.initial + j) } : { put: false, peer: ringPeer(ring, j) };
}

/** Throws a sentence naming the value when the numbers do not fit 10.0.0.0/8 in /24s. */
export function makePlan(o: PlanInput): Plan {
  const puts = Math.ceil(o.churnEvents / 2);
  if (!Number.isInteger(o.peers) || o.peers < 1) throw new Error(`Cannot plan ${o.peers} peers: want a positive integer`);
  const eventsFrom = o.peers + OWN_GAP + 1;
  const spares = Math.max(1, Math.min(puts, MAX_SPARES));
  const spareFrom = eventsFrom + o.events;
  const memFrom = spareFrom + spares, adds = memoryAddCount(o.peers);
  const last = memFrom + adds - 1;
  if (last > MAX_INDEX) {
    throw new Error(`Cannot fit ${o.peers} peers + ${o.events} events + ${spares} churn spares + ${adds} bulk adds (+${OWN_GAP} free) ` +
      `in 10.0.0.0/8 as /24s: needs index ${last}, at most ${MAX_INDEX}`);
  }
  return {
    initial: { from: 1, to: o.peers },
    events: range(eventsFrom, o.events),
    ring: { initial: o.peers, spareFrom, spares },
    churnEvents: o.churnEvents,
    memoryAdds: { from: memFrom, to: last },
  };
}

/** The bulk-writer operations (bench/lib/etcd-bulk.ts) that put peers from … to. */
export function putOps(from: number, to: number, wide = false): { op: "put"; key: string; value: string }[] {
  const ops: { op: "put"; key: string; value: string }[] = [];
  for (let i = from; i <= to; i++) ops.push({ op: "put", key: etcdKey(i, wide), value: leaseValue(i) });
  return ops;
}

/** How a programmed peer is compared: "<VTEP MAC> <public IP>". */
export const peerSignature = (vtepMAC: string, remote: string): string => `${vtepMAC.toLowerCase()} ${remote}`;

/** Prefix → signature of every peer etcd holds once the given phases ran. */
export function expectedPeers(plan: Plan, done: { events: boolean; churn: boolean; memory?: boolean }): Map<string, string> {
  const out = new Map<string, string>();
  const sig = (i: number): string => peerSignature(leaseMAC(i), leasePublicIP(i));
  const { ring } = plan;
  const puts = done.churn ? Math.ceil(plan.churnEvents / 2) : 0, dels = done.churn ? Math.floor(plan.churnEvents / 2) : 0;
  // the live window of the ring: positions dels … initial+puts-1
  for (let r = dels; r < ring.initial + puts; r++) out.set(leasePrefix(ringPeer(ring, r)), sig(ringPeer(ring, r)));
  for (const i of done.events ? plan.events : []) out.set(leasePrefix(i), sig(i));
  if (done.memory) for (let i = plan.memoryAdds.from; i <= plan.memoryAdds.to; i++) out.set(leasePrefix(i), sig(i));
  return out;
}

/** Parses `etcdctl get --prefix <prefix>/subnets/` output (key and value lines) into prefix → signature. */
export function parseEtcdLeases(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split("\n").filter((l) => l !== "");
  for (let k = 0; k + 1 < lines.length; k += 2) {
    const m = /\/subnets\/([\d.]+)-(\d+)$/.exec(lines[k]!);
    if (!m) continue;
    const v = JSON.parse(lines[k + 1]!) as { PublicIP?: string; BackendData?: { VtepMAC?: string } };
    out.set(`${m[1]}/${m[2]}`, peerSignature(v.BackendData?.VtepMAC ?? "-", v.PublicIP ?? "-"));
  }
  return out;
}
