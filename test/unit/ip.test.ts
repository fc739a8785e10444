import { test } from "node:test";
import assert from "node:assert/strict";
import {
  compareIP, formatIP, formatPrefix, fromBig, ipEqual, makePrefix, maskIP, nextSubnet, nthIP, parseIP, parsePrefix,
  prefixContains, prefixContainsIP, prefixEqual, prefixOverlaps, toBig, tryParseIP,
} from "../../src/net/ip.js";
import { isTwillError } from "../../src/errors.js";

test("IPv4 parse and format round-trip", () => {
  const ip = parseIP("192.168.77.2");
  assert.equal(ip.family, 4);
  assert.deepEqual(Array.from(ip.bytes), [192, 168, 77, 2]);
  assert.equal(formatIP(ip), "192.168.77.2");
  assert.equal(toBig(ip), (192n << 24n) | (168n << 16n) | (77n << 8n) | 2n);
});

test("bad addresses are rejected with ERR_INVALID_IP naming the value", () => {
  for (const s of ["256.1.1.1", "1.2.3", "010.1.1.1", "fe80::1%eth0", "x", "", "1::2::3"]) {
    assert.equal(tryParseIP(s), undefined, s);
    assert.throws(() => parseIP(s, "PublicIP"), (e) => isTwillError(e, "ERR_INVALID_IP") && e.message.includes(`PublicIP ${JSON.stringify(s)}`));
  }
});

test("IPv6 formatting follows RFC 5952 (Go's net.IP.String)", () => {
  const cases: [string, string][] = [
    ["fc00:0:0:1::", "fc00:0:0:1::"],
    ["fc00:0000:0000:0001:0000:0000:0000:0000", "fc00:0:0:1::"],
    ["FC00::1", "fc00::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // first of two equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single zero group is not compressed
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run wins
  ];
  for (const [input, want] of cases) assert.equal(formatIP(parseIP(input)), want, input);
});

test("prefixes: parse, host bits, loose mode, format", () => {
  const p = parsePrefix("10.244.0.0/16");
  assert.equal(formatPrefix(p), "10.244.0.0/16");
  assert.throws(() => parsePrefix("10.244.1.5/16"), (e) => isTwillError(e, "ERR_INVALID_PREFIX") && /host bits/.test(e.message));
  assert.equal(formatPrefix(parsePrefix("10.244.1.5/16", "x", true)), "10.244.0.0/16");
  assert.throws(() => parsePrefix("10.0.0.0/33"), /length over 32/);
  assert.throws(() => parsePrefix("10.0.0.0"), /no \/length/);
  assert.equal(formatPrefix(parsePrefix("fc00::/48")), "fc00::/48");
  assert.throws(() => parsePrefix("fc00::/129"), /length over 128/);
});

test("maskIP and makePrefix in both families", () => {
  assert.equal(formatIP(maskIP(parseIP("10.244.77.9"), 24)), "10.244.77.0");
  assert.equal(formatIP(maskIP(parseIP("10.244.77.9"), 0)), "0.0.0.0");
  assert.equal(formatIP(maskIP(parseIP("fc00:0:0:1:abcd::1"), 64)), "fc00:0:0:1::");
  assert.equal(formatPrefix(makePrefix(parseIP("fc00::1:2"), 112)), "fc00::1:0/112");
});

test("nthIP and nextSubnet, IPv4 and IPv6, with carries", () => {
  const v4 = parsePrefix("10.244.1.0/24");
  assert.equal(formatIP(nthIP(v4, 1)), "10.244.1.1");
  assert.equal(formatPrefix(nextSubnet(v4)), "10.244.2.0/24");
  assert.equal(formatPrefix(nextSubnet(parsePrefix("10.244.255.0/24"))), "10.245.0.0/24");
  assert.equal(formatPrefix(nextSubnet(v4, 254n)), "10.244.255.0/24");
  const v6 = parsePrefix("fc00::/64");
  assert.equal(formatPrefix(nextSubnet(v6)), "fc00:0:0:1::/64");
  assert.equal(formatPrefix(nextSubnet(parsePrefix("fc00:0:0:ffff::/64"))), "fc00:0:1::/64");
  assert.equal(formatIP(nthIP(parsePrefix("fc00:0:0:1::/64"), 1)), "fc00:0:0:1::1");
});

test("containment and overlap", () => {
  const net = parsePrefix("10.244.0.0/16");
  assert.ok(prefixContains(net, parsePrefix("10.244.9.0/24")));
  assert.ok(!prefixContains(parsePrefix("10.244.9.0/24"), net));
  assert.ok(!prefixContains(net, parsePrefix("10.245.0.0/24")));
  assert.ok(prefixOverlaps(parsePrefix("10.244.9.0/24"), net));
  assert.ok(!prefixOverlaps(parsePrefix("10.244.9.0/24"), parsePrefix("10.244.10.0/24")));
  assert.ok(prefixContainsIP(net, parseIP("10.244.200.1")));
  assert.ok(!prefixContainsIP(net, parseIP("fc00::1")), "families never mix");
  assert.ok(!prefixOverlaps(parsePrefix("0.0.0.0/0"), parsePrefix("::/0")));
  assert.ok(prefixOverlaps(parsePrefix("fc00::/48"), parsePrefix("fc00:0:0:1::/64")));
  assert.ok(prefixEqual(parsePrefix("fc00::/48"), parsePrefix("fc00:0::/48")));
});

test("compare, equality and bigint conversion", () => {
  assert.equal(compareIP(parseIP("10.0.0.1"), parseIP("10.0.0.2")), -1);
  assert.equal(compareIP(parseIP("10.0.0.2"), parseIP("10.0.0.2")), 0);
  assert.ok(compareIP(parseIP("255.255.255.255"), parseIP("::")) < 0, "v4 sorts before v6");
  assert.ok(ipEqual(fromBig(6, 1n), parseIP("::1")));
  assert.equal(toBig(parseIP("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), (1n << 128n) - 1n);
});
