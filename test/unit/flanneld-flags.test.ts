/**
 * flanneld v0.28's whole flag set (main.go init(): flannelFlags.*Var, and
 * klog's v / vmodule / log_backtrace_at copied in by copyFlag), row by row:
 * flannel's default, a value and what it means, given as -flag value,
 * --flag=value and as FLANNELD_<NAME> (flagutil.SetFlagsFromEnv: upper
 * case, '-' → '_').
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { FLAGS, levelFromV, parseFlags, usage, type Options } from "../../src/config/flags.js";
import { isTwillError } from "../../src/errors.js";
import { formatIP, type IP } from "../../src/net/ip.js";

const parse = (argv: string[], env: Record<string, string | undefined> = {}) => parseFlags(argv, env, () => "host-a");

type Row = {
  name: string;
  key: keyof Options;
  /** flannel's default, as twill holds it (undefined = flannel's "" = unset). */
  dflt: unknown;
  /** A value as typed, and what twill makes of it. */
  text: string;
  want: unknown;
};

// From flannel main.go (HEAD v0.28.9+), in its order; klog's three at the end.
const FLANNELD: Row[] = [
  { name: "etcd-endpoints", key: "etcdEndpoints", dflt: ["http://127.0.0.1:4001", "http://127.0.0.1:2379"], text: "https://e1:2379,https://e2:2379", want: ["https://e1:2379", "https://e2:2379"] },
  { name: "etcd-prefix", key: "etcdPrefix", dflt: "/coreos.com/network", text: "/x/network", want: "/x/network" },
  { name: "etcd-keyfile", key: "etcdKeyfile", dflt: undefined, text: "/k.pem", want: "/k.pem" },
  { name: "etcd-certfile", key: "etcdCertfile", dflt: undefined, text: "/c.pem", want: "/c.pem" },
  { name: "etcd-cafile", key: "etcdCafile", dflt: undefined, text: "/ca.pem", want: "/ca.pem" },
  { name: "etcd-username", key: "etcdUsername", dflt: undefined, text: "u", want: "u" },
  { name: "etcd-password", key: "etcdPassword", dflt: undefined, text: "p", want: "p" },
  { name: "iface", key: "iface", dflt: [], text: "eth1", want: ["eth1"] },
  { name: "iface-regex", key: "ifaceRegex", dflt: [], text: "^en[a-z]+\\d$", want: ["^en[a-z]+\\d$"] },
  { name: "iface-can-reach", key: "ifaceCanReach", dflt: undefined, text: "192.0.2.1", want: "192.0.2.1" },
  { name: "subnet-file", key: "subnetFile", dflt: "/run/flannel/subnet.env", text: "/tmp/s.env", want: "/tmp/s.env" },
  { name: "public-ip", key: "publicIP", dflt: undefined, text: "192.0.2.7", want: "192.0.2.7" },
  { name: "public-ipv6", key: "publicIPv6", dflt: undefined, text: "2001:db8::7", want: "2001:db8::7" },
  { name: "subnet-lease-renew-margin", key: "subnetLeaseRenewMargin", dflt: 60, text: "30", want: 30 },
  { name: "ip-masq", key: "ipMasq", dflt: false, text: "true", want: true },
  { name: "ip-masq-fully-random-disable", key: "ipMasqFullyRandomDisable", dflt: false, text: "true", want: true },
  { name: "kube-subnet-mgr", key: "kubeSubnetMgr", dflt: false, text: "true", want: true },
  { name: "kube-api-url", key: "kubeApiUrl", dflt: undefined, text: "https://api:6443", want: "https://api:6443" },
  { name: "kube-annotation-prefix", key: "kubeAnnotationPrefix", dflt: "flannel.alpha.coreos.com", text: "example.com", want: "example.com" },
  { name: "kubeconfig-file", key: "kubeconfigFile", dflt: undefined, text: "/kc", want: "/kc" },
  { name: "version", key: "version", dflt: false, text: "true", want: true },
  { name: "healthz-ip", key: "healthzIP", dflt: "0.0.0.0", text: "127.0.0.1", want: "127.0.0.1" },
  { name: "healthz-port", key: "healthzPort", dflt: 0, text: "8471", want: 8471 },
  { name: "iptables-resync", key: "iptablesResync", dflt: 5, text: "60", want: 60 },
  { name: "iptables-forward-rules", key: "iptablesForwardRules", dflt: true, text: "false", want: false },
  { name: "ip-blackhole-route", key: "ipBlackholeRoute", dflt: false, text: "true", want: true },
  { name: "net-config-path", key: "netConfigPath", dflt: "/etc/kube-flannel/net-conf.json", text: "/n.json", want: "/n.json" },
  { name: "set-node-network-unavailable", key: "setNodeNetworkUnavailable", dflt: true, text: "false", want: false },
  { name: "v", key: "v", dflt: 0, text: "4", want: 4 },
  { name: "vmodule", key: "vmodule", dflt: undefined, text: "main=2,vxlan*=4", want: "main=2,vxlan*=4" },
  { name: "log_backtrace_at", key: "logBacktraceAt", dflt: undefined, text: "main.go:120", want: "main.go:120" },
];

const shown = (v: unknown): unknown => (v && typeof v === "object" && "bytes" in v ? formatIP(v as IP) : v);
const envName = (name: string) => `FLANNELD_${name.toUpperCase().replace(/-/g, "_")}`;

test("the table is flanneld's flag set: every flanneld flag is a flannel flag here, and no other", () => {
  assert.deepEqual(FLANNELD.map((r) => r.name).sort(), FLAGS.filter((f) => f.flannel).map((f) => f.name).sort());
  for (const r of FLANNELD) assert.equal(FLAGS.find((f) => f.name === r.name)!.env, envName(r.name), r.name);
});

for (const r of FLANNELD) {
  test(`--${r.name}: flannel's default, and its value as -flag, --flag=, and $${envName(r.name)}`, () => {
    const get = (o: Options) => shown(o[r.key]);
    assert.deepEqual(get(parse([])), r.dflt, "default");
    const spec = FLAGS.find((f) => f.name === r.name)!;
    assert.deepEqual(get(parse([`--${r.name}=${r.text}`])), r.want, "--flag=value");
    if (spec.type === "bool") {
      assert.deepEqual(get(parse([`-${r.name}=${r.text}`])), r.want, "-flag=value");
      if (r.want === true) assert.equal(get(parse([`-${r.name}`])), true, "-flag");
      assert.equal(get(parse([`--${r.name}`, "later"])), true, "a boolean does not take the next word");
    } else {
      assert.deepEqual(get(parse([`-${r.name}`, r.text])), r.want, "-flag value");
      assert.deepEqual(get(parse([`--${r.name}`, r.text])), r.want, "--flag value");
    }
    const fromEnv = get(parse([], { [envName(r.name)]: r.text }));
    if (r.name === "version") {
      // flanneld tests opts.version before flagutil.SetFlagsFromEnv: the variable does nothing.
      assert.equal(fromEnv, false, "FLANNELD_VERSION is not read");
    } else {
      assert.deepEqual(fromEnv, r.want, envName(r.name));
    }
  });
}

test("klog's -v picks the log level unless --log-level (or TWILL_LOG_LEVEL) is given", () => {
  assert.equal(parse([]).logLevel, "info");
  assert.equal(parse(["-v", "1"]).logLevel, "info");
  assert.equal(parse(["-v=2"]).logLevel, "debug");
  assert.equal(parse(["--v", "10"]).logLevel, "debug");
  assert.equal(parse([], { FLANNELD_V: "4" }).logLevel, "debug");
  assert.equal(parse(["--v=-1"]).logLevel, "info");
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(levelFromV), ["info", "info", "debug", "debug", "debug", "debug"]);
  const both = parse(["-v=4", "--log-level=warn"]);
  assert.equal(both.logLevel, "warn");
  assert.ok(both.warnings.some((w) => w.includes("-v is ignored")), both.warnings.join("\n"));
  assert.equal(parse(["-v=4"], { TWILL_LOG_LEVEL: "error" }).logLevel, "error");
  assert.deepEqual(parse(["-v=4"]).warnings, [], "a plain -v is honoured: no warning");
});

test("flags twill cannot fully honour are accepted with a warning, never an error", () => {
  const o = parse(["-vmodule=main=4", "-log_backtrace_at", "main.go:10", "--iptables-resync=30"]);
  assert.equal(o.warnings.length, 3, o.warnings.join("\n"));
  assert.match(o.warnings[0]!, /-vmodule is accepted but not honoured/);
  assert.match(o.warnings[1]!, /-log_backtrace_at is accepted but not honoured/);
  assert.match(o.warnings[2]!, /--iptables-resync 30 is honoured only for --ip-blackhole-route/);
  assert.deepEqual(parse([]).warnings, [], "defaults warn about nothing");
  assert.equal(parse([], { FLANNELD_IPTABLES_RESYNC: "7" }).warnings.length, 1, "the variable counts as given");
});

test("klog's syntax for -v, -vmodule, -log_backtrace_at; Go's flag syntax", () => {
  const bad = (argv: string[], ...fragments: string[]) => assert.throws(() => parse(argv), (e) => {
    assert.ok(isTwillError(e, "ERR_INVALID_FLAG"), String(e));
    for (const f of fragments) assert.ok(e.message.includes(f), `${e.message} lacks ${f}`);
    return true;
  });
  bad(["-v=high"], `"high" for --v`, "not a whole number");
  bad(["-v"], "flag --v needs a value");
  bad(["-vmodule=main"], `"main" is not pattern=N`);
  bad(["-vmodule=main=x"], "pattern=N");
  bad(["-log_backtrace_at=main:10"], "not file.go:line");
  bad(["-log_backtrace_at=main.go"], "not file.go:line");
  bad(["---iface=eth0"], "bad flag syntax");
  bad(["-=x"], "bad flag syntax");
  bad(["--iptables-resync=0"], "--iptables-resync");
  bad(["--iptables-forward-rules=maybe"], "not true or false");
});

test("-h is --help; usage lists klog's flags and FLANNELD_VERSION as not read", () => {
  assert.equal(parse(["-h"]).help, true);
  assert.equal(parse(["-help"]).help, true);
  const text = usage();
  for (const n of ["--v int", "--vmodule pattern=N,...", "--log_backtrace_at file:line", "--iptables-resync int", "--ip-blackhole-route", "--iptables-forward-rules"]) {
    assert.ok(text.includes(n), n);
  }
  assert.ok(text.includes("[not read from $FLANNELD_VERSION, as flanneld]"));
  assert.ok(text.includes(`"http://127.0.0.1:4001,http://127.0.0.1:2379"`));
});

test("a flag counts as given in any Go syntax: -etcd-endpoints=… picks etcd like --etcd-endpoints …", async () => {
  const { etcdRequested } = await import("../../src/lease/open.js");
  for (const argv of [["-etcd-endpoints=http://e:2379"], ["-etcd-endpoints", "http://e:2379"], ["--etcd-endpoints=http://e:2379"]]) {
    const o = parse(argv);
    assert.deepEqual(o.flagsGiven, ["etcd-endpoints"], argv.join(" "));
    assert.equal(etcdRequested(o.flagsGiven.map((n) => `--${n}`), {}), true, argv.join(" "));
  }
  assert.deepEqual(parse(["-v=2", "--iface", "eth0", "-iface=eth1"]).flagsGiven, ["iface", "v"]);
});
