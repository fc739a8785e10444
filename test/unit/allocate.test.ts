import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseSubnet, findOverlaps, fitsConfig, freeSubnets, leasesOverlap } from "../../src/lease/allocate.js";
import { parseNetConfig } from "../../src/config/netconf.js";
import { parseLease, parseLeaseKey } from "../../src/lease/parse.js";
import type { Lease } from "../../src/lease/types.js";
import { isTwillError } from "../../src/errors.js";
import { formatPrefix, parseIP, parsePrefix } from "../../src/net/ip.js";

const V4CONF = parseNetConfig(`{"Network":"10.244.0.0/16"}`);
const DUALCONF = parseNetConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`);
const ME = parseIP("192.168.0.1");
const ME6 = parseIP("fd00::1");

/** A deterministic PRNG (mulberry32), so "random" choices are reproducible. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let mac = 1;
function lease(key: string, ip = "192.168.9.9", ip6 = "fd00::9"): Lease {
  const { ipv6Subnet } = parseLeaseKey(key);
  const data = () => `{"VNI":1,"VtepMAC":"02:00:00:00:00:${(mac++ % 250 + 1).toString(16).padStart(2, "0")}"}`;
  const v4 = key.startsWith("0.0.0.0-0") ? "0.0.0.0" : ip;
  return parseLease(key, `{"PublicIP":"${v4}","PublicIPv6":${ipv6Subnet ? `"${ip6}"` : "null"},"BackendType":"vxlan"` +
    (v4 !== "0.0.0.0" ? `,"BackendData":${data()}` : "") + (ipv6Subnet ? `,"BackendV6Data":${data()}` : "") + "}");
}
const v4leases = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => lease(`10.244.${from + i}.0-24`));

test("reuses the lease whose PublicIP is ours", () => {
  const leases = [...v4leases(1, 3), lease("10.244.7.0-24", "192.168.0.1")];
  const c = chooseSubnet({ config: V4CONF, leases, publicIP: ME, random: () => 0 });
  assert.equal(c.kind, "reuse");
  assert.equal(c.key, "10.244.7.0-24");
  assert.equal(c.lease, leases[3]);
  assert.deepEqual(c.stale, []);
});

test("several leases name our PublicIP: the one holding our previous subnet is ours (a planted one sorting first is not)", () => {
  const planted = lease("10.244.238.0-24", "192.168.0.1"), ours = lease("10.244.3.0-24", "192.168.0.1");
  const leases = [...v4leases(1, 2), planted, ours];
  const c = chooseSubnet({ config: V4CONF, leases, publicIP: ME, previous: { subnet: parsePrefix("10.244.3.0/24") }, random: () => 0 });
  assert.equal(c.kind, "reuse");
  assert.equal(c.lease, ours);
  // without a subnet file, flannel's rule: the first one
  assert.equal(chooseSubnet({ config: V4CONF, leases, publicIP: ME, random: () => 0 }).lease, planted);
});

test("a lease with our IP that no longer fits the config is stale; a new subnet is picked", () => {
  const leases = [lease("10.244.7.0-25", "192.168.0.1"), lease("10.9.0.0-24", "192.168.0.1")];
  const c = chooseSubnet({ config: V4CONF, leases, publicIP: ME, random: () => 0 });
  assert.equal(c.kind, "new");
  assert.deepEqual(c.stale.map((l) => l.key), ["10.244.7.0-25", "10.9.0.0-24"]);
  assert.equal(c.key, "10.244.1.0-24");
  // An IPv4-only lease of ours under a dual-stack config does not fit either.
  const d = chooseSubnet({ config: DUALCONF, leases: [lease("10.244.7.0-24", "192.168.0.1")], publicIP: ME, publicIPv6: ME6, random: () => 0 });
  assert.equal(d.kind, "new");
  assert.equal(d.stale.length, 1);
});

test("uses the previous subnet when it is free and inside the range", () => {
  const previous = { subnet: parsePrefix("10.244.42.0/24") };
  const c = chooseSubnet({ config: V4CONF, leases: v4leases(1, 3), publicIP: ME, previous, random: () => 0 });
  assert.equal(c.kind, "previous");
  assert.equal(c.key, "10.244.42.0-24");
  // Taken by someone else → a new one.
  const taken = chooseSubnet({ config: V4CONF, leases: [lease("10.244.42.0-24")], publicIP: ME, previous, random: () => 0 });
  assert.equal(taken.kind, "new");
  assert.equal(taken.key, "10.244.1.0-24");
  // Outside SubnetMin..SubnetMax, or the wrong length → ignored.
  for (const p of ["10.244.0.0/24", "10.245.3.0/24", "10.244.42.0/25"]) {
    const r = chooseSubnet({ config: V4CONF, leases: [], publicIP: ME, previous: { subnet: parsePrefix(p) }, random: () => 0 });
    assert.equal(r.kind, "new", p);
  }
});

test("picks at random among the first 100 free subnets", () => {
  const leases = [...v4leases(1, 5), lease("10.244.16.0-20")]; // a big lease covers .16 to .31
  assert.equal(chooseSubnet({ config: V4CONF, leases, random: () => 0 }).key, "10.244.6.0-24");
  // 100 free: 6..15 (10), then 32..121 (90).
  assert.equal(chooseSubnet({ config: V4CONF, leases, random: () => 0.9999 }).key, "10.244.121.0-24");
  const rnd = seeded(42);
  const seen = new Set<string>();
  for (let i = 0; i < 500; i++) {
    const c = chooseSubnet({ config: V4CONF, leases, random: rnd });
    const third = Number(c.key.split(".")[2]);
    assert.ok((third >= 6 && third <= 15) || (third >= 32 && third <= 121), c.key);
    seen.add(c.key);
  }
  assert.ok(seen.size > 80, `spread over the candidates (${seen.size})`);
  // Same seed, same choices.
  const a = seeded(7), b = seeded(7);
  assert.equal(chooseSubnet({ config: V4CONF, leases, random: a }).key, chooseSubnet({ config: V4CONF, leases, random: b }).key);
});

test("freeSubnets walks overlapping and unsorted leases correctly", () => {
  const r = { len: 24, min: parsePrefix("10.244.1.0/24"), max: parsePrefix("10.244.255.0/24") };
  const leases = [lease("10.244.8.0-21"), lease("10.244.2.0-24"), lease("10.244.10.0-24"), lease("10.244.0.0-22")];
  const free = freeSubnets(r, 4, leases, 5).map(formatPrefix);
  assert.deepEqual(free, ["10.244.4.0/24", "10.244.5.0/24", "10.244.6.0/24", "10.244.7.0/24", "10.244.16.0/24"]);
});

test("freeSubnets (IPv4, on numbers) equals a subnet-by-subnet search over random leases of every length, also at the top of the address space", () => {
  const rand = seeded(42);
  const int = (n: number) => Math.floor(rand() * n);
  const at = (base: number, len: number) => `${base >>> 24}.${(base >>> 16) & 255}.${(base >>> 8) & 255}.${base & 255}/${len}`;
  // A lease subnet as a prefix of its length, aligned, somewhere in [lo, lo + span).
  const subnetIn = (lo: number, span: number, len: number) => {
    const size = 2 ** (32 - len);
    return at(lo + Math.floor(int(span) / size) * size, len);
  };
  for (const [bottom, span] of [[(10 << 24) >>> 0, 2 ** 14], [0xffffc000, 2 ** 14]] as const) {
    for (let round = 0; round < 40; round++) {
      const len = 24 + int(5);
      const leases = Array.from({ length: int(120) }, () => {
        const p = parsePrefix(subnetIn(bottom, span, 18 + int(15)));
        return lease(formatPrefix(p).replace("/", "-"));
      });
      const size = 2 ** (32 - len);
      const r = { len, min: parsePrefix(at(bottom + size, len)), max: parsePrefix(at(bottom + span - size, len)) };
      const want: string[] = [];
      for (let v = bottom + size; v <= bottom + span - size && want.length < 100; v += size) {
        const p = parsePrefix(at(v, len));
        if (!leases.some((l) => leasesOverlap(l, { subnet: p }))) want.push(formatPrefix(p));
      }
      assert.deepEqual(freeSubnets(r, 4, leases).map(formatPrefix), want, `round ${round} from ${at(bottom, 32)}`);
    }
  }
});

test("exhaustion throws ERR_SUBNET_EXHAUSTED", () => {
  const tiny = parseNetConfig(`{"Network":"10.0.0.0/28"}`); // /30s: .4, .8, .12
  const leases = ["10.0.0.4-30", "10.0.0.8-30", "10.0.0.12-30"].map((k) => lease(k));
  assert.equal(chooseSubnet({ config: tiny, leases: leases.slice(0, 2), random: () => 0 }).key, "10.0.0.12-30");
  assert.throws(() => chooseSubnet({ config: tiny, leases, random: () => 0 }),
    (e) => isTwillError(e, "ERR_SUBNET_EXHAUSTED") && /no free \/30 subnet between 10.0.0.4\/30 and 10.0.0.12\/30/.test(e.message));
});

test("SubnetMin and SubnetMax are honoured", () => {
  const c = parseNetConfig(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.50.0","SubnetMax":"10.244.52.0"}`);
  const rnd = seeded(1);
  for (let i = 0; i < 50; i++) assert.match(chooseSubnet({ config: c, leases: [], random: rnd }).key, /^10\.244\.5[0-2]\.0-24$/);
  assert.throws(() => chooseSubnet({ config: c, leases: v4leases(50, 52), random: rnd }), (e) => isTwillError(e, "ERR_SUBNET_EXHAUSTED"));
  assert.ok(!fitsConfig(c, { subnet: parsePrefix("10.244.53.0/24") }));
  assert.ok(fitsConfig(c, { subnet: parsePrefix("10.244.52.0/24") }));
});

test("dual stack picks one subnet of each family", () => {
  const leases = [lease("10.244.1.0-24&fc00:0:0:1::-64"), lease("10.244.2.0-24&fc00:0:0:2::-64")];
  const c = chooseSubnet({ config: DUALCONF, leases, publicIP: ME, publicIPv6: ME6, random: () => 0 });
  assert.equal(c.kind, "new");
  assert.equal(c.key, "10.244.3.0-24&fc00:0:0:3::-64");
  const rnd = seeded(3);
  for (let i = 0; i < 50; i++) {
    const r = chooseSubnet({ config: DUALCONF, leases, random: rnd });
    assert.ok(r.subnet && r.ipv6Subnet, r.key);
    assert.ok(!leases.some((l) => leasesOverlap(l, r)), r.key);
  }
  // Reuse matches on PublicIP, like flannel.
  const mine = lease("10.244.9.0-24&fc00:0:0:9::-64", "192.168.0.1", "fd00::77");
  assert.equal(chooseSubnet({ config: DUALCONF, leases: [...leases, mine], publicIP: ME, publicIPv6: ME6, random: () => 0 }).key, mine.key);
  // Previous needs both families free.
  const previous = { subnet: parsePrefix("10.244.9.0/24"), ipv6Subnet: parsePrefix("fc00:0:0:2::/64") };
  assert.equal(chooseSubnet({ config: DUALCONF, leases, previous, random: () => 0 }).kind, "new");
  assert.equal(chooseSubnet({ config: DUALCONF, leases, previous: { ...previous, ipv6Subnet: parsePrefix("fc00:0:0:9::/64") }, random: () => 0 }).kind, "previous");
});

test("IPv6-only: reuse by PublicIPv6, new keys in flannel's form", () => {
  const conf = parseNetConfig(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`);
  const c = chooseSubnet({ config: conf, leases: [], publicIPv6: ME6, random: () => 0 });
  assert.equal(c.key, "0.0.0.0-0&fc00:0:0:1::-64");
  assert.equal(c.subnet, undefined);
  const mine = lease("0.0.0.0-0&fc00:0:0:5::-64", "0.0.0.0", "fd00::1");
  assert.equal(chooseSubnet({ config: conf, leases: [mine], publicIPv6: ME6, random: () => 0 }).kind, "reuse");
});

test("findOverlaps reports every overlapping pair once", () => {
  const a = lease("10.244.0.0-22"), b = lease("10.244.2.0-24"), c = lease("10.244.3.0-24"), d = lease("10.244.9.0-24");
  const e = lease("10.244.20.0-24&fc00:0:0:1::-64"), f = lease("10.244.21.0-24&fc00:0:0:1::-64");
  const pairs = findOverlaps([d, c, a, b, e, f]).map(([x, y]) => [x.key, y.key].sort().join(" "));
  assert.deepEqual(pairs.sort(), ["10.244.0.0-22 10.244.2.0-24", "10.244.0.0-22 10.244.3.0-24", "10.244.20.0-24&fc00:0:0:1::-64 10.244.21.0-24&fc00:0:0:1::-64"]);
  assert.deepEqual(findOverlaps([d, e]), []);
});

test("IPv6 subnets next to each other, listed out of order: free subnets and overlaps are exact", () => {
  // fc00:0:0:<n>::/64 differ by 2^64: far below what a double tells apart near 2^127.
  const keys = [5, 1, 7, 3, 2, 4].map((n) => `0.0.0.0-0&fc00:0:0:${n}::-64`);
  const leases = keys.map((k) => lease(k));
  const range = { len: 64, min: parsePrefix("fc00:0:0:1::/64"), max: parsePrefix("fc00:0:0:ffff::/64") };
  assert.deepEqual(freeSubnets(range, 6, leases, 3).map(formatPrefix), ["fc00:0:0:6::/64", "fc00:0:0:8::/64", "fc00:0:0:9::/64"]);
  const wide = lease("0.0.0.0-0&fc00:0:0:2::-63"); // holds :2 and :3
  const pairs = findOverlaps([...leases, wide]).map(([a, b]) => [a.key, b.key].sort().join(" ~ ")).sort();
  assert.deepEqual(pairs, [
    "0.0.0.0-0&fc00:0:0:2::-63 ~ 0.0.0.0-0&fc00:0:0:2::-64",
    "0.0.0.0-0&fc00:0:0:2::-63 ~ 0.0.0.0-0&fc00:0:0:3::-64",
  ]);
});
