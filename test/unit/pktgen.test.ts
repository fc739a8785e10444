/**
 * The packet builder of the packet-level tests (test/lib/pktgen.ts): its
 * checksums against RFC 1071's worked example and against tcpdump, which
 * verifies every IPv4, TCP, UDP and ICMP(v6) checksum it decodes (-vv) and
 * decodes VXLAN (-T vxlan) independently of our parsers.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  inetChecksum, eth, ipv4, ipv6, tcp, udp, echoRequest4, echoRequest6, fragNeeded4, raw, hopByHop, routing, fragment,
  vxlanFrame, parseFrame, parseIpv4, decodeVxlan, ipv4HeaderChecksumOk, l4ChecksumOk, truncate,
  ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, IPPROTO_HOPOPTS, IPPROTO_FRAGMENT,
} from "../lib/pktgen.js";

const M1 = "02:00:00:00:00:01", M2 = "02:00:00:00:00:02";

test("inetChecksum matches the classic IPv4 header example", () => {
  const h = Buffer.from("450000730000400040110000c0a80001c0a800c7", "hex");
  assert.equal(inetChecksum(h), 0xb861);
  assert.equal(inetChecksum(Buffer.from([0x01])), ~0x0100 & 0xffff, "an odd byte is padded with zero");
});

test("IPv4 header fields, options, fragments and the header checksum", () => {
  const p = ipv4({ src: "10.244.1.2", dst: "10.244.2.3", ttl: 7, tos: 0xb9, df: true, options: Buffer.from([1, 1, 1]) }, udp({ sport: 1, dport: 2 }, Buffer.from("hi")));
  const h = parseIpv4(p, 0);
  assert.deepEqual([h.ihl, h.hlen, h.ttl, h.tos, h.df, h.mf, h.proto, h.src, h.dst, h.totalLength], [6, 24, 7, 0xb9, true, false, IPPROTO_UDP, "10.244.1.2", "10.244.2.3", 24 + 10]);
  assert.ok(h.checksumOk);
  assert.ok(l4ChecksumOk(p, 0));
  const f = parseIpv4(ipv4({ src: "1.1.1.1", dst: "2.2.2.2", mf: true, fragOffset: 1480 }, raw(IPPROTO_UDP, Buffer.alloc(8))), 0);
  assert.deepEqual([f.mf, f.fragOffset, f.checksumOk], [true, 1480, true]);
  const bad = ipv4({ src: "1.1.1.1", dst: "2.2.2.2", checksum: 0x1234 }, raw(IPPROTO_UDP, Buffer.alloc(8)));
  assert.equal(ipv4HeaderChecksumOk(bad, 0), false);
  assert.equal(parseIpv4(ipv4({ src: "1.1.1.1", dst: "2.2.2.2", ihl: 4 }, raw(6, Buffer.alloc(20))), 0).ihl, 4);
});

test("IPv6 extension headers chain their next-header values", () => {
  const p = ipv6({ src: "fc00::1", dst: "fc00::2", ext: [hopByHop(), routing(["fc00::3"], 0), fragment(0, true)] }, udp({ sport: 5, dport: 6 }));
  assert.equal(p[6], IPPROTO_HOPOPTS);
  assert.equal(p[40], 43, "hop-by-hop → routing");
  assert.equal(p[48], IPPROTO_FRAGMENT, "routing → fragment");
  assert.equal(p[48 + 24], IPPROTO_UDP, "fragment → UDP");
  assert.equal(p.readUInt16BE(4), p.length - 40);
});

test("VXLAN frames decode back to their parts", () => {
  const inner = eth({ dst: M2, src: M1 }, ipv4({ src: "10.244.2.3", dst: "10.244.1.2" }, echoRequest4(1, 1)));
  const f = vxlanFrame({ dstMac: M1, srcMac: M2, src: "192.168.50.12", dst: "192.168.50.11", vni: 0xabcdef, sport: 33333 }, inner);
  const d = decodeVxlan(f);
  assert.deepEqual([d.outer.eth.type, d.outer.ipv4!.src, d.outer.ipv4!.dst, d.udp.dport, d.udp.sport, d.udp.length, d.udp.checksum, d.flags, d.vni], [ETH_P_IP, "192.168.50.12", "192.168.50.11", 8472, 33333, 8 + 8 + inner.length, 0, 8, 0xabcdef]);
  assert.ok(d.inner.equals(inner));
  assert.equal(f.length, inner.length + 50);
  const f6 = vxlanFrame({ dstMac: M1, srcMac: M2, src: "fd00::12", dst: "fd00::11", vni: 1 }, inner);
  assert.equal(parseFrame(f6).eth.type, ETH_P_IPV6);
  assert.ok(l4ChecksumOk(f6, 14), "an IPv6 outer UDP checksum is computed");
  assert.equal(truncate(f, 20).length, 20);
});

test("tcpdump agrees: every checksum is right and VXLAN decodes", (t) => {
  try {
    execFileSync("tcpdump", ["--version"], { stdio: "ignore" });
  } catch {
    t.skip("tcpdump is not installed");
    return;
  }
  const inner4 = ipv4({ src: "10.244.1.2", dst: "10.244.2.3", ttl: 9 }, tcp({ sport: 40000, dport: 80, flags: 0x02 }, Buffer.from("hello")));
  const frames = [
    eth({ dst: M2, src: M1 }, inner4),
    eth({ dst: M2, src: M1 }, ipv4({ src: "10.244.1.2", dst: "10.244.2.3" }, udp({ sport: 53, dport: 5353 }, Buffer.from("odd")))),
    eth({ dst: M2, src: M1 }, ipv4({ src: "10.244.1.2", dst: "10.244.2.3" }, echoRequest4(7, 3))),
    eth({ dst: M2, src: M1 }, ipv4({ src: "10.244.9.1", dst: "10.244.1.2" }, fragNeeded4(1450, inner4))),
    eth({ dst: M2, src: M1 }, ipv6({ src: "fc00::1", dst: "fc00::2" }, tcp({ sport: 1, dport: 2 }, Buffer.from("x")))),
    eth({ dst: M2, src: M1 }, ipv6({ src: "fc00::1", dst: "fc00::2" }, echoRequest6(1, 2))),
    eth({ dst: M2, src: M1 }, ipv6({ src: "fc00::1", dst: "fc00::2" }, udp({ sport: 7, dport: 8 }, Buffer.from("abc")))),
    vxlanFrame({ dstMac: M1, srcMac: M2, src: "192.168.50.12", dst: "192.168.50.11", vni: 42 }, eth({ dst: M2, src: M1 }, inner4)),
    eth({ dst: M2, src: M1 }, ipv4({ src: "10.244.1.2", dst: "10.244.2.3", id: 0xdead, checksum: 0x1234 }, udp({ sport: 9, dport: 9 }))),
  ];
  const dir = mkdtempSync(join(tmpdir(), "pktgen-"));
  try {
    const hdr = Buffer.alloc(24);
    hdr.writeUInt32LE(0xa1b2c3d4, 0); hdr.writeUInt16LE(2, 4); hdr.writeUInt16LE(4, 6); hdr.writeUInt32LE(65535, 16); hdr.writeUInt32LE(1, 20);
    const recs = frames.map((f) => {
      const r = Buffer.alloc(16);
      r.writeUInt32LE(f.length, 8); r.writeUInt32LE(f.length, 12);
      return Buffer.concat([r, f]);
    });
    writeFileSync(join(dir, "p.pcap"), Buffer.concat([hdr, ...recs]));
    const dump = (...args: string[]) => execFileSync("tcpdump", ["-nvvr", join(dir, "p.pcap"), ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    const out = dump("not", "port", "8472");
    // The control frame (a wrong header checksum on purpose) shows that tcpdump does check.
    assert.equal((out.match(/bad cksum/g) ?? []).length, 1, out);
    assert.match(out, /id 57005, .*bad cksum 1234/);
    assert.doesNotMatch(out, /wrong|incorrect/i, out);
    assert.equal((out.match(/cksum 0x[0-9a-f]+ \(correct\)/g) ?? []).length, 2, out);
    assert.equal((out.match(/\[udp sum ok\]/g) ?? []).length, 3, out);
    assert.equal((out.match(/\[icmp6 sum ok\]/g) ?? []).length, 1, out);
    assert.match(out, /ICMP echo request, id 7, seq 3/);
    assert.match(out, /ICMP 10\.244\.2\.3 unreachable - need to frag \(mtu 1450\)/);
    const vx = dump("-T", "vxlan", "port", "8472");
    assert.match(vx, /VXLAN, flags \[I\] \(0x08\), vni 42/);
    assert.match(vx, /10\.244\.1\.2\.40000 > 10\.244\.2\.3\.80: Flags \[S\], cksum 0x[0-9a-f]+ \(correct\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
