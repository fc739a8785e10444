/**
 * The eBPF dataplane: peers live in a BPF LPM trie, not in the kernel's
 * route/neigh/FDB tables.
 *
 * How it works:
 * 1) Per enabled family, one vxlan device in external (collect-metadata)
 *    mode, `arp off`, named like flannel's (flannel.<VNI> / flannel-v6.<VNI>),
 *    with flannel's <subnet>.0 address and ONE route for the whole cluster
 *    network via it (onlink, so exactly one NOARP neighbour in total).
 * 2) The object bpf/twill.c is loaded with its maps pinned under
 *    <pin-dir>/maps (adopted on restart). The config map gets the device
 *    ifindexes, VTEP MACs, underlay addresses and the VNI; the LPM trie gets
 *    our own subnet (LOCAL) and the cluster network (CLUSTER) besides the peers.
 * 3) to_overlay on each vxlan device's tc egress encapsulates anything the
 *    host stack routes there (after routing and netfilter), and sends it out
 *    of the underlay itself (bpf/lib/vxlan.h); from_underlay on the
 *    underlay's ingress strips VXLAN from known peers (the twill_remotes
 *    map: their underlay addresses) and hands the inner packet to the stack
 *    as the vxlan device's, or into the pod with --fast-path. With
 *    --fast-path, from_pod is attached to the ingress of every port of the
 *    pod bridge (followed by PodWatcher) and encapsulates pod traffic there.
 *    The vxlan device stays: its UDP socket lets the underlay's GRO merge
 *    VXLAN segments, and it is the path for an IPv6 underlay, for
 *    --encap device and for kernels without the helpers (probed once,
 *    src/bpf/probe.ts), where from_overlay on its ingress delivers.
 * 4) All links are tcx links pinned under <pin-dir>/links, so the dataplane
 *    forwards while the controller is down, and a restart adopts them. The
 *    config and the maps the programs read are written before a program is
 *    attached or swapped, so an upgrade never runs a program on empty maps.
 * 5) host-gw: no vxlan device. A veth pair (twill_host ⇄ twill_net, as
 *    Cilium's cilium_host) takes its place as the device the cluster route
 *    points at; every peer is DIRECT, so to_overlay on its egress (after
 *    routing and netfilter) and from_pod with --fast-path send each packet
 *    out of the underlay with bpf_redirect_neigh to the peer's PublicIP: no
 *    per-peer route, no encapsulation, the wire of flannel's host-gw.
 * upsert/remove write map entries; reconcile re-creates anything missing
 * (device, route, links, config) and makes the trie equal to the desired set.
 */
import { join } from "node:path";
import { TwillError, errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import { formatIP, formatPrefix, nthIP, type Prefix } from "../net/ip.js";
import { ensureHookVeth, ensureVxlan, ensureAddress, getLink, deleteLink, sysctl, listLinks, routeReplace } from "../net/link.js";
import { loadObject, mapInfo, openPinnedMaps, type Loaded, type MapName } from "../bpf/loader.js";
import { BPF_ANY, memlockTracksEntries, type BpfMap, type MapSnapshot } from "../bpf/map.js";
import { ifNameToIndex } from "../bpf/libbpf.js";
import { Attacher, detachPinned, listPinnedLinks, type AttachMode, type Direction } from "../bpf/attach.js";
import { detachTwillFilters, removeTwillPins } from "../bpf/teardown.js";
import {
  CFG_FAST_PATH, CFG_BPF_ENCAP, COUNTERS, setRemoteId, encodeStatKey, STAT_KEY, REMOTE, PeerKind, decodeLpmKey, decodeEp, decodeEpKey,
  encodeConfig, encodeLpmKey, encodePeer, decodeStatKey, type PeerValue, type FamilyConfigValue,
} from "../bpf/layout.js";
import { PodWatcher, type Port } from "./podwatch.js";
import { probeBpfEncap } from "../bpf/probe.js";
import { readDataplaneStatsSliced, readPeerEntries, readStatTable, type DataplaneStats } from "../peerstats.js";
import { HOSTGW_DEVICE, HOSTGW_PEER_DEVICE, PeerProgramError, type Dataplane, type DeviceInfo, type LocalFamily, type LocalNode, type Peer, type ReconcileOptions, type SyncResult } from "./types.js";
import { diffBpf, yieldToEvents, type BpfRepair } from "./bpfdiff.js";
import { BpfImage, KEY_SIZE, keyString, REMOTE_KEY_SIZE, VALUE_SIZE, type Pause, type Stream } from "./bpfimage.js";
import { deviceDrift, driftCounts, type Drift } from "./drift.js";

export interface BpfDataplaneOptions {
  readonly objectPath: string;
  readonly pinDir: string;
  readonly fastPath: boolean;
  readonly encap: "bpf" | "device";
  readonly attach: AttachMode;
  readonly log: Logger;
  /** --peer-capacity: entries of the peers trie (the per-peer maps follow); default the loader's. */
  readonly peerCapacity?: number;
}

/** Every how many reconciles the device, addresses and routes get the full `ip` check. */
const FULL_CHECK_EVERY = 6;
const BATCH_MIN = 32;
/** A reconcile that adds at least this many entries streams them (a first start): the kernel writes while the rest is encoded. */
const STREAM_MIN = 2048;
/** Entries per streamed batch: a few per reconcile, each a fraction of the work, so the last one (not overlapped) is short. */
const streamEvery = (n: number): number => Math.min(16_384, Math.max(1024, n >> 3));

export class BpfDataplane implements Dataplane {
  readonly kind = "bpf" as const;
  private loaded?: Loaded;
  private local?: LocalNode;
  private devices: { v4?: DeviceInfo; v6?: DeviceInfo } = {};
  private bridge?: { ifindex: number; mac: string };
  private watcher?: PodWatcher;
  private readonly attacher: Attacher;
  /** Reconciles since the last full (ip-based) check of the base. */
  private sinceFull = 0;
  /** Underlay ifindex by family. */
  private readonly underlay = new Map<number, number>();
  /** The encapsulation in use, and why when it is not the one asked for. */
  private encap?: { mode: "bpf" | "device"; reason: string };
  /**
   * The shadow: what the maps should hold, with the exact bytes written
   * (bpfimage.ts), adopted from the pinned map at start, kept in step by
   * upsert/remove and brought to the desired set by reconcile when handed a
   * new one (`imageOf`), so a reconcile that finds nothing to do need not
   * read the maps (see reconcile).
   */
  private image = new BpfImage();
  private imageOf?: readonly Peer[];
  /**
   * The maps when the last reconcile left them as wanted: the shadow's
   * version then, both maps' memlock (their entry counts, on kernels where
   * it tracks them) and, when that reconcile read them, their dumps.
   */
  private lastClean?: { version: number; peersMem: number; remotesMem: number; peers?: MapSnapshot; remotes?: MapSnapshot };
  /** The pod ports of the last port sync; a full reconcile sets pruneEndpoints (twill_endpoints is then read whatever the ports did). */
  private livePorts?: Set<number>;
  private pruneEndpoints = false;
  /** Whether this kernel's map memlock follows the entries (memlockTracksEntries). */
  private readonly memTracks = memlockTracksEntries();
  /** While a reconcile brings the shadow to the desired set: the trie keys events wrote meanwhile. */
  private touched?: Set<string>;
  /** Likewise the twill_remotes keys events wrote. */
  private touchedRemotes?: Set<string>;
  /** The counters of gone peers were swept once since start. */
  private swept = false;
  /** Map writes running on the thread pool (a reconcile's): events wait for them (settled()), so an older batch never lands after an event's write. */
  private readonly writing = new Set<Promise<unknown>>();
  /** The key deleteStats encodes each counter's key into (a removed peer deletes one per counter). */
  private readonly statKey = Buffer.alloc(STAT_KEY.size);

  constructor(private readonly opts: BpfDataplaneOptions) {
    this.attacher = new Attacher(opts.attach);
  }

  private get maps(): Record<MapName, BpfMap> {
    if (!this.loaded) throw new TwillError("ERR_DATAPLANE", "bpf dataplane used before setup()");
    return this.loaded.maps;
  }
  private linkPin(role: string, ifindex: number): string {
    return join(this.opts.pinDir, "links", `${role}-${ifindex}`);
  }

  async setup(local: LocalNode): Promise<{ v4?: DeviceInfo; v6?: DeviceInfo }> {
    this.local = local;
    if (local.v4) await sysctl("net.ipv4.ip_forward", "1");
    if (local.v6) await sysctl("net.ipv6.conf.all.forwarding", "1");
    if (!this.encap) {
      const probe = this.opts.encap === "bpf" ? probeBpfEncap() : { ok: false, reason: "--encap device" };
      this.encap = probe.ok ? { mode: "bpf", reason: "" } : { mode: "device", reason: probe.reason };
      if (this.opts.encap === "bpf" && !probe.ok) {
        this.opts.log.warn("VXLAN stays with the vxlan device: BPF encapsulation needs kernel support this kernel lacks", { reason: probe.reason });
      }
    }
    if (!this.loaded) {
      this.loaded = loadObject(this.opts.objectPath, this.opts.pinDir, { ...(this.opts.peerCapacity ? { peerCapacity: this.opts.peerCapacity } : {}) });
      for (const m of this.loaded.migrated) this.opts.log.info("migrated a pinned map to this build's layout", { map: m });
      // What the pinned trie holds is the shadow until the first reconcile: peers keep their ids (and counters).
      const snap = this.maps.twill_peers.snapshot();
      this.image = new BpfImage();
      this.image.adopt(snap.bytes, snap.count);
      this.imageOf = undefined;
      this.lastClean = undefined;
    }
    await this.ensureBase();
    // from_pod runs on every pod veth in every mode: it learns where each
    // pod is (for to_pod), and forwards only with --fast-path. Without the
    // fast path nothing depends on a new veth being seen at once (to_pod
    // leaves unknown pods to the bridge), so the safety-net re-scan is slow.
    this.watcher ??= new PodWatcher(local.bridge, (ports) => this.syncPorts(ports), this.opts.log, this.opts.fastPath ? 1000 : 10_000);
    this.watcher.start();
    return this.devices;
  }

  /** The families this node runs, each with its LocalFamily. */
  private families(): LocalFamily[] {
    return [this.local!.v4, this.local!.v6].filter((x): x is LocalFamily => x !== undefined);
  }

  /**
   * Devices, cluster routes, config, own entries, attachments: everything
   * but peers. The kernel allows one collect-metadata vxlan device per UDP
   * port, and one carries both underlay families, so a dual-stack node has a
   * single device (named like flannel's IPv4 one, flannel.<VNI>).
   */
  private async ensureBase(): Promise<Drift[]> {
    const local = this.local!;
    const fams = this.families();
    const cur = this.devices.v4 ?? this.devices.v6;
    // The full check runs `ip` several times (tens of ms); between full checks
    // (every FULL_CHECK_EVERY reconciles) a reconcile only confirms the device
    // still has its ifindex, then re-asserts links, config and own entries,
    // which are BPF syscalls. A deleted device is caught at once either way.
    // (Our own entries are in the shadow: the trie's dump and diff repair them.)
    if (cur && this.sinceFull++ % FULL_CHECK_EVERY !== 0 && ifNameToIndex(cur.name) === cur.ifindex) {
      this.writeConfig();
      this.attachDevice(cur);
      this.attachAround(fams);
      return [];
    }
    this.sinceFull = 1;
    const drift = deviceDrift(fams[0]!.device, await getLink(fams[0]!.device), fams[0]!.vtepMAC);
    const dev = await this.ensureDevice(fams, local);
    this.devices = { ...(local.v4 ? { v4: dev } : {}), ...(local.v6 ? { v6: dev } : {}) };
    this.underlay.clear();
    for (const lf of fams) {
      const u = await getLink(lf.iface);
      if (!u) throw new TwillError("ERR_IFACE", `underlay interface ${lf.iface} is gone`);
      this.underlay.set(lf.subnet.ip.family, u.ifindex);
      // Direct-routed packets that go through the stack come in on the
      // underlay while the route back points at the vxlan device: loose
      // reverse-path filtering keeps them (flannel has per-peer routes instead).
      if (local.directRouting && lf.subnet.ip.family === 4) await sysctl(`net.ipv4.conf.${lf.iface}.rp_filter`, "2");
    }
    await this.refreshBridge();
    // Maps first, programs second: a new or swapped program never sees an
    // empty config (an upgrade that migrated the config map relies on it).
    this.writeConfig();
    this.writeOwnEntries(fams);
    this.attachDevice(dev);
    // A device re-created by reconcile leaves its old links defunct (ifindex 0): drop their pins.
    this.attachAround(fams, true);
    return drift;
  }

  /**
   * Attaches from_underlay and to_pod where they are needed and drops the
   * pins of those no longer needed — and, with `defunct`, every non-pod
   * link whose device is gone. Lists the pinned links once.
   */
  private attachAround(fams: LocalFamily[], defunct = false): void {
    const underlay = this.attachUnderlay(fams);
    const bridge = this.attachBridge();
    for (const l of listPinnedLinks(join(this.opts.pinDir, "links"))) {
      const [role, ifindex] = [l.name.slice(0, l.name.lastIndexOf("-")), Number(l.name.slice(l.name.lastIndexOf("-") + 1))];
      const gone = !l.info || l.info.ifindex === 0;
      if ((role === "from_underlay" && !underlay.has(ifindex)) || (role === "to_pod" && (ifindex !== bridge || gone)) ||
          (defunct && role !== "from_pod" && gone)) detachPinned(l.path);
    }
  }

  /** Attaches to_pod to the pod bridge's egress (once the CNI plugin made it). Returns the bridge's ifindex, if any. */
  private attachBridge(): number | undefined {
    const b = this.bridge?.ifindex;
    if (b) {
      try {
        this.attach("to_pod", this.loaded!.progs.twill_to_pod, b, this.local!.bridge, "egress");
      } catch (e) {
        this.opts.log.warn("cannot attach to the pod bridge", { device: this.local!.bridge, err: e });
      }
    }
    return b;
  }

  /** Whether from_underlay runs: for BPF decapsulation (IPv4 underlay) or DirectRouting receive. */
  private underlayRole(lf: LocalFamily): boolean {
    return this.local!.directRouting || (this.encap?.mode === "bpf" && lf.publicIP.family === 4);
  }

  /** Attaches from_underlay where it is needed. Returns the ifindexes it is attached to. */
  private attachUnderlay(fams: LocalFamily[]): Set<number> {
    const want = new Set<number>();
    for (const lf of fams) {
      const u = this.underlay.get(lf.subnet.ip.family);
      if (!u || !this.underlayRole(lf) || want.has(u)) continue;
      want.add(u);
      this.attach("from_underlay", this.loaded!.progs.twill_from_underlay, u, lf.iface, "ingress");
    }
    return want;
  }

  /** The encapsulation in use ("bpf" or "device") and, for "device" when "bpf" was asked, why. */
  encapMode(): { mode: "bpf" | "device"; reason: string } {
    return this.encap ?? { mode: this.opts.encap, reason: "" };
  }

  private writeOwnEntries(fams: LocalFamily[]): void {
    for (const lf of fams) {
      this.writeEntry(lf.subnet, { kind: PeerKind.Local, vni: 0, id: 0 });
      this.writeEntry(lf.network, { kind: PeerKind.Cluster, vni: 0, id: 0 });
    }
  }

  private async ensureDevice(fams: LocalFamily[], local: LocalNode): Promise<DeviceInfo> {
    const first = fams[0]!;
    const name = first.device;
    if (local.backend === "host-gw") {
      const dev = await ensureHookVeth(HOSTGW_DEVICE, HOSTGW_PEER_DEVICE, Math.min(...fams.map((f) => f.mtu)), (m) => this.opts.log.info(m));
      for (const lf of fams) await routeReplace(lf.network, dev.name, { via: nthIP(lf.network, 0), onlink: true });
      return dev;
    }
    const dev = await ensureVxlan({
      name, vni: local.vni, port: local.port, external: true,
      // one family: its source address, as flannel sets `local`; both: the tunnel key says
      localIP: fams.length === 1 ? first.publicIP : undefined,
      dev: first.iface, mtu: Math.min(...fams.map((f) => f.mtu)), mac: first.vtepMAC, learning: false, arpOff: true,
      family: first.subnet.ip.family,
    });
    for (const lf of fams) {
      const family = lf.subnet.ip.family;
      await ensureAddress(name, `${formatIP(lf.subnet.ip)}/${family === 4 ? 32 : 128}`);
      // One route for the whole cluster network; the onlink gateway is the
      // network address, so the NOARP device holds a single neighbour entry.
      await routeReplace(lf.network, name, { via: nthIP(lf.network, 0), onlink: true });
    }
    return dev;
  }

  private attach(role: string, fd: number, ifindex: number, device: string, dir: Direction): void {
    const r = this.attacher.attach(fd, ifindex, dir, this.linkPin(role, ifindex));
    if (r !== "adopted") this.opts.log.info("attached", { program: role, device, direction: dir, result: r, mode: this.attacher.effective });
  }

  private attachDevice(dev: DeviceInfo): void {
    this.attach("to_overlay", this.loaded!.progs.twill_to_overlay, dev.ifindex, dev.name, "egress");
    this.attach("from_overlay", this.loaded!.progs.twill_from_overlay, dev.ifindex, dev.name, "ingress");
  }

  private async refreshBridge(): Promise<boolean> {
    const b = await getLink(this.local!.bridge);
    const next = b ? { ifindex: b.ifindex, mac: b.mac } : undefined;
    const changed = next?.ifindex !== this.bridge?.ifindex || next?.mac !== this.bridge?.mac;
    this.bridge = next;
    return changed;
  }

  private writeConfig(): void {
    const local = this.local!;
    const fam = (lf: LocalFamily | undefined, d: DeviceInfo | undefined): FamilyConfigValue | undefined =>
      lf && d ? { vxlanIfindex: d.ifindex, vtepMAC: d.mac, localIP: lf.publicIP, underlayIfindex: this.underlay.get(lf.subnet.ip.family) ?? 0 } : undefined;
    const buf = encodeConfig({
      flags: (this.opts.fastPath ? CFG_FAST_PATH : 0) | (this.encap?.mode === "bpf" ? CFG_BPF_ENCAP : 0),
      vni: local.vni,
      port: local.port,
      bridgeIfindex: this.bridge?.ifindex ?? 0,
      bridgeMAC: this.bridge?.mac,
      fam: [fam(local.v4, this.devices.v4), fam(local.v6, this.devices.v6)],
    });
    this.maps.twill_config.update(Buffer.alloc(4), buf);
  }

  /** Attaches from_pod to every bridge port, drops links and endpoints of vanished ports. */
  private async syncPorts(ports: Port[]): Promise<void> {
    if (!this.loaded) return;
    if (ports.length && (await this.refreshBridge())) {
      this.writeConfig();
      if (this.local) this.attachAround(this.families());
    }
    const live = new Set(ports.map((p) => p.ifindex));
    for (const p of ports) {
      try {
        const r = this.attacher.attach(this.loaded.progs.twill_from_pod, p.ifindex, "ingress", this.linkPin("from_pod", p.ifindex));
        if (r !== "adopted") this.opts.log.info("attached", { program: "from_pod", device: p.name, result: r, mode: this.attacher.effective });
      } catch (e) {
        // The veth may vanish between the scan and the attach.
        this.opts.log.warn("cannot attach to pod port", { device: p.name, err: e });
      }
    }
    for (const l of listPinnedLinks(join(this.opts.pinDir, "links"))) {
      if (!l.name.startsWith("from_pod-")) continue;
      const ifindex = Number(l.name.slice("from_pod-".length));
      if (!live.has(ifindex) || !l.info || l.info.ifindex === 0) detachPinned(l.path);
    }
    // Endpoints of vanished ports: read the map only when a port went since the last look (or a full reconcile asks).
    const lost = !this.livePorts || [...this.livePorts].some((i) => !live.has(i));
    this.livePorts = live;
    if (!lost && !this.pruneEndpoints) return;
    this.pruneEndpoints = false;
    for (const [k, v] of this.maps.twill_endpoints.entries()) {
      if (!live.has(decodeEp(v).ifindex)) this.maps.twill_endpoints.delete(k);
    }
  }

  private writeEntry(prefix: Prefix, v: PeerValue): void {
    this.maps.twill_peers.update(encodeLpmKey(prefix), encodePeer(v), BPF_ANY, `peer ${formatPrefix(prefix)}`);
  }

  /**
   * Writes `count` trie entries packed in `keys`/`vals`: one batch syscall.
   * When the batch fails (the trie is full: --peer-capacity), each entry is
   * tried alone so every entry that fits is written; the indexes of the
   * others come back with the first error. Never silently dropped.
   */
  private writeTrie(keys: Buffer, vals: Buffer, count: number, what: (i: number) => string): { failed: number[]; first?: unknown } {
    if (count >= BATCH_MIN) {
      try {
        this.maps.twill_peers.updateBatch(keys, vals, count, what);
        return { failed: [] };
      } catch {
        // fall through: find out which entries do not fit
      }
    }
    return this.writeTrieOneByOne(keys, vals, count, what);
  }

  /** writeTrie() with the batch on the thread pool. */
  private async writeTrieAsync(keys: Buffer, vals: Buffer, count: number, what: (i: number) => string): Promise<{ failed: number[]; first?: unknown }> {
    if (count >= BATCH_MIN) {
      try {
        await this.maps.twill_peers.updateBatchAsync(keys, vals, count, what);
        return { failed: [] };
      } catch {
        // fall through: find out which entries do not fit
      }
    }
    return this.writeTrieOneByOne(keys, vals, count, what);
  }

  private writeTrieOneByOne(keys: Buffer, vals: Buffer, count: number, what: (i: number) => string): { failed: number[]; first?: unknown } {
    const m = this.maps.twill_peers;
    const failed: number[] = [];
    let first: unknown;
    for (let i = 0; i < count; i++) {
      try {
        m.update(keys.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE), vals.subarray(i * VALUE_SIZE, (i + 1) * VALUE_SIZE), BPF_ANY, what(i));
      } catch (e) {
        failed.push(i);
        first ??= e;
      }
    }
    return { failed, first };
  }

  /** The error for peers that were not written (the controller counts and logs it, and retries them). */
  private programError(failed: readonly Peer[], total: number, first: unknown): PeerProgramError {
    const code = first instanceof TwillError ? first.code : "ERR_BPF_MAP";
    const names = failed.slice(0, 5).map((p) => formatPrefix(p.subnet)).join(", ") + (failed.length > 5 ? ` and ${failed.length - 5} more` : "");
    return new PeerProgramError(code, `${failed.length} of ${total} peers not programmed (${names}): ${errorMessage(first)}`, failed, first);
  }

  /**
   * Writes twill_remotes entries as the image has them now (the id of the
   * first subnet behind each address): the remotes `rs` (image indexes, in
   * one batch), and the addresses `keys` (latin1 key strings, from events),
   * each written or, when the image no longer has it, deleted.
   */
  private writeRemotes(rs: readonly number[], keys: Iterable<string> = []): void {
    const m = this.maps.twill_remotes, image = this.image;
    const put = rs.filter((r) => image.remoteFirst(r) >= 0);
    for (const key of keys) {
      const kb = Buffer.from(key, "latin1");
      const r = image.remoteOfKey(kb, 0);
      if (r >= 0) put.push(r);
      else m.delete(kb);
    }
    const b = this.remotesBatch(put);
    if (b) m.updateBatch(b.keys, b.vals, put.length, b.what);
  }

  /** The twill_remotes entries of the image's remotes `put`, as one batch; undefined when none. */
  private remotesBatch(put: readonly number[]): { keys: Buffer; vals: Buffer; what: (i: number) => string } | undefined {
    if (!put.length) return undefined;
    const image = this.image;
    const kb = Buffer.allocUnsafe(put.length * REMOTE_KEY_SIZE), vb = Buffer.alloc(put.length * REMOTE.size);
    const rk = image.rkeys;
    for (let i = 0; i < put.length; i++) {
      const r = put[i]!;
      rk.copy(kb, i * REMOTE_KEY_SIZE, r * REMOTE_KEY_SIZE, (r + 1) * REMOTE_KEY_SIZE);
      this.putRemoteValue(vb, i, r);
    }
    return { keys: kb, vals: vb, what: (i) => `peer address ${formatIP(image.remoteIP(put[i]!)!)}` };
  }

  /** remotesBatch() of the remotes from..to-1, whose keys lie back to back in the image: only the values are made. */
  private remotesRun(from: number, to: number): { keys: Buffer; vals: Buffer } {
    const vb = Buffer.alloc((to - from) * REMOTE.size);
    for (let r = from; r < to; r++) this.putRemoteValue(vb, r - from, r);
    return { keys: this.image.rkeys.subarray(from * REMOTE_KEY_SIZE, to * REMOTE_KEY_SIZE), vals: vb };
  }

  /** Writes remote r's twill_remotes value (the id of the first subnet behind it) as entry i of a zeroed `vb`. */
  private putRemoteValue(vb: Buffer, i: number, r: number): void {
    setRemoteId(vb, i * REMOTE.size, this.image.idAt(this.image.remoteFirst(r)));
  }

  /** Runs a map write on the thread pool, known to settled() until it ends. */
  private track<T>(p: Promise<T>): Promise<T> {
    this.writing.add(p);
    const done = () => void this.writing.delete(p);
    p.then(done, done);
    return p;
  }

  /** Waits until no reconcile write is running (lease events call this first). */
  private async settled(): Promise<void> {
    while (this.writing.size) await Promise.allSettled([...this.writing]);
  }

  /**
   * The writer a first start streams to (bpfimage.ts, 5): each run of new
   * slots goes to the trie as it lies in the image, each run of new remotes
   * to twill_remotes, one batch at a time per map on the thread pool, the
   * two maps side by side. A batch that fails leaves its entries unmarked:
   * the repair after the sync writes them (and names what does not fit).
   */
  private streamWriter(every: number): Stream & { done(): Promise<void>; readonly handed: number } {
    const image = this.image, maps = this.maps;
    let trie: Promise<unknown> = Promise.resolve(), remotes: Promise<unknown> = Promise.resolve();
    let handed = 0;
    return {
      every,
      /** Entries handed to the kernel (trie and twill_remotes). */
      get handed() {
        return handed;
      },
      write: (from, to, rfrom, rto) => {
        handed += to - from + rto - rfrom;
        if (to > from) {
          const keys = image.keys.subarray(from * KEY_SIZE, to * KEY_SIZE), vals = image.vals.subarray(from * VALUE_SIZE, to * VALUE_SIZE);
          trie = this.track(trie.then(() => maps.twill_peers.updateBatchAsync(keys, vals, to - from)).catch(() => image.markSent(from, to, 0, 0, false)));
        }
        if (rto > rfrom) {
          const b = this.remotesRun(rfrom, rto);
          remotes = this.track(remotes.then(() => maps.twill_remotes.updateBatchAsync(b.keys, b.vals, rto - rfrom)).catch(() => image.markSent(0, 0, rfrom, rto, false)));
        }
      },
      done: async () => void (await Promise.all([trie, remotes])),
    };
  }

  /**
   * Lease events: the peers go into the shadow (keeping their ids) and, in
   * one batch, into the trie; then the addresses whose subnets changed into
   * twill_remotes. A peer that did not fit stays wanted in the shadow (the
   * next reconcile retries it) and is named in the PeerProgramError.
   */
  async upsert(peers: readonly Peer[]): Promise<void> {
    if (this.writing.size) await this.settled();
    const n = peers.length;
    const keys = Buffer.allocUnsafe(n * KEY_SIZE), vals = Buffer.allocUnsafe(n * VALUE_SIZE);
    const remotes = new Set<string>();
    for (let i = 0; i < n; i++) {
      encodeLpmKey(peers[i]!.subnet, keys, i * KEY_SIZE);
      this.touched?.add(keyString(keys, i * KEY_SIZE, KEY_SIZE));
      this.image.setPeer(keys, i * KEY_SIZE, peers[i]!, remotes, true, vals, i * VALUE_SIZE);
    }
    const { failed, first } = this.writeTrie(keys, vals, n, (i) => `peer ${formatPrefix(peers[i]!.subnet)}`);
    this.writeRemotes([], remotes);
    for (const k of remotes) this.touchedRemotes?.add(k);
    if (failed.length) throw this.programError(failed.map((i) => peers[i]!), n, first);
  }

  async remove(peers: readonly Peer[]): Promise<void> {
    if (this.writing.size) await this.settled();
    const k = Buffer.alloc(KEY_SIZE);
    const remotes = new Set<string>();
    for (const p of peers) {
      try {
        encodeLpmKey(p.subnet, k, 0);
        this.touched?.add(keyString(k, 0, KEY_SIZE));
        this.maps.twill_peers.delete(k);
        const id = this.image.delete(k, 0, remotes);
        if (id) this.deleteStats(id);
      } catch (e) {
        this.opts.log.warn("cannot remove peer", { subnet: formatPrefix(p.subnet), err: e });
      }
    }
    this.writeRemotes([], remotes);
    for (const k of remotes) this.touchedRemotes?.add(k);
  }

  /** Deletes one peer id's counters: one key per counter, no map walk. */
  private deleteStats(id: number): void {
    const m = this.maps.twill_stats;
    const key = this.statKey;
    for (let c = 0; c < COUNTERS.length; c++) m.delete(encodeStatKey({ peerId: id, counter: c }, key));
  }

  /** Deletes the counters of every id not in `live()` (a walk of the stats map: only after entries were deleted; an empty one asks nothing). */
  private sweepStats(live: () => Set<number>): void {
    const m = this.maps.twill_stats;
    const keys = m.keys();
    if (!keys.length) return;
    const ids = live();
    for (const k of keys) if (!ids.has(decodeStatKey(k).peerId)) m.delete(k);
  }

  /** Makes the shadow the desired set (when handed a new one), leaving alone what events wrote meanwhile (`keep`). */
  private async syncImage(desired: readonly Peer[], keep?: ReadonlySet<string>, pause?: Pause, stream?: Stream): Promise<void> {
    if (this.imageOf === desired) return;
    const fams = this.families();
    await this.image.sync({ peers: desired, own: fams.map((f) => f.subnet), networks: fams.map((f) => f.network) }, { exact: true, ...(keep ? { keep } : {}), ...(pause ? { pause } : {}), ...(stream ? { stream } : {}) });
    this.imageOf = desired;
  }

  async check(desired: readonly Peer[]): Promise<readonly Drift[]> {
    await this.syncImage(desired);
    return (await diffBpf(this.image, this.snapshot())).drift;
  }

  /** Both maps the diff reads, as snapshots. */
  private snapshot(): { peers: MapSnapshot; remotes: MapSnapshot } {
    return { peers: this.maps.twill_peers.snapshot(), remotes: this.maps.twill_remotes.snapshot() };
  }

  /**
   * The safety net. The maps are dumped (on libuv's thread pool), the
   * shadow is brought to the desired set, and the two are compared in
   * slices that yield to the event loop, so lease events (upsert/remove)
   * run meanwhile instead of waiting. The repair is then applied from the
   * shadow as it is by then: a slot is written with its current bytes, a
   * key is deleted only if the shadow still does not want it, and whatever
   * an event wrote meanwhile is left alone — and is not called drift (the
   * dump may have caught the map before or after the event). The repair's
   * batches run on the thread pool, the trie's and twill_remotes' side by
   * side; events wait for them (settled()).
   * A reconcile that adds many entries (a first start) streams them while
   * the shadow is built (streamWriter): the kernel fills the maps on the
   * thread pool while the rest is encoded, and the repair skips what was
   * streamed.
   * A reconcile with nothing to do reads neither map: when the desired set,
   * the shadow's version and both maps' entry counts (their memlock, one
   * procfs read each) are those the last reconcile left, the maps are as it
   * left them, barring a value rewritten in place by hand — which the
   * `full` reconcile of every re-list (and SIGHUP) finds. On kernels before
   * 6.4 (memlock does not count entries) every reconcile reads them.
   */
  async reconcile(desired: readonly Peer[], opts: ReconcileOptions = {}): Promise<SyncResult> {
    try {
      return await this.repair(desired, opts.full === true);
    } finally {
      this.image.clearSent(); // whatever happened, the next reconcile trusts no mark
    }
  }

  /** Both maps' memlock now (see lastClean). */
  private memNow(): { peersMem: number; remotesMem: number } {
    return { peersMem: this.maps.twill_peers.memlock(), remotesMem: this.maps.twill_remotes.memlock() };
  }

  /**
   * True when a reconcile need not read the maps: the desired set and the
   * shadow are those of the last reconcile that left the maps as wanted, no
   * event wrote since (the shadow's version), and the kernel counts the same
   * entries in both maps (an entry deleted or added by hand changes that).
   */
  private unchanged(desired: readonly Peer[]): boolean {
    const c = this.lastClean;
    if (!this.memTracks || !c || this.imageOf !== desired || c.version !== this.image.version) return false;
    const m = this.memNow();
    return m.peersMem === c.peersMem && m.remotesMem === c.remotesMem;
  }

  private async repair(desired: readonly Peer[], full: boolean): Promise<SyncResult> {
    const image = this.image;
    // From the moment `desired` was taken: an event written while the base
    // is checked is as new as one written during the diff (the desired set
    // may predate it).
    const touched = (this.touched = new Set<string>());
    const touchedR = (this.touchedRemotes = new Set<string>());
    const adds = this.imageOf === desired ? 0 : desired.length - image.size;
    const stream = adds >= STREAM_MIN ? this.streamWriter(streamEvery(adds)) : undefined;
    let base: Drift[];
    let seen: { peers: MapSnapshot; remotes: MapSnapshot };
    let r: BpfRepair;
    try {
      base = await this.ensureBase();
      // A pod's link removed by hand makes no netlink event: the pod watcher re-checks its ports now.
      if (full) this.pruneEndpoints = true;
      this.watcher?.kick();
      if (!full && this.unchanged(desired)) return { ...driftCounts(base), drift: base };
      seen = {
        peers: await this.maps.twill_peers.snapshotAsync(image.size, yieldToEvents),
        remotes: await this.maps.twill_remotes.snapshotAsync(image.remoteCount, yieldToEvents),
      };
      await this.syncImage(desired, touched, yieldToEvents, stream);
      // Nothing changed since the last reconcile that found the maps as wanted (same shadow, same bytes in both maps): nothing to compare.
      const c = this.lastClean;
      if (c?.peers && c.remotes && c.version === image.version && seen.peers.bytes.equals(c.peers.bytes) && seen.remotes.bytes.equals(c.remotes.bytes)) {
        return { ...driftCounts(base), drift: base };
      }
      this.lastClean = undefined;
      // The streamed batches first: one that failed unmarks its entries, which the repair must then write.
      if (stream) await stream.done();
      r = await diffBpf(image, seen, yieldToEvents, { unsent: true });
    } finally {
      this.touched = this.touchedRemotes = undefined;
    }
    // From here on events wait (settled()): the repair is applied as one step.
    const byEvent = touched.size > 0 ? (buf: Buffer, at: number) => touched.has(keyString(buf, at, KEY_SIZE)) : () => false;
    const byEventR = touchedR.size > 0 ? (buf: Buffer, at: number) => touchedR.has(keyString(buf, at, REMOTE_KEY_SIZE)) : () => false;
    let deleted = 0;
    for (const o of r.deleteAt) {
      if (image.slotOf(seen.peers.bytes, o) >= 0 || byEvent(seen.peers.bytes, o)) continue; // an event wants it now, or wrote it
      this.maps.twill_peers.delete(seen.peers.bytes.subarray(o, o + KEY_SIZE));
      deleted++;
    }
    const slots = r.writeSlots.filter((s) => image.live[s] && !image.isSent(s) && !byEvent(image.keys, s * KEY_SIZE));
    let keys: Buffer, vals: Buffer;
    if (image.dense && slots.length === image.top) {
      // All of it: the shadow's buffers are the batch.
      keys = image.keys.subarray(0, slots.length * KEY_SIZE);
      vals = image.vals.subarray(0, slots.length * VALUE_SIZE);
    } else {
      keys = Buffer.allocUnsafe(slots.length * KEY_SIZE);
      vals = Buffer.allocUnsafe(slots.length * VALUE_SIZE);
      slots.forEach((s, i) => {
        image.keys.copy(keys, i * KEY_SIZE, s * KEY_SIZE, (s + 1) * KEY_SIZE);
        image.vals.copy(vals, i * VALUE_SIZE, s * VALUE_SIZE, (s + 1) * VALUE_SIZE);
      });
    }
    const rbytes = seen.remotes.bytes;
    let gone = 0;
    for (const o of r.deleteRemotesAt) {
      if (image.remoteOfKey(rbytes, o) >= 0 || byEventR(rbytes, o)) continue;
      this.maps.twill_remotes.delete(rbytes.subarray(o, o + REMOTE_KEY_SIZE));
      gone++;
    }
    const remotes = r.writeRemotes.filter((x) => !image.isRemoteSent(x) && !byEventR(image.rkeys, x * REMOTE_KEY_SIZE) && image.remoteFirst(x) >= 0);
    const rb = this.remotesBatch(remotes);
    const what = (i: number) => `peer ${formatPrefix(decodeLpmKey(keys.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE)))}`;
    // Both batches run to their end; the trie's failure names the peers (it wins over twill_remotes' when both fail).
    const [trie, remoteWrite] = await Promise.allSettled([
      this.track(this.writeTrieAsync(keys, vals, slots.length, what)),
      rb && this.track(this.maps.twill_remotes.updateBatchAsync(rb.keys, rb.vals, remotes.length, rb.what)),
    ]);
    if (trie.status === "rejected") throw trie.reason;
    const { failed, first } = trie.value;
    if (!failed.length && remoteWrite.status === "rejected") throw remoteWrite.reason;
    if (!this.swept || deleted) {
      this.sweepStats(() => image.liveIds());
      this.swept = true;
    }
    if (failed.length) {
      const peers = failed.map((i) => image.peer[slots[i]!]).filter((p): p is Peer => p !== undefined);
      if (!peers.length) throw first;
      throw this.programError(peers, desired.length, first);
    }
    const wrote = deleted + slots.length + remotes.length + gone + (stream?.handed ?? 0) > 0;
    // The maps are as wanted now, unless an event came in meanwhile (then the next reconcile reads them again).
    // When nothing was written they are the dumps just read, kept for kernels whose memlock does not count entries.
    if (touched.size === 0 && touchedR.size === 0) this.lastClean = { version: image.version, ...this.memNow(), ...(wrote ? {} : seen) };
    if (touched.size > 0 || touchedR.size > 0) {
      const drift = [...base, ...withoutEvents(r.drift, touched, touchedR)];
      return { ...driftCounts(drift), drift };
    }
    // The drift list is built only when read: a first start's 100,000 missing peers are counted, not listed.
    const b = driftCounts(base), c = r.counts;
    let drift: readonly Drift[] | undefined;
    return {
      added: b.added + c.added, updated: b.updated + c.updated, removed: b.removed + c.removed,
      get drift() {
        return (drift ??= base.length ? [...base, ...r.drift] : r.drift);
      },
    };
  }

  /** Peers, counters (summed over CPUs) and map occupancy, read now; undefined before setup() and after close(). */
  stats(): Promise<DataplaneStats> | undefined {
    // In slices that yield: a scrape at 100,000 peers does not hold up lease events.
    return this.loaded ? readDataplaneStatsSliced(this.loaded.maps) : undefined;
  }

  /**
   * Leaves the dataplane forwarding without a controller. The BPF VXLAN path
   * is handed back to the vxlan device first (the config loses
   * CFG_BPF_ENCAP): until the next start takes it again, packets are
   * encapsulated and stripped by the driver — the same wire format. Whatever
   * build starts next then finds a dataplane it understands: an older twill
   * (a rollback) whose programs expect tunnel metadata on every packet of
   * the vxlan device never meets a packet decapsulated in BPF.
   */
  async close(): Promise<void> {
    this.watcher?.stop();
    if (this.loaded && this.local && this.encap?.mode === "bpf") {
      try {
        this.encap = { mode: "device", reason: "controller stopped" };
        this.writeConfig();
      } catch (e) {
        this.opts.log.warn("cannot hand VXLAN back to the vxlan device", { err: e });
      }
    }
    this.loaded?.close();
    this.loaded = undefined;
  }

  async teardown(): Promise<void> {
    this.watcher?.stop();
    await teardownBpf(this.opts.pinDir, this.local, this.opts.log);
    this.loaded?.close();
    this.loaded = undefined;
  }
}

/** Drift of subjects events wrote during the reconcile is not drift: the dump may have caught the map before or after the event. */
function withoutEvents(drift: readonly Drift[], keys: ReadonlySet<string>, remotes: ReadonlySet<string>): readonly Drift[] {
  if (!keys.size && !remotes.size) return drift;
  const subjects = new Set([
    ...[...keys].map((k) => formatPrefix(decodeLpmKey(Buffer.from(k, "latin1")))),
    ...[...remotes].map((k) => formatIP(decodeEpKey(Buffer.from(k, "latin1")))),
  ]);
  return drift.filter((d) => !subjects.has(d.subject));
}

/**
 * Removes twill's links, pins, tc filters and devices of a node, and nothing
 * else (bpf/teardown.ts); usable without a loaded object. Throws
 * ERR_INVALID_FLAG, having removed nothing, when `pinDir` is not on a bpffs.
 */
export async function teardownBpf(pinDir: string, local: LocalNode | undefined, log: Logger): Promise<void> {
  const pins = removeTwillPins(pinDir);
  if (pins.kept.length) log.info("left pins that are not twill's", { pinDir, kept: pins.kept });
  // tc cls_bpf filters running twill's programs, on pod veths, the underlay and the bridge
  // (the vxlan devices' go with the devices)
  detachTwillFilters(await listLinks().catch(() => []));
  for (const lf of [local?.v4, local?.v6]) {
    if (!lf) continue;
    try {
      await deleteLink(lf.device);
    } catch (e) {
      log.warn("cannot delete device", { device: lf.device, err: errorMessage(e) });
    }
  }
}

export interface PeerStats { packets: string; bytes: string }

/** Reads the pinned maps of a node for `twill maps`, `twill status` and the demo. */
export function dumpBpfState(pinDir: string): {
  peers: Array<{ prefix: string; kind: string; remote?: string; vtepMAC?: string; vni: number; id: number }>;
  endpoints: Array<{ ip: string; ifindex: number; mac: string }>;
  /** Summed over all peers, by counter name. */
  counters: Record<string, PeerStats>;
  /** By peer id ("0": no peer), then counter name; only counters that moved. */
  perPeer: Record<string, Record<string, PeerStats>>;
  /** Kernel ids of the pinned maps and links: a restart that adopts them keeps these. */
  ids: { maps: Record<string, number>; links: Record<string, { id: number; progId: number; ifindex: number }> };
} {
  const maps = openPinnedMaps(pinDir);
  try {
    const peers = readPeerEntries(maps.twill_peers);
    const endpoints = maps.twill_endpoints.entries().map(([k, v]) => ({ ip: formatIP(decodeEpKey(k)), ...decodeEp(v) }));
    const total = new Map<string, { packets: bigint; bytes: bigint }>(COUNTERS.map((c) => [c, { packets: 0n, bytes: 0n }]));
    const perPeer: Record<string, Record<string, PeerStats>> = {};
    for (const [id, byName] of readStatTable(maps.twill_stats)) {
      for (const [name, s] of byName) {
        const t = total.get(name) ?? { packets: 0n, bytes: 0n };
        total.set(name, { packets: t.packets + s.packets, bytes: t.bytes + s.bytes });
        (perPeer[String(id)] ??= {})[name] = { packets: s.packets.toString(), bytes: s.bytes.toString() };
      }
    }
    const counters = Object.fromEntries([...total].map(([n, s]) => [n, { packets: s.packets.toString(), bytes: s.bytes.toString() }]));
    const ids = {
      maps: Object.fromEntries(Object.values(maps).map((m) => [m.name, mapInfo(m.fd).id])),
      links: Object.fromEntries(listPinnedLinks(join(pinDir, "links")).filter((l) => l.info).map((l) => [l.name, { id: l.info!.id, progId: l.info!.progId, ifindex: l.info!.ifindex }])),
    };
    return { peers, endpoints, counters, perPeer, ids };
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}
