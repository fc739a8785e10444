import { test } from "node:test";
import assert from "node:assert/strict";
import { forwardRules, masqRules, versionHasRandomFully } from "../../src/net/masq.js";
import { parsePrefix } from "../../src/net/ip.js";

const C = ["-m", "comment", "--comment", '"flanneld masq"'];

test("FLANNEL-POSTRTG is flannel's masqRules, with and without --random-fully", () => {
  const want = (m: string[]) => [
    ["-m", "mark", "--mark", "0x4000/0x4000", ...C, "-j", "RETURN"],
    ["-s", "10.244.1.0/24", "-d", "10.244.0.0/16", ...C, "-j", "RETURN"],
    ["-s", "10.244.0.0/16", "-d", "10.244.1.0/24", ...C, "-j", "RETURN"],
    ["!", "-s", "10.244.0.0/16", "-d", "10.244.1.0/24", ...C, "-j", "RETURN"],
    ["-s", "10.244.0.0/16", "!", "-d", "224.0.0.0/4", ...C, "-j", ...m],
    ["!", "-s", "10.244.0.0/16", "-d", "10.244.0.0/16", ...C, "-j", ...m],
  ];
  const s = parsePrefix("10.244.1.0/24"), n = parsePrefix("10.244.0.0/16");
  assert.deepEqual(masqRules(s, n), want(["MASQUERADE", "--random-fully"]));
  assert.deepEqual(masqRules(s, n, false), want(["MASQUERADE"]));
  assert.equal(masqRules(parsePrefix("fc00:0:0:1::/64"), parsePrefix("fc00::/48"))[4]![4], "ff00::/8");
  assert.deepEqual(forwardRules(n).map((r) => r.slice(0, 2)), [["-s", "10.244.0.0/16"], ["-d", "10.244.0.0/16"]]);
});

test("--random-fully only with iptables >= 1.6.2 (go-iptables HasRandomFully)", () => {
  assert.equal(versionHasRandomFully("iptables v1.8.7 (nf_tables)"), true);
  assert.equal(versionHasRandomFully("iptables v1.6.2"), true);
  assert.equal(versionHasRandomFully("iptables v1.6.1"), false);
  assert.equal(versionHasRandomFully("iptables v1.4.21"), false);
  assert.equal(versionHasRandomFully("garbage"), false);
});
