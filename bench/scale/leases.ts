/**
 * The leases of the scale scenario: who is peer number i, and which numbers
 * each phase uses.
 *
 * How it works: peer i (1 ≤ i ≤ 65535) owns 10.<i/256>.<i%256>.0/24 in the
 * cluster network 10.0.0.0/8 (SubnetLen 24), public IP 172.16.<i/256>.<i%256>,
 * VTEP MAC 02:5c:00:00:<i/256>:<i%256>, all VXLAN — flannel's etcd key and
 * LeaseAttrs JSON exactly. The plan gives every phase its own numbers:
 *
 *   1 … N                     the initial peers (written before the node starts)
 *   N+1 … N+GAP               left free: the node acquires one of the first
 *                             100 free subnets (flannel's rule), i.e. one of these
 *   events                    the 1,000 new leases of the latency phase
 *   churn puts                new keys during churn
 *   churn deletes             the initial peers 1, 2, 3, … (deleted in order)
 *   memory adds               new keys added in bulk at the end (min(N, 10,000)),
 *                             for the kernel memory per peer
 *
 * Subnet 10.0.0.0/24 (i = 0) is never used: it is below SubnetMin.
 */

export const ETCD_PREFIX = "/coreos.com/network";
export const NET_CONFIG = { Network: "10.0.0.0/8", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1 } };
/** Free subnets kept after the initial peers, for the node's own lease (it takes one of the first 100). */
export const OWN_GAP = 150;
export const MAX_INDEX = 65535;

const hi = (i: number): number => (i >> 8) & 255;
const lo = (i: number): number => i & 255;
const hex = (n: number): string => n.toString(16).padStart(2, "0");

/** "10.39.16.0-24": the lease's key under <prefix>/subnets/. */
export const leaseKey = (i: number): string => `10.${hi(i)}.${lo(i)}.0-24`;
/** "10.39.16.0/24" */
export const leasePrefix = (i: number): string => `10.${hi(i)}.${lo(i)}.0/24`;
export const leasePublicIP = (i: number): string => `172.16.${hi(i)}.${lo(i)}`;
export const leaseMAC = (i: number): string => `02:5c:00:00:${hex(hi(i))}:${hex(lo(i))}`;
/** flannel's LeaseAttrs JSON for peer i. */
export const leaseValue = (i: number): string =>
  JSON.stringify({ PublicIP: leasePublicIP(i), PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: leaseMAC(i) } });
export const etcdKey = (i: number): string => `${ETCD_PREFIX}/subnets/${leaseKey(i)}`;

export interface PlanInput {
  readonly peers: number;
  readonly events: number;
  /** Churn events in total (rate × seconds); half puts, half deletes. */
  readonly churnEvents: number;
}

export interface Plan {
  /** Initial peers: 1 … peers. */
  readonly initial: { readonly from: number; readonly to: number };
  /** The latency phase's new leases, in order. */
  readonly events: readonly number[];
  /** Churn event k: put of churnPuts[k/2] (k even) or delete of churnDeletes[(k-1)/2] (k odd). */
  readonly churnPuts: readonly number[];
  readonly churnDeletes: readonly number[];
  /** Added in bulk at the end, to measure memory per peer on a running node. */
  readonly memoryAdds: { readonly from: number; readonly to: number };
}

/** Peers added in bulk for the memory measurement. */
export const memoryAddCount = (peers: number): number => Math.min(peers, 10_000);

const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, k) => from + k);

/** Throws a sentence naming the value when the numbers do not fit 10.0.0.0/8 in /24s. */
export function makePlan(o: PlanInput): Plan {
  const puts = Math.ceil(o.churnEvents / 2), dels = Math.floor(o.churnEvents / 2);
  if (!Number.isInteger(o.peers) || o.peers < 1) throw new Error(`Cannot plan ${o.peers} peers: want a positive integer`);
  if (dels > o.peers) throw new Error(`Cannot delete ${dels} peers during churn: there are only ${o.peers}`);
  const eventsFrom = o.peers + OWN_GAP + 1;
  const memFrom = eventsFrom + o.events + puts, adds = memoryAddCount(o.peers);
  const last = memFrom + adds - 1;
  if (last > MAX_INDEX) {
    throw new Error(`Cannot fit ${o.peers} peers + ${o.events} events + ${puts} churn puts + ${adds} bulk adds (+${OWN_GAP} free) ` +
      `in 10.0.0.0/8 as /24s: needs index ${last}, at most ${MAX_INDEX}`);
  }
  return {
    initial: { from: 1, to: o.peers },
    events: range(eventsFrom, o.events),
    churnPuts: range(eventsFrom + o.events, puts),
    churnDeletes: range(1, dels),
    memoryAdds: { from: memFrom, to: last },
  };
}

/** The bulk-writer operations (test/lib/etcd-bulk.ts) that put peers from … to. */
export function putOps(from: number, to: number): { op: "put"; key: string; value: string }[] {
  const ops: { op: "put"; key: string; value: string }[] = [];
  for (let i = from; i <= to; i++) ops.push({ op: "put", key: etcdKey(i), value: leaseValue(i) });
  return ops;
}

/** How a programmed peer is compared: "<VTEP MAC> <public IP>". */
export const peerSignature = (vtepMAC: string, remote: string): string => `${vtepMAC.toLowerCase()} ${remote}`;

/** Prefix → signature of every peer etcd holds once the given phases ran (for the final comparison). */
export function expectedPeers(plan: Plan, done: { events: boolean; churn: boolean; memory?: boolean }): Map<string, string> {
  const out = new Map<string, string>();
  const deleted = new Set(done.churn ? plan.churnDeletes : []);
  const sig = (i: number): string => peerSignature(leaseMAC(i), leasePublicIP(i));
  for (let i = plan.initial.from; i <= plan.initial.to; i++) if (!deleted.has(i)) out.set(leasePrefix(i), sig(i));
  for (const i of [...(done.events ? plan.events : []), ...(done.churn ? plan.churnPuts : [])]) out.set(leasePrefix(i), sig(i));
  if (done.memory) for (let i = plan.memoryAdds.from; i <= plan.memoryAdds.to; i++) out.set(leasePrefix(i), sig(i));
  return out;
}
