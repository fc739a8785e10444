import { test } from "node:test";
import assert from "node:assert/strict";
import { flannelMTU, parseNetConfig, tryParseNetConfig } from "../../src/config/netconf.js";
import { isTwillError } from "../../src/errors.js";
import { formatPrefix, type Prefix } from "../../src/net/ip.js";

const fp = (p: Prefix | undefined) => (p ? formatPrefix(p) : undefined);

const FULL = `{
  "Network": "10.244.0.0/16",
  "SubnetLen": 24,
  "SubnetMin": "10.244.1.0",
  "SubnetMax": "10.244.255.0",
  "EnableIPv4": true,
  "EnableIPv6": false,
  "IPv6Network": "fc00::/48",
  "IPv6SubnetLen": 64,
  "Backend": { "Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": false, "MTU": 0, "GBP": false, "Learning": false }
}`;

/** Asserts ERR_INVALID_CONFIG with the standard prefix and every fragment in the message. */
function rejects(json: string, ...fragments: string[]) {
  assert.throws(() => parseNetConfig(json), (e) => {
    assert.ok(isTwillError(e, "ERR_INVALID_CONFIG"), String(e));
    assert.ok(e.message.startsWith("Cannot parse network config: "), e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
  assert.equal(tryParseNetConfig(json), undefined);
}

test("the full example from flannel-compat.md", () => {
  const c = parseNetConfig(FULL);
  assert.equal(c.enableIPv4, true);
  assert.equal(c.enableIPv6, false);
  assert.equal(fp(c.network), "10.244.0.0/16");
  assert.equal(c.subnetLen, 24);
  assert.equal(fp(c.subnetMin), "10.244.1.0/24");
  assert.equal(fp(c.subnetMax), "10.244.255.0/24");
  assert.equal(fp(c.ipv6Network), "fc00::/48");
  assert.equal(c.ipv6SubnetLen, 64);
  assert.equal(c.ipv6SubnetMin, undefined, "a disabled family gets no range");
  assert.deepEqual(c.backend, { type: "vxlan", vni: 1, port: 8472, directRouting: false, mtu: 0, gbp: false, learning: false });
});

test("defaults: IPv4 on, /24 subnets, second to last subnet, vxlan VNI 1 port 8472", () => {
  const c = parseNetConfig(`{"Network":"10.5.0.0/16"}`);
  assert.equal(c.enableIPv4, true);
  assert.equal(c.enableIPv6, false);
  assert.equal(c.subnetLen, 24);
  assert.equal(fp(c.subnetMin), "10.5.1.0/24");
  assert.equal(fp(c.subnetMax), "10.5.255.0/24");
  assert.equal(c.ipv6SubnetLen, 64);
  assert.deepEqual(c.backend, { type: "vxlan", vni: 1, port: 8472, directRouting: false, mtu: 0, gbp: false, learning: false });
  // A Backend without Type is vxlan too; Port 0 means the default.
  const b = parseNetConfig(`{"Network":"10.5.0.0/16","Backend":{"VNI":7,"Port":0,"DirectRouting":true,"MTU":1400,"GBP":true,"Learning":true}}`).backend;
  assert.deepEqual(b, { type: "vxlan", vni: 7, port: 8472, directRouting: true, mtu: 1400, gbp: true, learning: true });
});

test("SubnetLen default for small networks is prefix + 2", () => {
  for (const [net, len, min, max] of [
    ["10.0.0.0/22", 24, "10.0.1.0/24", "10.0.3.0/24"],
    ["10.0.0.0/23", 25, "10.0.0.128/25", "10.0.1.128/25"],
    ["10.0.0.0/24", 26, "10.0.0.64/26", "10.0.0.192/26"],
    ["10.0.0.0/28", 30, "10.0.0.4/30", "10.0.0.12/30"],
  ] as const) {
    const c = parseNetConfig(JSON.stringify({ Network: net }));
    assert.equal(c.subnetLen, len, net);
    assert.equal(fp(c.subnetMin), min, net);
    assert.equal(fp(c.subnetMax), max, net);
  }
});

test("IPv6: default /64, prefix + 2 for networks smaller than /62, dual stack", () => {
  const c = parseNetConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`);
  assert.equal(c.ipv6SubnetLen, 64);
  assert.equal(fp(c.ipv6SubnetMin), "fc00:0:0:1::/64");
  assert.equal(fp(c.ipv6SubnetMax), "fc00:0:0:ffff::/64");
  const small = parseNetConfig(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/100"}`);
  assert.equal(small.enableIPv4, false);
  assert.equal(small.network, undefined);
  assert.equal(small.ipv6SubnetLen, 102);
  assert.equal(fp(small.ipv6SubnetMin), "fc00::400:0/102");
  assert.equal(fp(small.ipv6SubnetMax), "fc00::c00:0/102");
  const v6len = parseNetConfig(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":56,"IPv6SubnetMin":"fc00:0:0:200::","IPv6SubnetMax":"fc00:0:0:300::"}`);
  assert.equal(fp(v6len.ipv6SubnetMin), "fc00:0:0:200::/56");
  assert.equal(fp(v6len.ipv6SubnetMax), "fc00:0:0:300::/56");
});

test("Go encoding/json habits: case-insensitive keys, null = absent, unknown keys ignored, host bits masked", () => {
  const c = parseNetConfig(`{"network":"10.244.7.7/16","subnetlen":null,"backend":{"type":"vxlan","vni":4},"EnableNFTables":true,"Whatever":[1]}`);
  assert.equal(fp(c.network), "10.244.0.0/16");
  assert.equal(c.subnetLen, 24);
  assert.equal(c.backend.type === "vxlan" && c.backend.vni, 4);
  // An exact-case key wins over a folded one.
  assert.equal(parseNetConfig(`{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}`).network!.ip.bytes[1], 1);
});

test("each bad field is rejected with its name and value", () => {
  rejects(`{"Network":`, "malformed JSON");
  rejects(`[1]`, "is not a JSON object");
  rejects(`{}`, "Network is missing");
  rejects(`{"Network":"10.244.0.0"}`, `Network "10.244.0.0" is not an IPv4 network`);
  rejects(`{"Network":"fc00::/48"}`, `Network "fc00::/48" is not an IPv4 network`);
  rejects(`{"Network":"10.0.0.0/29"}`, "Network 10.0.0.0/29 is too small");
  rejects(`{"Network":"10.244.0.0/16","SubnetLen":33}`, "SubnetLen 33 is not between 18 and 30");
  rejects(`{"Network":"10.244.0.0/16","SubnetLen":17}`, "SubnetLen 17 is not between 18 and 30");
  rejects(`{"Network":"10.244.0.0/16","SubnetLen":"24"}`, `SubnetLen "24" is not a whole number`);
  rejects(`{"Network":"10.244.0.0/16","SubnetLen":24.5}`, "SubnetLen 24.5 is not a whole number");
  rejects(`{"Network":"10.244.0.0/16","SubnetMin":"10.245.1.0"}`, "SubnetMin 10.245.1.0 is not inside 10.244.0.0/16");
  rejects(`{"Network":"10.244.0.0/16","SubnetMax":"10.244.1.5"}`, "SubnetMax 10.244.1.5 is not on a /24 boundary");
  rejects(`{"Network":"10.244.0.0/16","SubnetMin":"banana"}`, `SubnetMin "banana" is not an IPv4 address`);
  rejects(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.2.0"}`, "SubnetMin 10.244.9.0 is above SubnetMax 10.244.2.0");
  rejects(`{"Network":"10.244.0.0/16","EnableIPv4":"yes"}`, `EnableIPv4 "yes" is not true or false`);
  rejects(`{"EnableIPv4":false}`, "EnableIPv4 and EnableIPv6 are both false");
  rejects(`{"Network":"10.244.0.0/16","EnableIPv6":true}`, "IPv6Network is missing");
  rejects(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}`, `IPv6Network "10.0.0.0/8" is not an IPv6 network`);
  rejects(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, "IPv6SubnetLen 127 is not between 50 and 126");
  rejects(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc01::"}`, "IPv6SubnetMin fc01:: is not inside fc00::/48");
  rejects(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:1::1"}`, "IPv6SubnetMax fc00:0:0:1::1 is not on a /64 boundary");
  rejects(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125"}`, "IPv6Network fc00::/125 is too small");
  rejects(`{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`, `Backend.Type "udp" is not supported: twill implements "vxlan" and "host-gw"`);
  for (const t of ["wireguard", "ipip", "ipsec", "alloc", "extension", "tencentvpc", ""]) {
    rejects(`{"Network":"10.244.0.0/16","Backend":{"Type":"${t}"}}`, `Backend.Type "${t}" is not supported: twill implements "vxlan" and "host-gw"`);
  }
  rejects(`{"Network":"10.244.0.0/16","Backend":{"Type":7}}`, `Backend.Type 7 is not a string`);
  rejects(`{"Network":"10.244.0.0/16","Backend":"vxlan"}`, `Backend "vxlan" is not a JSON object`);
  rejects(`{"Network":"10.244.0.0/16","Backend":{"VNI":16777216}}`, "Backend.VNI 16777216 is not between 0 and 16777215");
  rejects(`{"Network":"10.244.0.0/16","Backend":{"VNI":-1}}`, "Backend.VNI -1 is not between 0 and 16777215");
  rejects(`{"Network":"10.244.0.0/16","Backend":{"Port":65536}}`, "Backend.Port 65536 is not between 1 and 65535");
  rejects(`{"Network":"10.244.0.0/16","Backend":{"Port":"8472"}}`, `Backend.Port "8472" is not a whole number`);
  rejects(`{"Network":"10.244.0.0/16","Backend":{"MTU":20}}`, "Backend.MTU 20 is not between 68 and 65535");
  rejects(`{"Network":"10.244.0.0/16","Backend":{"GBP":1}}`, "Backend.GBP 1 is not true or false");
});

test("a disabled family is not range-checked, but must be well formed", () => {
  // Out-of-range IPv6 settings do not matter while IPv6 is off...
  const c = parseNetConfig(`{"Network":"10.244.0.0/16","IPv6Network":"fc00::/48","IPv6SubnetLen":127}`);
  assert.equal(c.ipv6SubnetLen, 127);
  // ...but garbage is still garbage (Go's json.Unmarshal would fail too).
  rejects(`{"Network":"10.244.0.0/16","IPv6Network":"nope"}`, `IPv6Network "nope" is not an IPv6 network`);
});

test("backend types as flannel's backend manager reads them: lower-cased; host-gw takes no options", () => {
  const up = parseNetConfig(`{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","VNI":3}}`);
  assert.deepEqual([up.backend.type, up.backend.type === "vxlan" && up.backend.vni], ["vxlan", 3]);
  for (const t of ["host-gw", "Host-GW", "HOST-GW"]) {
    assert.deepEqual(parseNetConfig(`{"Network":"10.244.0.0/16","Backend":{"Type":"${t}","VNI":9,"MTU":1400}}`).backend, { type: "host-gw" });
  }
});

test("flannel's MTU arithmetic: Backend.MTU is the underlay's; device = it - 50 (IPv6 underlay - 70); FLANNEL_MTU = it - 50; host-gw = the interface's", () => {
  const cfg = (backend: string) => parseNetConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":${backend}}`).backend;
  const dflt = flannelMTU(cfg(`{"Type":"vxlan"}`), 1500);
  assert.deepEqual([dflt.device(4), dflt.device(6), dflt.subnetFile], [1450, 1430, 1450]);
  const set = flannelMTU(cfg(`{"Type":"vxlan","MTU":9000}`), 1500);
  assert.deepEqual([set.device(4), set.device(6), set.subnetFile], [8950, 8930, 8950]);
  const v6only = flannelMTU(parseNetConfig(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","MTU":1400}}`).backend, 1500);
  assert.deepEqual([v6only.device(6), v6only.subnetFile], [1330, 1350]);
  const hgw = flannelMTU(cfg(`{"Type":"host-gw","MTU":1400}`), 1500);
  assert.deepEqual([hgw.device(4), hgw.device(6), hgw.subnetFile], [1500, 1500, 1500]);
});
