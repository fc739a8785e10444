/**
 * Command-line flags: flanneld's (same names, same FLANNELD_* variables,
 * same defaults) plus twill's own.
 *
 * How it works: FLAGS is the one table — name, key in Options, environment
 * variable, type, default (as text) and help — that drives parsing, the
 * usage text, and outside checks (e.g. a DaemonSet's env and args). A value
 * is found in this order, like flanneld (flag.Parse, then
 * flagutil.SetFlagsFromEnv for flags not given): the command line, then
 * the variable (an empty variable counts as unset), then the default. Every
 * value, defaults included, goes through the same converter, so Options
 * holds checked, typed values (IPs parsed, numbers ranged, enums closed).
 * Forms (Go's flag package): -flag and --flag alike, -flag=value,
 * -flag value, booleans -flag and -flag=true|false (Go's ParseBool
 * spellings; a boolean never takes the next word). Repeatable flags (--iface,
 * --iface-regex) append; from a variable they take one value, as flanneld.
 * Words that are not flags are the command and its arguments; "--" ends
 * the flags; -h is --help. Errors: ERR_INVALID_FLAG naming the flag (or
 * variable) and value. The node name is checked as Kubernetes checks one
 * (config/nodename.ts) and the default --bpf-pin-dir is built from it with
 * path.join under /sys/fs/bpf/twill; a given --bpf-pin-dir must be absolute.
 *
 * flanneld's whole flag set (main.go init(), v0.28) is here, klog's three
 * copied flags included. Variables follow flannel's flagutil.SetFlagsFromEnv:
 * FLANNELD_ + the name upper-cased with '-' → '_' (FLANNELD_V,
 * FLANNELD_LOG_BACKTRACE_AT), read only for flags not on the command line.
 * flanneld checks --version before it reads the environment, so
 * FLANNELD_VERSION does nothing there, nor here.
 *
 * klog's -v maps onto --log-level when --log-level (or TWILL_LOG_LEVEL) is
 * not given: -v 0 or 1 → info (flannel logs its normal lines at V(0) and
 * V(1)), -v 2 and above → debug (klog's V(2)..V(4) "extended information"
 * and "debug" levels; twill has no finer level). -vmodule and
 * -log_backtrace_at are checked with klog's syntax and accepted, but twill
 * has no per-file verbosity and prints no stack traces at a log line: when
 * set, `warnings` says so and the daemon logs it once at start. Likewise
 * --iptables-resync, which twill honours only in part (see its help).
 */
import { hostname } from "node:os";
import { isAbsolute, normalize } from "node:path";
import { TwillError } from "../errors.js";
import { formatIP, tryParseIP, type IP } from "../net/ip.js";
import { translateRE2 } from "./re2.js";
import { checkNodeName, defaultPinDir } from "./nodename.js";

export type LogLevel = "debug" | "info" | "warn" | "error";
/** --dataplane: auto (bpf where it can run, else kernel: dataplane/choose.ts), bpf or kernel. */
export type DataplaneKind = "auto" | "bpf" | "kernel";

export interface Options {
  readonly etcdEndpoints: readonly string[];
  readonly etcdPrefix: string;
  readonly etcdKeyfile?: string;
  readonly etcdCertfile?: string;
  readonly etcdCafile?: string;
  readonly etcdUsername?: string;
  readonly etcdPassword?: string;
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly ifaceCanReach?: IP;
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  readonly subnetFile: string;
  /** Minutes, 1..1439. */
  readonly subnetLeaseRenewMargin: number;
  readonly netConfigPath: string;
  readonly ipMasq: boolean;
  readonly kubeSubnetMgr: boolean;
  readonly setNodeNetworkUnavailable: boolean;
  readonly kubeApiUrl?: string;
  readonly kubeAnnotationPrefix: string;
  readonly kubeconfigFile?: string;
  /** A validated IP address, as text (what a listener takes). */
  readonly healthzIP: string;
  /** 0 = no health server. */
  readonly healthzPort: number;
  /** --ip-masq-fully-random-disable: MASQUERADE without --random-fully. */
  readonly ipMasqFullyRandomDisable: boolean;
  /** --iptables-resync, seconds: the re-check period of the blackhole routes (iptables rules are re-checked on firewall events). */
  readonly iptablesResync: number;
  /** --iptables-forward-rules: flannel's FLANNEL-FWD accepts in FORWARD. */
  readonly iptablesForwardRules: boolean;
  /** --ip-blackhole-route: a blackhole route for our own subnet(s). */
  readonly ipBlackholeRoute: boolean;
  /** klog's -v (verbosity); sets logLevel unless --log-level is given. */
  readonly v: number;
  /** klog's -vmodule / -log_backtrace_at: checked, accepted, not honoured (see warnings). */
  readonly vmodule?: string;
  readonly logBacktraceAt?: string;
  readonly leaseDir?: string;
  readonly dataplane: DataplaneKind;
  readonly bpfPinDir: string;
  readonly nodeName: string;
  readonly fastPath: boolean;
  /** --allow-link-local-public-ip: accept peers whose PublicIP(v6) is link-local (169.254/16, fe80::/10). */
  readonly allowLinkLocalPublicIP: boolean;
  /** bpf: who builds the VXLAN headers — the tc programs ("bpf") or the vxlan driver ("device"). */
  readonly encap: "bpf" | "device";
  readonly bpfAttach: "auto" | "tcx" | "tc";
  /** bpf: entries of the peers trie (remote subnets + own subnet and cluster network per family); sizes the per-peer maps. */
  readonly peerCapacity: number;
  /** Seconds (fractions allowed). */
  readonly reconcilePeriod: number;
  readonly logLevel: LogLevel;
  readonly bridge: string;
  readonly teardown: boolean;
  /** --allow-insecure-credentials: credentials may go to http:// etcd endpoints and API servers. */
  readonly allowInsecureCredentials: boolean;
  /** `twill status` / `twill maps`: print JSON instead of tables. */
  readonly json: boolean;
  readonly help: boolean;
  readonly version: boolean;
  /** Where nodeName came from: with "hostname" in Kubernetes, resolve it through the pod, like flanneld. */
  readonly nodeNameSource: "flag" | "NODE_NAME" | "hostname";
  readonly podName?: string;
  readonly podNamespace?: string;
  readonly command?: string;
  readonly args: readonly string[];
  /** Flags accepted but not (fully) honoured, in words; logged once at start. */
  readonly warnings: readonly string[];
  /** The flags given on the command line, by name, in whichever syntax (-f, --f, -f=v). */
  readonly flagsGiven: readonly string[];
}

type FlagKey = Exclude<keyof Options, "nodeNameSource" | "podName" | "podNamespace" | "command" | "args" | "warnings" | "flagsGiven">;

/** "ip": an IP of either family; "ip-text": the same, kept as text. */
export type FlagType = "string" | "list" | "csv" | "bool" | "int" | "seconds" | "ip" | "ip-text" | "ip4" | "ip6" | "regex" | "enum"
  | "vmodule" | "trace";

export interface FlagSpec {
  readonly name: string;
  readonly key: FlagKey;
  readonly env: string;
  readonly type: FlagType;
  /** The default as it would be typed; undefined = unset (or computed, see defaultText). */
  readonly default?: string;
  /** For usage when the default is computed. */
  readonly defaultText?: string;
  readonly values?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  readonly help: string;
  /** True for flanneld's own flags (drop-in compatible). */
  readonly flannel: boolean;
  /** False: the variable is not read (flanneld's --version). */
  readonly fromEnv?: boolean;
}

const fl = (name: string, key: FlagKey, type: FlagType, dflt: string | undefined, help: string, more: Partial<FlagSpec> = {}): FlagSpec =>
  ({ name, key, env: `FLANNELD_${name.toUpperCase().replace(/-/g, "_")}`, type, ...(dflt !== undefined && { default: dflt }), help, flannel: true, ...more });
const tw = (name: string, key: FlagKey, type: FlagType, dflt: string | undefined, help: string, more: Partial<FlagSpec> = {}): FlagSpec =>
  fl(name, key, type, dflt, help, { env: `TWILL_${name.toUpperCase().replace(/-/g, "_")}`, flannel: false, ...more });

export const FLAGS: readonly FlagSpec[] = [
  fl("etcd-endpoints", "etcdEndpoints", "csv", "http://127.0.0.1:4001,http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints"),
  fl("etcd-prefix", "etcdPrefix", "string", "/coreos.com/network", "etcd prefix"),
  fl("etcd-keyfile", "etcdKeyfile", "string", undefined, "SSL key file used to secure etcd communication"),
  fl("etcd-certfile", "etcdCertfile", "string", undefined, "SSL certification file used to secure etcd communication"),
  fl("etcd-cafile", "etcdCafile", "string", undefined, "SSL Certificate Authority file used to secure etcd communication"),
  fl("etcd-username", "etcdUsername", "string", undefined, "username for BasicAuth to etcd"),
  fl("etcd-password", "etcdPassword", "string", undefined, "password for BasicAuth to etcd"),
  fl("iface", "iface", "list", undefined, "interface to use (IP or name) for inter-host communication; repeatable, checked in order"),
  fl("iface-regex", "ifaceRegex", "regex", undefined, "regex (Go RE2 syntax) matching the interface to use, by its addresses first, then its name; repeatable, checked in order after --iface"),
  fl("iface-can-reach", "ifaceCanReach", "ip", undefined, "use the interface, and the source address, the kernel routes this IP through ('ip route get <ip>'); checked after --iface and --iface-regex"),
  fl("public-ip", "publicIP", "ip4", undefined, "IP accessible by other nodes for inter-host communication; without --iface/--iface-regex/--iface-can-reach, the interface holding it is used"),
  fl("public-ipv6", "publicIPv6", "ip6", undefined, "IPv6 accessible by other nodes for inter-host communication; without any --iface option or --public-ip, the interface holding it is used"),
  fl("subnet-file", "subnetFile", "string", "/run/flannel/subnet.env", "filename where env variables (subnet, MTU, ... ) will be written to"),
  fl("subnet-lease-renew-margin", "subnetLeaseRenewMargin", "int", "60", "subnet lease renewal margin, in minutes, ranging from 1 to 1439", { min: 1, max: 1439 }),
  fl("net-config-path", "netConfigPath", "string", "/etc/kube-flannel/net-conf.json", "path to the network configuration file"),
  fl("ip-masq", "ipMasq", "bool", "false", "setup IP masquerade rule for traffic destined outside of overlay network"),
  fl("ip-masq-fully-random-disable", "ipMasqFullyRandomDisable", "bool", "false", "disable fully-random mode (--random-fully) for MASQUERADE"),
  fl("kube-subnet-mgr", "kubeSubnetMgr", "bool", "false", "contact the Kubernetes API for subnet assignment instead of etcd"),
  fl("set-node-network-unavailable", "setNodeNetworkUnavailable", "bool", "true", "set the node's NetworkUnavailable condition to false once the dataplane is programmed (--kube-subnet-mgr)"),
  fl("kube-api-url", "kubeApiUrl", "string", undefined, "Kubernetes API server URL (not needed in a pod)"),
  fl("kube-annotation-prefix", "kubeAnnotationPrefix", "string", "flannel.alpha.coreos.com", "Kubernetes annotation prefix"),
  fl("kubeconfig-file", "kubeconfigFile", "string", undefined, "kubeconfig file location (not needed in a pod)"),
  fl("healthz-ip", "healthzIP", "ip-text", "0.0.0.0", "the IP address for the healthz server to listen on"),
  fl("healthz-port", "healthzPort", "int", "0", "the port for the healthz server to listen on (0 to disable)", { min: 0, max: 65535 }),
  fl("iptables-resync", "iptablesResync", "int", "5", "seconds between re-checks of the --ip-blackhole-route routes. twill re-checks its iptables rules when the firewall changes (nftables events; every 10 minutes with iptables-legacy), not on this period", { min: 1, max: 86400 }),
  fl("iptables-forward-rules", "iptablesForwardRules", "bool", "true", "add default accept rules to the FORWARD chain (chain FLANNEL-FWD) in iptables"),
  fl("ip-blackhole-route", "ipBlackholeRoute", "bool", "false", "add a blackhole route for the node's own pod subnet (re-added every --iptables-resync seconds when missing)"),
  fl("v", "v", "int", "0", "klog's log verbosity: sets --log-level when that is not given (0-1 info, 2 and above debug)", { min: -2147483648, max: 2147483647 }),
  fl("vmodule", "vmodule", "vmodule", undefined, "klog's per-file verbosity (pattern=N,...): accepted, not honoured (twill logs at one level)"),
  fl("log_backtrace_at", "logBacktraceAt", "trace", undefined, "klog's stack trace at file:line: accepted, not honoured"),
  tw("lease-dir", "leaseDir", "string", undefined, "use the embedded lease store in this directory (config + subnets/) instead of etcd"),
  tw("dataplane", "dataplane", "enum", "auto", "how to forward: bpf (tc programs and maps), kernel (flannel's neigh/fdb/route), or auto: bpf when the process has CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN) and --bpf-pin-dir is on a bpffs, else kernel (said in the log, /metrics and twill status)", { values: ["auto", "bpf", "kernel"] }),
  tw("bpf-pin-dir", "bpfPinDir", "string", undefined, "where BPF maps and programs are pinned: an absolute path on a bpffs mount (checked for --dataplane bpf and teardown)", { defaultText: "/sys/fs/bpf/twill/<node-name>" }),
  tw("node-name", "nodeName", "string", undefined, "this node's name: a Kubernetes node name (lower-case letters, digits, '-' and '.', at most 253)", { env: "NODE_NAME", defaultText: "$NODE_NAME, else the hostname" }),
  tw("fast-path", "fastPath", "bool", "false", "bpf: send pod traffic between pod veths and the underlay in eBPF, skipping the host's routing, the bridge and netfilter (iptables FORWARD/POSTROUTING rules do not see it)"),
  tw("allow-link-local-public-ip", "allowLinkLocalPublicIP", "bool", "false", "accept a lease whose PublicIP (PublicIPv6) is link-local (169.254.0.0/16, fe80::/10); by default such a lease is rejected (ERR_INVALID_PUBLIC_IP) like a loopback, multicast or broadcast one"),
  tw("encap", "encap", "enum", "bpf", "bpf: who encapsulates and decapsulates VXLAN over an IPv4 underlay: bpf (the tc programs write and strip the outer headers; the vxlan device stays as fallback and for GRO) or device (the kernel's vxlan driver, as twill 0.1 did)", { values: ["bpf", "device"] }),
  tw("bpf-attach", "bpfAttach", "enum", "auto", "bpf: attach programs as tcx links (kernel >= 6.6), tc cls_bpf filters, or auto (tcx when the kernel has it)", { values: ["auto", "tcx", "tc"] }),
  tw("peer-capacity", "peerCapacity", "int", "131072", "bpf: how many entries the peers map holds: remote subnets, plus our own subnet and the cluster network (2 per address family); the per-peer maps are sized from it. Memory grows with the peers, not with this number. A peer beyond it is not programmed and is reported (ERR_CAPACITY). 65536 keeps twill 0.x's map sizes", { min: 16, max: 1048576 }),
  tw("reconcile-period", "reconcilePeriod", "seconds", "10", "seconds between full reconciles of the dataplane with the leases"),
  tw("log-level", "logLevel", "enum", undefined, "debug, info, warn or error", { values: ["debug", "info", "warn", "error"], defaultText: "from -v: info (0-1), debug (2 and above)" }),
  tw("bridge", "bridge", "string", "cni0", "the bridge local pods are attached to"),
  tw("allow-insecure-credentials", "allowInsecureCredentials", "bool", "false", "send credentials over plain http:// anyway: --etcd-username/--etcd-password to an http:// etcd endpoint, a kubeconfig's token, basic auth or client certificate to an http:// API server (refused by default: anyone on the path reads them)"),
  tw("teardown", "teardown", "bool", "false", "remove the dataplane on exit (default: leave it forwarding)"),
  tw("json", "json", "bool", "false", "status, maps: print JSON instead of tables"),
  tw("help", "help", "bool", "false", "print this message (also -h)"),
  fl("version", "version", "bool", "false", "print the version and exit", { fromEnv: false }),
];

const BY_NAME = new Map(FLAGS.map((s) => [s.name, s]));

const GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"];
const GO_FALSE = ["0", "f", "F", "FALSE", "false", "False"];

/** Text → typed value for one flag; throws Error(why) (the caller names the flag). */
function convert(spec: FlagSpec, text: string): unknown {
  const no = (why: string) => new Error(why);
  const ip = (family?: 4 | 6) => {
    const a = tryParseIP(text);
    if (!a || (family && a.family !== family)) throw no(`not an IPv${family ?? "4 or IPv6"} address`);
    return a;
  };
  switch (spec.type) {
    case "string": case "list": return text;
    case "csv": return text.split(",").map((s) => s.trim()).filter(Boolean);
    case "bool":
      if (GO_TRUE.includes(text)) return true;
      if (GO_FALSE.includes(text)) return false;
      throw no("not true or false");
    case "int": {
      const n = Number(text);
      if (!/^[+-]?\d+$/.test(text)) throw no("not a whole number");
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) throw no(`not between ${spec.min} and ${spec.max}`);
      return n;
    }
    case "seconds": {
      const n = Number(text);
      if (!/^\d*\.?\d+$/.test(text) || !(n > 0)) throw no("not a positive number of seconds");
      return n;
    }
    case "ip": return ip();
    case "ip-text": return formatIP(ip());
    case "ip4": return ip(4);
    case "ip6": return ip(6);
    case "regex":
      try { const t = translateRE2(text); new RegExp(t.source, t.flags); } catch (e) { throw no(`not an RE2 regular expression (${(e as Error).message})`); }
      return text;
    case "enum":
      if (!spec.values!.includes(text)) throw no(`not one of ${spec.values!.join(", ")}`);
      return text;
    case "vmodule":
      // klog's moduleSpec.Set: comma-separated pattern=N, N a 32-bit integer.
      for (const part of text.split(",")) {
        if (part === "") continue;
        const m = /^([^=]+)=([+-]?\d+)$/.exec(part);
        if (!m || Math.abs(Number(m[2])) > 2147483647) throw no(`${JSON.stringify(part)} is not pattern=N`);
      }
      return text;
    case "trace": {
      // klog's traceLocation.Set: file:line, the file with a '.', the line a number.
      const f = text.split(":");
      if (f.length !== 2 || !f[0]!.includes(".") || !/^[+-]?\d+$/.test(f[1]!)) throw no("not file.go:line");
      return text;
    }
  }
}

const repeatable = (s: FlagSpec) => s.type === "list" || s.type === "regex";
const flagError = (msg: string) => new TwillError("ERR_INVALID_FLAG", msg);

/** Parses argv (without node and script) and the environment into checked Options. */
export function parseFlags(argv: readonly string[], env: Record<string, string | undefined>, host: () => string = hostname): Options {
  const values = new Map<FlagKey, unknown>();
  const given = new Set<FlagKey>(); // on the command line
  const positional: string[] = [];
  const set = (spec: FlagSpec, text: string, where: string) => {
    if (text === "" && spec.default === undefined && spec.type !== "bool") return; // Go: "" = unset
    let v: unknown;
    try {
      v = convert(spec, text);
    } catch (e) {
      throw flagError(`invalid value ${JSON.stringify(text)} for ${where}: ${(e as Error).message}`);
    }
    if (repeatable(spec)) values.set(spec.key, [...((values.get(spec.key) as string[] | undefined) ?? []), v]);
    else values.set(spec.key, v);
  };

  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === "--") { positional.push(...argv.slice(i + 1)); break; }
    if (!tok.startsWith("-") || tok === "-") { positional.push(tok); continue; }
    const body = tok.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq < 0 ? body : body.slice(0, eq);
    if (tok.startsWith("---") || name === "") throw flagError(`bad flag syntax ${JSON.stringify(tok)}`);
    const spec = BY_NAME.get(name === "h" ? "help" : name);
    // The name only: the value of a mistyped flag may be a secret (--etcd-pasword=...).
    if (!spec) throw flagError(`unknown flag ${JSON.stringify(tok.slice(0, tok.length - body.length) + name)} (see --help)`);
    given.add(spec.key);
    if (eq >= 0) set(spec, body.slice(eq + 1), `--${spec.name}`);
    else if (spec.type === "bool") set(spec, "true", `--${spec.name}`);
    else if (i + 1 < argv.length) set(spec, argv[++i]!, `--${spec.name}`);
    else throw flagError(`flag --${spec.name} needs a value`);
  }

  for (const spec of FLAGS) {
    if (given.has(spec.key)) continue;
    const v = spec.fromEnv === false ? undefined : env[spec.env];
    if (v !== undefined && v !== "") set(spec, v, `$${spec.env} (--${spec.name})`);
    else if (spec.default !== undefined) set(spec, spec.default, `the default of --${spec.name}`);
  }
  for (const spec of FLAGS) if (repeatable(spec) && !values.has(spec.key)) values.set(spec.key, []);

  const fromEnvOrFlag = (k: FlagKey, name: string) => given.has(k) || !!env[BY_NAME.get(name)!.env];
  const warnings = flagWarnings(values, fromEnvOrFlag);
  if (!values.has("logLevel")) values.set("logLevel", levelFromV(values.get("v") as number));
  const nodeNameSource = given.has("nodeName") && values.has("nodeName") ? "flag" : values.has("nodeName") ? "NODE_NAME" : "hostname";
  // The node name as Kubernetes takes it (config/nodename.ts): the hostname lower-cased, as the kubelet does.
  if (!values.has("nodeName")) values.set("nodeName", checkNodeName(host().toLowerCase(), "--node-name (from the hostname; set --node-name or $NODE_NAME)"));
  else checkNodeName(values.get("nodeName") as string, nodeNameSource === "flag" ? "--node-name" : "$NODE_NAME (--node-name)");
  if (!values.has("bpfPinDir")) values.set("bpfPinDir", defaultPinDir(values.get("nodeName") as string));
  else {
    const dir = values.get("bpfPinDir") as string;
    if (!isAbsolute(dir)) throw flagError(`invalid value ${JSON.stringify(dir)} for --bpf-pin-dir: not an absolute path`);
    values.set("bpfPinDir", normalize(dir).replace(/(.)\/+$/, "$1"));
  }
  const [command, ...args] = positional;
  return {
    ...(Object.fromEntries(values) as Omit<Options, "nodeNameSource" | "args">),
    nodeNameSource,
    ...(env.POD_NAME && { podName: env.POD_NAME }),
    ...(env.POD_NAMESPACE && { podNamespace: env.POD_NAMESPACE }),
    ...(command !== undefined && { command }),
    args,
    warnings,
    flagsGiven: FLAGS.filter((f) => given.has(f.key)).map((f) => f.name),
  };
}

/** klog's -v as a twill log level: 0-1 info, 2 and above debug (the mapping is documented at the top). */
export function levelFromV(v: number): LogLevel {
  return v >= 2 ? "debug" : "info";
}

/** What the accepted-but-not-honoured flags mean for this run, in words. */
function flagWarnings(values: Map<FlagKey, unknown>, given: (k: FlagKey, name: string) => boolean): string[] {
  const w: string[] = [];
  if (values.get("vmodule")) w.push("-vmodule is accepted but not honoured: twill has no per-file verbosity (it logs at --log-level, or at the level -v maps to)");
  if (values.get("logBacktraceAt")) w.push("-log_backtrace_at is accepted but not honoured: twill prints no stack trace at a log line");
  if (given("v", "v") && given("logLevel", "log-level")) w.push("-v is ignored: --log-level is given and wins");
  if (given("iptablesResync", "iptables-resync")) {
    w.push(`--iptables-resync ${values.get("iptablesResync")} is honoured only for --ip-blackhole-route: twill re-checks its iptables rules when the firewall changes (nftables events; a 10-minute timer with iptables-legacy), not every N seconds`);
  }
  return w;
}

/** The usage text, generated from FLAGS. */
export function usage(program = "twill"): string {
  const lines = [
    `Usage: ${program} [OPTION]... [COMMAND [ARG]...]`,
    "",
    "Options (each can also be set by the environment variable in brackets; a flag wins):",
  ];
  for (const s of FLAGS) {
    const shown = s.type === "enum" ? s.values!.join("|") : s.type === "vmodule" ? "pattern=N,..." : s.type === "trace" ? "file:line" : s.type;
    const arg = s.type === "bool" ? "" : ` ${shown}`;
    const dflt = s.defaultText ?? (s.default !== undefined && s.type !== "bool" ? JSON.stringify(s.default) : undefined);
    lines.push(`  --${s.name}${arg}`);
    const env = s.fromEnv === false ? `[not read from $${s.env}, as flanneld]` : `[$${s.env}]`;
    lines.push(`        ${s.help}${dflt ? ` (default ${dflt})` : ""}${repeatable(s) ? " (repeatable)" : ""} ${env}`);
  }
  return lines.join("\n") + "\n";
}
