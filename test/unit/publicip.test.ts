/**
 * Which public IPs a peer may have (src/publicip.ts), and how peers.ts
 * applies it to leases: every bad kind for IPv4 and IPv6 with its code and a
 * reason naming the field and the value; one public IP claimed by two
 * leases (the later loses: key order on a list, arrival for events; it is
 * accepted once the first is gone).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import { addressKind, publicIPProblem } from "../../src/publicip.js";
import { isRejected, leasePeers, leasesToPeers, SubnetIndex, type PeerRules } from "../../src/peers.js";
import type { Lease, NetConfig } from "../../src/lease/types.js";

test("addressKind: each kind a host cannot have as a public IP, v4 and v6", () => {
  const cases: [string, ReturnType<typeof addressKind>][] = [
    ["0.0.0.0", "unspecified"], ["::", "unspecified"],
    ["127.0.0.1", "loopback"], ["127.255.0.9", "loopback"], ["::1", "loopback"],
    ["224.0.0.5", "multicast"], ["239.255.255.255", "multicast"], ["ff02::1", "multicast"], ["ff05::2", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["169.254.0.1", "link-local"], ["169.254.255.254", "link-local"], ["fe80::1", "link-local"], ["febf::1", "link-local"],
    ["192.168.50.2", undefined], ["10.0.0.1", undefined], ["223.255.255.255", undefined], ["240.0.0.1", undefined], ["169.253.0.1", undefined],
    ["fd00::2", undefined], ["2001:db8::1", undefined], ["fec0::1", undefined], ["::2", undefined], ["::ffff:127.0.0.1", undefined],
  ];
  for (const [ip, kind] of cases) assert.equal(addressKind(parseIP(ip)), kind, ip);
});

test("publicIPProblem names the field and the value; link-local only with the flag; ours; inside the network", () => {
  const rules = { own: [parseIP("192.168.50.1"), parseIP("fd00::1"), undefined], networks: [parsePrefix("10.244.0.0/16"), parsePrefix("fc00::/48"), undefined] };
  const p = (ip: string, field = "PublicIP", r: Parameters<typeof publicIPProblem>[2] = rules) => publicIPProblem(parseIP(ip), field, r);
  assert.equal(p("127.0.0.1"), "PublicIP 127.0.0.1 is loopback");
  assert.equal(p("::1", "PublicIPv6"), "PublicIPv6 ::1 is loopback");
  assert.equal(p("224.0.0.5"), "PublicIP 224.0.0.5 is multicast");
  assert.equal(p("ff02::1", "PublicIPv6"), "PublicIPv6 ff02::1 is multicast");
  assert.equal(p("255.255.255.255"), "PublicIP 255.255.255.255 is the broadcast address");
  assert.equal(p("0.0.0.0"), "PublicIP 0.0.0.0 is unspecified");
  assert.equal(p("::", "PublicIPv6"), "PublicIPv6 :: is unspecified");
  assert.equal(p("169.254.1.1"), "PublicIP 169.254.1.1 is link-local (allow it with --allow-link-local-public-ip)");
  assert.equal(p("fe80::5", "PublicIPv6"), "PublicIPv6 fe80::5 is link-local (allow it with --allow-link-local-public-ip)");
  assert.equal(p("169.254.1.1", "PublicIP", { ...rules, allowLinkLocal: true }), undefined);
  assert.equal(p("fe80::5", "PublicIPv6", { ...rules, allowLinkLocal: true }), undefined);
  // The flag allows link-local only: loopback stays refused.
  assert.equal(p("127.0.0.1", "PublicIP", { ...rules, allowLinkLocal: true }), "PublicIP 127.0.0.1 is loopback");
  assert.equal(p("192.168.50.1"), "PublicIP 192.168.50.1 is this node's own public IP");
  assert.equal(p("fd00::1", "PublicIPv6"), "PublicIPv6 fd00::1 is this node's own public IP");
  assert.equal(p("10.244.3.7"), "PublicIP 10.244.3.7 is inside the cluster network 10.244.0.0/16");
  assert.equal(p("fc00:0:0:3::1", "PublicIPv6"), "PublicIPv6 fc00:0:0:3::1 is inside the cluster network fc00::/48");
  assert.equal(p("192.168.50.2"), undefined);
  assert.equal(p("fd00::2", "PublicIPv6"), undefined);
  assert.equal(p("10.245.0.1"), undefined);
  assert.equal(p("192.168.50.1", "PublicIP", {}), undefined, "no rules: only the address's kind counts");
});

const config: NetConfig = {
  enableIPv4: true, enableIPv6: true, network: parsePrefix("10.244.0.0/16"), subnetLen: 24, ipv6Network: parsePrefix("fc00::/48"), ipv6SubnetLen: 64,
  backend: { type: "vxlan", vni: 1, port: 8472, directRouting: false, mtu: 0, gbp: false, learning: false }, enableNFTables: false,
};
const rules: PeerRules = {
  config, own: { key: "10.244.1.0-24", subnet: parsePrefix("10.244.1.0/24") },
  ownPublicIPs: [parseIP("192.168.50.1"), parseIP("fd00::1")],
};
const lease = (n: number, ip: string, ip6?: string): Lease => ({
  key: ip6 ? `10.244.${n}.0-24&fc00:0:0:${n.toString(16)}::-64` : `10.244.${n}.0-24`,
  subnet: parsePrefix(`10.244.${n}.0/24`), publicIP: parseIP(ip), backendType: "vxlan", backendData: { vni: 1, vtepMAC: `02:00:00:00:00:${n.toString(16).padStart(2, "0")}` },
  ...(ip6 ? { ipv6Subnet: parsePrefix(`fc00:0:0:${n.toString(16)}::/64`), publicIPv6: parseIP(ip6), backendV6Data: { vni: 1, vtepMAC: `02:00:00:00:06:${n.toString(16).padStart(2, "0")}` } } : {}),
});

test("leasesToPeers: every bad public IP kind is rejected with ERR_INVALID_PUBLIC_IP naming field and value; good leases stay", () => {
  const leases = [
    lease(10, "127.0.0.1"), lease(11, "224.0.0.5"), lease(12, "255.255.255.255"), lease(13, "169.254.3.3"),
    lease(14, "192.168.50.1"), lease(15, "10.244.99.1"), lease(16, "192.168.50.16", "::1"), lease(17, "192.168.50.17", "fe80::17"),
    lease(18, "192.168.50.18", "fc00:0:0:99::1"), lease(19, "192.168.50.19", "fd00::19"), lease(20, "192.168.50.20"),
  ];
  const r = leasesToPeers(leases, rules);
  assert.deepEqual(r.rejected.map((x) => `${x.key} ${x.code} ${x.reason}`), [
    "10.244.10.0-24 ERR_INVALID_PUBLIC_IP PublicIP 127.0.0.1 is loopback (subnet 10.244.10.0/24)",
    "10.244.11.0-24 ERR_INVALID_PUBLIC_IP PublicIP 224.0.0.5 is multicast (subnet 10.244.11.0/24)",
    "10.244.12.0-24 ERR_INVALID_PUBLIC_IP PublicIP 255.255.255.255 is the broadcast address (subnet 10.244.12.0/24)",
    "10.244.13.0-24 ERR_INVALID_PUBLIC_IP PublicIP 169.254.3.3 is link-local (allow it with --allow-link-local-public-ip) (subnet 10.244.13.0/24)",
    "10.244.14.0-24 ERR_INVALID_PUBLIC_IP PublicIP 192.168.50.1 is this node's own public IP (subnet 10.244.14.0/24)",
    "10.244.15.0-24 ERR_INVALID_PUBLIC_IP PublicIP 10.244.99.1 is inside the cluster network 10.244.0.0/16 (subnet 10.244.15.0/24)",
    "10.244.16.0-24&fc00:0:0:10::-64 ERR_INVALID_PUBLIC_IP PublicIPv6 ::1 is loopback (subnet fc00:0:0:10::/64)",
    "10.244.17.0-24&fc00:0:0:11::-64 ERR_INVALID_PUBLIC_IP PublicIPv6 fe80::17 is link-local (allow it with --allow-link-local-public-ip) (subnet fc00:0:0:11::/64)",
    "10.244.18.0-24&fc00:0:0:12::-64 ERR_INVALID_PUBLIC_IP PublicIPv6 fc00:0:0:99::1 is inside the cluster network fc00::/48 (subnet fc00:0:0:12::/64)",
  ]);
  assert.deepEqual([...r.byKey.keys()], ["10.244.19.0-24&fc00:0:0:13::-64", "10.244.20.0-24"]);
  // With --allow-link-local-public-ip both link-local leases become peers.
  const allowed = leasesToPeers(leases, { ...rules, allowLinkLocalPublicIP: true });
  assert.ok(allowed.byKey.has("10.244.13.0-24") && allowed.byKey.has("10.244.17.0-24&fc00:0:0:11::-64"));
  assert.equal(allowed.rejected.length, 7);
});

test("one public IP, two leases: the later key is ERR_PUBLIC_IP_CONFLICT on a list, in any order", () => {
  const a = lease(30, "192.168.50.30"), b = lease(31, "192.168.50.30"), c = lease(32, "192.168.50.32", "fd00::30"), d = lease(33, "192.168.50.33", "fd00::30");
  for (const list of [[a, b, c, d], [d, c, b, a]]) {
    const r = leasesToPeers(list, rules);
    assert.deepEqual([...r.byKey.keys()].sort(), [a.key, c.key]);
    assert.deepEqual(r.rejected.map((x) => `${x.key} ${x.code} ${x.reason}`), [
      "10.244.31.0-24 ERR_PUBLIC_IP_CONFLICT PublicIP 192.168.50.30 of subnet 10.244.31.0/24 is already the public IP of lease 10.244.30.0-24",
      "10.244.33.0-24&fc00:0:0:21::-64 ERR_PUBLIC_IP_CONFLICT PublicIPv6 fd00::30 of subnet fc00:0:0:21::/64 is already the public IP of lease 10.244.32.0-24&fc00:0:0:20::-64",
    ]);
  }
  // The v4 and v6 public IPs of one lease never conflict with each other, nor a lease with itself.
  assert.equal(leasesToPeers([lease(34, "192.168.50.34", "fd00::34"), lease(34, "192.168.50.34", "fd00::34")], rules).rejected.length, 0);
});

test("events: the lease that arrives second loses; once the first is deleted it is accepted", () => {
  const index = new SubnetIndex();
  const later = lease(40, "192.168.50.40"), first = lease(41, "192.168.50.40");
  const r1 = leasePeers(first, rules, index);
  assert.ok(!isRejected(r1));
  for (const p of r1) index.addPeer(p, first.key);
  const r2 = leasePeers(later, rules, index);
  assert.ok(isRejected(r2) && r2.code === "ERR_PUBLIC_IP_CONFLICT", JSON.stringify(r2));
  // The first owner's own update is no conflict with itself.
  assert.ok(!isRejected(leasePeers(first, rules, index)));
  for (const p of r1) index.deletePeer(p, first.key);
  const r3 = leasePeers(later, rules, index);
  assert.ok(!isRejected(r3), JSON.stringify(r3));
  for (const p of r3) index.addPeer(p, later.key);
  // A delete by a lease that does not own the address leaves the owner in place.
  for (const p of r1) index.deletePeer(p, first.key);
  assert.equal(index.publicIPOwner(parseIP("192.168.50.40"), first.key), later.key);
});
