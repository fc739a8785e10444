/**
 * sameLease (peers.ts): two versions of a lease are the same when every
 * field but the expiry is — the daemon's re-list skips its diff on it, so a
 * change in any field that decides a peer must make it false.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import { sameLease } from "../../src/peers.js";
import type { Lease } from "../../src/lease/types.js";

const base = (): Lease => ({
  key: "10.244.1.0-24&fc00:0:0:1::-64", backendType: "vxlan",
  subnet: parsePrefix("10.244.1.0/24"), ipv6Subnet: parsePrefix("fc00:0:0:1::/64"),
  publicIP: parseIP("192.168.50.11"), publicIPv6: parseIP("fd00:50::11"),
  backendData: { vni: 1, vtepMAC: "02:00:00:00:00:01" }, backendV6Data: { vni: 1, vtepMAC: "02:00:00:00:00:02" },
  expiration: 1000,
});

test("equal copies (fresh objects, another expiry) are the same lease", () => {
  assert.equal(sameLease(base(), base()), true);
  assert.equal(sameLease(base(), { ...base(), expiration: 2000 }), true, "the expiry does not count");
  const { expiration: _e, ...noExpiry } = base();
  assert.equal(sameLease(base(), noExpiry), true);
  const a = base();
  assert.equal(sameLease(a, a), true);
});

test("a change in any other field makes another lease", () => {
  const changes: Record<string, Partial<Record<keyof Lease, unknown>>> = {
    key: { key: "10.244.1.0-24" },
    backendType: { backendType: "host-gw" },
    subnet: { subnet: parsePrefix("10.244.2.0/24") },
    "subnet length": { subnet: parsePrefix("10.244.1.0/25") },
    "no subnet": { subnet: undefined },
    ipv6Subnet: { ipv6Subnet: parsePrefix("fc00:0:0:2::/64") },
    "no ipv6Subnet": { ipv6Subnet: undefined },
    publicIP: { publicIP: parseIP("192.168.50.12") },
    "no publicIP": { publicIP: undefined },
    publicIPv6: { publicIPv6: parseIP("fd00:50::12") },
    "backendData vni": { backendData: { vni: 2, vtepMAC: "02:00:00:00:00:01" } },
    "backendData vtepMAC": { backendData: { vni: 1, vtepMAC: "02:00:00:00:00:09" } },
    "no backendData": { backendData: undefined },
    "backendV6Data vtepMAC": { backendV6Data: { vni: 1, vtepMAC: "02:00:00:00:00:09" } },
  };
  for (const [what, change] of Object.entries(changes)) {
    const b = { ...base(), ...change } as Lease;
    assert.equal(sameLease(base(), b), false, what);
    assert.equal(sameLease(b, base()), false, `${what} (the other way round)`);
  }
});
