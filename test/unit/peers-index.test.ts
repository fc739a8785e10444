/**
 * SubnetIndex against a brute-force model, for IPv4 and IPv6.
 *
 * The model is a list of buckets, one per (family, length) in the order they
 * were first used, each a list of (prefix, key) in insertion order (adding a
 * prefix again replaces its entry in place; a delete by its owner removes
 * it). `clash` is the first entry, bucket by bucket, that overlaps the prefix
 * and belongs to another key: the index must answer exactly that — the same
 * prefix, not just "some clash" — because the daemon's rejection reasons name
 * it. Random prefixes are drawn from a small space so overlaps are common.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatPrefix, makePrefix, parseIP, parsePrefix, prefixEqual, prefixOverlaps, type Family, type Prefix } from "../../src/net/ip.js";
import { leasesToPeers, SubnetIndex } from "../../src/peers.js";
import type { Lease, NetConfig } from "../../src/lease/types.js";

class Model {
  private readonly buckets: { family: number; len: number; entries: { prefix: Prefix; key: string }[] }[] = [];
  private bucket(p: Prefix, create: boolean) {
    let b = this.buckets.find((x) => x.family === p.ip.family && x.len === p.len);
    if (!b && create) this.buckets.push((b = { family: p.ip.family, len: p.len, entries: [] }));
    return b;
  }
  add(p: Prefix, key: string): void {
    const b = this.bucket(p, true)!;
    const at = b.entries.findIndex((e) => prefixEqual(e.prefix, p));
    if (at >= 0) b.entries[at] = { prefix: p, key };
    else b.entries.push({ prefix: p, key });
  }
  delete(p: Prefix, key: string): void {
    const b = this.bucket(p, false);
    const at = b ? b.entries.findIndex((e) => prefixEqual(e.prefix, p)) : -1;
    if (b && at >= 0 && b.entries[at]!.key === key) b.entries.splice(at, 1);
  }
  clash(p: Prefix, key: string): Prefix | undefined {
    for (const b of this.buckets) {
      if (b.family !== p.ip.family) continue;
      const hit = b.entries.find((e) => e.key !== key && prefixOverlaps(e.prefix, p));
      if (hit) return hit.prefix;
    }
    return undefined;
  }
}

/** A seeded generator, so a failure can be replayed. */
function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return { int: (n: number) => Math.floor(next() * n), next };
}

/** A random prefix of `family` under `base`, with a length in [minLen, maxLen] and random bits below the base. */
function randomPrefix(r: ReturnType<typeof rng>, base: Prefix, minLen: number, maxLen: number): Prefix {
  const bytes = base.ip.bytes.map((b, i) => {
    const keep = (0xff00 >> Math.max(0, Math.min(8, base.len - i * 8))) & 0xff; // the base's bits in this byte
    return (b & keep) | (r.int(256) & ~keep & 0xff);
  });
  return makePrefix({ family: base.ip.family as Family, bytes }, minLen + r.int(maxLen - minLen + 1));
}

const show = (p: Prefix | undefined) => (p ? formatPrefix(p) : "none");

for (const [name, base, minLen, maxLen] of [
  ["IPv4", parsePrefix("10.0.0.0/20"), 16, 32],
  ["IPv4 down to /0", parsePrefix("10.0.0.0/28"), 0, 32],
  ["IPv6", parsePrefix("fc00::/116"), 108, 128],
  ["IPv6 wide lengths", parsePrefix("fc00:0:0:10::/60"), 48, 128],
] as const) {
  test(`SubnetIndex finds the same clash as a brute-force model (${name})`, () => {
    const r = rng(0x5eed ^ minLen);
    const keys = ["a", "b", "c", "d", "e"];
    let clashes = 0;
    for (let round = 0; round < 40; round++) {
      const index = new SubnetIndex(), model = new Model();
      const added: { p: Prefix; key: string }[] = [];
      for (let op = 0; op < 300; op++) {
        const key = keys[r.int(keys.length)]!;
        const roll = r.next();
        if (roll < 0.4) {
          const p = randomPrefix(r, base, minLen, maxLen);
          index.add(p, key);
          model.add(p, key);
          added.push({ p, key });
        } else if (roll < 0.55 && added.length) {
          // A delete by the owner or, sometimes, by another key (which must change nothing).
          const e = added[r.int(added.length)]!;
          const by = r.next() < 0.7 ? e.key : key;
          index.delete(e.p, by);
          model.delete(e.p, by);
        } else {
          const p = r.next() < 0.3 && added.length ? added[r.int(added.length)]!.p : randomPrefix(r, base, minLen, maxLen);
          const want = model.clash(p, key);
          if (want) clashes++;
          assert.equal(show(index.clash(p, key)), show(want), `round ${round} op ${op}: clash(${formatPrefix(p)}, ${key})`);
        }
      }
    }
    // The space is small on purpose: most lookups must find a clash, or the test checks little.
    assert.ok(clashes > 1000, `only ${clashes} clashes were exercised`);
  });
}

test("SubnetIndex keeps the families apart and reports the first bucket made", () => {
  const index = new SubnetIndex();
  index.add(parsePrefix("10.0.0.0/24"), "a");
  index.add(parsePrefix("10.0.0.0/16"), "b");
  index.add(parsePrefix("::/0"), "c");
  // Both buckets hold an overlap; the /24 bucket was made first.
  assert.equal(show(index.clash(parsePrefix("10.0.0.128/25"), "z")), "10.0.0.0/24");
  assert.equal(show(index.clash(parsePrefix("10.0.0.128/25"), "a")), "10.0.0.0/16");
  assert.equal(show(index.clash(parsePrefix("10.0.0.0/8"), "z")), "10.0.0.0/24");
  assert.equal(show(index.clash(parsePrefix("10.1.0.0/16"), "z")), "none");
  // ::/0 overlaps every IPv6 prefix and no IPv4 one (not even 0.0.0.0/0).
  assert.equal(show(index.clash(parsePrefix("fc00::/64"), "z")), "::/0");
  assert.equal(show(index.clash(parsePrefix("0.0.0.0/0"), "c")), "10.0.0.0/24");
  index.delete(parsePrefix("::/0"), "other");
  assert.equal(show(index.clash(parsePrefix("fc00::/64"), "z")), "::/0");
  index.delete(parsePrefix("::/0"), "c");
  assert.equal(show(index.clash(parsePrefix("fc00::/64"), "z")), "none");
  // IPv4 /32 and the top of the range (the unsigned 32-bit key must not go negative).
  index.add(parsePrefix("255.255.255.255/32"), "d");
  assert.equal(show(index.clash(parsePrefix("255.255.255.0/24"), "z")), "255.255.255.255/32");
  assert.equal(show(index.clash(parsePrefix("128.0.0.0/1"), "z")), "255.255.255.255/32");
});

test("leasesToPeers decides alike on a list in key order and the same list shuffled", () => {
  const config: NetConfig = {
    enableIPv4: true, enableIPv6: true, network: parsePrefix("10.0.0.0/8"), subnetLen: 24, ipv6Network: parsePrefix("fc00::/48"), ipv6SubnetLen: 64,
    backend: { type: "vxlan", vni: 1, port: 8472, directRouting: false, mtu: 0, gbp: false, learning: false }, enableNFTables: false,
  };
  // Each lease its own public IPs (one public IP claimed by two leases is a conflict of its own, tested in publicip.test).
  let n = 0;
  const lease = (v4: string, v6: string, key = `${v4.replace("/", "-")}&${v6.replace("/", "-")}`): Lease => ({
    key, subnet: parsePrefix(v4), ipv6Subnet: parsePrefix(v6), publicIP: parseIP(`100.64.0.${++n}`), publicIPv6: parseIP(`2001:db8::${n.toString(16)}`),
    backendType: "vxlan", backendData: { vni: 1, vtepMAC: "0a:00:00:00:00:01" }, backendV6Data: { vni: 1, vtepMAC: "0a:00:00:00:00:02" },
  });
  const leases: Lease[] = [];
  for (let i = 0; i < 50; i++) leases.push(lease(`10.0.${i}.0/24`, `fc00:0:0:${i.toString(16)}::/64`));
  leases.push(lease("10.0.3.0/24", "fc00:0:0:99::/64", "dup-v4"), lease("10.0.99.0/24", "fc00:0:0:7::/64", "dup-v6"), lease("10.0.0.0/24", "fc00:0:0:98::/64", "0-ours"));
  const rules = { config, own: { key: "own", subnet: parsePrefix("10.0.0.0/24") }, checkLength: false };
  const inOrder = [...leases].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const r = rng(7);
  const shuffled = [...leases];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  const a = leasesToPeers(inOrder, rules), b = leasesToPeers(shuffled, rules);
  assert.deepEqual([...b.byKey.keys()], [...a.byKey.keys()]);
  assert.deepEqual(b.peers, a.peers);
  assert.deepEqual(b.rejected, a.rejected);
  assert.deepEqual(a.rejected.map((x) => `${x.key} ${x.code} ${x.reason}`), [
    "0-ours ERR_LEASE_CONFLICT subnet 10.0.0.0/24 is ours, but this lease gives PublicIP 100.64.0.53",
    "10.0.0.0-24&fc00:0:0:0::-64 ERR_LEASE_CONFLICT subnet 10.0.0.0/24 is ours, but this lease gives PublicIP 100.64.0.1",
    "dup-v4 ERR_LEASE_CONFLICT subnet 10.0.3.0/24 overlaps the lease for 10.0.3.0/24",
    "dup-v6 ERR_LEASE_CONFLICT subnet fc00:0:0:7::/64 overlaps the lease for fc00:0:0:7::/64",
  ]);
});
