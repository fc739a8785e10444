/**
 * kubeclaims.ts: which of several nodes claiming one podCIDR (or overlapping
 * ones) holds it. Pure: claims in, denials out.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { SubnetClaims, claimOrder, type Claim } from "../../src/lease/kubeclaims.js";
import { annotationNames, storedPublicIPs } from "../../src/lease/kubenode.js";
import { formatIP, parsePrefix } from "../../src/net/ip.js";
import { isTwillError } from "../../src/errors.js";

const c = (name: string, created: string, ...subnets: string[]): Claim => ({ name, created, subnets: subnets.map((s) => parsePrefix(s)) });
const holders = (cl: SubnetClaims, names: string[]) => names.map((n) => `${n}:${cl.denial(n)?.holder.name ?? "-"}`);

test("order: our own node, then creationTimestamp (missing last), then name", () => {
  const sorted = [c("b", "2024-01-02T00:00:00Z"), c("z", ""), c("a", "2024-01-02T00:00:00Z"), c("y", "2024-01-01T00:00:00Z"), { ...c("own", "2030-01-01T00:00:00Z"), own: true }]
    .sort(claimOrder).map((x) => x.name);
  assert.deepEqual(sorted, ["own", "y", "a", "b", "z"]);
});

test("the first claim holds a subnet whatever order the claims arrive in; the next one takes over when it goes", () => {
  for (const arrival of [["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]]) {
    const cl = new SubnetClaims();
    const all = { a: c("a", "2024-01-01T00:00:01Z", "10.244.1.0/24"), b: c("b", "2024-01-01T00:00:02Z", "10.244.1.0/24"), c: c("c", "2024-01-01T00:00:03Z", "10.244.2.0/24") };
    for (const n of arrival) cl.set(n, all[n as keyof typeof all]);
    assert.deepEqual(holders(cl, ["a", "b", "c"]), ["a:-", "b:a", "c:-"], `arrival ${arrival}`);
    const touched = cl.set("a", undefined);
    assert.deepEqual(touched.sort(), ["a", "b"], "only the nodes sharing the subnet are re-decided");
    assert.deepEqual(holders(cl, ["a", "b", "c"]), ["a:-", "b:-", "c:-"]);
  }
});

test("overlapping subnets of different lengths; a denied claim holds nothing", () => {
  const cl = new SubnetClaims();
  cl.set("a", c("a", "2024-01-01T00:00:01Z", "10.244.1.0/24"));
  cl.set("b", c("b", "2024-01-01T00:00:02Z", "10.244.0.0/23"));
  cl.set("c", c("c", "2024-01-01T00:00:03Z", "10.244.0.0/24"));
  // b overlaps a (denied); c overlaps only b, which holds nothing: granted.
  assert.deepEqual(holders(cl, ["a", "b", "c"]), ["a:-", "b:a", "c:-"]);
  const d = cl.denial("b")!;
  assert.deepEqual([d.subnet.len, d.holderSubnet.len], [23, 24]);
  // a goes: b is granted, so c (after b) is denied now, although it never overlapped a.
  assert.deepEqual(cl.set("a", undefined).sort(), ["a", "b", "c"]);
  assert.deepEqual(holders(cl, ["b", "c"]), ["b:-", "c:b"]);
  // dual stack: a clash in either family denies
  cl.set("v6a", c("v6a", "2024-01-01T00:00:01Z", "10.244.9.0/24", "fc00:0:0:9::/64"));
  cl.set("v6b", c("v6b", "2024-01-01T00:00:02Z", "10.244.10.0/24", "fc00:0:0:9::/64"));
  assert.deepEqual(holders(cl, ["v6a", "v6b"]), ["v6a:-", "v6b:v6a"]);
});

test("our own claim holds our subnet in our view, even against an older node", () => {
  const cl = new SubnetClaims();
  cl.set("old", c("old", "2020-01-01T00:00:00Z", "10.244.1.0/24"));
  cl.set("me", { ...c("me", "2024-01-01T00:00:00Z", "10.244.1.0/24"), own: true });
  assert.deepEqual(holders(cl, ["me", "old"]), ["me:-", "old:me"]);
});

test("storedPublicIPs: flannel's GetStoredPublicIP, with bad values named", () => {
  const names = annotationNames();
  const node = (a: Record<string, string>) => ({ metadata: { name: "n1", annotations: a } });
  const got = storedPublicIPs(node({ "flannel.alpha.coreos.com/node-public-ip": "10.0.0.7", "flannel.alpha.coreos.com/node-public-ipv6": "" }), names);
  assert.deepEqual([formatIP(got.v4!), got.v6], ["10.0.0.7", undefined]);
  assert.deepEqual(storedPublicIPs(node({}), names), {});
  for (const [k, v, want] of [
    ["node-public-ip", "10.0.0", `"10.0.0" is not an IPv4 address`],
    ["node-public-ipv6", "10.0.0.7", `"10.0.0.7" is not an IPv6 address`],
    ["node-public-ip", "0.0.0.0", `"0.0.0.0" is not a usable IPv4 address`],
  ] as const) {
    assert.throws(() => storedPublicIPs(node({ [`flannel.alpha.coreos.com/${k}`]: v }), names),
      (e) => isTwillError(e, "ERR_INVALID_IP") && e.message === `Cannot use node n1's annotation flannel.alpha.coreos.com/${k}: ${want}`);
  }
  // a custom prefix, as flannel's newAnnotations builds it
  const custom = annotationNames("example.com/x");
  assert.equal(custom.nodePublicIP, "example.com/x-node-public-ip");
});
