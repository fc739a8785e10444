/**
 * The netlink codecs against hand-checked bytes (laid out by hand from the
 * UAPI structs: nlmsghdr, ifinfomsg, ifaddrmsg, rtmsg, ndmsg, nlattr), and
 * decode(encode(x)) round trips. No sockets, no namespaces; the integration
 * test (test/integration/netlink.test.ts) checks the same against the kernel
 * and iproute2's view.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { attr, be16, nest, parseAttrs, str, u32, getStr, getU32, getBE16 } from "../../src/net/netlink/attrs.js";
import { encodeMessage, parseError, splitMessages } from "../../src/net/netlink/message.js";
import { decodeLink, encodeIfinfo, vxlanAttrs, flagNames } from "../../src/net/netlink/link-codec.js";
import { addrRequest, decodeAddr } from "../../src/net/netlink/addr-codec.js";
import { decodeRoute, routeRequest, routeGetRequest } from "../../src/net/netlink/route-codec.js";
import { decodeNeigh, fdbRequest, neighRequest, fdbStateName, fdbFlagNames, neighStateNames } from "../../src/net/netlink/neigh-codec.js";
import { describe as describeOp, encodeOp, checkOp, type NlOp } from "../../src/net/netlink/ops.js";
import { genPid, touched } from "../../src/net/firewall-watch.js";
import { parseIP, parsePrefix, formatIP } from "../../src/net/ip.js";
import { isTwillError } from "../../src/errors.js";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const msg = (type: number, body: Buffer, flags = 0) => splitMessages(encodeMessage(type, flags, 7, body))[0]!;

test("attributes: header, payload, padding; nested flag; network-order port", () => {
  assert.equal(hex(u32(4, 1450)), "08000400aa050000"); // IFLA_MTU 1450
  assert.equal(hex(be16(15, 8472)), "06000f0021180000"); // IFLA_VXLAN_PORT 8472 = 0x2118, padded
  assert.equal(hex(str(3, "vx0")), "0800030076783000"); // IFLA_IFNAME "vx0\0"
  assert.equal(hex(str(3, "flannel.1")), "0e000300666c616e6e656c2e31000000");
  assert.equal(hex(nest(18, [str(1, "vxlan")])), "10001280" + "0a00010076786c616e000000");
  const a = parseAttrs(Buffer.concat([u32(4, 1450), str(3, "vx0"), be16(15, 4789)]));
  assert.equal(getU32(a, 4), 1450);
  assert.equal(getStr(a, 3), "vx0");
  assert.equal(getBE16(a, 15), 4789);
  // A truncated attribute ends the parse instead of throwing.
  assert.equal(parseAttrs(Buffer.from("08000400aa05", "hex")).size, 0);
});

test("nlmsghdr: length, type, flags, seq, pid 0; split walks aligned messages", () => {
  const m = encodeMessage(18, 0x301, 0x01020304, encodeIfinfo());
  assert.equal(hex(m.subarray(0, 16)), "20000000" + "1200" + "0103" + "04030201" + "00000000");
  assert.equal(m.length, 32);
  const two = splitMessages(Buffer.concat([m, encodeMessage(3, 2, 9, Buffer.alloc(4))]));
  assert.deepEqual(two.map((x) => [x.type, x.flags, x.seq, x.body.length]), [[18, 0x301, 0x01020304, 16], [3, 2, 9, 4]]);
});

test("nlmsgerr: errno, answered seq, and the kernel's extended ack text", () => {
  const body = Buffer.concat([
    Buffer.from("9bffffff", "hex"), // -101 ENETUNREACH
    encodeMessage(24, 0x505, 42, Buffer.alloc(0)).subarray(0, 16), // the request's header (capped)
    str(1, "Nexthop has invalid gateway"),
  ]);
  const e = parseError(msg(2, body, 0x100 | 0x200));
  assert.deepEqual(e, { errno: 101, seq: 42, extack: "Nexthop has invalid gateway" });
  const ack = parseError(msg(2, Buffer.concat([Buffer.alloc(4), encodeMessage(24, 5, 43, Buffer.alloc(0)).subarray(0, 16)]), 0x100));
  assert.deepEqual(ack, { errno: 0, seq: 43 });
});

test("vxlan link: the attributes `ip link add vx0 type vxlan id 7 local 10.1.0.1 dev d0 dstport 8472 nolearning` sends, decoded back", () => {
  const attrs = vxlanAttrs({ name: "vx0", vni: 7, external: false, port: 8472, local: parseIP("10.1.0.1"), link: 3, learning: false });
  assert.equal(hex(Buffer.concat(attrs)),
    "0800030076783000" + // IFLA_IFNAME vx0
    "3c001280" + "0a00010076786c616e000000" + // LINKINFO(nested) KIND "vxlan"
    "2c000280" + // INFO_DATA (nested)
    "0800010007000000" + // ID 7
    "080004000a010001" + // LOCAL 10.1.0.1
    "0800030003000000" + // LINK 3
    "06000f0021180000" + // PORT 8472 (big-endian)
    "0500070000000000"); // LEARNING 0
  // A kernel answer: ifinfomsg (ifindex 4, UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP) + name/mtu/mac/master + linkinfo.
  const header = encodeIfinfo(4, 0x1 | 0x2 | 0x40 | 0x1000 | 0x10000);
  const body = Buffer.concat([header, ...attrs, u32(4, 1450), attr(1, Buffer.from("0211223344ff", "hex")), u32(10, 9)]);
  const l = decodeLink(msg(16, body))!;
  assert.equal(l.ifindex, 4);
  assert.equal(l.name, "vx0");
  assert.equal(l.mtu, 1450);
  assert.equal(l.mac, "02:11:22:33:44:ff");
  assert.equal(l.master, 9);
  assert.equal(l.kind, "vxlan");
  assert.deepEqual(l.flags, ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"]);
  assert.deepEqual({ ...l.vxlan!, local: formatIP(l.vxlan!.local!) }, { id: 7, external: false, port: 8472, link: 3, learning: false, local: "10.1.0.1" });
  // external + IPv6 local
  const ext = vxlanAttrs({ name: "tw0", external: true, port: 4789, local: parseIP("fd00::1"), link: 2, learning: false });
  const e = decodeLink(msg(16, Buffer.concat([encodeIfinfo(5, 0x80), ...ext])))!;
  assert.deepEqual({ ...e.vxlan!, local: formatIP(e.vxlan!.local!) }, { id: 0, external: true, port: 4789, link: 2, learning: false, local: "fd00::1" });
  assert.deepEqual(e.flags, ["NOARP"]);
  assert.deepEqual(flagNames(0x1 | 0x1000), ["NO-CARRIER", "MULTICAST", "UP"]);
});

test("addresses: ifaddrmsg + IFA_LOCAL/IFA_ADDRESS (+ IFA_FLAGS nodad), decoded back", () => {
  const r = addrRequest(parseIP("10.244.1.0"), 32, 4, false);
  assert.equal(hex(r.header), "0220000004000000");
  assert.equal(hex(Buffer.concat(r.attrs)), "080002000af40100" + "080001000af40100");
  const v6 = addrRequest(parseIP("fc00:0:0:1::"), 128, 4, true);
  assert.equal(hex(v6.header), "0a80020004000000"); // AF_INET6, /128, IFA_F_NODAD, scope global, ifindex 4
  assert.equal(hex(v6.attrs[2]!), "0800080002000000");
  const a = decodeAddr(msg(20, Buffer.concat([v6.header, ...v6.attrs])))!;
  assert.deepEqual([formatIP(a.local), a.prefixLen, a.scope, a.ifindex], ["fc00:0:0:1::", 128, "global", 4]);
});

test("routes: `route replace 10.244.2.0/24 via 10.244.2.0 dev IDX5 onlink`, del, get; decoded back", () => {
  const r = routeRequest({ dst: parsePrefix("10.244.2.0/24"), via: parseIP("10.244.2.0"), oif: 5, onlink: true }, false);
  // family 2, /24, src 0, tos 0, table main(254), proto boot(3), scope universe, unicast; flags RTNH_F_ONLINK
  assert.equal(hex(r.header), "02180000fe03000104000000");
  assert.equal(hex(Buffer.concat(r.attrs)), "080001000af40200" + "080005000af40200" + "0800040005000000");
  const d = routeRequest({ dst: parsePrefix("10.244.2.0/24"), oif: 5 }, true);
  assert.equal(hex(d.header), "02180000fe00ff0000000000"); // del: any protocol, scope NOWHERE, any type
  const back = decodeRoute(msg(24, Buffer.concat([r.header, ...r.attrs])))!;
  assert.deepEqual(
    [back.dst.len, formatIP(back.dst.ip), formatIP(back.gateway!), back.oif, back.table, back.protocol, back.flags],
    [24, "10.244.2.0", "10.244.2.0", 5, 254, "boot", ["onlink"]],
  );
  const g = routeGetRequest(parseIP("192.0.2.9"));
  assert.equal(hex(g.header), "022000000000000000000000");
  assert.equal(hex(g.attrs[0]!), "08000100c0000209");
  // a default route has no RTA_DST
  const def = decodeRoute(msg(24, Buffer.from("02000000fe020000010000000800040002000000", "hex")))!;
  assert.deepEqual([formatIP(def.dst.ip), def.dst.len, def.oif, def.protocol], ["0.0.0.0", 0, 2, "kernel"]);
});

test("neighbours and FDB: ndmsg + NDA_DST/NDA_LLADDR, NUD_PERMANENT, NTF_SELF; names as iproute2 prints", () => {
  const n = neighRequest(parseIP("10.244.2.0"), 5, "02:00:00:00:00:02");
  assert.equal(hex(n.header), "020000000500000080000000"); // AF_INET, ifindex 5, NUD_PERMANENT
  assert.equal(hex(Buffer.concat(n.attrs)), "080001000af40200" + "0a000200020000000002" + "0000");
  const f = fdbRequest("02:00:00:00:00:02", 5, parseIP("192.0.2.2"), true);
  assert.equal(hex(f.header), "070000000500000080000200"); // AF_BRIDGE, NUD_PERMANENT, NTF_SELF
  assert.equal(hex(Buffer.concat(f.attrs)), "0a000200020000000002" + "0000" + "08000100c0000202");
  const back = decodeNeigh(msg(28, Buffer.concat([f.header, ...f.attrs])))!;
  assert.deepEqual([back.family, back.ifindex, back.lladdr, formatIP(back.dst!)], [7, 5, "02:00:00:00:00:02", "192.0.2.2"]);
  assert.equal(fdbStateName(back.state), "permanent");
  assert.deepEqual(fdbFlagNames(back.flags), ["self"]);
  assert.equal(fdbStateName(0x40), "static");
  assert.deepEqual(neighStateNames(0x80), ["PERMANENT"]);
  assert.equal(hex(fdbRequest("02:00:00:00:00:02", 5, undefined, false).header), "070000000500000040000200"); // static
});

test("ops: NlOp → iproute2 text, flags per action, bad ops refused before sending", () => {
  const P = parsePrefix, I = parseIP;
  const cases: Array<[NlOp, string]> = [
    [{ kind: "route", action: "replace", dst: P("10.244.2.0/24"), via: I("10.244.2.0"), dev: "flannel.1", onlink: true }, "route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"],
    [{ kind: "route", action: "del", dst: P("10.244.2.0/24"), via: I("10.244.2.0"), dev: "flannel.1" }, "route del 10.244.2.0/24 via 10.244.2.0 dev flannel.1"],
    [{ kind: "route", action: "replace", dst: P("10.244.3.0/24"), via: I("192.0.2.3"), dev: "eth0" }, "route replace 10.244.3.0/24 via 192.0.2.3 dev eth0"],
    [{ kind: "neigh", action: "replace", dst: I("10.244.2.0"), lladdr: "02:00:00:00:00:02", dev: "flannel.1" }, "neigh replace 10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent"],
    [{ kind: "neigh", action: "del", dst: I("10.244.2.0"), dev: "flannel.1" }, "neigh del 10.244.2.0 dev flannel.1"],
    [{ kind: "fdb", action: "replace", mac: "02:00:00:00:00:02", dev: "flannel.1", dst: I("192.0.2.2"), permanent: true }, "fdb replace 02:00:00:00:00:02 dev flannel.1 dst 192.0.2.2 self permanent"],
    [{ kind: "fdb", action: "append", mac: "00:00:00:00:00:00", dev: "flannel.1", dst: I("192.0.2.2"), permanent: true }, "fdb append 00:00:00:00:00:00 dev flannel.1 dst 192.0.2.2 self permanent"],
    [{ kind: "fdb", action: "del", mac: "02:00:00:00:00:02", dev: "flannel.1", dst: I("192.0.2.2") }, "fdb del 02:00:00:00:00:02 dev flannel.1 dst 192.0.2.2 self"],
    [{ kind: "route", action: "replace", dst: P("fc00:0:0:2::/64"), via: I("fc00:0:0:2::"), dev: "flannel-v6.1", onlink: true }, "route replace fc00:0:0:2::/64 via fc00:0:0:2:: dev flannel-v6.1 onlink"],
  ];
  for (const [op, text] of cases) {
    checkOp(op);
    assert.equal(describeOp(op), text);
  }
  const flagsOf = (op: NlOp) => encodeOp(op, 1, 1).readUInt16LE(6);
  assert.equal(flagsOf(cases[0]![0]), 0x505); // REQUEST|ACK|CREATE|REPLACE
  assert.equal(flagsOf(cases[1]![0]), 0x005);
  assert.equal(flagsOf(cases[6]![0]), 0xc05); // CREATE|APPEND
  assert.equal(encodeOp(cases[1]![0], 1, 1).readUInt16LE(4), 25); // RTM_DELROUTE
  assert.throws(() => checkOp({ kind: "route", action: "replace", dst: parsePrefix("10.0.0.0/8"), dev: "a/b" }), (e) => isTwillError(e, "ERR_IFACE"));
  assert.throws(() => checkOp({ kind: "neigh", action: "replace", dst: parseIP("10.0.0.1"), lladdr: "zz", dev: "eth0" }), (e) => isTwillError(e, "ERR_INVALID_MAC"));
});

test("nf_tables notifications: table/chain touched, NEWGEN's committing pid (big-endian)", () => {
  const nfgen = Buffer.from("02000000", "hex");
  const rule = msg((10 << 8) | 6, Buffer.concat([nfgen, str(1, "filter"), str(2, "FORWARD")]));
  assert.deepEqual(touched(rule), { table: "filter", chain: "FORWARD" });
  const chain = msg((10 << 8) | 5, Buffer.concat([nfgen, str(1, "nat"), attr(2, Buffer.alloc(8)), str(3, "FLANNEL-POSTRTG")]));
  assert.deepEqual(touched(chain), { table: "nat", chain: "FLANNEL-POSTRTG" });
  const gen = msg((10 << 8) | 15, Buffer.concat([nfgen, attr(1, Buffer.from("00000009", "hex")), attr(2, Buffer.from("00001f90", "hex"))]));
  assert.equal(touched(gen), undefined);
  assert.equal(genPid(gen), 8080);
  assert.equal(genPid(rule), undefined);
});
