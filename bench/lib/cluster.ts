/**
 * A namespaced cluster (the tests' clusters, the benchmark's testbeds): hosts
 * on an underlay switch, pods made by the real CNI bridge plugin exactly as
 * flannel's CNI plugin delegates to it.
 *
 *   [pod a1]  [pod a2]                [pod b1]   ...      (netns <prefix>h1-a1 ...)
 *      eth0     eth0                     eth0
 *        \       /                        |
 *     cni0 10.244.1.1/24            cni0 10.244.2.1/24    (made by /usr/lib/cni/bridge)
 *   host <prefix>h1                 host <prefix>h2       (ip_forward=1, default via .1)
 *   eth0 192.168.50.11/24           eth0 192.168.50.12/24    [fd00:50::11/64 with ipv6]
 *        \                            /
 *        h1                         h2                    (veth peers of each eth0)
 *         \___________ br0 ________/        br1 ...       one bridge per L2 segment,
 *                       |                    |            all in netns <prefix>ul
 *                      rt0                  rt1
 *                       |                    |
 *                      eth0 192.168.50.1   eth1 192.168.51.1   (netns <prefix>rt: the
 *                                                           router between segments)
 *
 * How it works:
 * 1) Segment s is 192.168.(50+s).0/24 (and fd00:(50+s)::/64); host i (from 1)
 *    is .(10+i) on its segment, the router is .1. Hosts have a default route
 *    via their segment's router, so hosts on different segments reach each
 *    other only through it (no direct route: flannel's DirectRouting falls back
 *    to vxlan there). The router has no other leg: traffic to any address
 *    outside the cluster dies in it.
 * 2) Every device is created inside a namespace of this cluster, never in the
 *    root namespace. Every namespace, directory (/tmp/<prefix>) and CNI
 *    container id starts with the cluster's prefix.
 * 3) destroy() (and, on exit/SIGINT/SIGTERM, a synchronous safety net) kills
 *    every process living in the cluster's namespaces, deletes the namespaces
 *    (which takes their devices with them) and removes the directories.
 * 4) The underlay namespace has IPv6 disabled (it is a pure L2 switch), so
 *    captures on the hosts' eth0 carry no router/MLD chatter from it.
 */

import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { formatPrefix, parsePrefix } from "../../src/net/ip.js";
import { run, killSpawned, killSpawnedSync, onCleanup } from "./exec.js";
import { dumpState } from "./traffic.js";

export interface ClusterOptions {
  /** Per-run prefix of every name, e.g. "tw" + 4 random hex digits (see randomPrefix). */
  prefix: string;
  /** Number of hosts, named h1..hN. */
  hosts: number;
  /** Host (index from 0) → L2 segment; default all on segment 0. */
  segments?: number[];
  /** Also give the underlay IPv6 addresses fd00:(50+s)::(10+i)/64. */
  ipv6?: boolean;
  /** Underlay MTU (both ends of every underlay veth, the bridges, the router); default 1500. */
  mtu?: number;
}

export interface Host {
  /** "h1", "h2", ... */
  name: string;
  /** "<prefix>h1" */
  netns: string;
  /** 1-based host number. */
  index: number;
  segment: number;
  underlayIP: string;
  underlayIPv6?: string;
  /** Prefix length of the underlay addresses (24, and 64 for IPv6). */
  underlayPrefixLen: number;
  /** The router's address on this host's segment (the default gateway). */
  gateway: string;
  gatewayV6?: string;
  iface: "eth0";
  /** Per-host scratch directory (subnet files, logs, CNI state): /tmp/<prefix>/h1. */
  dir: string;
  pods: Pod[];
}

export interface Pod {
  name: string;
  /** "<prefix>h1-a1" */
  netns: string;
  ip: string;
  ipv6?: string;
  /** The pod's gateway (cni0's address). */
  gateway?: string;
  host: Host;
  /** Host-side veth name. */
  veth?: string;
  /** CNI_CONTAINERID used for ADD/DEL. */
  containerId: string;
}

/** The contents of a flannel subnet.env file. */
export interface SubnetEnv {
  network?: string; // FLANNEL_NETWORK 10.244.0.0/16
  subnet?: string; // FLANNEL_SUBNET 10.244.1.1/24
  ipv6Network?: string; // FLANNEL_IPV6_NETWORK
  ipv6Subnet?: string; // FLANNEL_IPV6_SUBNET
  mtu: number; // FLANNEL_MTU
  ipMasq: boolean; // FLANNEL_IPMASQ
}

const CNI_PATH = "/usr/lib/cni";
const UNDERLAY_BASE = 50;
const live = new Set<string>();

/** A fresh random prefix: `base` + 4 hex digits ("tw3fa1"). */
export function randomPrefix(base = "tw"): string {
  return base + randomBytes(2).toString("hex");
}

function checkName(kind: string, name: string): void {
  if (name.length > 15) throw new Error(`Cannot use ${kind} name ${name}: longer than 15 characters`);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`Cannot use ${kind} name ${name}: bad characters`);
}

function checkPrefix(prefix: string): void {
  // sweeps delete everything that starts with the prefix: refuse short or odd ones
  if (!/^[a-z][a-z0-9]{2,7}$/.test(prefix)) {
    throw new Error(`Cannot use prefix "${prefix}": want 3-8 lowercase letters/digits starting with a letter`);
  }
}

function segmentV4(s: number, host: number): string {
  return `192.168.${UNDERLAY_BASE + s}.${host}`;
}
function segmentV6(s: number, host: number): string {
  return `fd00:${UNDERLAY_BASE + s}::${host}`;
}

export class Cluster {
  readonly prefix: string;
  readonly hosts: Host[];
  /** The underlay switch namespace "<prefix>ul". */
  readonly underlayNetns: string;
  /** The router namespace "<prefix>rt". */
  readonly routerNetns: string;
  /** /tmp/<prefix> */
  readonly dir: string;
  readonly opts: Readonly<Required<Omit<ClusterOptions, "segments">>> & { segments: number[] };
  private destroyed = false;
  private readonly podLocks = new Map<string, Promise<unknown>>();

  private constructor(opts: ClusterOptions) {
    checkPrefix(opts.prefix);
    if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > 200) {
      throw new Error(`Cannot build a cluster of ${opts.hosts} hosts: want 1-200`);
    }
    const segments = opts.segments ?? new Array<number>(opts.hosts).fill(0);
    if (segments.length !== opts.hosts || segments.some((s) => !Number.isInteger(s) || s < 0 || s > 49)) {
      throw new Error(`Cannot use segments [${segments}]: want one segment (0-49) per host`);
    }
    this.opts = { prefix: opts.prefix, hosts: opts.hosts, segments, ipv6: opts.ipv6 ?? false, mtu: opts.mtu ?? 1500 };
    this.prefix = opts.prefix;
    this.underlayNetns = `${opts.prefix}ul`;
    this.routerNetns = `${opts.prefix}rt`;
    this.dir = `/tmp/${opts.prefix}`;
    this.hosts = segments.map((segment, i) => {
      const index = i + 1;
      const name = `h${index}`;
      const host: Host = {
        name,
        netns: `${opts.prefix}${name}`,
        index,
        segment,
        underlayIP: segmentV4(segment, 10 + index),
        underlayPrefixLen: 24,
        gateway: segmentV4(segment, 1),
        iface: "eth0",
        dir: join(this.dir, name),
        pods: [],
      };
      if (this.opts.ipv6) {
        host.underlayIPv6 = segmentV6(segment, 10 + index);
        host.gatewayV6 = segmentV6(segment, 1);
      }
      return host;
    });
    for (const ns of [this.underlayNetns, this.routerNetns, ...this.hosts.map((h) => h.netns)]) checkName("netns", ns);
  }

  /** Builds the underlay, the router and the hosts. On failure, removes what it made and rethrows. */
  static async create(opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts);
    if (live.has(c.prefix)) throw new Error(`Cannot create cluster ${c.prefix}: one with this prefix is live`);
    live.add(c.prefix);
    installSafetyNet();
    try {
      await c.build();
    } catch (e) {
      await c.destroy().catch(() => {});
      throw e;
    }
    return c;
  }

  private get segmentIds(): number[] {
    return [...new Set(this.opts.segments)].sort((a, b) => a - b);
  }

  private async build(): Promise<void> {
    const { mtu, ipv6 } = this.opts;
    for (const h of this.hosts) mkdirSync(h.dir, { recursive: true });
    const all = [this.underlayNetns, this.routerNetns, ...this.hosts.map((h) => h.netns)];
    await run("ip", ["-batch", "-"], { input: all.map((n) => `netns add ${n}\n`).join("") });

    // The switch: one bridge per segment, one port per host and per router leg.
    await sysctl(this.underlayNetns, { "net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1 });
    const ul: string[] = ["link set lo up"];
    for (const s of this.segmentIds) {
      ul.push(`link add br${s} mtu ${mtu} type bridge`, `link set br${s} up`);
      ul.push(`link add rt${s} mtu ${mtu} type veth peer name eth${s} mtu ${mtu} netns ${this.routerNetns}`);
      ul.push(`link set rt${s} master br${s} up`);
    }
    for (const h of this.hosts) {
      ul.push(`link add ${h.name} mtu ${mtu} type veth peer name ${h.iface} mtu ${mtu} netns ${h.netns}`);
      ul.push(`link set ${h.name} master br${h.segment} up`);
    }
    await run("ip", ["-batch", "-"], { netns: this.underlayNetns, input: ul.join("\n") + "\n" });

    const router = async (): Promise<void> => {
      const ctl: Record<string, number> = { "net.ipv4.ip_forward": 1 };
      if (ipv6) {
        Object.assign(ctl, { "net.ipv6.conf.all.forwarding": 1, "net.ipv6.conf.default.accept_dad": 0 });
        // no DAD on the legs: while a leg's link-local address is tentative the
        // kernel sends no neighbour solicitation for forwarded packets
        for (const s of this.segmentIds) ctl[`net.ipv6.conf.eth${s}.accept_dad`] = 0;
      }
      await sysctl(this.routerNetns, ctl);
      const cmds = ["link set lo up"];
      for (const s of this.segmentIds) {
        cmds.push(`link set eth${s} up`, `addr add ${segmentV4(s, 1)}/24 dev eth${s}`);
        if (ipv6) cmds.push(`addr add ${segmentV6(s, 1)}/64 dev eth${s} nodad`);
      }
      await run("ip", ["-batch", "-"], { netns: this.routerNetns, input: cmds.join("\n") + "\n" });
    };
    const host = async (h: Host): Promise<void> => {
      const ctl: Record<string, number> = { "net.ipv4.ip_forward": 1 };
      // no DAD: addresses (eth0's, and those the bridge plugin adds later) are usable at once
      if (ipv6) {
        Object.assign(ctl, {
          "net.ipv6.conf.all.forwarding": 1,
          "net.ipv6.conf.all.accept_dad": 0,
          "net.ipv6.conf.default.accept_dad": 0,
          [`net.ipv6.conf.${h.iface}.accept_dad`]: 0, // eth0 exists already: "all" does not override it
        });
      }
      await sysctl(h.netns, ctl);
      const cmds = [
        "link set lo up",
        `link set ${h.iface} up`,
        `addr add ${h.underlayIP}/24 dev ${h.iface}`,
        `route add default via ${h.gateway} dev ${h.iface}`,
      ];
      if (ipv6) {
        cmds.push(`addr add ${h.underlayIPv6}/64 dev ${h.iface} nodad`);
        cmds.push(`route add ::/0 via ${h.gatewayV6} dev ${h.iface}`);
      }
      await run("ip", ["-batch", "-"], { netns: h.netns, input: cmds.join("\n") + "\n" });
    };
    await Promise.all([router(), ...this.hosts.map(host)]);
  }

  /** The host named "h1", or number 1. */
  host(which: string | number): Host {
    const h = typeof which === "number" ? this.hosts[which - 1] : this.hosts.find((x) => x.name === which);
    if (!h) throw new Error(`Cluster ${this.prefix} has no host ${which}`);
    return h;
  }

  /** Every namespace of the cluster: underlay, router, hosts, pods. */
  namespaces(): string[] {
    return [
      this.underlayNetns,
      this.routerNetns,
      ...this.hosts.flatMap((h) => [h.netns, ...h.pods.map((p) => p.netns)]),
    ];
  }

  /**
   * Turns segmentation/receive offloads on or off on both ends of every
   * underlay veth (and the router's legs), so the underlay behaves like a
   * wire for MTU tests: veth does not enforce MTU on GSO packets.
   */
  async setUnderlayOffloads(enabled: boolean, features: string[] = ["tso", "gso", "gro"]): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (const h of this.hosts) {
      jobs.push(setOffloads(h.netns, h.iface, enabled, features));
      jobs.push(setOffloads(this.underlayNetns, h.name, enabled, features));
    }
    for (const s of this.segmentIds) {
      jobs.push(setOffloads(this.underlayNetns, `rt${s}`, enabled, features));
      jobs.push(setOffloads(this.routerNetns, `eth${s}`, enabled, features));
    }
    await Promise.all(jobs);
  }

  /** Default path of a host's subnet file: /tmp/<prefix>/h1/subnet.env. */
  subnetFile(host: Host): string {
    return join(host.dir, "subnet.env");
  }

  /** Serializes CNI calls per host (the bridge plugin creating cni0 races with itself). */
  withHostLock<T>(host: Host, fn: () => Promise<T>): Promise<T> {
    const prev = this.podLocks.get(host.name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.podLocks.set(
      host.name,
      next.catch(() => {}),
    );
    return next;
  }

  /** dumpState of every host (and the router), for failure output. */
  async dump(): Promise<string> {
    const blobs = await Promise.all([...this.hosts.map((h) => dumpState(h.netns)), dumpState(this.routerNetns)]);
    return blobs.join("\n");
  }

  /** Leaves the cluster up when this process exits (the demo): the exit safety net skips it. */
  keep(): void {
    live.delete(this.prefix);
  }

  /** Kills the cluster's processes, deletes its namespaces and directories. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      await killSpawned(this.prefix);
      await sweepPrefix(this.prefix);
    } finally {
      live.delete(this.prefix);
    }
  }
}

/** Sets sysctls inside a namespace: sysctl({"net.ipv4.ip_forward": 1}). */
export async function sysctl(netns: string, values: Record<string, string | number>): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
  if (args.length) await run("sysctl", ["-q", "-w", ...args], { netns });
}

/** `ethtool -K dev tso off gso off gro off` (or on) inside a namespace. */
export async function setOffloads(
  netns: string,
  dev: string,
  enabled: boolean,
  features: string[] = ["tso", "gso", "gro"],
): Promise<void> {
  const args = features.flatMap((f) => [f, enabled ? "on" : "off"]);
  await run("ethtool", ["-K", dev, ...args], { netns });
}

// ---------------------------------------------------------------------------
// Pods

/** Writes a flannel subnet.env (the format flanneld writes and its CNI plugin reads). */
export function writeSubnetFile(path: string, env: SubnetEnv): void {
  const lines: string[] = [];
  if (env.network) lines.push(`FLANNEL_NETWORK=${env.network}`);
  if (env.subnet) lines.push(`FLANNEL_SUBNET=${env.subnet}`);
  if (env.ipv6Network) lines.push(`FLANNEL_IPV6_NETWORK=${env.ipv6Network}`);
  if (env.ipv6Subnet) lines.push(`FLANNEL_IPV6_SUBNET=${env.ipv6Subnet}`);
  lines.push(`FLANNEL_MTU=${env.mtu}`, `FLANNEL_IPMASQ=${env.ipMasq}`);
  writeFileSync(path, lines.join("\n") + "\n");
}

/** Reads a subnet.env the way flannel's CNI plugin does; throws on missing keys. */
export function readSubnetFile(path: string): SubnetEnv {
  const env: Partial<SubnetEnv> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1).trim();
    switch (key) {
      case "FLANNEL_NETWORK": env.network = value; break;
      case "FLANNEL_SUBNET": env.subnet = value; break;
      case "FLANNEL_IPV6_NETWORK": env.ipv6Network = value; break;
      case "FLANNEL_IPV6_SUBNET": env.ipv6Subnet = value; break;
      case "FLANNEL_MTU": env.mtu = Number.parseInt(value, 10); break;
      case "FLANNEL_IPMASQ": env.ipMasq = value === "true"; break;
    }
  }
  const missing: string[] = [];
  if (!env.network && !env.ipv6Network) missing.push("FLANNEL_NETWORK");
  if (!env.subnet && !env.ipv6Subnet) missing.push("FLANNEL_SUBNET");
  if (env.mtu === undefined || Number.isNaN(env.mtu)) missing.push("FLANNEL_MTU");
  if (env.ipMasq === undefined) missing.push("FLANNEL_IPMASQ");
  if (missing.length) throw new Error(`Cannot read subnet file ${path}: ${missing.join(", ")} missing`);
  return env as SubnetEnv;
}

/** The network of a CIDR, as Go's net.ParseCIDR returns it: "10.244.1.1/24" → "10.244.1.0/24". */
export function cidrNetwork(cidr: string): string {
  return formatPrefix(parsePrefix(cidr, "CIDR", true));
}

export interface AddPodOptions {
  /** kube-flannel.yml's delegate sets isDefaultGateway: true (the default here); false omits it. */
  isDefaultGateway?: boolean;
  /** kube-flannel.yml's delegate sets hairpinMode: true (the default here). */
  hairpinMode?: boolean;
}

/**
 * The network config flannel's CNI plugin hands to the bridge plugin, given a
 * subnet.env: name cbr0, type bridge, ipMasq = !FLANNEL_IPMASQ, mtu =
 * FLANNEL_MTU, isGateway, host-local IPAM over the subnet(s) with a route to
 * the network(s), plus kube-flannel's delegate {hairpinMode, isDefaultGateway}.
 * `dataDir` is ours (flannel leaves host-local's default): a per-run store.
 */
export function flannelDelegateConfig(env: SubnetEnv, dataDir: string, opts: AddPodOptions = {}): Record<string, unknown> {
  const ranges: { subnet: string }[][] = [];
  const routes: { dst: string }[] = [];
  if (env.subnet) ranges.push([{ subnet: cidrNetwork(env.subnet) }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: cidrNetwork(env.ipv6Subnet) }]);
  if (env.network) routes.push({ dst: cidrNetwork(env.network) });
  if (env.ipv6Network) routes.push({ dst: cidrNetwork(env.ipv6Network) });
  const conf: Record<string, unknown> = {
    cniVersion: "0.3.1",
    name: "cbr0",
    type: "bridge",
    bridge: "cni0", // the bridge plugin's default, spelled out
    hairpinMode: opts.hairpinMode ?? true,
    ipMasq: !env.ipMasq,
    mtu: env.mtu,
    isGateway: true,
    ipam: { type: "host-local", ranges, routes, dataDir },
  };
  if (opts.isDefaultGateway ?? true) conf.isDefaultGateway = true;
  return conf;
}

interface CniResult {
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { version?: string; address: string; gateway?: string; interface?: number }[];
}

function cniEnv(command: "ADD" | "DEL", pod: { containerId: string; netns: string }): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: `/run/netns/${pod.netns}`,
    CNI_IFNAME: "eth0",
    CNI_PATH: CNI_PATH,
  };
}

/**
 * Creates pod `name` on `host`: a namespace "<prefix><host>-<name>" wired to
 * the host's cni0 by /usr/lib/cni/bridge run inside the host namespace, with
 * the config flannel's CNI plugin would generate from `subnetFilePath`.
 */
export async function addPod(
  cluster: Cluster,
  host: Host,
  name: string,
  subnetFilePath: string = cluster.subnetFile(host),
  opts: AddPodOptions = {},
): Promise<Pod> {
  const netns = `${cluster.prefix}${host.name}-${name}`;
  checkName("pod netns", netns);
  if (host.pods.some((p) => p.name === name)) throw new Error(`Host ${host.name} already has a pod ${name}`);
  const env = readSubnetFile(subnetFilePath);
  const cniDir = join(host.dir, "cni");
  mkdirSync(cniDir, { recursive: true });
  const conf = flannelDelegateConfig(env, join(cniDir, "ipam"), opts);
  const containerId = `${cluster.prefix}-${host.name}-${name}`;
  writeFileSync(join(cniDir, `${name}.json`), JSON.stringify(conf));

  await run("ip", ["netns", "add", netns]);
  try {
    if (env.ipv6Subnet) {
      await sysctl(netns, { "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0 });
    }
    await run("ip", ["link", "set", "lo", "up"], { netns });
    const r = await cluster.withHostLock(host, () =>
      run(`${CNI_PATH}/bridge`, [], {
        netns: host.netns,
        input: JSON.stringify(conf),
        env: cniEnv("ADD", { containerId, netns }),
        allowFail: true,
      }),
    );
    if (r.code !== 0) {
      throw new Error(`Cannot add pod ${name} on ${host.name}: bridge plugin exited ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`);
    }
    const result = JSON.parse(r.stdout) as CniResult;
    const ips = result.ips ?? [];
    const v4 = ips.find((i) => !i.address.includes(":"));
    const v6 = ips.find((i) => i.address.includes(":"));
    const veth = result.interfaces?.find((i) => !i.sandbox && i.name !== "cni0")?.name;
    if (!v4 && !v6) throw new Error(`Cannot add pod ${name} on ${host.name}: bridge plugin returned no IP: ${r.stdout}`);
    const pod: Pod = {
      name,
      netns,
      ip: v4 ? v4.address.split("/")[0]! : "",
      host,
      containerId,
    };
    if (v4?.gateway) pod.gateway = v4.gateway;
    if (v6) pod.ipv6 = v6.address.split("/")[0]!;
    if (veth) pod.veth = veth;
    host.pods.push(pod);
    return pod;
  } catch (e) {
    // best effort: release what the plugin may have allocated, then the namespace
    await run(`${CNI_PATH}/bridge`, [], {
      netns: host.netns,
      input: JSON.stringify(conf),
      env: cniEnv("DEL", { containerId, netns }),
      allowFail: true,
    }).catch(() => {});
    rmSync(join(cniDir, `${name}.json`), { force: true });
    await run("ip", ["netns", "del", netns], { allowFail: true });
    throw e;
  }
}

/** Removes a pod: CNI DEL through the bridge plugin (releasing its IPs), then its namespace. */
export async function delPod(cluster: Cluster, pod: Pod): Promise<void> {
  const host = pod.host;
  const confPath = join(host.dir, "cni", `${pod.name}.json`);
  let conf = "";
  try {
    conf = readFileSync(confPath, "utf8");
  } catch {
    /* already deleted */
  }
  if (conf) {
    await cluster.withHostLock(host, () =>
      run(`${CNI_PATH}/bridge`, [], { netns: host.netns, input: conf, env: cniEnv("DEL", pod) }),
    );
    rmSync(confPath, { force: true });
  }
  await run("ip", ["netns", "del", pod.netns], { allowFail: true });
  host.pods = host.pods.filter((p) => p !== pod);
}

// ---------------------------------------------------------------------------
// Cleanup

function namespacesWithPrefix(prefix: string): string[] {
  try {
    return readdirSync("/run/netns").filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
}

/** PIDs of processes whose network namespace is one of `names` (what `ip netns pids` does). */
function pidsInNamespaces(names: string[]): number[] {
  const inodes = new Set<string>();
  for (const n of names) {
    try {
      inodes.add(`net:[${statSync(`/run/netns/${n}`).ino}]`);
    } catch {
      /* gone */
    }
  }
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (inodes.has(readlinkSync(`/proc/${entry}/ns/net`))) pids.push(Number(entry));
    } catch {
      /* exited, or a kernel thread */
    }
  }
  return pids.filter((p) => p !== process.pid);
}

function pathsWithPrefix(prefix: string): string[] {
  const out: string[] = [];
  for (const dir of ["/tmp", "/sys/fs/bpf"]) {
    try {
      for (const e of readdirSync(dir)) if (e.startsWith(prefix)) out.push(join(dir, e));
    } catch {
      /* no such dir */
    }
  }
  return out;
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
}

/**
 * Removes everything named with `prefix`: kills the processes in its
 * namespaces, deletes the namespaces, root-namespace links, and the
 * /tmp/<prefix>* and /sys/fs/bpf/<prefix>* paths. Safe to call repeatedly.
 */
export async function sweepPrefix(prefix: string): Promise<void> {
  checkPrefix(prefix);
  const names = namespacesWithPrefix(prefix);
  killPids(pidsInNamespaces(names));
  if (names.length) {
    await run("ip", ["-force", "-batch", "-"], { input: names.map((n) => `netns del ${n}\n`).join(""), allowFail: true });
  }
  const links = await run("ip", ["-j", "link", "show"], { allowFail: true });
  const stray = links.code === 0 ? (JSON.parse(links.stdout || "[]") as { ifname: string }[]).filter((l) => l.ifname.startsWith(prefix)) : [];
  if (stray.length) {
    await run("ip", ["-force", "-batch", "-"], { input: stray.map((l) => `link del ${l.ifname}\n`).join(""), allowFail: true });
  }
  for (const p of pathsWithPrefix(prefix)) rmSync(p, { recursive: true, force: true });
}

/** sweepPrefix without awaiting anything, for process 'exit' handlers. */
export function sweepPrefixSync(prefix: string): void {
  checkPrefix(prefix);
  killSpawnedSync(prefix);
  const names = namespacesWithPrefix(prefix);
  killPids(pidsInNamespaces(names));
  if (names.length) {
    try {
      execFileSync("ip", ["-force", "-batch", "-"], { input: names.map((n) => `netns del ${n}\n`).join(""), stdio: ["pipe", "ignore", "ignore"] });
    } catch {
      /* best effort */
    }
  }
  for (const p of pathsWithPrefix(prefix)) {
    try {
      rmSync(p, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
}

/** Names of namespaces and root links that still carry `prefix` (for "cleanup left nothing" checks). */
export async function leftovers(prefix: string): Promise<string[]> {
  const out = namespacesWithPrefix(prefix).map((n) => `netns ${n}`);
  const links = await run("ip", ["-j", "link", "show"], { allowFail: true });
  if (links.code === 0) {
    for (const l of JSON.parse(links.stdout || "[]") as { ifname: string }[]) {
      if (l.ifname.startsWith(prefix)) out.push(`link ${l.ifname}`);
    }
  }
  for (const p of pathsWithPrefix(prefix)) out.push(`path ${p}`);
  return out;
}

let netInstalled = false;

/** On exit, SIGINT or SIGTERM, sweep every live cluster synchronously. */
function installSafetyNet(): void {
  if (netInstalled) return;
  netInstalled = true;
  onCleanup(() => {
    for (const prefix of live) {
      try {
        sweepPrefixSync(prefix);
      } catch {
        /* best effort */
      }
    }
    live.clear();
  });
}
