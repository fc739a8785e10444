/**
 * Choosing our subnet(s) from the leases in the store: flannel's
 * tryAcquireLease, as a pure function (no I/O; randomness is passed in).
 *
 * How it works, in flannel's order:
 *  a) reuse: a lease whose public address is ours (PublicIP; PublicIPv6 for
 *     an IPv6-only network — flannel matches on PublicIP alone, so a node
 *     whose IPv6 changed keeps its lease). If it no longer fits the config
 *     (wrong length, outside SubnetMin..SubnetMax, family mismatch) it is
 *     returned in `stale` for the caller to delete, as flannel does. When
 *     several leases name our address (flannel takes the first; another
 *     writer of the store can plant one), the one holding the subnet(s) of
 *     our subnet file is ours: a planted lease sorting first must not move
 *     a restarting node to its subnet and VTEP MAC.
 *  b) previous: the subnet(s) from our subnet file, if they fit the config
 *     and no lease overlaps them (flannel checks only the IPv4 key; we check
 *     every family).
 *  c) new: per enabled family, the first 100 free subnets from SubnetMin to
 *     SubnetMax, and one of them at random; dual stack picks one of each.
 * Both families go through the same code: a family is a `SubnetRange` (length,
 * min, max) and a lease's subnet of that family. Free-subnet search walks
 * the candidates and the occupied intervals (sorted) together, jumping over
 * each occupied interval in one step, so it costs O(leases log leases +
 * FREE_CANDIDATES), not leases × candidates nor one step per taken subnet.
 * The walk does its arithmetic on BigInts, except for IPv4, where the same
 * walk runs on numbers (exact for 32 bits) over one sorted Float64Array:
 * a node starting among 100,000 IPv4 leases pays a few ms for it, not the
 * ~60 ms of 100,000 BigInt intervals.
 */
import { TwillError } from "../errors.js";
import { compareIP, formatPrefix, fromBig, prefixEqual, prefixOverlaps, toBig, bits, ipEqual, type Family, type IP, type Prefix } from "../net/ip.js";
import { formatLeaseKey, type LeaseSubnets } from "./parse.js";
import type { Lease, NetConfig } from "./types.js";

export const FREE_CANDIDATES = 100;

export interface ChooseSubnetInput {
  readonly config: NetConfig;
  readonly leases: readonly Lease[];
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  /** From our subnet file (readSubnetFile): what we had before a restart. */
  readonly previous?: LeaseSubnets;
  /** Uniform in [0, 1), like Math.random. */
  readonly random: () => number;
}

export interface SubnetChoice extends LeaseSubnets {
  readonly kind: "reuse" | "previous" | "new";
  readonly key: string;
  /** For "reuse": the lease found. */
  readonly lease?: Lease;
  /** Leases with our public address that no longer fit the config: delete them. */
  readonly stale: readonly Lease[];
}

/** One family's allocation range: subnet length and the first and last subnet. */
export interface SubnetRange { readonly len: number; readonly min: Prefix; readonly max: Prefix }

const FAMILIES: readonly Family[] = [4, 6];

export const subnetOf = (l: LeaseSubnets, f: Family): Prefix | undefined => (f === 4 ? l.subnet : l.ipv6Subnet);

function rangeOf(c: NetConfig, f: Family): SubnetRange | undefined {
  const [on, len, min, max] = f === 4
    ? [c.enableIPv4, c.subnetLen, c.subnetMin, c.subnetMax]
    : [c.enableIPv6, c.ipv6SubnetLen, c.ipv6SubnetMin, c.ipv6SubnetMax];
  return on && min && max ? { len, min, max } : undefined;
}

function fits(r: SubnetRange | undefined, p: Prefix | undefined): boolean {
  if (!r || !p) return !r && !p;
  return p.len === r.len && compareIP(p.ip, r.min.ip) >= 0 && compareIP(p.ip, r.max.ip) <= 0;
}

/** True when every family of `s` matches the config (flannel's isSubnetConfigCompat). */
export function fitsConfig(config: NetConfig, s: LeaseSubnets): boolean {
  return FAMILIES.every((f) => fits(rangeOf(config, f), subnetOf(s, f)));
}

/** True when the two leases share any address, in either family. */
export function leasesOverlap(a: LeaseSubnets, b: LeaseSubnets): boolean {
  return FAMILIES.some((f) => {
    const x = subnetOf(a, f), y = subnetOf(b, f);
    return !!x && !!y && prefixOverlaps(x, y);
  });
}

type Interval = { lo: bigint; hi: bigint };
/** An address as a number: one BigInt built per address, not one per byte (toBig), for 100,000 leases. */
const value = (ip: IP): bigint => {
  const b = ip.bytes;
  if (b.length !== 4) return toBig(ip);
  return BigInt(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0);
};

/** The subnets of family `f` among the leases, as sorted address intervals. */
function occupied<T extends LeaseSubnets>(leases: readonly T[], f: Family): (Interval & { lease: T })[] {
  const out: (Interval & { lease: T })[] = [];
  for (const lease of leases) {
    const p = subnetOf(lease, f);
    if (!p) continue;
    const lo = value(p.ip);
    out.push({ lo, hi: lo + (1n << BigInt(bits(f) - p.len)) - 1n, lease });
  }
  return out.sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
}

/** Every pair of leases whose subnets overlap (a corrupt store, or a lost race). */
export function findOverlaps<T extends LeaseSubnets>(leases: readonly T[]): [T, T][] {
  const pairs: [T, T][] = [];
  for (const f of FAMILIES) {
    const iv = occupied(leases, f);
    for (let i = 0; i < iv.length; i++) {
      for (let j = i + 1; j < iv.length && iv[j]!.lo <= iv[i]!.hi; j++) pairs.push([iv[i]!.lease, iv[j]!.lease]);
    }
  }
  return pairs.filter(([a, b], i) => pairs.findIndex(([c, d]) => (c === a && d === b) || (c === b && d === a)) === i);
}

/** Up to `limit` subnets of the range that overlap no lease, in order. */
export function freeSubnets(r: SubnetRange, f: Family, leases: readonly LeaseSubnets[], limit = FREE_CANDIDATES): Prefix[] {
  if (f === 4) return freeSubnets4(r, leases, limit);
  const taken = occupied(leases, f);
  const step = 1n << BigInt(bits(f) - r.len);
  const last = toBig(r.max.ip);
  const out: Prefix[] = [];
  let t = 0;
  for (let v = toBig(r.min.ip); v <= last && out.length < limit;) {
    while (t < taken.length && taken[t]!.hi < v) t++; // intervals that end before v end before every later v too
    if (t < taken.length && taken[t]!.lo <= v + step - 1n) {
      // Taken: jump to the first subnet after this interval (one step per
      // occupied run, not per occupied subnet: 100,000 leases cost 100,000
      // interval checks, not 100,000 subnets built and compared).
      v = ((taken[t]!.hi + step) / step) * step;
      continue;
    }
    out.push({ ip: fromBig(f, v), len: r.len });
    v += step;
  }
  return out;
}

/** Addresses in an IPv4 subnet, by its length. */
const SIZE4 = Float64Array.from({ length: 33 }, (_, len) => 2 ** (32 - len));

/** An IPv4 address as a number (exact: 32 bits fit a double). */
const u32 = (ip: IP): number => {
  const b = ip.bytes;
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
};

/**
 * freeSubnets for IPv4, the same walk on numbers: each lease's subnet is
 * one number, base × 64 + length (under 2^38, exact), in a Float64Array
 * sorted natively — at 100,000 leases the BigInt intervals cost ~60 ms of
 * a node's start, this a few.
 */
function freeSubnets4(r: SubnetRange, leases: readonly LeaseSubnets[], limit: number): Prefix[] {
  const packed = new Float64Array(leases.length);
  let n = 0;
  for (const l of leases) if (l.subnet && l.subnet.ip.family === 4) packed[n++] = u32(l.subnet.ip) * 64 + l.subnet.len;
  const taken = packed.subarray(0, n).sort();
  const lo = (i: number): number => Math.floor(taken[i]! / 64);
  const hi = (i: number): number => lo(i) + SIZE4[taken[i]! % 64]! - 1;
  const step = 2 ** (32 - r.len);
  const last = u32(r.max.ip);
  const out: Prefix[] = [];
  let t = 0;
  for (let v = u32(r.min.ip); v <= last && out.length < limit;) {
    while (t < n && hi(t) < v) t++;
    if (t < n && lo(t) <= v + step - 1) {
      v = Math.floor((hi(t) + step) / step) * step;
      continue;
    }
    out.push({ ip: fromBig(4, BigInt(v)), len: r.len });
    v += step;
  }
  return out;
}

/** Whether lease `l` holds exactly the subnet(s) of `prev` (our subnet file's), family by family; false without `prev`. */
export function holdsSubnets(l: LeaseSubnets, prev: LeaseSubnets | undefined): boolean {
  return !!prev && FAMILIES.every((fam) => {
    const a = subnetOf(l, fam), b = subnetOf(prev, fam);
    return a && b ? prefixEqual(a, b) : !a && !b;
  });
}

function isOurs(l: Lease, f: Family, ip: IP): boolean {
  const theirs = f === 4 ? l.publicIP : l.publicIPv6;
  return !!theirs && ipEqual(theirs, ip);
}

/** Picks our subnet(s); throws ERR_SUBNET_EXHAUSTED when a family has no free subnet. */
export function chooseSubnet(input: ChooseSubnetInput): SubnetChoice {
  const { config, leases } = input;
  const ranges = new Map(FAMILIES.map((f) => [f, rangeOf(config, f)] as const));
  const done = (kind: SubnetChoice["kind"], s: LeaseSubnets, extra: { lease?: Lease; stale: Lease[] }): SubnetChoice =>
    ({ kind, ...s, key: formatLeaseKey(s.subnet, s.ipv6Subnet), ...extra });

  // a) a lease with our public address
  const [f, ip] = config.enableIPv4 && input.publicIP ? [4 as const, input.publicIP] : [6 as const, input.publicIPv6];
  const mine = ip ? leases.filter((l) => isOurs(l, f, ip)) : [];
  const stale = mine.filter((l) => !fitsConfig(config, l));
  const prev = input.previous;
  const reuse = mine.find((l) => fitsConfig(config, l) && holdsSubnets(l, prev)) ?? mine.find((l) => fitsConfig(config, l));
  if (reuse) return done("reuse", reuse, { lease: reuse, stale });

  // b) the subnet(s) we had before
  if (prev && fitsConfig(config, prev) && !leases.some((l) => leasesOverlap(l, prev))) {
    return done("previous", { ...(prev.subnet && { subnet: prev.subnet }), ...(prev.ipv6Subnet && { ipv6Subnet: prev.ipv6Subnet }) }, { stale });
  }

  // c) one at random among the first free ones, per family
  const picked: { subnet?: Prefix; ipv6Subnet?: Prefix } = {};
  for (const fam of FAMILIES) {
    const r = ranges.get(fam);
    if (!r) continue;
    const free = freeSubnets(r, fam, leases);
    if (free.length === 0) {
      throw new TwillError("ERR_SUBNET_EXHAUSTED",
        `no free /${r.len} subnet between ${formatPrefix(r.min)} and ${formatPrefix(r.max)} (${leases.length} leases)`);
    }
    const choice = free[Math.min(free.length - 1, Math.floor(input.random() * free.length))]!;
    if (fam === 4) picked.subnet = choice;
    else picked.ipv6Subnet = choice;
  }
  return done("new", picked, { stale });
}
