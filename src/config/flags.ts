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
 * Forms: --flag=value, --flag value, -flag (Go style), booleans --flag and
 * --flag=true|false (Go's ParseBool spellings). Repeatable flags (--iface,
 * --iface-regex) append; from a variable they take one value, as flanneld.
 * Words that are not flags are the command and its arguments; "--" ends
 * the flags. Errors: ERR_INVALID_FLAG naming the flag (or variable) and value.
 */
import { hostname } from "node:os";
import { TwillError } from "../errors.js";
import { formatIP, tryParseIP, type IP } from "../net/ip.js";

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
  readonly leaseDir?: string;
  readonly dataplane: DataplaneKind;
  readonly bpfPinDir: string;
  readonly nodeName: string;
  readonly fastPath: boolean;
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
}

type FlagKey = Exclude<keyof Options, "nodeNameSource" | "podName" | "podNamespace" | "command" | "args">;

/** "ip": an IP of either family; "ip-text": the same, kept as text. */
export type FlagType = "string" | "list" | "csv" | "bool" | "int" | "seconds" | "ip" | "ip-text" | "ip4" | "ip6" | "regex" | "enum";

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
}

const fl = (name: string, key: FlagKey, type: FlagType, dflt: string | undefined, help: string, more: Partial<FlagSpec> = {}): FlagSpec =>
  ({ name, key, env: `FLANNELD_${name.toUpperCase().replace(/-/g, "_")}`, type, ...(dflt !== undefined && { default: dflt }), help, flannel: true, ...more });
const tw = (name: string, key: FlagKey, type: FlagType, dflt: string | undefined, help: string, more: Partial<FlagSpec> = {}): FlagSpec =>
  fl(name, key, type, dflt, help, { env: `TWILL_${name.toUpperCase().replace(/-/g, "_")}`, flannel: false, ...more });

export const FLAGS: readonly FlagSpec[] = [
  fl("etcd-endpoints", "etcdEndpoints", "csv", "http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints"),
  fl("etcd-prefix", "etcdPrefix", "string", "/coreos.com/network", "etcd prefix"),
  fl("etcd-keyfile", "etcdKeyfile", "string", undefined, "SSL key file used to secure etcd communication"),
  fl("etcd-certfile", "etcdCertfile", "string", undefined, "SSL certification file used to secure etcd communication"),
  fl("etcd-cafile", "etcdCafile", "string", undefined, "SSL Certificate Authority file used to secure etcd communication"),
  fl("etcd-username", "etcdUsername", "string", undefined, "username for BasicAuth to etcd"),
  fl("etcd-password", "etcdPassword", "string", undefined, "password for BasicAuth to etcd"),
  fl("iface", "iface", "list", undefined, "interface to use (IP or name) for inter-host communication; repeatable, checked in order"),
  fl("iface-regex", "ifaceRegex", "regex", undefined, "regex matching the interface to use (IP or name); repeatable, checked in order after --iface"),
  fl("iface-can-reach", "ifaceCanReach", "ip", undefined, "use the interface the kernel routes this IP through ('ip route get <ip>')"),
  fl("public-ip", "publicIP", "ip4", undefined, "IP accessible by other nodes for inter-host communication"),
  fl("public-ipv6", "publicIPv6", "ip6", undefined, "IPv6 accessible by other nodes for inter-host communication"),
  fl("subnet-file", "subnetFile", "string", "/run/flannel/subnet.env", "filename where env variables (subnet, MTU, ... ) will be written to"),
  fl("subnet-lease-renew-margin", "subnetLeaseRenewMargin", "int", "60", "subnet lease renewal margin, in minutes, ranging from 1 to 1439", { min: 1, max: 1439 }),
  fl("net-config-path", "netConfigPath", "string", "/etc/kube-flannel/net-conf.json", "path to the network configuration file"),
  fl("ip-masq", "ipMasq", "bool", "false", "setup IP masquerade rule for traffic destined outside of overlay network"),
  fl("kube-subnet-mgr", "kubeSubnetMgr", "bool", "false", "contact the Kubernetes API for subnet assignment instead of etcd"),
  fl("set-node-network-unavailable", "setNodeNetworkUnavailable", "bool", "true", "set the node's NetworkUnavailable condition to false once the dataplane is programmed (--kube-subnet-mgr)"),
  fl("kube-api-url", "kubeApiUrl", "string", undefined, "Kubernetes API server URL (not needed in a pod)"),
  fl("kube-annotation-prefix", "kubeAnnotationPrefix", "string", "flannel.alpha.coreos.com", "Kubernetes annotation prefix"),
  fl("kubeconfig-file", "kubeconfigFile", "string", undefined, "kubeconfig file location (not needed in a pod)"),
  fl("healthz-ip", "healthzIP", "ip-text", "0.0.0.0", "the IP address for the healthz server to listen on"),
  fl("healthz-port", "healthzPort", "int", "0", "the port for the healthz server to listen on (0 to disable)", { min: 0, max: 65535 }),
  tw("lease-dir", "leaseDir", "string", undefined, "use the embedded lease store in this directory (config + subnets/) instead of etcd"),
  tw("dataplane", "dataplane", "enum", "auto", "how to forward: bpf (tc programs and maps), kernel (flannel's neigh/fdb/route), or auto: bpf when the process has CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN) and --bpf-pin-dir is on a bpffs, else kernel (said in the log, /metrics and twill status)", { values: ["auto", "bpf", "kernel"] }),
  tw("bpf-pin-dir", "bpfPinDir", "string", undefined, "where BPF maps and programs are pinned", { defaultText: "/sys/fs/bpf/twill/<node-name>" }),
  tw("node-name", "nodeName", "string", undefined, "this node's name", { env: "NODE_NAME", defaultText: "$NODE_NAME, else the hostname" }),
  tw("fast-path", "fastPath", "bool", "false", "bpf: send pod traffic between pod veths and the underlay in eBPF, skipping the host's routing, the bridge and netfilter (iptables FORWARD/POSTROUTING rules do not see it)"),
  tw("encap", "encap", "enum", "bpf", "bpf: who encapsulates and decapsulates VXLAN over an IPv4 underlay: bpf (the tc programs write and strip the outer headers; the vxlan device stays as fallback and for GRO) or device (the kernel's vxlan driver, as twill 0.1 did)", { values: ["bpf", "device"] }),
  tw("bpf-attach", "bpfAttach", "enum", "auto", "bpf: attach programs as tcx links (kernel >= 6.6), tc cls_bpf filters, or auto (tcx when the kernel has it)", { values: ["auto", "tcx", "tc"] }),
  tw("peer-capacity", "peerCapacity", "int", "131072", "bpf: how many entries the peers map holds: remote subnets, plus our own subnet and the cluster network (2 per address family); the per-peer maps are sized from it. Memory grows with the peers, not with this number. A peer beyond it is not programmed and is reported (ERR_CAPACITY). 65536 keeps twill 0.x's map sizes", { min: 16, max: 1048576 }),
  tw("reconcile-period", "reconcilePeriod", "seconds", "10", "seconds between full reconciles of the dataplane with the leases"),
  tw("log-level", "logLevel", "enum", "info", "debug, info, warn or error", { values: ["debug", "info", "warn", "error"] }),
  tw("bridge", "bridge", "string", "cni0", "the bridge local pods are attached to"),
  tw("teardown", "teardown", "bool", "false", "remove the dataplane on exit (default: leave it forwarding)"),
  tw("json", "json", "bool", "false", "status, maps: print JSON instead of tables"),
  tw("help", "help", "bool", "false", "print this message"),
  tw("version", "version", "bool", "false", "print the version and exit"),
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
      try { new RegExp(text); } catch (e) { throw no(`not a regular expression (${(e as Error).message})`); }
      return text;
    case "enum":
      if (!spec.values!.includes(text)) throw no(`not one of ${spec.values!.join(", ")}`);
      return text;
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
    const spec = BY_NAME.get(name);
    if (!spec) throw flagError(`unknown flag ${JSON.stringify(tok)} (see --help)`);
    given.add(spec.key);
    if (eq >= 0) set(spec, body.slice(eq + 1), `--${name}`);
    else if (spec.type === "bool") set(spec, "true", `--${name}`);
    else if (i + 1 < argv.length) set(spec, argv[++i]!, `--${name}`);
    else throw flagError(`flag --${name} needs a value`);
  }

  for (const spec of FLAGS) {
    if (given.has(spec.key)) continue;
    const v = env[spec.env];
    if (v !== undefined && v !== "") set(spec, v, `$${spec.env} (--${spec.name})`);
    else if (spec.default !== undefined) set(spec, spec.default, `the default of --${spec.name}`);
  }
  for (const spec of FLAGS) if (repeatable(spec) && !values.has(spec.key)) values.set(spec.key, []);

  const nodeNameSource = given.has("nodeName") && values.has("nodeName") ? "flag" : values.has("nodeName") ? "NODE_NAME" : "hostname";
  if (!values.has("nodeName")) values.set("nodeName", host());
  if (!values.has("bpfPinDir")) values.set("bpfPinDir", `/sys/fs/bpf/twill/${values.get("nodeName")}`);
  const [command, ...args] = positional;
  return {
    ...(Object.fromEntries(values) as Omit<Options, "nodeNameSource" | "args">),
    nodeNameSource,
    ...(env.POD_NAME && { podName: env.POD_NAME }),
    ...(env.POD_NAMESPACE && { podNamespace: env.POD_NAMESPACE }),
    ...(command !== undefined && { command }),
    args,
  };
}

/** The usage text, generated from FLAGS. */
export function usage(program = "twill"): string {
  const lines = [
    `Usage: ${program} [OPTION]... [COMMAND [ARG]...]`,
    "",
    "Options (each can also be set by the environment variable in brackets; a flag wins):",
  ];
  for (const s of FLAGS) {
    const arg = s.type === "bool" ? "" : ` ${s.type === "enum" ? s.values!.join("|") : s.type}`;
    const dflt = s.defaultText ?? (s.default !== undefined && s.type !== "bool" ? JSON.stringify(s.default) : undefined);
    lines.push(`  --${s.name}${arg}`);
    lines.push(`        ${s.help}${dflt ? ` (default ${dflt})` : ""}${repeatable(s) ? " (repeatable)" : ""} [$${s.env}]`);
  }
  return lines.join("\n") + "\n";
}
