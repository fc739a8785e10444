/**
 * The twill daemon: one node's controller.
 *
 * How it works:
 * 1) Read the network config from the lease source; find the underlay
 *    interface and public IP(s) like flanneld.
 * 2) Pick the VTEP MAC before the device exists (our old lease's, else the
 *    existing device's, else a fresh one), so the lease can be acquired with
 *    it and peers keep a valid entry across restarts.
 * 3) Acquire our subnet lease; set up the dataplane (bpf or kernel); write the
 *    flannel subnet file for the CNI plugin; program every valid peer.
 * 4) Watch the source: a batch of lease events is checked lease by lease
 *    against the others (a SubnetIndex, peers.ts) and applied as removes,
 *    then upserts (a subnet one lease gives up and another takes in the
 *    same batch is only written, never deleted), so one event costs one
 *    lease's work even among 10,000 peers. `known` is what the leases want;
 *    a peer the dataplane could not program stays in `pending` and is
 *    retried with the next event or reconcile. When the source may have
 *    missed events (lost watch, compaction, 410 Gone, or a directory with no
 *    change feed) it asks for a resync: re-list and diff against the known
 *    peers. The list runs outside the work queue, so events never wait for
 *    it; a lease that changed by event while the list ran keeps its event.
 *    A bad update of a known lease keeps its last good entry (also when a
 *    good update of it came earlier in the same batch). A lease refused for
 *    a conflict with another (a subnet or a public IP; first owner kept) is
 *    withdrawn (its old entries no longer say what it says) and tried again,
 *    in key order, whenever a batch frees subnets or public IPs.
 * 5) Every --reconcile-period the dataplane observes itself and repairs its
 *    drift against `known` (the same diff `twill status` prints; cheap when
 *    nothing changed: the bpf dataplane keeps a shadow of what it wrote and
 *    reads the maps back only when the shadow or the kernel's entry counts
 *    moved; the re-list's reconcile reads everything back);
 *    then freed malloc memory goes back to the kernel (memtrim.ts;
 *    skipped when no lease event came and nothing was re-listed since the
 *    last one; also after every full collection of V8's heap, whose
 *    worklists are malloc's), and when V8's old space is fragmented a window opens in
 *    which full collections compact it, until one has (heapcompact.ts: at
 *    most one window a minute); after a re-list it is compacted at once.
 *    The leases are re-listed every RELIST_EVERY periods (and on SIGHUP),
 *    as the safety net for a change feed that lost something silently.
 *    A re-list is compared with the leases the daemon last applied
 *    (`applied`: a lease is the same when it is the same object or equal in
 *    every field but its expiry, sameLease): with no bad lease, the rules
 *    built from the same inputs and at most an eighth of the leases
 *    changed, what differs is applied as the lease events that would have
 *    brought it (usually nothing, or an event still on its way) — the
 *    code path of every watch event; otherwise the list is diffed whole.
 *    Diffing rebuilt every lease's peers and a whole SubnetIndex, ~1.8 KiB
 *    a lease that lived long enough to reach V8's old generation: at
 *    10,000 peers each re-list put ~6 MiB there and +12 MiB on the RSS.
 *    flannel's iptables rules are checked at start and then only when the
 *    firewall changed (net/firewall-watch.ts: nftables events, or a slow
 *    timer with iptables-legacy): no process runs in steady state.
 * 6) Our own lease vanishing or changing hands stops programming (as
 *    flanneld exits with etcd; the Kubernetes source reports no events for
 *    our own node at all, as flannel's lease watcher drops them);
 *    SIGTERM stops the controller and leaves the dataplane forwarding
 *    (unless --teardown).
 */
import type { Server } from "node:http";
import { TwillError, errorCode, errorMessage } from "./errors.js";
import type { Logger } from "./log.js";
import { formatPrefix, formatIP, ipEqual, makePrefix, prefixContainsIP, prefixEqual, type IP, type Prefix } from "./net/ip.js";
import { findUnderlay, getAddrs, getLink, type AddrEntry } from "./net/link.js";
import { randomMAC } from "./lease/mac.js";
import { holdsSubnets } from "./lease/allocate.js";
import type { Lease, NetConfig, VxlanBackend } from "./lease/types.js";
import type { LeaseEvent, LeaseSource, ListResult } from "./lease/source.js";
import { heapCompactor } from "./heapcompact.js";
import { releaseFreedMemory, trimAfterFullCollections } from "./memtrim.js";
import { isRejected, leasePeers, leasesToPeers, ownLeaseIntact, sameLease, SubnetIndex, type PeerRules } from "./peers.js";
import { readSubnetFile, writeSubnetFile } from "./subnetfile.js";
import { flannelMTU } from "./config/netconf.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { startHealthServer } from "./health.js";
import { chooseIptablesMode, ensureForward, ensureMasq, iptablesMode, removeRules } from "./net/masq.js";
import { ensureNftables, removeNftables, NFT_CHAINS, NFT_TABLES, type NftFamily } from "./net/nft.js";
import { ensureBlackhole } from "./net/blackhole.js";
import { watchFirewall, type FirewallWatch } from "./net/firewall-watch.js";
import { deviceNames, PeerProgramError, type Dataplane, type LocalFamily, type LocalNode, type Peer } from "./dataplane/types.js";
import { BpfDataplane } from "./dataplane/bpf.js";
import { KernelDataplane } from "./dataplane/kernel.js";

export interface DaemonOptions {
  /** Where leases come from (directory, etcd or Kubernetes). */
  readonly source: LeaseSource & { markReady?(): Promise<void> };
  /** Kubernetes: set NetworkUnavailable=false once ready. */
  readonly markReady?: boolean;
  readonly dataplane: "bpf" | "kernel";
  /** Why --dataplane auto runs the kernel dataplane (dataplane/choose.ts); "" otherwise. */
  readonly dataplaneReason?: string;
  readonly objectPath: string;
  readonly pinDir: string;
  readonly fastPath: boolean;
  readonly encap: "bpf" | "device";
  readonly bpfAttach: "auto" | "tcx" | "tc";
  /** --peer-capacity (bpf). */
  readonly peerCapacity?: number;
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  /** --iface-can-reach: tried after --iface and --iface-regex. */
  readonly ifaceCanReach?: IP;
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  readonly subnetFile: string;
  readonly ipMasq: boolean;
  /** --ip-masq-fully-random-disable: MASQUERADE without --random-fully. */
  readonly ipMasqFullyRandomDisable?: boolean;
  /** --iptables-forward-rules (default true): false = no FLANNEL-FWD accepts (existing ones are left alone, as flannel). */
  readonly iptablesForwardRules?: boolean;
  /** --ip-blackhole-route: a blackhole route for our own subnet(s), re-checked every iptablesResyncSeconds (default 5). */
  readonly ipBlackholeRoute?: boolean;
  readonly iptablesResyncSeconds?: number;
  readonly healthzIP: string;
  readonly healthzPort: number;
  readonly reconcileSeconds: number;
  readonly bridge: string;
  readonly teardownOnExit: boolean;
  readonly version: string;
  /** --allow-link-local-public-ip: accept peers whose PublicIP(v6) is link-local. */
  readonly allowLinkLocalPublicIP?: boolean;
}


/** vxlan options twill does not implement are refused by name, never parsed and dropped. */
function checkVxlanOptions(be: VxlanBackend, dataplane: "bpf" | "kernel"): void {
  if (be.gbp) throw new TwillError("ERR_INVALID_CONFIG", "Cannot parse network config: Backend.GBP true is not supported by twill (VXLAN Group Based Policy); remove it or set it to false");
  if (be.learning && dataplane === "bpf") {
    throw new TwillError("ERR_INVALID_CONFIG", "Cannot parse network config: Backend.Learning true needs a learning vxlan device: run this node with --dataplane kernel, or set it to false");
  }
}

/**
 * flannel's host-gw refuses a PublicIP that is not an address of the
 * interface (a node behind NAT cannot be a next hop): the same check, with
 * flannel's words.
 */
function checkHostGwAddress(iface: string, addrs: readonly AddrEntry[], ...ips: (IP | undefined)[]): void {
  const mine = addrs.map((a) => a.local);
  for (const ip of ips) {
    if (ip && !mine.some((m) => ipEqual(m, ip))) {
      throw new TwillError("ERR_INVALID_CONFIG", `host-gw: the PublicIP ${formatIP(ip)} differs from the addresses of ${iface}, meaning that probably you're on a NAT, which is not supported by the host-gw backend`);
    }
  }
}
/** flannel's ipStack (ipmatch.GetIPFamily) for interface selection. */
const ipStack = (c: NetConfig): "ipv4" | "ipv6" | "dual" => (c.enableIPv4 && c.enableIPv6 ? "dual" : c.enableIPv6 ? "ipv6" : "ipv4");
/** Refusals for a conflict with another lease (first owner kept): such a lease is tried again once the owner lets go. */
const isConflict = (code: string): boolean => code === "ERR_LEASE_CONFLICT" || code === "ERR_PUBLIC_IP_CONFLICT";
/** How long a SIGTERM during start waits for the start to reach its next step before stopping anyway. */
const START_STOP_WAIT_MS = 5000;
/** A full re-list of the leases every this many reconcile periods (the first one too). */
const RELIST_EVERY = 30;
const peerKey = (p: Peer): string => formatPrefix(p.subnet);
const samePeer = (a: Peer, b: Peer): boolean =>
  ipEqual(a.publicIP, b.publicIP) && a.vtepMAC === b.vtepMAC && a.vni === b.vni && a.direct === b.direct;

/** The same peers, in the same order (a plain loop: a re-list calls it for every lease). */
function samePeers(a: readonly Peer[], b: readonly Peer[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!prefixEqual(a[i]!.subnet, b[i]!.subnet) || !samePeer(a[i]!, b[i]!)) return false;
  return true;
}

const sameBackend = (a: Lease, b: Lease): boolean =>
  a.backendType === b.backendType && a.backendData?.vtepMAC === b.backendData?.vtepMAC && a.backendV6Data?.vtepMAC === b.backendV6Data?.vtepMAC;

export class Daemon {
  /** Compacts V8's old generation while it is fragmented (heapcompact.ts), checked every period. */
  private readonly compact = heapCompactor();
  private readonly store: LeaseSource & { markReady?(): Promise<void> };
  private readonly metrics: Metrics;
  private dp?: Dataplane;
  private config?: NetConfig;
  private own?: Lease;
  private publicIP?: IP;
  private publicIPv6?: IP;
  /** What the leases want: peers by lease key, and their subnets. */
  private known = new Map<string, Peer[]>();
  /** Changes not yet in the dataplane (a failed upsert or remove), by subnet. */
  private pending = new Map<string, { peer: Peer; remove: boolean }>();
  /** All peers of `known`, rebuilt only after `known` changed (the dataplane compares it by identity). */
  private desiredCache?: Peer[];
  /**
   * Per lease key, the sequence number of its last event, kept only while a
   * re-list is under way (a list does not undo an event newer than its
   * start): with no list in flight it is empty, so it never grows with the
   * keys that churn through the store.
   */
  private eventSeq = new Map<string, number>();
  private seq = 0;
  /** Re-lists under way: from the moment each takes its `since` until its reset has run. */
  private listing = 0;
  private periods = 0;
  private reconciling = false;
  /** `seq` (lease events seen) at the last releaseFreedMemory (-1: none yet). */
  private trimmedAt = -1;
  /** Stops the trims after full collections (memtrim.ts). */
  private stopTrim?: () => void;
  private index = new SubnetIndex();
  /**
   * Events that arrive before the start's list is applied (the watch starts
   * first): applied right after it. Checked earlier, against an index that
   * holds none of the listed leases, a lease conflicting with a listed one
   * (a subnet or public IP it already owns) would pass and stay programmed
   * beside it. Undefined once the first list is applied.
   */
  private early: LeaseEvent[] | undefined = [];
  private direct: (ip: IP) => boolean = () => false;
  /** Leases refused for a conflict with another live lease (first owner kept), by key: tried again when subnets are freed. */
  private blocked = new Map<string, Lease>();
  /**
   * The lease last applied per key, from a list or an event since (a
   * delete removes it; an unparsable put too), and what the rules were
   * built from when the list was taken (a change of any means a re-list is
   * diffed): a re-list returning these leases under those rules brings
   * nothing new (see 5). Undefined until a list was applied whole, and
   * after one with errors.
   */
  private applied: { readonly leases: Map<string, Lease>; readonly rules: readonly unknown[] } | undefined;
  /** The last rejection logged and counted, by lease key (a bad lease version is reported once; dropped with the key). */
  private reported = new Map<string, string>();
  private ready = false;
  private stopWatch?: () => void;
  private timer?: NodeJS.Timeout;
  private firewall?: FirewallWatch;
  private server?: Server;
  private queue: Promise<void> = Promise.resolve();
  private stopped = false;
  /** A SIGTERM/SIGINT came: start() stops at its next step, shutdown() waits for it (`starting`) and then stops. */
  private stopping = false;
  private starting?: Promise<void>;
  /** Resolves when the daemon stops by itself (lease lost); carries the reason. */
  readonly done: Promise<TwillError | undefined>;
  private finish!: (e: TwillError | undefined) => void;

  constructor(private readonly opts: DaemonOptions, private readonly log: Logger) {
    this.store = opts.source;
    this.metrics = createMetrics(opts.version, opts.dataplane, () => this.dp, opts.dataplaneReason ?? "");
    this.done = new Promise((r) => (this.finish = r));
  }

  /**
   * Starts the daemon; resolves when it is ready, or early when a signal
   * asked it to stop meanwhile (shutdown() then stops it).
   */
  async start(): Promise<void> {
    this.starting = this.startSteps();
    try {
      await this.starting;
    } finally {
      this.starting = undefined;
    }
  }

  private async startSteps(): Promise<void> {
    const o = this.opts;
    // How long each part of the start took, in the "ready" line (ms since startSteps began).
    const t0 = performance.now(), at = (): number => Math.round(performance.now() - t0);
    const startMs: Record<string, number> = {};
    if (o.healthzPort > 0) {
      this.server = await startHealthServer(o.healthzIP, o.healthzPort, { ready: () => this.ready }, this.metrics, { log: this.log });
      this.log.info("serving /healthz, /readyz, /metrics", { address: `${o.healthzIP}:${o.healthzPort}` });
    }
    const config = (this.config = await this.store.readConfig());
    if (this.stopping) return;
    // flannel's main.go: the node-public-ip(v6) annotations (Kubernetes) override --public-ip(v6) before the interface is chosen.
    const stored = (await this.store.storedPublicIPs?.()) ?? {};
    if (stored.v4 || stored.v6) this.log.info("public address from our node's annotations", { publicIP: stored.v4 && formatIP(stored.v4), publicIPv6: stored.v6 && formatIP(stored.v6) });
    const publicIP = stored.v4 ?? o.publicIP, publicIPv6 = stored.v6 ?? o.publicIPv6;
    const underlay = await findUnderlay({ iface: o.iface, ifaceRegex: o.ifaceRegex, canReach: o.ifaceCanReach, ...(publicIP ? { publicIP } : {}), ...(publicIPv6 ? { publicIPv6 } : {}), stack: ipStack(config), log: (m) => this.log.info(m) });
    this.publicIP = config.enableIPv4 ? underlay.ipv4 : undefined;
    this.publicIPv6 = config.enableIPv6 ? underlay.ipv6 : undefined;
    if (config.enableIPv4 && !this.publicIP) throw new TwillError("ERR_IFACE", `interface ${underlay.name} has no IPv4 address and --public-ip is not set`);
    if (config.enableIPv6 && !this.publicIPv6) throw new TwillError("ERR_IFACE", `interface ${underlay.name} has no IPv6 address and --public-ipv6 is not set`);

    const be = config.backend;
    const hostGw = be.type === "host-gw";
    if (be.type === "vxlan") checkVxlanOptions(be, o.dataplane);
    // The underlay's addresses: host-gw's NAT check and the "direct" rule read them.
    const addrs = hostGw || (be.type === "vxlan" && be.directRouting) ? await getAddrs(underlay.name) : [];
    if (hostGw) checkHostGwAddress(underlay.name, addrs, this.publicIP, this.publicIPv6);
    const vni = be.type === "vxlan" ? be.vni : 0;
    const { v4: dev4, v6: dev6 } = deviceNames(be);
    const { leases } = await this.store.list();
    if (this.stopping) return;
    const previous = await readSubnetFile(o.subnetFile);
    const prev = previous ? { subnet: previous.subnet, ipv6Subnet: previous.ipv6Subnet } : undefined;
    // The lease acquire will reuse: when several name our address (another writer can plant one), the
    // one holding our subnet file's subnet(s) — so the device keeps our VTEP MAC, not a planted lease's.
    const ours = leases.filter((l) => ownLeaseIntact(l, this.publicIP, this.publicIPv6));
    const old = ours.find((l) => holdsSubnets(l, prev)) ?? ours[0];
    const mac4 = old?.backendData?.vtepMAC ?? (await getLink(dev4))?.mac ?? randomMAC();
    // The bpf dataplane carries both families on one device (one collect-metadata
    // device per UDP port): one VTEP MAC for both.
    const mac6 = o.dataplane === "bpf" && config.enableIPv4 ? mac4 : old?.backendV6Data?.vtepMAC ?? (await getLink(dev6))?.mac ?? randomMAC();
    this.own = await this.store.acquire({
      publicIP: this.publicIP, publicIPv6: this.publicIPv6,
      previous: prev,
      // host-gw: flannel's lease is {"BackendType":"host-gw"} with no backend data.
      backendType: be.type,
      backendData: config.enableIPv4 && !hostGw ? { vni, vtepMAC: mac4 } : undefined,
      backendV6Data: config.enableIPv6 && !hostGw ? { vni, vtepMAC: mac6 } : undefined,
    });
    if (this.stopping) return;
    if (hostGw || be.directRouting) {
      // flannel's rule: a peer is direct when the route to it has no gateway,
      // i.e. its public IP is on one of the underlay interface's own subnets.
      const onLink = addrs.filter((a) => a.scope !== "link").map((a) => makePrefix(a.local, a.prefixLen));
      this.direct = (ip: IP) => onLink.some((p) => prefixContainsIP(p, ip));
    }
    startMs.leaseAcquired = at();
    this.log.info("acquired lease", { key: this.own.key, source: this.store.kind, publicIP: this.own.publicIP && formatIP(this.own.publicIP) });

    // A source may hand back the MAC our node already published (Kubernetes
    // annotations): the device must carry what the lease says.
    const vtep4 = this.own.backendData?.vtepMAC ?? mac4, vtep6 = this.own.backendV6Data?.vtepMAC ?? mac6;
    // flannel's numbers (config/netconf.ts flannelMTU); host-gw's hook device on bpf gets the underlay's.
    const mtus = flannelMTU(be, underlay.mtu);
    const fam = (subnet: Prefix | undefined, network: Prefix | undefined, ip: IP | undefined, device: string, mac: string): LocalFamily | undefined =>
      subnet && network && ip
        ? { subnet, network, publicIP: ip, iface: underlay.name, device, mtu: mtus.device(ip.family), ...(hostGw ? {} : { vtepMAC: mac }) }
        : undefined;
    const local: LocalNode = {
      vni, port: be.type === "vxlan" ? be.port : 0, bridge: o.bridge, directRouting: hostGw || be.directRouting,
      backend: be.type, ...(be.type === "vxlan" && be.learning ? { learning: true } : {}),
      v4: fam(this.own.subnet, config.network, this.own.publicIP ?? this.publicIP, dev4, vtep4),
      v6: fam(this.own.ipv6Subnet, config.ipv6Network, this.own.publicIPv6 ?? this.publicIPv6, dev6, vtep6),
    };
    // Watch before the first list, so no change can fall between the two; and
    // list while the dataplane is set up (with etcd, 100,000 leases are a
    // round trip of ~0.2 s). Lease work (events, the list's reset) waits in
    // the queue until the dataplane is up.
    let dataplaneUp!: () => void;
    this.queue = new Promise<void>((r) => (dataplaneUp = r));
    this.stopWatch = this.store.watch({
      onEvents: (events) => void this.serialize(() => this.apply(events)),
      onResync: () => void this.resync(false),
      onError: (e) => this.count(e, "lease source watch failed; retrying"),
    });
    const synced = this.resync(true);
    this.dp = o.dataplane === "bpf"
      ? new BpfDataplane({ objectPath: o.objectPath, pinDir: o.pinDir, fastPath: o.fastPath, encap: o.encap, attach: o.bpfAttach, log: this.log, peerCapacity: o.peerCapacity })
      : new KernelDataplane({ log: (m: string) => this.log.info(m) });
    const devs = await this.dp.setup(local);
    if (this.stopping) return;
    const mtu = mtus.subnetFile;
    await writeSubnetFile(o.subnetFile, {
      network: config.network, subnet: this.own.subnet, ipv6Network: config.ipv6Network, ipv6Subnet: this.own.ipv6Subnet,
      mtu, ipMasq: o.ipMasq,
    });
    await this.prepareFirewall();
    await this.ensureRules();
    if (this.stopping) return;
    // Rules are re-checked (iptables runs) only when someone changed the firewall, not on a timer.
    this.firewall = await watchFirewall((reason) => void this.serialize(async () => {
      this.log.debug("firewall changed; checking our rules", { reason });
      await this.ensureRules();
    }), this.config?.enableNFTables
      // nftables: flannel's own tables are what to watch (nftables always has events).
      ? { backend: "nft", tables: Object.values(NFT_TABLES), chains: [...NFT_CHAINS] }
      : iptablesMode() === "default" ? {} : { backend: iptablesMode() as "legacy" | "nft" });
    startMs.dataplaneSetUp = at();
    this.log.info("dataplane set up", { dataplane: o.dataplane, fastPath: o.fastPath, devices: devs, mtu });
    dataplaneUp();
    await synced;
    if (this.stopping) return;
    // (/readyz says ready only once the node's NetworkUnavailable condition is cleared too)
    if (o.markReady && this.store.markReady) await this.store.markReady();
    if (this.stopping) return;
    this.ready = true;
    this.timer = setInterval(() => void this.period(), o.reconcileSeconds * 1000);
    this.stopTrim = trimAfterFullCollections();
    startMs.ready = at();
    this.log.info("ready", { peers: this.known.size, startMs });
  }

  private rules(): PeerRules {
    return {
      config: this.config!, own: this.own!, direct: this.direct, checkLength: this.store.kind !== "kube",
      ownPublicIPs: [this.publicIP, this.publicIPv6, this.own?.publicIP, this.own?.publicIPv6],
      allowLinkLocalPublicIP: this.opts.allowLinkLocalPublicIP ?? false,
    };
  }

  /**
   * flannel's FORWARD accepts (unless --iptables-forward-rules=false), with
   * --ip-masq its masquerade rules, per family; with --ip-blackhole-route the
   * blackhole route(s) for our subnet(s), kept by their own timer.
   */
  private async ensureRules(): Promise<void> {
    const o = this.opts;
    const fams = ([[4, this.own?.subnet, this.config?.network], [6, this.own?.ipv6Subnet, this.config?.ipv6Network]] as const)
      .filter((x): x is readonly [4 | 6, Prefix, Prefix] => !!x[1] && !!x[2]);
    if (this.config?.enableNFTables) {
      // flannel's nftables mode: its two tables (net/nft.ts).
      const by: { 4?: NftFamily; 6?: NftFamily } = {};
      for (const [f, subnet, network] of fams) by[f] = { subnet, network };
      await ensureNftables(by, { forward: o.iptablesForwardRules !== false, masq: o.ipMasq, fullyRandomDisable: o.ipMasqFullyRandomDisable ?? false });
    } else {
      for (const [, subnet, network] of fams) {
        if (o.iptablesForwardRules !== false) await ensureForward(network);
        if (o.ipMasq) await ensureMasq(subnet, network, { fullyRandomDisable: o.ipMasqFullyRandomDisable ?? false });
      }
    }
    if (o.ipBlackholeRoute) this.keepBlackholes();
  }

  /**
   * Once at start, as flannel's main.go: the rules of the mode not in use
   * go (a switch between iptables and nftables leaves nothing behind), and
   * with iptables the backend (legacy or nft) is chosen as kube-proxy's
   * image chooses it (net/masq.ts).
   */
  private async prepareFirewall(): Promise<void> {
    if (this.config?.enableNFTables) {
      for (const f of [4, 6] as const) await removeRules(f);
      this.log.info("firewall: nftables (EnableNFTables), flannel's tables flannel-ipv4 / flannel-ipv6");
      return;
    }
    await removeNftables();
    const m = await chooseIptablesMode();
    this.log.info("firewall: iptables", { backend: m.mode, reason: m.reason });
  }

  private blackholeTimer?: NodeJS.Timeout;
  /** Subnets whose blackhole route failed (reported once until it works again). */
  private readonly blackholeFailing = new Set<string>();

  /** --ip-blackhole-route: checks now, then every --iptables-resync seconds (flannel's loop); the timer ends itself once the daemon stops. */
  private keepBlackholes(): void {
    const check = (): void => {
      if (this.stopped) return void clearInterval(this.blackholeTimer);
      for (const subnet of [this.own?.subnet, this.own?.ipv6Subnet]) {
        if (!subnet) continue;
        const key = formatPrefix(subnet);
        try {
          if (ensureBlackhole(subnet) === "added") this.log.info("added the blackhole route for our subnet", { subnet: key });
          this.blackholeFailing.delete(key);
        } catch (e) {
          if (this.blackholeFailing.has(key)) continue;
          this.blackholeFailing.add(key);
          this.count(e, `cannot add the blackhole route for ${key} (--ip-blackhole-route); retrying every --iptables-resync seconds`);
        }
      }
    };
    check();
    if (!this.blackholeTimer) {
      this.blackholeTimer = setInterval(check, (this.opts.iptablesResyncSeconds ?? 5) * 1000);
      this.blackholeTimer.unref();
    }
  }

  /** Runs dataplane work one at a time, in order; a failure is logged and counted, never thrown. */
  private serialize(fn: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(async () => {
      if (this.stopped) return;
      try {
        await fn();
      } catch (e) {
        this.count(e, "sync failed; will retry at the next event or reconcile");
      }
    });
    return this.queue;
  }

  private count(e: unknown, msg: string): void {
    this.metrics.errors.inc({ code: errorCode(e) });
    this.log.error(msg, { err: e });
  }

  /** Checks our own lease as the source now has it; false when it is gone (we stop). */
  private async checkOwn(now: Lease | undefined, unreadable: boolean): Promise<boolean> {
    if (!now && !unreadable) {
      await this.lost(new TwillError("ERR_LEASE_LOST", `our lease ${this.own!.key} was deleted; stopping (the dataplane keeps its last state)`));
      return false;
    }
    if (!ownLeaseIntact(now, this.own!.publicIP, this.own!.publicIPv6) || !sameBackend(now!, this.own!)) {
      // Someone overwrote our lease (or it became unreadable): never program a route
      // to our own subnet; put our lease back, keep the dataplane as it is.
      this.reject(this.own!.key, "ERR_LEASE_CONFLICT", `our own lease was overwritten (PublicIP ${now?.publicIP ? formatIP(now.publicIP) : "unreadable"}); restoring it`, now);
      await this.store.writeLease(this.own!);
    }
    return true;
  }

  /** Applies a batch of lease events, lease by lease; the last event of a key wins. */
  private async apply(events: readonly LeaseEvent[]): Promise<void> {
    if (this.early) {
      this.early.push(...events);
      return;
    }
    // Per key, the last event; but a key whose last event is an unparsable
    // put keeps the last good state, which may be an earlier event of this
    // same batch (a good put, or a delete): that one is applied, the bad
    // one only reported.
    const latest = new Map<string, LeaseEvent>();
    for (const e of events) {
      const bad = e.type === "put" && !e.lease;
      if (bad && e.key !== this.own!.key) {
        if (e.error) this.reject(e.key, e.error.code, e.error.message);
        if (!latest.has(e.key)) latest.set(e.key, e);
        continue;
      }
      latest.set(e.key, e);
    }
    // Deletes first: a subnet that lease A gives up and lease B takes in the
    // same batch must not make B clash with A.
    const ordered = [...latest.values()].sort((a, b) => (a.type === b.type ? 0 : a.type === "put" ? 1 : -1));
    const up: Peer[] = [], gone: Peer[] = [];
    let freed = false;
    for (const e of ordered) {
      this.seq++;
      if (this.listing > 0) this.eventSeq.set(e.key, this.seq);
      if (e.type === "delete") this.reported.delete(e.key);
      if (e.type === "delete" || e.lease) this.blocked.delete(e.key);
      if (e.lease) this.applied?.leases.set(e.key, e.lease);
      else this.applied?.leases.delete(e.key);
      if (e.key === this.own!.key) {
        if (!(await this.checkOwn(e.type === "put" ? e.lease : undefined, e.type === "put" && !!e.error))) return;
        continue;
      }
      if (e.type === "put" && !e.lease) continue; // unparsable (reported above): the last good state stays
      const old = this.known.get(e.key) ?? [];
      let next: Peer[] = [];
      if (e.type === "put") {
        const r = leasePeers(e.lease!, this.rules(), this.index);
        if (isRejected(r)) {
          this.reject(r.key, r.code, r.reason, e.lease);
          if (!isConflict(r.code)) continue; // a bad update keeps the last good entries
          // A conflict: another lease holds the subnet or public IP first. The
          // old entries are no longer what this lease says: withdraw them (which
          // frees what they held) and try the lease again once the owner lets go.
          this.blocked.set(e.key, e.lease!);
          if (old.length && this.setKnown(e.key, old, [], up, gone)) freed = true;
          continue;
        }
        next = r;
      }
      if (this.setKnown(e.key, old, next, up, gone)) freed = true;
    }
    if (freed) this.unblock(up, gone);
    await this.program(up, gone);
  }

  /**
   * Subnets or public IPs were freed: a lease held back by a conflict with
   * them may fit now (the first owner left, or moved to another address).
   * Tried in key order, as a full list decides.
   */
  private unblock(up: Peer[], gone: Peer[]): void {
    for (const key of [...this.blocked.keys()].sort()) {
      const r = leasePeers(this.blocked.get(key)!, this.rules(), this.index);
      if (isRejected(r)) continue;
      this.blocked.delete(key);
      this.reported.delete(key);
      this.setKnown(key, this.known.get(key) ?? [], r, up, gone);
    }
  }

  /**
   * Replaces one lease's peers in `known`, noting what changed in `up`/`gone`.
   * Peers equal to the known ones change nothing: the known objects stay and
   * the desired set keeps its identity, so a re-list that finds the leases
   * as they were costs the dataplane no rebuild of its shadow. True when
   * it freed a subnet or a public IP (a conflict held back may fit now).
   */
  private setKnown(key: string, old: readonly Peer[], next: readonly Peer[], up: Peer[], gone: Peer[]): boolean {
    if (samePeers(old, next)) return false;
    let freed = false;
    const nextBy = new Map(next.map((p) => [peerKey(p), p]));
    for (const p of old) {
      if (!nextBy.has(peerKey(p))) gone.push(p);
      if (!nextBy.has(peerKey(p)) || !next.some((n) => ipEqual(n.publicIP, p.publicIP))) freed = true;
      // Subnet and public IP: a peer kept with another public IP must free the old one.
      this.index.deletePeer(p, key);
    }
    for (const p of next) {
      const was = old.find((o) => peerKey(o) === peerKey(p));
      if (!was || !samePeer(was, p)) up.push(p);
      this.index.addPeer(p, key);
    }
    if (next.length) this.known.set(key, [...next]);
    else this.known.delete(key);
    if (old.length || next.length) this.desiredCache = undefined;
    return freed;
  }

  /** All wanted peers (one array per change of `known`: the dataplane keys its shadow on it). */
  private desired(): Peer[] {
    return (this.desiredCache ??= [...this.known.values()].flat());
  }

  /**
   * Programs a batch: what is pending from before, then removes, then
   * upserts. A subnet removed and re-added in the same batch (lease A gone,
   * lease B took its subnet) is only upserted: the last change of a subnet
   * wins. State counts as programmed only once the dataplane call returned;
   * what failed stays pending.
   */
  private async program(up: readonly Peer[], gone: readonly Peer[]): Promise<void> {
    const ops = new Map(this.pending);
    for (const p of gone) ops.set(peerKey(p), { peer: p, remove: true });
    for (const p of up) ops.set(peerKey(p), { peer: p, remove: false });
    if (!ops.size) return;
    this.pending = ops;
    const removes = [...ops.values()].filter((o) => o.remove).map((o) => o.peer);
    const upserts = [...ops.values()].filter((o) => !o.remove).map((o) => o.peer);
    if (removes.length) {
      await this.dp!.remove(removes);
      for (const p of removes) this.pending.delete(peerKey(p));
      this.metrics.leaseEvents.inc({ type: "remove" }, removes.length);
    }
    if (upserts.length) {
      try {
        await this.dp!.upsert(upserts);
        for (const p of upserts) this.pending.delete(peerKey(p));
      } catch (e) {
        if (e instanceof PeerProgramError) {
          // Only the peers named failed (the kernel dataplane rolls back each alone): the rest are in.
          const failed = new Set(e.peers.map(peerKey));
          const done = upserts.filter((p) => !failed.has(peerKey(p)));
          for (const p of done) this.pending.delete(peerKey(p));
          if (done.length) this.metrics.leaseEvents.inc({ type: "upsert" }, done.length);
        }
        throw e;
      }
      this.metrics.leaseEvents.inc({ type: "upsert" }, upserts.length);
    }
    const few = (ps: Peer[]) => (ps.length <= 20 ? ps.map(peerKey) : `${ps.length} peers`);
    this.log.info("peers changed", { upserted: few(upserts), removed: few(removes) });
    this.metrics.leases.set({ state: "peer" }, this.known.size);
  }

  /** One reconcile period: repair drift against `known`; every RELIST_EVERY periods re-list first. */
  private async period(): Promise<void> {
    if (this.periods++ % RELIST_EVERY === RELIST_EVERY - 1) {
      await this.resync(true);
      // The re-list's garbage: compacted now while the heap is small, else by V8's next full collection (heapcompact.ts).
      const t = performance.now(), how = this.compact.afterRelist();
      if (how === "window") this.metrics.heapCompactions.inc();
      if (how !== "none") this.log.debug("re-listed: V8's old space compacted", { how, ms: Math.round(performance.now() - t) });
      return;
    }
    await this.repair();
    if (this.compact()) {
      this.metrics.heapCompactions.inc();
      this.log.debug("V8's old space is fragmented: full collections compact until one has");
    }
  }

  /**
   * Makes the dataplane exactly `known` (the drift the dataplane finds is
   * logged and counted). It runs beside the work queue, not in it: lease
   * events are applied while it runs (the bpf dataplane yields while it
   * compares, and leaves out of its repair whatever an event wrote
   * meanwhile; the kernel dataplane orders its own calls). One at a time.
   */
  private async repair(full = false): Promise<void> {
    if (this.reconciling || this.stopped) return;
    this.reconciling = true;
    const pendingBefore = new Map(this.pending);
    try {
      const r = await this.metrics.reconcile(() => this.dp!.reconcile(this.desired(), { full }));
      // What was pending when it began is in the dataplane now (unless an event replaced it meanwhile).
      for (const [k, v] of pendingBefore) if (this.pending.get(k) === v) this.pending.delete(k);
      // (ready first: a first start's drift is every peer, listed only if read)
      if (this.ready && r.drift.length > 0) this.log.warn("reconcile repaired drift", { added: r.added, updated: r.updated, removed: r.removed, drift: r.drift });
      this.metrics.leases.set({ state: "peer" }, this.known.size);
    } catch (e) {
      if (e instanceof PeerProgramError) for (const p of e.peers) if (!this.pending.has(peerKey(p))) this.pending.set(peerKey(p), { peer: p, remove: false });
      if (!this.stopped) this.count(e, "reconcile failed; will retry at the next event or reconcile");
    } finally {
      this.reconciling = false;
      // A reconcile (and the re-list before it) frees what it read: give it back
      // (unless no lease event came and nothing was re-listed since the last time:
      // an idle node skips the call, and the page faults malloc takes when it
      // reuses trimmed pages).
      if (full || this.seq !== this.trimmedAt) {
        releaseFreedMemory();
        this.trimmedAt = this.seq;
      }
    }
  }

  /** Re-lists the leases and reconciles now (SIGHUP). */
  resyncNow(): Promise<void> {
    return this.ready ? this.resync(true) : Promise.resolve();
  }

  /** Re-lists the leases (outside the work queue); full = then repair the dataplane against them. */
  private async resync(full: boolean): Promise<void> {
    await this.relist(full);
    if (full) await this.repair(true);
  }

  /**
   * Lists the leases and applies the list in the work queue (`repairs`: a
   * repair follows once it is applied). A function of its own so that the
   * list (every lease, parsed) is garbage once applied, not held by the
   * caller's frame through the repair that follows.
   */
  private async relist(repairs: boolean): Promise<void> {
    const since = this.seq;
    this.listing++;
    try {
      const listed = await this.store.list().catch((e: unknown) => e);
      await this.serialize(async () => {
        if (listed instanceof Error || !listed || typeof listed !== "object") throw listed;
        await this.reset(listed as ListResult, since, repairs);
      });
    } finally {
      // Any later list starts after every event seen so far: no entry can matter to it.
      if (--this.listing === 0) this.eventSeq.clear();
    }
  }

  /**
   * Diffs a full list against `known` and programs the difference; leases
   * with newer events keep them. Only the start's own list (`repairs`, not
   * yet ready, nothing known) is taken whole without programming: the repair
   * its resync runs next reads `known` after it and programs everything.
   * Any other list programs what it changed — also one applied during
   * start: the start's repair may already hold the desired set from before
   * it (a lease source's re-list queued behind the start's list), and a
   * peer recorded in `known` that no dataplane call wrote would stay
   * missing until some later reconcile.
   */
  private async reset({ leases, errors }: ListResult, since: number, repairs: boolean): Promise<void> {
    for (const { key, error } of errors) this.reject(key, error.code, error.message);
    const newer = (key: string) => (this.eventSeq.get(key) ?? 0) > since;
    if (!newer(this.own!.key)) {
      const ownNow = leases.find((l) => l.key === this.own!.key);
      if (!(await this.checkOwn(ownNow, errors.some((e) => e.key === this.own!.key)))) return;
    }
    const changes = this.listChanges(leases, errors.length, newer);
    if (changes) {
      // Nothing new, or a few leases: applied as the events that would have brought them.
      this.metrics.leaseRelists.inc({ result: changes.length ? "patched" : "unchanged" });
      if (changes.length) await this.apply(changes);
      await this.applyEarly();
      return;
    }
    if (this.ready) this.metrics.leaseRelists.inc({ result: "diffed" });
    this.takeApplied(leases, errors.length, newer);
    // First owner kept: what `known` holds now claims its subnets and addresses before the leases this list adds.
    const { byKey, rejected, index } = leasesToPeers(leases, this.rules(), this.known.size ? (l) => this.known.has(l.key) : undefined);
    // The rejected leases by key (one pass over the list, not one search per rejection).
    const leaseOf = rejected.length ? new Map(leases.map((l) => [l.key, l])) : undefined;
    for (const r of rejected) this.reject(r.key, r.code, r.reason, leaseOf!.get(r.key));
    // The leases a conflict holds back, as this list found them (an event since keeps its own verdict).
    const blocked = new Map<string, Lease>();
    for (const r of rejected) {
      const l = isConflict(r.code) && !newer(r.key) ? leaseOf!.get(r.key) : undefined;
      if (l) blocked.set(r.key, l);
    }
    for (const [key, l] of this.blocked) if (newer(key)) blocked.set(key, l);
    this.blocked = blocked;
    // A lease that went bad keeps its last good entries (until it is deleted); one changed by an event since the list keeps the event's.
    for (const { key } of errors) {
      const keep = this.known.get(key);
      if (keep && !byKey.has(key)) byKey.set(key, keep);
    }
    for (const key of this.known.keys()) if (newer(key)) byKey.set(key, this.known.get(key)!);
    for (const key of [...byKey.keys()]) if (newer(key) && !this.known.has(key)) byKey.delete(key);
    if (repairs && !this.ready && this.known.size === 0) {
      // The first list at start: take it whole (the repair that follows programs it).
      this.known = byKey;
      this.index = index;
      this.desiredCache = undefined;
      this.metrics.leases.set({ state: "own" }, 1);
      this.metrics.leases.set({ state: "rejected" }, rejected.length + errors.length);
      await this.applyEarly();
      return;
    }
    const up: Peer[] = [], gone: Peer[] = [];
    const keys = new Set([...this.known.keys(), ...byKey.keys()]);
    // Removes first into the index, so a subnet moving between leases does not clash with itself.
    for (const key of keys) if (!byKey.has(key)) this.setKnown(key, this.known.get(key) ?? [], [], up, gone);
    for (const key of keys) {
      const next = byKey.get(key);
      if (next) this.setKnown(key, this.known.get(key) ?? [], next, up, gone);
    }
    this.metrics.leases.set({ state: "own" }, 1);
    this.metrics.leases.set({ state: "rejected" }, rejected.length + errors.length);
    this.forgetReports(leases, errors);
    await this.program(up, gone);
    await this.applyEarly();
  }

  /** The inputs of rules(): the same objects mean the same verdicts on the same leases. */
  private rulesInputs(): readonly unknown[] {
    return [this.config, this.own, this.direct, this.publicIP, this.publicIPv6];
  }

  /**
   * What a list changes against `applied`, as the lease events that would
   * bring it (see 5): a put for a lease that is new or not the one last
   * applied (sameLease), a delete for a key the list no longer has — leaving
   * out our own lease (checkOwn read it) and keys with an event newer than
   * the list. Undefined when the list must be diffed whole: no record to
   * compare with, a bad lease in it, rules from other inputs, or more than
   * an eighth of its leases changed.
   */
  private listChanges(leases: readonly Lease[], errors: number, newer: (key: string) => boolean): LeaseEvent[] | undefined {
    if (!this.applied || errors > 0) return undefined;
    const { leases: applied, rules } = this.applied;
    if (this.rulesInputs().some((x, i) => x !== rules[i])) return undefined;
    const most = leases.length >> 3, own = this.own!.key;
    const out: LeaseEvent[] = [];
    let hits = 0;
    for (let i = 0; i < leases.length; i++) {
      const l = leases[i]!, a = applied.get(l.key);
      if (a) hits++;
      if (l.key === own || (a && (a === l || sameLease(a, l))) || newer(l.key)) continue;
      out.push({ type: "put", key: l.key, lease: l });
      if (out.length > most) return undefined;
    }
    if (hits < applied.size) {
      const listed = new Set(leases.map((l) => l.key));
      for (const key of applied.keys()) {
        if (listed.has(key) || key === own || newer(key)) continue;
        out.push({ type: "delete", key });
        if (out.length > most) return undefined;
      }
    }
    return out;
  }

  /** `applied` from a list about to be diffed (none with errors); keys with a newer event keep the event's lease. */
  private takeApplied(leases: readonly Lease[], errors: number, newer: (key: string) => boolean): void {
    const before = this.applied?.leases;
    this.applied = undefined;
    // (Events newer than the list with no record of their leases: the next list is diffed too.)
    if (errors > 0 || (!before && this.eventSeq.size > 0)) return;
    const next = new Map<string, Lease>();
    for (const l of leases) if (!newer(l.key)) next.set(l.key, l);
    if (before) for (const [key, l] of before) if (newer(key)) next.set(key, l);
    this.applied = { leases: next, rules: this.rulesInputs() };
  }

  /** The events held back until the first list was applied (see `early`), in the order they came. */
  private async applyEarly(): Promise<void> {
    const early = this.early;
    this.early = undefined;
    if (early?.length) await this.apply(early);
  }

  private reject(key: string, code: string, reason: string, lease?: Lease): void {
    const id = `${reason}\0${lease ? JSON.stringify(lease, (_k, v) => (v instanceof Uint8Array ? Array.from(v) : v)) : ""}`;
    if (this.reported.get(key) === id) return;
    this.reported.set(key, id);
    this.metrics.leaseErrors.inc({ code });
    this.log.error("lease rejected", { key, code, reason });
  }

  /** Drops the reports of keys a full list no longer has (their leases are gone). */
  private forgetReports(leases: readonly Lease[], errors: ListResult["errors"]): void {
    if (this.reported.size === 0) return;
    const live = new Set<string>([...leases.map((l) => l.key), ...errors.map((e) => e.key)]);
    for (const key of this.reported.keys()) if (!live.has(key)) this.reported.delete(key);
  }

  private async lost(e: TwillError): Promise<void> {
    this.count(e, e.message);
    this.ready = false;
    await this.stop();
    this.finish(e);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    this.stopTrim?.();
    this.firewall?.stop();
    this.stopWatch?.();
    await this.store.close().catch((e) => this.log.warn("closing the lease source failed", { err: e }));
    this.server?.close();
    if (this.dp) {
      if (this.opts.teardownOnExit) {
        await this.dp.teardown();
        for (const f of [4, 6] as const) await removeRules(f);
        await removeNftables();
      }
      else await this.dp.close();
    }
  }

  /** Stops on SIGTERM/SIGINT. */
  async shutdown(signal: string): Promise<void> {
    this.log.info("stopping; the dataplane keeps forwarding", { signal, teardown: this.opts.teardownOnExit });
    this.stopping = true;
    // A start under way stops at its next step; what it made by then is stopped (or torn down) with the rest.
    // A step that does not end (a source that never answers) is not waited for beyond START_STOP_WAIT_MS.
    if (this.starting) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.starting.catch(() => {}), new Promise<void>((r) => (timer = setTimeout(r, START_STOP_WAIT_MS)))]);
      clearTimeout(timer);
    }
    await this.stop();
    this.finish(undefined);
  }

  /** A signal asked the daemon to stop (start() may return early). */
  get stopRequested(): boolean {
    return this.stopping;
  }
}

export function describeError(e: unknown): string {
  return `${errorCode(e)}: ${errorMessage(e)}`;
}
