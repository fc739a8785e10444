import { test } from "node:test";
import assert from "node:assert/strict";
import { formatLeaseKey, parseLease, parseLeaseKey, serializeLease, tryParseLease, v4KeyOverlaps } from "../../src/lease/parse.js";
import { isTwillError } from "../../src/errors.js";
import { formatIP, formatPrefix, parsePrefix } from "../../src/net/ip.js";

const V4 = `{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}}`;
const DUAL_KEY = "10.244.1.0-24&fc00:0:0:1::-64";
const DUAL = `{"PublicIP":"192.168.77.2","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"},"BackendV6Data":{"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:1a"}}`;

function rejects(key: string, json: string, ...fragments: string[]) {
  assert.throws(() => parseLease(key, json), (e) => {
    assert.ok(isTwillError(e, "ERR_INVALID_LEASE"), String(e));
    assert.ok(e.message.startsWith(`Cannot parse lease ${key}: `), e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
  assert.equal(tryParseLease(key, json), undefined);
}

test("an IPv4 vxlan lease as flannel writes it", () => {
  const l = parseLease("10.244.1.0-24", V4, { expiration: 1234 });
  assert.equal(l.key, "10.244.1.0-24");
  assert.equal(formatPrefix(l.subnet!), "10.244.1.0/24");
  assert.equal(l.ipv6Subnet, undefined);
  assert.equal(formatIP(l.publicIP!), "192.168.77.2");
  assert.equal(l.publicIPv6, undefined);
  assert.equal(l.backendType, "vxlan");
  assert.deepEqual(l.backendData, { vni: 1, vtepMAC: "8e:d0:f8:0a:41:19" });
  assert.equal(l.backendV6Data, undefined);
  assert.equal(l.expiration, 1234);
  // "BackendV6Data":null (as in the compat doc's example) reads the same.
  assert.deepEqual(parseLease("10.244.1.0-24", V4.replace(/}$/, `,"BackendV6Data":null}`)).backendData, l.backendData);
});

test("a dual-stack lease", () => {
  const l = parseLease(DUAL_KEY, DUAL);
  assert.equal(formatPrefix(l.subnet!), "10.244.1.0/24");
  assert.equal(formatPrefix(l.ipv6Subnet!), "fc00:0:0:1::/64");
  assert.equal(formatIP(l.publicIPv6!), "fd00::2");
  assert.deepEqual(l.backendV6Data, { vni: 1, vtepMAC: "8e:d0:f8:0a:41:1a" });
});

test("lease keys: parse and format like flannel's MakeSubnetKey", () => {
  assert.equal(formatLeaseKey(parsePrefix("10.244.1.0/24")), "10.244.1.0-24");
  assert.equal(formatLeaseKey(parsePrefix("10.244.1.0/24"), parsePrefix("fc00:0000:0:1::/64")), DUAL_KEY);
  assert.equal(formatLeaseKey(undefined, parsePrefix("fc00:0:0:1::/64")), "0.0.0.0-0&fc00:0:0:1::-64");
  const k = parseLeaseKey(DUAL_KEY);
  assert.equal(formatPrefix(k.subnet!), "10.244.1.0/24");
  assert.equal(formatPrefix(k.ipv6Subnet!), "fc00:0:0:1::/64");
  for (const v6only of ["0.0.0.0-0&fc00:0:0:1::-64", "fc00:0:0:1::-64"]) {
    const p = parseLeaseKey(v6only);
    assert.equal(p.subnet, undefined, v6only);
    assert.equal(formatPrefix(p.ipv6Subnet!), "fc00:0:0:1::/64", v6only);
  }
  for (const bad of ["10.244.1.0", "10.244.1.0-33", "10.244.1.5-24", "10.244.1.0-24&", "10.244.1.0-24&10.0.0.0-8", "../etc/passwd", "0.0.0.0-0", "a&b&c", ""]) {
    assert.throws(() => parseLeaseKey(bad), (e) => isTwillError(e, "ERR_INVALID_LEASE") && e.message.includes(JSON.stringify(bad)), bad);
  }
});

test("a lease of another backend type is a lease, without vxlan data", () => {
  const l = parseLease("10.244.3.0-24", `{"PublicIP":"192.168.77.3","PublicIPv6":null,"BackendType":"host-gw","BackendData":{"anything":true}}`);
  assert.equal(l.backendType, "host-gw");
  assert.equal(l.backendData, undefined);
  assert.equal(formatIP(l.publicIP!), "192.168.77.3");
  // Even with no backend data at all, or no BackendType (flannel's omitempty).
  assert.equal(parseLease("10.244.3.0-24", `{"PublicIP":"192.168.77.3","BackendType":"udp"}`).backendType, "udp");
  assert.equal(parseLease("10.244.3.0-24", `{"PublicIP":"192.168.77.3"}`).backendType, "");
});

test("each kind of bad lease is rejected, naming the field", () => {
  const key = "10.244.1.0-24";
  rejects(key, `{"PublicIP":`, "malformed JSON");
  rejects(key, `"x"`, "is not a JSON object");
  rejects(key, V4.replace(`"PublicIP":"192.168.77.2",`, ""), "PublicIP is missing");
  rejects(key, V4.replace("192.168.77.2", "192.168.77"), `PublicIP "192.168.77" is not an IPv4 address`);
  rejects(key, V4.replace("192.168.77.2", "0.0.0.0"), `PublicIP is "0.0.0.0" but the lease has an IPv4 subnet`);
  rejects(key, V4.replace(`"PublicIP":"192.168.77.2"`, `"PublicIP":7`), "PublicIP 7 is not an IPv4 address");
  rejects(key, V4.replace(`"PublicIPv6":null`, `"PublicIPv6":"banana"`), `PublicIPv6 "banana" is not an IPv6 address`);
  rejects(key, V4.replace(`"vxlan"`, "3"), "BackendType 3 is not a string");
  rejects(key, `{"PublicIP":"192.168.77.2","BackendType":"vxlan"}`, "BackendData is missing");
  rejects(key, V4.replace(`{"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}`, `"x"`), `BackendData "x" is not a JSON object`);
  rejects(key, V4.replace(`"VNI":1`, `"VNI":16777216`), "BackendData.VNI 16777216 is not an integer between 0 and 16777215");
  rejects(key, V4.replace(`"VNI":1`, `"VNI":"1"`), `BackendData.VNI "1" is not an integer`);
  rejects(key, V4.replace(`"VNI":1,`, ""), "BackendData.VNI is missing");
  rejects(key, V4.replace("8e:d0:f8:0a:41:19", "01:00:5e:00:00:01"), `BackendData.VtepMAC "01:00:5e:00:00:01" is not a unicast MAC`);
  rejects(key, V4.replace("8e:d0:f8:0a:41:19", "8e:d0:f8:0a:41"), `BackendData.VtepMAC "8e:d0:f8:0a:41" is not a MAC address`);
  rejects(key, V4.replace(`,"VtepMAC":"8e:d0:f8:0a:41:19"`, ""), "BackendData.VtepMAC is missing");
  // key/IP family mismatch
  rejects(key, V4.replace("192.168.77.2", "fd00::2"), `PublicIP "fd00::2" is not an IPv4 address`);
  rejects(DUAL_KEY, DUAL.replace(`"fd00::2"`, `"192.168.77.9"`), `PublicIPv6 "192.168.77.9" is not an IPv6 address`);
  rejects(DUAL_KEY, DUAL.replace(`"fd00::2"`, "null"), "PublicIPv6 is missing but the lease has an IPv6 subnet");
  rejects(DUAL_KEY, DUAL.replace(/,"BackendV6Data":.*}$/, "}"), "BackendV6Data is missing");
  rejects(DUAL_KEY, DUAL.replace("8e:d0:f8:0a:41:1a", "33:33:00:00:00:01"), `BackendV6Data.VtepMAC "33:33:00:00:00:01" is not a unicast MAC`);
  assert.throws(() => parseLease("10.244.1.0/24", V4), (e) => isTwillError(e, "ERR_INVALID_LEASE") && /lease key "10.244.1.0\/24"/.test(e.message));
});

test("serializeLease writes flannel's exact JSON and round-trips", () => {
  const v4 = parseLease("10.244.1.0-24", V4.replace("8e:d0:f8:0a:41:19", "8E:D0:F8:0A:41:19"));
  assert.equal(serializeLease(v4), V4, "Go's json.Marshal of LeaseAttrs: no BackendV6Data key when unset, MAC lower case");
  const dual = parseLease(DUAL_KEY, DUAL);
  assert.equal(serializeLease(dual), DUAL);
  assert.deepEqual(parseLease(DUAL_KEY, serializeLease(dual)), dual);
  const v6only = parseLease("0.0.0.0-0&fc00:0:0:1::-64", `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendV6Data":{"VNI":3,"VtepMAC":"8e:d0:f8:0a:41:1a"}}`);
  assert.equal(v6only.publicIP, undefined);
  assert.equal(serializeLease(v6only), `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendV6Data":{"VNI":3,"VtepMAC":"8e:d0:f8:0a:41:1a"}}`);
  // Go escapes <, > and & in strings.
  assert.equal(serializeLease({ key: "10.0.1.0-24", backendType: "a<b>&c" }), `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"a\\u003cb\\u003e\\u0026c"}`);
});

/**
 * flannel's own text is read by a fast path (parse.ts canonicalLease); the
 * same JSON with a space after its first "{" is never canonical and takes
 * the general parser. Both must give the same lease, or both the same error.
 */
test("flannel's exact text reads as the general parser reads it (the fast path), for good and bad values", () => {
  const outcome = (key: string, json: string) => {
    try {
      return { lease: parseLease(key, json, { expiration: 77 }) };
    } catch (e) {
      assert.ok(isTwillError(e, "ERR_INVALID_LEASE"), String(e));
      return { error: e.message.replace(/malformed JSON \(.*\)$/, "malformed JSON") };
    }
  };
  const text = (ip: string, vni: string, mac: string, v6 = `"PublicIPv6":null,`, type = "vxlan", tail = "") =>
    `{"PublicIP":"${ip}",${v6}"BackendType":"${type}","BackendData":{"VNI":${vni},"VtepMAC":"${mac}"}${tail}}`;
  const keys = ["10.244.1.0-24", "10.0.0.0-8", "10.244.1.64-26", "192.168.77.255-32", "0.0.0.0-1", "10.244.1.5-24", "10.244.1.0-33",
    "10.244.1.0-0", "10.244.1.0-024", "010.244.1.0-24", "10.244.01.0-24", "10.244.1.0-", "10.244.1-24", "10.244.256.0-24", "10.244.1.0-24&fc00::-64", "x"];
  const ips = ["192.168.77.2", "0.0.0.0", "0.0.0.1", "255.255.255.255", "192.168.077.2", "192.168.77", "192.168.77.2.1", "192.168.77.256", "fd00::2", " 1.2.3.4", ""];
  const vnis = ["1", "0", "16777215", "16777216", "01", "1.0", "1e0", "-1", "123456789", "1234567890", ""];
  const macs = ["8e:d0:f8:0a:41:19", "8E:D0:F8:0A:41:19", "01:00:5e:00:00:01", "00:00:00:00:00:00", "8e:d0:f8:0a:41", "8e:d0:f8:0a:41:1", "8e-d0-f8-0a-41-19", "8e:d0:f8:0a:41:1g"];
  const texts = [
    ...ips.map((ip) => text(ip, "1", "8e:d0:f8:0a:41:19")),
    ...vnis.map((v) => text("192.168.77.2", v, "8e:d0:f8:0a:41:19")),
    ...macs.map((m) => text("192.168.77.2", "1", m)),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19", ""), // a flannel without PublicIPv6
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19", `"PublicIPv6":"fd00::2",`),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19", `"PublicIPv6":null,`, "host-gw"),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19", `"PublicIPv6":null,`, "vxla\\u006e"),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19", `"PublicIPv6":null,`, "vxlan", `,"BackendV6Data":{"VNI":2,"VtepMAC":"8e:d0:f8:0a:41:1a"}`),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19", `"PublicIPv6":null,`, "vxlan", `,"BackendV6Data":null`),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19") + " ",
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19").replace(`"VtepMAC"`, `"vtepmac"`),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19").replace("}}", "} }"),
    text("192.168.77.2", "1", "8e:d0:f8:0a:41:19").slice(0, -1),
  ];
  let fast = 0, compared = 0;
  for (const key of keys) {
    for (const json of texts) {
      const general = outcome(key, json.replace(/^\{/, "{ "));
      const got = outcome(key, json);
      assert.deepEqual(got, general, `${key} ${json}`);
      compared++;
      if (got.lease && json.startsWith(`{"PublicIP":"`)) fast++;
    }
  }
  assert.ok(fast > 20, `${fast} of ${compared} pairs were good leases in flannel's form`);
});

test("IPv4 lease keys read as ip.ts reads a prefix (host bits zero, length 1-32, no leading zeros in the address)", () => {
  const oracle = (key: string) => {
    const m = /^([0-9.]+)-(\d{1,3})$/.exec(key);
    if (!m || Number(m[2]) < 1) return undefined;
    try {
      return parsePrefix(`${m[1]}/${m[2]}`);
    } catch {
      return undefined;
    }
  };
  for (const key of ["10.244.1.0-24", "10.244.1.0-024", "0.0.0.0-1", "128.0.0.0-1", "1.2.3.4-32", "255.255.255.252-30", "10.244.1.5-24",
    "10.244.1.0-33", "10.244.1.0-0", "10.244.1.0-9999", "01.2.3.0-24", "1.2.3.0--24", "1.2.3-24", "1.2.3.0.0-24", "1.2.3.0-2a", "300.1.1.0-24", "-24", "1.2.3.0"]) {
    const want = oracle(key);
    let got: ReturnType<typeof parseLeaseKey> | undefined;
    try {
      got = parseLeaseKey(key);
    } catch (e) {
      assert.ok(isTwillError(e, "ERR_INVALID_LEASE") && e.message.includes(JSON.stringify(key)), String(e));
    }
    assert.deepEqual(got, want && { subnet: want }, key);
  }
});

test("v4KeyOverlaps tells from a key's text what parseLeaseKey + an overlap check would, and nothing for other keys", () => {
  const ranges: [string, number, number][] = [["10.244.1.0/24", 0x0af40100, 0x0af401ff], ["10.244.0.0/16", 0x0af40000, 0x0af4ffff], ["10.244.1.128/25", 0x0af40180, 0x0af401ff], ["none", 1, 0]];
  const keys = ["10.244.1.0-24", "10.244.0.0-16", "10.244.1.0-25", "10.244.1.128-25", "10.244.2.0-24", "10.0.0.0-8", "0.0.0.0-1", "128.0.0.0-1",
    "10.244.1.255-32", "10.244.2.0-32", "10.244.1.0-24&fc00::-64", "0.0.0.0-0&fc00::-64", "fc00::-64", "10.244.1.5-24", "x"];
  for (const [what, lo, hi] of ranges) {
    for (const key of keys) {
      let want: boolean | undefined;
      try {
        const k = parseLeaseKey(key);
        if (key.includes("&") || !k.subnet) want = undefined;
        else want = lo <= hi && !!k.subnet && (() => {
          const b = k.subnet!.ip.bytes;
          const from = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
          return from <= hi && lo <= from + 2 ** (32 - k.subnet!.len) - 1;
        })();
      } catch {
        want = undefined; // not a key: parseLeaseKey reports it
      }
      assert.equal(v4KeyOverlaps(key, lo, hi), want, `${key} vs ${what}`);
    }
  }
});
