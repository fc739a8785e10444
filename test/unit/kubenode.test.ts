import { test } from "node:test";
import assert from "node:assert/strict";
import {
  annotationChanges, annotationNames, leaseAnnotations, networkReadyCondition, nodeToLease, ownLease, podSubnets,
  storedVtepMACs, tryNodeLeaseKey, type NodeLike,
} from "../../src/lease/kubenode.js";
import { parseLease } from "../../src/lease/parse.js";
import { parseNetConfig } from "../../src/config/netconf.js";
import { isTwillError } from "../../src/errors.js";
import { formatIP, formatPrefix, parseIP } from "../../src/net/ip.js";

const P = "flannel.alpha.coreos.com";
const names = annotationNames();
const V4 = { enableIPv4: true, enableIPv6: false };
const DUAL = { enableIPv4: true, enableIPv6: true };
const MAC = "8e:d0:f8:0a:41:19";
const MAC6 = "8e:d0:f8:0a:41:1a";

/** A node as flannel leaves it (IPv4). */
function flannelNode(name: string, podCIDR: string, extra: Record<string, string> = {}, more: Partial<NodeLike["spec"]> = {}): NodeLike {
  return {
    metadata: {
      name,
      annotations: {
        "node.alpha.kubernetes.io/ttl": "0",
        [`${P}/kube-subnet-manager`]: "true",
        [`${P}/backend-type`]: "vxlan",
        [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${MAC}"}`,
        [`${P}/public-ip`]: "192.168.77.2",
        ...extra,
      },
    },
    spec: { podCIDR, podCIDRs: [podCIDR], ...more },
  };
}

function rejects(f: () => unknown, message: string) {
  assert.throws(f, (e) => {
    assert.ok(isTwillError(e, "ERR_INVALID_LEASE"), String(e));
    assert.ok(e.message.startsWith(message), `${JSON.stringify(e.message)} does not start with ${JSON.stringify(message)}`);
    return true;
  });
}

test("annotation names: flannel's prefix rules", () => {
  assert.equal(names.kubeSubnetManager, `${P}/kube-subnet-manager`);
  assert.equal(names.backendV6Data, `${P}/backend-v6-data`);
  assert.equal(names.publicIPv6Overwrite, `${P}/public-ipv6-overwrite`);
  assert.equal(annotationNames("example.com").publicIP, "example.com/public-ip");
  assert.equal(annotationNames("example.com/net").publicIP, "example.com/net-public-ip");
  assert.equal(annotationNames("example.com/net-").backendType, "example.com/net-backend-type");
  for (const bad of ["a/b/c", "Example.com", "nodots", "example.com/UPPER"]) {
    assert.throws(() => annotationNames(bad), (e) => isTwillError(e, "ERR_INVALID_FLAG") && e.message.includes(JSON.stringify(bad)), bad);
  }
});

test("a node flannel annotated is the same lease as flannel's etcd lease for it", () => {
  const l = nodeToLease(flannelNode("n2", "10.244.2.0/24"), names, V4)!;
  const etcd = parseLease("10.244.2.0-24", `{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${MAC}"}}`);
  assert.deepEqual(l, etcd);
});

test("nodes without the kube-subnet-manager annotation are not leases yet", () => {
  assert.equal(nodeToLease({ metadata: { name: "n4" }, spec: { podCIDR: "10.244.4.0/24" } }, names, V4), undefined);
  assert.equal(nodeToLease(flannelNode("n4", "10.244.4.0/24", { [`${P}/kube-subnet-manager`]: "false" }), names, V4), undefined);
  // ... even with junk in the other annotations
  assert.equal(nodeToLease(flannelNode("n4", "10.244.4.0/24", { [`${P}/kube-subnet-manager`]: "", [`${P}/backend-data`]: "zz" }), names, V4), undefined);
});

test("only podCIDR (no podCIDRs), and a custom annotation prefix", () => {
  const custom = annotationNames("example.com/net");
  const n: NodeLike = {
    metadata: { name: "n1", annotations: { "example.com/net-kube-subnet-manager": "true", "example.com/net-backend-type": "vxlan", "example.com/net-backend-data": `{"VNI":7,"VtepMAC":"${MAC.toUpperCase()}"}`, "example.com/net-public-ip": "10.0.0.1" } },
    spec: { podCIDR: "10.244.1.0/24" },
  };
  const l = nodeToLease(n, custom, V4)!;
  assert.equal(l.key, "10.244.1.0-24");
  assert.deepEqual(l.backendData, { vni: 7, vtepMAC: MAC });
  assert.equal(nodeToLease(n, names, V4), undefined); // flannel's prefix: not annotated
});

test("dual stack podCIDRs: the key and the data follow the enabled families", () => {
  const n = flannelNode("n2", "10.244.2.0/24", {
    [`${P}/backend-v6-data`]: `{"VNI":1,"VtepMAC":"${MAC6}"}`,
    [`${P}/public-ipv6`]: "fd00::2",
  }, { podCIDRs: ["fc00:0:0:2::/64", "10.244.2.0/24"] }); // any order
  const dual = nodeToLease(n, names, DUAL)!;
  assert.equal(dual.key, "10.244.2.0-24&fc00:0:0:2::-64");
  assert.equal(formatPrefix(dual.ipv6Subnet!), "fc00:0:0:2::/64");
  assert.equal(formatIP(dual.publicIPv6!), "fd00::2");
  assert.deepEqual(dual.backendV6Data, { vni: 1, vtepMAC: MAC6 });
  const v4 = nodeToLease(n, names, V4)!;
  assert.equal(v4.key, "10.244.2.0-24");
  assert.equal(v4.ipv6Subnet, undefined);
  assert.equal(v4.backendV6Data, undefined);
  const v6 = nodeToLease(n, names, { enableIPv4: false, enableIPv6: true })!;
  assert.equal(v6.key, "0.0.0.0-0&fc00:0:0:2::-64");
  assert.equal(v6.publicIP, undefined);
  // IPv6 enabled, but the v6 annotations missing: an error naming the annotation.
  const noV6 = flannelNode("n3", "10.244.3.0/24", {}, { podCIDRs: ["10.244.3.0/24", "fc00:0:0:3::/64"] });
  rejects(() => nodeToLease(noV6, names, DUAL), `Cannot parse node n3: annotation ${P}/public-ipv6 is missing but the node has an IPv6 podCIDR`);
});

test("bad annotation values are errors naming the node, the annotation and the value", () => {
  const at = (extra: Record<string, string>, msg: string) => rejects(() => nodeToLease(flannelNode("n3", "10.244.3.0/24", extra), names, V4), `Cannot parse node n3: ${msg}`);
  at({ [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"zz"}` }, `annotation ${P}/backend-data: VtepMAC "zz" is not a MAC`);
  at({ [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}` }, `annotation ${P}/backend-data: VtepMAC "01:00:5e:00:00:01" is not a unicast MAC`);
  at({ [`${P}/backend-data`]: `{"VNI":1}` }, `annotation ${P}/backend-data: VtepMAC is missing`);
  at({ [`${P}/backend-data`]: `{"VNI":16777216,"VtepMAC":"${MAC}"}` }, `annotation ${P}/backend-data: VNI 16777216 is not an integer between 0 and 16777215`);
  at({ [`${P}/backend-data`]: `{"VNI":1,` }, `annotation ${P}/backend-data: malformed JSON`);
  at({ [`${P}/backend-data`]: `[1]` }, `annotation ${P}/backend-data: [1] is not a JSON object`);
  at({ [`${P}/backend-data`]: "" }, `annotation ${P}/backend-data is missing`);
  at({ [`${P}/public-ip`]: "1.2.3" }, `annotation ${P}/public-ip: "1.2.3" is not an IPv4 address`);
  at({ [`${P}/public-ip`]: "fd00::1" }, `annotation ${P}/public-ip: "fd00::1" is not an IPv4 address`);
  at({ [`${P}/public-ip`]: "" }, `annotation ${P}/public-ip is "" but the node has an IPv4 podCIDR`);
});

test("bad or missing podCIDRs on an annotated node are errors; the error key falls back to the node", () => {
  const n = (spec: NodeLike["spec"]) => ({ ...flannelNode("n3", "10.244.3.0/24"), spec });
  rejects(() => nodeToLease(n({}), names, V4), `Cannot parse node n3: it is annotated ${P}/kube-subnet-manager=true but has no spec.podCIDR`);
  rejects(() => nodeToLease(n({ podCIDRs: ["10.244.3.0/24", "10.244.4.0/24"] }), names, V4), "Cannot parse node n3: spec.podCIDRs has two IPv4 networks");
  rejects(() => nodeToLease(n({ podCIDRs: ["10.244.3.0/24", "fc00::/64", "10.1.0.0/24"] }), names, V4), "Cannot parse node n3: spec.podCIDRs has 3 entries");
  rejects(() => nodeToLease(n({ podCIDR: "10.244.3.0" }), names, V4), `Cannot parse node n3: spec.podCIDR "10.244.3.0" has no /length`);
  rejects(() => nodeToLease(n({ podCIDRs: ["bogus/24"] }), names, V4), `Cannot parse node n3: spec.podCIDRs[0] "bogus/24" does not start with an IP address`);
  assert.equal(tryNodeLeaseKey(n({ podCIDR: "bogus" }), V4), undefined);
  assert.equal(tryNodeLeaseKey(n({ podCIDR: "10.244.3.0/24" }), V4), "10.244.3.0-24");
  assert.deepEqual(podSubnets({ spec: {} }), {});
});

test("another backend type is a lease (it holds its subnet) but needs no vxlan data", () => {
  const l = nodeToLease(flannelNode("n5", "10.244.5.0/24", { [`${P}/backend-type`]: "host-gw", [`${P}/backend-data`]: "null" }), names, V4)!;
  assert.equal(l.backendType, "host-gw");
  assert.equal(l.backendData, undefined);
  assert.equal(formatIP(l.publicIP!), "192.168.77.2");
  assert.equal(nodeToLease(flannelNode("n5", "10.244.5.0/24", { [`${P}/backend-type`]: "wireguard", [`${P}/backend-data`]: "{not json" }), names, V4)!.backendType, "wireguard");
});

test("peers' public IP is their public-ip annotation (the overwrite is applied by the owner)", () => {
  const l = nodeToLease(flannelNode("n2", "10.244.2.0/24", { [`${P}/public-ip-overwrite`]: "203.0.113.9" }), names, V4)!;
  assert.equal(formatIP(l.publicIP!), "192.168.77.2");
});

const conf = parseNetConfig(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`);
const dualConf = parseNetConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`);
const offer = { publicIP: parseIP("192.168.0.7"), backendData: { vni: 1, vtepMAC: "aa:bb:cc:dd:ee:01" } };

test("own lease: podCIDR, detected public IP, offered MAC on a fresh node", () => {
  const fresh: NodeLike = { metadata: { name: "n1", annotations: {} }, spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] } };
  const { lease, notes } = ownLease(fresh, names, conf, offer);
  assert.equal(lease.key, "10.244.1.0-24");
  assert.equal(formatIP(lease.publicIP!), "192.168.0.7");
  assert.deepEqual(lease.backendData, offer.backendData);
  assert.equal(lease.backendType, "vxlan");
  assert.deepEqual(notes, { restoredMAC: [], overwrittenIP: [] });
  // exactly the annotations flannel writes for an IPv4 vxlan node
  assert.deepEqual(annotationChanges(fresh.metadata!.annotations, leaseAnnotations(lease, names)), {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`,
    [`${P}/backend-type`]: "vxlan",
    [`${P}/kube-subnet-manager`]: "true",
    [`${P}/public-ip`]: "192.168.0.7",
  });
});

test("own lease: the VTEP MAC is restored from our backend-data annotation; a bad one is ignored", () => {
  const n = flannelNode("n1", "10.244.1.0/24");
  const { lease, notes } = ownLease(n, names, conf, offer);
  assert.equal(lease.backendData!.vtepMAC, MAC);
  assert.equal(lease.backendData!.vni, 1);
  assert.deepEqual(notes.restoredMAC, [4]);
  assert.deepEqual(storedVtepMACs(n, names), { v4: MAC });
  const bad = flannelNode("n1", "10.244.1.0/24", { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"zz"}` });
  assert.equal(ownLease(bad, names, conf, offer).lease.backendData!.vtepMAC, offer.backendData.vtepMAC);
  // only what changed is patched: the MAC is ours already, the public IP is new
  assert.deepEqual(annotationChanges(n.metadata!.annotations, leaseAnnotations(lease, names)), { [`${P}/public-ip`]: "192.168.0.7" });
});

test("own lease: public-ip-overwrite wins over the detected address; a bad one is an error", () => {
  const n = flannelNode("n1", "10.244.1.0/24", { [`${P}/public-ip-overwrite`]: "203.0.113.5" });
  const { lease, notes } = ownLease(n, names, conf, offer);
  assert.equal(formatIP(lease.publicIP!), "203.0.113.5");
  assert.deepEqual(notes.overwrittenIP, [4]);
  assert.equal(leaseAnnotations(lease, names)[`${P}/public-ip`], "203.0.113.5");
  assert.throws(() => ownLease(flannelNode("n1", "10.244.1.0/24", { [`${P}/public-ip-overwrite`]: "fd00::5" }), names, conf, offer),
    (e) => isTwillError(e, "ERR_INVALID_LEASE") && e.message === `Cannot acquire a lease for node n1: annotation ${P}/public-ip-overwrite: "fd00::5" is not an IPv4 address`);
});

test("own lease: dual stack; errors for a podCIDR outside the network or a missing family", () => {
  const n: NodeLike = { metadata: { name: "n1" }, spec: { podCIDRs: ["10.244.1.0/24", "fc00:0:0:1::/64"] } };
  const { lease } = ownLease(n, names, dualConf, { ...offer, publicIPv6: parseIP("fd00::7"), backendV6Data: { vni: 1, vtepMAC: "aa:bb:cc:dd:ee:01" } });
  assert.equal(lease.key, "10.244.1.0-24&fc00:0:0:1::-64");
  const ann = leaseAnnotations(lease, names);
  assert.equal(ann[`${P}/public-ipv6`], "fd00::7");
  assert.equal(ann[`${P}/backend-v6-data`], `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`);
  const bad = (node: NodeLike, config: typeof conf, msg: string) =>
    assert.throws(() => ownLease(node, names, config, offer), (e) => isTwillError(e, "ERR_INVALID_LEASE") && e.message.startsWith(`Cannot acquire a lease for node n1: ${msg}`), msg);
  bad({ metadata: { name: "n1" }, spec: { podCIDR: "10.99.1.0/24" } }, conf, "podCIDR 10.99.1.0/24 is outside the network 10.244.0.0/16");
  bad({ metadata: { name: "n1" }, spec: { podCIDR: "10.244.1.0/24" } }, dualConf, "the network config enables IPv6 but");
});

test("annotationChanges: nothing to patch when the node already says it", () => {
  const n = flannelNode("n1", "10.244.1.0/24");
  const { lease } = ownLease(n, names, conf, { ...offer, publicIP: parseIP("192.168.77.2") });
  assert.deepEqual(annotationChanges(n.metadata!.annotations, leaseAnnotations(lease, names)), {});
});

test("the NetworkUnavailable condition, as flannel sets it", () => {
  assert.deepEqual(networkReadyCondition(new Date("2024-05-01T10:00:00.123Z")), {
    type: "NetworkUnavailable", status: "False",
    lastHeartbeatTime: "2024-05-01T10:00:00Z", lastTransitionTime: "2024-05-01T10:00:00Z",
    reason: "FlannelIsUp", message: "Flannel is running on this node",
  });
});
