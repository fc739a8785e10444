/**
 * flannel's nftables rules (net/nft.ts) as text, and the iptables backend
 * choice (net/masq.ts) as kube-proxy's image makes it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { nftMasqRules, nftScript } from "../../src/net/nft.js";
import { census, pickIptablesMode } from "../../src/net/masq.js";
import { parsePrefix } from "../../src/net/ip.js";

test("nftables: flannel's tables, chains and rules, in its order (pkg/trafficmngr/nftables)", () => {
  const v4 = { subnet: parsePrefix("10.244.3.0/24"), network: parsePrefix("10.244.0.0/16") };
  assert.deepEqual(nftMasqRules(v4.subnet, v4.network, true), [
    "meta mark 0x4000 return",
    "ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
    "ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
    "ip saddr != 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
    "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
    "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
  ]);
  const s = nftScript(4, v4, { forward: true, masq: true }, false);
  assert.match(s, /^add table ip flannel-ipv4 \{ comment "rules for flannel-ipv4" ; \}$/m);
  assert.match(s, /^add chain ip flannel-ipv4 forward \{ type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; \}\nflush chain ip flannel-ipv4 forward\nadd rule ip flannel-ipv4 forward ip saddr 10\.244\.0\.0\/16 accept\nadd rule ip flannel-ipv4 forward ip daddr 10\.244\.0\.0\/16 accept$/m);
  assert.match(s, /^add chain ip flannel-ipv4 postrtg \{ type nat hook postrouting priority srcnat ; .*\}\nflush chain ip flannel-ipv4 postrtg$/m);
  assert.doesNotMatch(s, /fully-random/, "--ip-masq-fully-random-disable or no kernel support");
  const v6 = nftScript(6, { subnet: parsePrefix("fc00:0:0:3::/64"), network: parsePrefix("fc00::/48") }, { forward: false, masq: true }, true);
  assert.match(v6, /^add rule ip6 flannel-ipv6 postrtg ip6 saddr fc00::\/48 ip6 daddr != ff00::\/8 masquerade fully-random$/m);
  assert.doesNotMatch(v6, /forward/, "--iptables-forward-rules=false");
  assert.equal(nftScript(6, undefined, { forward: true, masq: true }, true), 'add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }\n', "a family not in use: the empty table flannel's Init makes");
});

test("iptables backend: kube-proxy's hint chain first, then more rules, nft on a tie (iptables-wrappers)", () => {
  const legacyHint = census("*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n");
  const nftRules = census("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\n-A POSTROUTING -j RETURN\nCOMMIT\n");
  assert.deepEqual(legacyHint, { hint: true, rules: 0 });
  assert.deepEqual(nftRules, { hint: false, rules: 2 });
  assert.equal(pickIptablesMode(legacyHint, nftRules), "legacy");
  assert.equal(pickIptablesMode({ hint: false, rules: 5 }, { hint: false, rules: 2 }), "legacy");
  assert.equal(pickIptablesMode({ hint: false, rules: 2 }, { hint: false, rules: 2 }), "nft");
  assert.equal(pickIptablesMode({ hint: true, rules: 9 }, census(":KUBE-KUBELET-CANARY - [0:0]\n")), "nft", "nft's hint wins");
  assert.equal(pickIptablesMode(undefined, undefined), "nft");
});
