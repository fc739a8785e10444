import { test } from "node:test";
import assert from "node:assert/strict";
import { FLAGS, parseFlags, usage } from "../../src/config/flags.js";
import { isTwillError } from "../../src/errors.js";
import { formatIP } from "../../src/net/ip.js";

const host = () => "host-a";
const parse = (argv: string[], env: Record<string, string | undefined> = {}) => parseFlags(argv, env, host);

function rejects(argv: string[], env: Record<string, string>, ...fragments: string[]) {
  assert.throws(() => parse(argv, env), (e) => {
    assert.ok(isTwillError(e, "ERR_INVALID_FLAG"), String(e));
    for (const f of fragments) assert.ok(e.message.includes(f), `${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

test("defaults match flanneld's, plus twill's own", () => {
  const o = parse([]);
  assert.deepEqual(o.etcdEndpoints, ["http://127.0.0.1:4001", "http://127.0.0.1:2379"]);
  assert.equal(o.etcdPrefix, "/coreos.com/network");
  assert.equal(o.etcdKeyfile, undefined);
  assert.deepEqual(o.iface, []);
  assert.deepEqual(o.ifaceRegex, []);
  assert.equal(o.publicIP, undefined);
  assert.equal(o.subnetFile, "/run/flannel/subnet.env");
  assert.equal(o.subnetLeaseRenewMargin, 60);
  assert.equal(o.netConfigPath, "/etc/kube-flannel/net-conf.json");
  assert.equal(o.ipMasq, false);
  assert.equal(o.kubeSubnetMgr, false);
  assert.equal(o.kubeAnnotationPrefix, "flannel.alpha.coreos.com");
  assert.equal(o.healthzIP, "0.0.0.0");
  assert.equal(o.healthzPort, 0);
  assert.equal(o.leaseDir, undefined);
  assert.equal(o.dataplane, "auto", "bpf where it can run, else kernel (dataplane/choose.ts)");
  assert.equal(o.nodeName, "host-a");
  assert.equal(o.nodeNameSource, "hostname");
  assert.equal(o.bpfPinDir, "/sys/fs/bpf/twill/host-a");
  assert.equal(o.fastPath, false);
  assert.equal(o.reconcilePeriod, 10);
  assert.equal(o.logLevel, "info");
  assert.equal(o.bridge, "cni0");
  assert.equal(o.teardown, false);
  assert.equal(o.command, undefined);
  assert.deepEqual(o.args, []);
});

test("flag forms: --f=v, --f v, -f v, booleans, repeatable, positionals", () => {
  const o = parse(["status", "--public-ip=192.168.1.5", "--iface", "eth0", "-iface=eth1", "--ip-masq", "--kube-subnet-mgr=false",
    "--iface-regex", "^en", "--etcd-endpoints", "https://a:2379,https://b:2379", "--reconcile-period=0.5", "--dataplane", "kernel",
    "--healthz-port=8471", "--public-ipv6", "FD00::5", "--fast-path=T", "x", "--", "--not-a-flag"]);
  assert.equal(formatIP(o.publicIP!), "192.168.1.5");
  assert.equal(formatIP(o.publicIPv6!), "fd00::5");
  assert.deepEqual(o.iface, ["eth0", "eth1"]);
  assert.deepEqual(o.ifaceRegex, ["^en"]);
  assert.equal(o.ipMasq, true);
  assert.equal(o.kubeSubnetMgr, false);
  assert.equal(o.fastPath, true);
  assert.deepEqual(o.etcdEndpoints, ["https://a:2379", "https://b:2379"]);
  assert.equal(o.reconcilePeriod, 0.5);
  assert.equal(o.dataplane, "kernel");
  assert.equal(o.healthzPort, 8471);
  assert.equal(o.command, "status");
  assert.deepEqual(o.args, ["x", "--not-a-flag"]);
});

test("environment: FLANNELD_* for flanneld's flags, TWILL_* / NODE_NAME for twill's; a flag beats the variable", () => {
  const env = {
    FLANNELD_PUBLIC_IP: "10.0.0.7", FLANNELD_IFACE: "eth9", FLANNELD_IP_MASQ: "true", FLANNELD_SUBNET_LEASE_RENEW_MARGIN: "30",
    FLANNELD_ETCD_PREFIX: "/x/network", FLANNELD_KUBE_SUBNET_MGR: "1", FLANNELD_HEALTHZ_PORT: "", // empty = unset
    TWILL_DATAPLANE: "kernel", TWILL_LEASE_DIR: "/var/lib/twill", NODE_NAME: "node-7", POD_NAME: "kube-flannel-ds-abcde", POD_NAMESPACE: "kube-flannel",
  };
  const o = parse([], env);
  assert.equal(formatIP(o.publicIP!), "10.0.0.7");
  assert.deepEqual(o.iface, ["eth9"]);
  assert.equal(o.ipMasq, true);
  assert.equal(o.kubeSubnetMgr, true);
  assert.equal(o.subnetLeaseRenewMargin, 30);
  assert.equal(o.etcdPrefix, "/x/network");
  assert.equal(o.healthzPort, 0);
  assert.equal(o.dataplane, "kernel");
  assert.equal(o.leaseDir, "/var/lib/twill");
  assert.equal(o.nodeName, "node-7");
  assert.equal(o.nodeNameSource, "NODE_NAME");
  assert.equal(o.bpfPinDir, "/sys/fs/bpf/twill/node-7");
  assert.equal(o.podName, "kube-flannel-ds-abcde");
  assert.equal(o.podNamespace, "kube-flannel");

  const f = parse(["--public-ip", "10.0.0.8", "--iface=eth1", "--ip-masq=false", "--dataplane=bpf", "--node-name", "n1"], env);
  assert.equal(formatIP(f.publicIP!), "10.0.0.8");
  assert.deepEqual(f.iface, ["eth1"], "flag values replace the variable's, not add to it");
  assert.equal(f.ipMasq, false);
  assert.equal(f.dataplane, "bpf");
  assert.equal(f.nodeName, "n1");
  assert.equal(f.nodeNameSource, "flag");
});

test("errors name the flag (or variable) and the value", () => {
  rejects(["--no-such-flag"], {}, `unknown flag "--no-such-flag"`);
  rejects(["--dataplane", "foo"], {}, `invalid value "foo" for --dataplane`, "bpf, kernel");
  rejects(["--public-ip=300.1.1.1"], {}, `invalid value "300.1.1.1" for --public-ip`, "not an IPv4 address");
  rejects(["--public-ip=fd00::1"], {}, `invalid value "fd00::1" for --public-ip`);
  rejects(["--public-ipv6=10.0.0.1"], {}, `invalid value "10.0.0.1" for --public-ipv6`, "not an IPv6 address");
  rejects(["--healthz-port=http"], {}, `invalid value "http" for --healthz-port`, "not a whole number");
  rejects(["--healthz-port=70000"], {}, `invalid value "70000" for --healthz-port`, "between 0 and 65535");
  rejects(["--subnet-lease-renew-margin=1440"], {}, `"1440" for --subnet-lease-renew-margin`, "between 1 and 1439");
  rejects(["--reconcile-period=0"], {}, `"0" for --reconcile-period`);
  rejects(["--reconcile-period=-1"], {}, `"-1" for --reconcile-period`);
  rejects(["--log-level=trace"], {}, `"trace" for --log-level`);
  rejects(["--ip-masq=yes"], {}, `"yes" for --ip-masq`, "not true or false");
  rejects(["--iface-regex=("], {}, `"(" for --iface-regex`, "not an RE2 regular expression");
  rejects(["--iface-can-reach", "somewhere"], {}, `"somewhere" for --iface-can-reach`);
  rejects(["--subnet-file"], {}, "flag --subnet-file needs a value");
  rejects([], { FLANNELD_PUBLIC_IP: "nope" }, `invalid value "nope" for $FLANNELD_PUBLIC_IP (--public-ip)`);
  rejects([], { TWILL_DATAPLANE: "xdp" }, `invalid value "xdp" for $TWILL_DATAPLANE (--dataplane)`);
});

test("FLAGS is one table: every flanneld flag, unique names and variables, and usage() lists them all", () => {
  const flanneld = ["etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile", "etcd-username", "etcd-password",
    "iface", "iface-regex", "iface-can-reach", "public-ip", "public-ipv6", "subnet-file", "subnet-lease-renew-margin", "net-config-path",
    "ip-masq", "ip-masq-fully-random-disable", "kube-subnet-mgr", "set-node-network-unavailable", "kube-api-url", "kube-annotation-prefix",
    "kubeconfig-file", "healthz-ip", "healthz-port", "iptables-resync", "iptables-forward-rules", "ip-blackhole-route", "v", "vmodule",
    "log_backtrace_at", "version"];
  assert.deepEqual(FLAGS.filter((f) => f.flannel).map((f) => f.name), flanneld);
  for (const f of FLAGS.filter((x) => x.flannel)) assert.equal(f.env, `FLANNELD_${f.name.toUpperCase().replace(/-/g, "_")}`);
  assert.equal(new Set(FLAGS.map((f) => f.name)).size, FLAGS.length);
  assert.equal(new Set(FLAGS.map((f) => f.env)).size, FLAGS.length);
  assert.equal(new Set(FLAGS.map((f) => f.key)).size, FLAGS.length);
  const text = usage();
  for (const f of FLAGS) {
    assert.ok(text.includes(`  --${f.name}`), f.name);
    assert.ok(text.includes(`$${f.env}`), f.env);
  }
  assert.match(text, /--dataplane auto\|bpf\|kernel\n.*\(default "auto"\)/);
  // Every default parses with its own converter (parse([]) above would throw otherwise) and every key is set.
  const o = parse([]) as unknown as Record<string, unknown>;
  for (const f of FLAGS) if (f.default !== undefined || f.defaultText !== undefined) assert.notEqual(o[f.key], undefined, f.name);
});

test("--peer-capacity: the loader's default, ranged, from TWILL_PEER_CAPACITY", async () => {
  const { DEFAULT_PEER_CAPACITY } = await import("../../src/bpf/loader.js");
  assert.equal(parseFlags([], {}, () => "h").peerCapacity, DEFAULT_PEER_CAPACITY);
  assert.ok(DEFAULT_PEER_CAPACITY >= 100_000);
  assert.equal(parseFlags(["--peer-capacity", "65536"], {}, () => "h").peerCapacity, 65536);
  assert.equal(parseFlags([], { TWILL_PEER_CAPACITY: "200000" }, () => "h").peerCapacity, 200000);
  assert.throws(() => parseFlags(["--peer-capacity=8"], {}, () => "h"), (e) => isTwillError(e, "ERR_INVALID_FLAG") && /--peer-capacity/.test(e.message));
  assert.throws(() => parseFlags(["--peer-capacity=lots"], {}, () => "h"), (e) => isTwillError(e, "ERR_INVALID_FLAG"));
});

test("--allow-link-local-public-ip: off by default; the flag or TWILL_ALLOW_LINK_LOCAL_PUBLIC_IP turns it on", () => {
  assert.equal(parse([]).allowLinkLocalPublicIP, false);
  assert.equal(parse(["--allow-link-local-public-ip"]).allowLinkLocalPublicIP, true);
  assert.equal(parse(["--allow-link-local-public-ip=false"], { TWILL_ALLOW_LINK_LOCAL_PUBLIC_IP: "true" }).allowLinkLocalPublicIP, false);
  assert.equal(parse([], { TWILL_ALLOW_LINK_LOCAL_PUBLIC_IP: "true" }).allowLinkLocalPublicIP, true);
  assert.match(usage(), /--allow-link-local-public-ip/);
});
