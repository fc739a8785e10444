/**
 * The soak's leases: which subnet belongs to whom, and the lease events the
 * churn writes. Everything is flannel's etcd key and LeaseAttrs JSON, in the
 * cluster network 10.244.0.0/16 with /24 subnets (DEFAULT_NET_CONFIG).
 *
 *   10.244.1-4.0/24     the four real nodes (h1..h4; each node's subnet file
 *                       is written before it starts, so it re-acquires it)
 *   10.244.10.0/24      the anchor: a valid fake lease written once, never
 *                       changed; the "public-ip-conflict" bad leases claim its
 *                       public IP
 *   10.244.11-49.0/24,  the valid pool: fake peers put, updated, deleted
 *   10.244.100-249.0/24
 *   10.244.50-99.0/24   the bad pool: each slot always carries one kind of
 *                       bad lease (BAD_KINDS[slot % kinds])
 *   10.244.250.0/24     the probe: written after an etcd restart to see
 *                       each node's watch working again
 *
 * Keys compare as strings (flannel's and twill's "key order"):
 * "10.244.1.0-24" < "10.244.10.0-24" < "10.244.4.0-24" < "10.244.50.0-24"
 * … "10.244.99.0-24". So every bad key sorts after every real node's key
 * and the anchor's: a bad lease naming a real node's (or the anchor's)
 * public IP is the later one both by arrival and in key order, and twill's
 * rule (the first owner keeps the address) must reject it on every path.
 * (A bad key sorting *before* the honest one — e.g. 10.244.202.0/24 against
 * 10.244.3.0/24 — made the bad lease the owner on every full re-list until
 * re-lists kept the leases a node holds first; a node's first list after a
 * restart still decides by key order: see the soak report's notes.)
 *
 * How it works: `Churn` is a seeded generator of events. Each event picks a
 * slot: 15 % of the time one of the bad pool (put its bad lease when absent,
 * delete it when present), else one of the valid pool (put when absent;
 * when present delete it, or one time in five update it with a new VTEP MAC
 * and public IP). About 105 valid fake peers are live in steady state.
 * Valid public IPs are 172.20.<generation>.<slot>: distinct between slots,
 * never a real node's (192.168.50.x), never in the cluster network.
 * `expectedPeer` says what a node must program for a key and value read
 * back from etcd — decided from the key's role here, not by twill's code.
 */
import { DEFAULT_NET_CONFIG } from "../lib/twill.js";
import type { Rand } from "../lib/prng.js";

export const ETCD_PREFIX = "/coreos.com/network";
export const NET_CONFIG = DEFAULT_NET_CONFIG;

export const REAL_SLOTS = [1, 2, 3, 4] as const;
export const ANCHOR_SLOT = 10;
export const BAD_SLOTS = { from: 50, to: 99 } as const;
export const PROBE_SLOT = 250;
/** The valid pool: 11–49 and 100–249. */
export const VALID_SLOTS: readonly number[] = [...Array.from({ length: 39 }, (_, i) => 11 + i), ...Array.from({ length: 150 }, (_, i) => 100 + i)];

export const BAD_KINDS = [
  "loopback", "multicast", "broadcast", "unspecified", "own-node", "in-cluster-network",
  "bad-json", "public-ip-conflict", "multicast-vtep-mac",
] as const;
export type BadKind = (typeof BAD_KINDS)[number];

export type SlotRole = "real" | "anchor" | "valid" | "bad" | "probe" | "other";

const hex = (n: number): string => (n & 255).toString(16).padStart(2, "0");

export const slotKey = (slot: number): string => `10.244.${slot}.0-24`;
export const slotPrefix = (slot: number): string => `10.244.${slot}.0/24`;
export const etcdKey = (slot: number): string => `${ETCD_PREFIX}/subnets/${slotKey(slot)}`;

/** The slot of a key under <prefix>/subnets/ ("10.244.37.0-24" → 37), or undefined for any other key. */
export function keySlot(key: string): number | undefined {
  const m = /(?:^|\/)10\.244\.(\d{1,3})\.0-24$/.exec(key);
  const n = m ? Number(m[1]) : NaN;
  return n >= 0 && n <= 255 ? n : undefined;
}

export function slotRole(slot: number): SlotRole {
  if ((REAL_SLOTS as readonly number[]).includes(slot)) return "real";
  if (slot === ANCHOR_SLOT) return "anchor";
  if (slot === PROBE_SLOT) return "probe";
  if (VALID_SLOTS.includes(slot)) return "valid";
  if (slot >= BAD_SLOTS.from && slot <= BAD_SLOTS.to) return "bad";
  return "other";
}

export const badKindOf = (slot: number): BadKind => BAD_KINDS[slot % BAD_KINDS.length]!;

/** flannel's LeaseAttrs JSON, field for field as flanneld writes it. */
export const leaseJSON = (publicIP: string, vtepMAC: string): string =>
  JSON.stringify({ PublicIP: publicIP, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: vtepMAC } });

export const fakePublicIP = (slot: number, gen: number): string => `172.20.${gen % 250}.${slot}`;
export const fakeMAC = (slot: number, gen: number): string => `02:5c:01:${hex(gen >> 8)}:${hex(gen)}:${hex(slot)}`;
export const ANCHOR_IP = "172.21.0.10";
export const anchorLease = (): string => leaseJSON(ANCHOR_IP, "02:5c:02:00:00:0a");
export const probeLease = (k: number): string => leaseJSON(`172.21.250.${1 + (k % 250)}`, `02:5c:03:00:${hex(k >> 8)}:${hex(k)}`);

/** The bad lease of a bad-pool slot; `realIPs` are the four nodes' underlay addresses. */
export function badLease(slot: number, realIPs: readonly string[]): string {
  const kind = badKindOf(slot);
  const mac = `02:5c:04:00:00:${hex(slot)}`;
  switch (kind) {
    case "loopback": return leaseJSON("127.0.0.1", mac);
    case "multicast": return leaseJSON("224.0.0.5", mac);
    case "broadcast": return leaseJSON("255.255.255.255", mac);
    case "unspecified": return leaseJSON("0.0.0.0", mac);
    case "own-node": return leaseJSON(realIPs[slot % realIPs.length]!, mac);
    case "in-cluster-network": return leaseJSON(`10.244.${slot}.1`, mac);
    case "bad-json": return leaseJSON(`172.22.0.${slot}`, mac).slice(0, 60);
    case "public-ip-conflict": return leaseJSON(ANCHOR_IP, mac);
    case "multicast-vtep-mac": return leaseJSON(`172.22.1.${slot}`, `01:00:5e:00:00:${hex(slot)}`);
  }
}

export interface ChurnEvent {
  readonly op: "put" | "delete";
  readonly slot: number;
  readonly key: string;
  readonly value?: string;
  readonly what: "valid-put" | "valid-update" | "valid-delete" | "bad-put" | "bad-delete";
}

/** The lease events of the soak, from a seeded PRNG (see the file comment). */
export class Churn {
  private readonly live = new Set<number>();
  private readonly gen = new Map<number, number>();
  constructor(private readonly rand: Rand, private readonly realIPs: readonly string[]) {}

  next(): ChurnEvent {
    const r = this.rand;
    if (r() < 0.15) {
      const slot = BAD_SLOTS.from + Math.floor(r() * (BAD_SLOTS.to - BAD_SLOTS.from + 1));
      if (this.live.delete(slot)) return { op: "delete", slot, key: etcdKey(slot), what: "bad-delete" };
      this.live.add(slot);
      return { op: "put", slot, key: etcdKey(slot), value: badLease(slot, this.realIPs), what: "bad-put" };
    }
    const slot = VALID_SLOTS[Math.floor(r() * VALID_SLOTS.length)]!;
    const present = this.live.has(slot);
    if (present && r() >= 0.2) {
      this.live.delete(slot);
      return { op: "delete", slot, key: etcdKey(slot), what: "valid-delete" };
    }
    const g = (this.gen.get(slot) ?? 0) + 1;
    this.gen.set(slot, g);
    this.live.add(slot);
    return { op: "put", slot, key: etcdKey(slot), value: leaseJSON(fakePublicIP(slot, g), fakeMAC(slot, g)), what: present ? "valid-update" : "valid-put" };
  }
}

/** How a programmed peer is compared: "<VTEP MAC> <public IP>" (as bench/scale). */
export const peerSignature = (vtepMAC: string, publicIP: string): string => `${vtepMAC.toLowerCase()} ${publicIP}`;

/**
 * What a node must program for `key` = `value` read back from etcd: the
 * peer's signature, or undefined when it must hold nothing for it (a bad
 * lease, the node's own, a key of no role). Throws a sentence when a key
 * of a valid role holds a value that does not parse (the harness wrote it).
 */
export function expectedPeer(key: string, value: string, ownSlot: number): { prefix: string; signature: string } | undefined {
  const slot = keySlot(key);
  if (slot === undefined || slot === ownSlot) return undefined;
  const role = slotRole(slot);
  if (role === "bad" || role === "other") return undefined;
  let v: { PublicIP?: string; BackendData?: { VtepMAC?: string } };
  try {
    v = JSON.parse(value) as typeof v;
  } catch {
    throw new Error(`Cannot read the ${role} lease ${key}: ${value.slice(0, 80)} is not JSON`);
  }
  if (!v.PublicIP || !v.BackendData?.VtepMAC) throw new Error(`Cannot read the ${role} lease ${key}: no PublicIP or VtepMAC in ${value.slice(0, 120)}`);
  return { prefix: slotPrefix(slot), signature: peerSignature(v.BackendData.VtepMAC, v.PublicIP) };
}
