/**
 * The TypeScript mirror of bpf/shared.h (src/bpf/layout.ts) against the BTF
 * of the compiled object: every struct's size, every field's offset and
 * size, the counter enum and the peer kinds must agree.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { STRUCTS, COUNTERS, LPM_KEY, PeerKind, encodeLpmKey, decodeLpmKey, lpmKeyText, encodePeer, decodePeer, encodeConfig, decodeConfig } from "../../src/bpf/layout.js";
import { parsePrefix, parseIP, formatPrefix, formatIP } from "../../src/net/ip.js";

interface BtfType { id: number; kind: string; name?: string; size?: number; type_id?: number; nr_elems?: number; members?: { name: string; type_id: number; bits_offset: number }[]; values?: { name: string; val: number }[] }

const btf: BtfType[] = JSON.parse(execFileSync("bpftool", ["-j", "btf", "dump", "file", "build/bpf/twill.o"], { encoding: "utf8" })).types;
const byId = new Map(btf.map((t) => [t.id, t]));
function sizeOf(id: number): number {
  const t = byId.get(id)!;
  switch (t.kind) {
    case "INT": case "STRUCT": case "UNION": case "ENUM": return t.size!;
    case "ARRAY": return sizeOf(t.type_id!) * t.nr_elems!;
    case "TYPEDEF": case "CONST": case "VOLATILE": return sizeOf(t.type_id!);
    default: throw new Error(`unexpected BTF kind ${t.kind}`);
  }
}
const named = (kind: string, name: string) => btf.find((t) => t.kind === kind && t.name === name);

for (const spec of STRUCTS) {
  test(`layout of struct ${spec.name} matches BTF`, () => {
    const t = named("STRUCT", spec.name);
    assert.ok(t, `struct ${spec.name} is not in the object's BTF`);
    assert.equal(spec.size, t.size, `sizeof(struct ${spec.name})`);
    assert.deepEqual(
      spec.fields.map((f) => [f.name, f.offset, f.size]),
      t.members!.map((m) => [m.name, m.bits_offset / 8, sizeOf(m.type_id)]),
    );
  });
}

test("counter names match enum twill_counter", () => {
  const e = named("ENUM", "twill_counter");
  assert.ok(e);
  const vals = e.values!.filter((v) => v.name !== "TWILL_C_MAX").sort((a, b) => a.val - b.val);
  assert.deepEqual(vals.map((v) => v.name.replace(/^TWILL_C_/, "").toLowerCase()), [...COUNTERS]);
  assert.equal(e.values!.find((v) => v.name === "TWILL_C_MAX")!.val, COUNTERS.length);
});

test("peer kinds match enum twill_peer_kind", () => {
  const e = named("ENUM", "twill_peer_kind");
  assert.ok(e);
  for (const v of e.values!) {
    const ts = v.name.replace(/^TWILL_PEER_/, "").toLowerCase().replace(/^./, (c) => c.toUpperCase());
    assert.equal((PeerKind as unknown as Record<string, number>)[ts], v.val, v.name);
  }
});

test("lpmKeyText writes what formatPrefix(decodeLpmKey()) writes, for any key bytes", () => {
  // Keys as the map may hold them (host bits set, prefix lengths past the family's, family words other than 4 and 6), at an offset in a larger buffer.
  let seed = 12345;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const buf = Buffer.alloc(LPM_KEY.size * 3);
  for (let i = 0; i < 5000; i++) {
    const at = rnd(3) * LPM_KEY.size;
    for (let b = 0; b < LPM_KEY.size; b++) buf[at + b] = rnd(256);
    buf.writeUInt32LE([0, 31, 32, 40, 56, 64, 65, 96, 160, 161, 200, rnd(2 ** 31)][rnd(12)]! + (rnd(4) === 0 ? rnd(40) : 0), at);
    buf.writeUInt32LE([4, 6, 0, 5, rnd(2 ** 31)][rnd(5)]!, at + 4);
    const key = Buffer.from(buf.subarray(at, at + LPM_KEY.size));
    assert.equal(lpmKeyText(buf, at), formatPrefix(decodeLpmKey(key)), key.toString("hex"));
  }
  for (const pfx of ["10.244.3.0/24", "0.0.0.0/0", "255.255.255.255/32", "10.0.0.0/8", "fc00:0:0:3::/64", "::/0"]) {
    assert.equal(lpmKeyText(encodeLpmKey(parsePrefix(pfx))), pfx);
  }
});

test("codecs round-trip IPv4 and IPv6 entries", () => {
  for (const [pfx, remote] of [["10.244.3.0/24", "192.168.50.13"], ["fc00:0:0:3::/64", "fd00:50::13"]] as const) {
    const k = encodeLpmKey(parsePrefix(pfx));
    assert.equal(formatPrefix(decodeLpmKey(k)), pfx);
    const v = decodePeer(encodePeer({ kind: PeerKind.Vxlan, remote: parseIP(remote), vtepMAC: "8e:d0:f8:0a:41:19", vni: 1, id: 7 }));
    assert.equal(formatIP(v.remote!), remote);
    assert.equal(v.vtepMAC, "8e:d0:f8:0a:41:19");
    assert.deepEqual([v.kind, v.vni, v.id], [PeerKind.Vxlan, 1, 7]);
  }
  const c = decodeConfig(encodeConfig({ flags: 1, vni: 7, bridgeIfindex: 9, bridgeMAC: "02:00:00:00:00:01", port: 8472, fam: [undefined, { vxlanIfindex: 5, vtepMAC: "02:00:00:00:00:02", localIP: parseIP("fd00::1"), underlayIfindex: 3 }] }));
  assert.deepEqual([c.flags, c.vni, c.bridgeIfindex, c.port, c.fam[0], c.fam[1]!.vxlanIfindex, formatIP(c.fam[1]!.localIP), c.fam[1]!.underlayIfindex], [1, 7, 9, 8472, undefined, 5, "fd00::1", 3]);
});
