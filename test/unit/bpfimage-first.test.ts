/**
 * A first start's shortcuts must write exactly what the general code does:
 * BpfImage.sync's new-key path (appendPeer: one probe per map, the value
 * and remote key encoded flat) against the same peers set one at a time
 * through setPeer (the lease-event path), and the flat IPv4 encoders of
 * layout.ts against their general branches. The peers include what the
 * shortcuts hand back to the general code: a subnet listed twice, public
 * IPs shared by several subnets, IPv6 subnets and underlay addresses,
 * DirectRouting peers, upper-case and one-digit-short MACs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { BpfImage, KEY_SIZE, REMOTE_KEY_SIZE, VALUE_SIZE } from "../../src/dataplane/bpfimage.js";
import { decodeEpKey, decodeLpmKey, decodePeer, encodeEpKey, encodeEpKeyAt, encodeLpmKey, encodePeerFields, PeerKind } from "../../src/bpf/layout.js";
import { formatIP, formatPrefix, parseIP, parsePrefix } from "../../src/net/ip.js";
import type { Peer } from "../../src/dataplane/types.js";
import { mulberry32 as prng } from "../lib/prng.js";

const own = [parsePrefix("10.255.255.0/24"), parsePrefix("fd00:255::/64")];
const networks = [parsePrefix("10.0.0.0/8"), parsePrefix("fd00::/16")];
const hex = (n: number) => n.toString(16).padStart(2, "0");

function peers(seed: number, n: number): Peer[] {
  const rand = prng(seed);
  const out: Peer[] = [];
  for (let i = 1; i <= n; i++) {
    const v6 = rand() < 0.15;
    const subnetOf = (k: number) => (v6 ? `fd00:${k.toString(16)}::/64` : `10.${k >> 8}.${k & 255}.0/24`);
    // Now and then a subnet seen before (a second lease for it: the later one wins) or a shared underlay address.
    const k = rand() < 0.05 && i > 1 ? 1 + Math.floor(rand() * (i - 1)) : i;
    const ipIndex = rand() < 0.1 ? Math.floor(rand() * 20) : 1000 + i;
    const publicIP = rand() < 0.1 ? `fc00::${ipIndex.toString(16)}` : `100.64.${(ipIndex >> 8) & 255}.${ipIndex & 255}`;
    let mac = `0e:b0:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`;
    if (rand() < 0.1) mac = mac.toUpperCase();
    out.push({ subnet: parsePrefix(subnetOf(k)), publicIP: parseIP(publicIP), vtepMAC: mac, vni: 1 + Math.floor(rand() * 3), direct: rand() < 0.1 });
  }
  return out;
}

/** What an image holds, by meaning: trie entries by prefix, remotes by address (with the prefix of their first subnet). */
function contents(image: BpfImage): { trie: Map<string, string>; remotes: Map<string, string> } {
  const trie = new Map<string, string>(), remotes = new Map<string, string>();
  for (let s = 0; s < image.top; s++) {
    if (!image.live[s]) continue;
    const key = formatPrefix(decodeLpmKey(image.keys.subarray(s * KEY_SIZE, (s + 1) * KEY_SIZE)));
    trie.set(key, JSON.stringify(decodePeer(image.vals.subarray(s * VALUE_SIZE, (s + 1) * VALUE_SIZE))));
  }
  for (let r = 0; r < image.remoteTop; r++) {
    const first = image.remoteFirst(r);
    if (first < 0) continue;
    const ip = formatIP(decodeEpKey(image.rkeys.subarray(r * REMOTE_KEY_SIZE, (r + 1) * REMOTE_KEY_SIZE)));
    remotes.set(ip, formatPrefix(decodeLpmKey(image.keys.subarray(first * KEY_SIZE, (first + 1) * KEY_SIZE))));
  }
  return { trie, remotes };
}

test("a first sync (appendPeer) leaves the image the general path leaves, byte for byte and by meaning", async () => {
  for (const seed of [1, 2, 3]) {
    const ps = peers(seed, 3000);
    const fast = new BpfImage();
    await fast.sync({ peers: ps, own, networks }, { exact: true });
    // The general path: the own entries by an empty sync, then each peer as a lease event sets it.
    const slow = new BpfImage();
    await slow.sync({ peers: [], own, networks }, { exact: true });
    const k = Buffer.alloc(KEY_SIZE);
    for (const p of ps) slow.setPeer(encodeLpmKey(p.subnet, k, 0), 0, p);
    assert.equal(fast.size, slow.size, `seed ${seed}: entries`);
    assert.equal(fast.remoteCount, slow.remoteCount, `seed ${seed}: remotes`);
    assert.equal(fast.top, slow.top);
    // Same order of first appearance, same ids: the bytes are equal.
    assert.ok(fast.keys.subarray(0, fast.top * KEY_SIZE).equals(slow.keys.subarray(0, slow.top * KEY_SIZE)), `seed ${seed}: keys`);
    assert.ok(fast.vals.subarray(0, fast.top * VALUE_SIZE).equals(slow.vals.subarray(0, slow.top * VALUE_SIZE)), `seed ${seed}: values`);
    assert.deepEqual(contents(fast), contents(slow));
    // By meaning, against the peers themselves: the last lease for a subnet wins; every address is a remote.
    const want = new Map<string, Peer>();
    for (const p of ps) want.set(formatPrefix(p.subnet), p);
    const { trie, remotes } = contents(fast);
    for (const [prefix, p] of want) {
      const v = JSON.parse(trie.get(prefix)!) as { kind: number; remote: { family: number }; vtepMAC?: string; vni: number };
      assert.equal(v.kind, p.direct ? PeerKind.Direct : PeerKind.Vxlan, prefix);
      assert.equal(v.vtepMAC, p.vtepMAC.toLowerCase(), prefix);
      assert.equal(v.vni, p.vni, prefix);
    }
    assert.deepEqual(new Set(remotes.keys()), new Set([...want.values()].map((p) => formatIP(p.publicIP))));
    for (const p of want.values()) assert.ok(fast.slotOf(encodeLpmKey(p.subnet), 0) >= 0);
    // The bookkeeping behind the bytes (remote of each slot, marks, free lists) is the general path's too:
    // a second sync that drops some peers, moves some to other addresses and adds new ones leaves both images alike.
    const rand = prng(seed + 100);
    const next = ps.filter(() => rand() >= 0.2).map((p) => (rand() < 0.2 ? { ...p, publicIP: parseIP(`100.65.${Math.floor(rand() * 4)}.${Math.floor(rand() * 256)}`) } : p));
    next.push(...peers(seed + 200, 300).map((p) => ({ ...p, subnet: parsePrefix(formatPrefix(p.subnet).replace(/^10\./, "11.").replace(/^fd00:/, "fd01:")) })));
    await fast.sync({ peers: next, own, networks }, { exact: true });
    await slow.sync({ peers: next, own, networks }, { exact: true });
    assert.deepEqual(contents(fast), contents(slow), `seed ${seed}: after a second sync`);
    const after = contents(fast);
    const want2 = new Map<string, Peer>();
    for (const p of next) want2.set(formatPrefix(p.subnet), p);
    assert.deepEqual(new Set(after.remotes.keys()), new Set([...want2.values()].map((p) => formatIP(p.publicIP))), `seed ${seed}: remotes after a second sync`);
    assert.equal(after.trie.size, want2.size + own.length + networks.length);
  }
});

test("the flat IPv4 encoders write what the general ones do, and a bad MAC still fails by name", () => {
  const rand = prng(7);
  for (let i = 0; i < 500; i++) {
    const a = `${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}`;
    const len = 8 + Math.floor(rand() * 25);
    const p = parsePrefix(`${a}/32`);
    const pre = { ip: p.ip, len };
    // The key: flat (IPv4) into dirty bytes vs field by field.
    const flat = Buffer.alloc(KEY_SIZE + 4, 0xff);
    encodeLpmKey(pre, flat, 4);
    const want = Buffer.alloc(KEY_SIZE);
    want.writeUInt32LE(32 + len, 0);
    want.writeUInt32LE(4, 4);
    Buffer.from(p.ip.bytes).copy(want, 8);
    assert.ok(flat.subarray(4).equals(want), `key of ${a}/${len}`);
    // The remotes key.
    const ep = Buffer.alloc(REMOTE_KEY_SIZE + 3, 0xee);
    encodeEpKeyAt(p.ip, ep, 3);
    assert.ok(ep.subarray(3).equals(encodeEpKey(p.ip)));
    const wantEp = Buffer.alloc(REMOTE_KEY_SIZE);
    wantEp.writeUInt32LE(4, 0);
    Buffer.from(p.ip.bytes).copy(wantEp, 4);
    assert.ok(ep.subarray(3).equals(wantEp), `remote key of ${a}`);
    // The value, with a lower- or upper-case MAC, into dirty bytes; decoded back.
    const mac = Array.from({ length: 6 }, () => hex(Math.floor(rand() * 256))).join(":");
    const vni = Math.floor(rand() * 0xffffff), id = Math.floor(rand() * 0xffffffff);
    const v = Buffer.alloc(VALUE_SIZE, 0xab);
    encodePeerFields(PeerKind.Vxlan, p.ip, rand() < 0.5 ? mac : mac.toUpperCase(), vni, id, v, 0);
    assert.deepEqual(decodePeer(v), { kind: PeerKind.Vxlan, remote: p.ip, vtepMAC: mac, vni, id });
  }
  // Not xx:xx:xx:xx:xx:xx (17 characters but not hex, or with another separator): the general path names it.
  for (const bad of ["0e:b0:00:00:00:zz", "0e-b0-00-00-00-01", "0e:b0:00:00:0001:"]) {
    assert.throws(() => encodePeerFields(PeerKind.Vxlan, parseIP("100.64.0.1"), bad, 1, 1, Buffer.alloc(VALUE_SIZE), 0), (e: Error & { code?: string }) => e.code === "ERR_INVALID_MAC" && e.message.includes(bad));
  }
});
