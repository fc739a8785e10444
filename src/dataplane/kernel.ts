/**
 * The `kernel` dataplane: flannel's vxlan backend, entry for entry, so a
 * twill node and a stock flannel node program the same kernel state.
 *
 * How it works:
 * 1) setup() creates or adopts one regular vxlan device per enabled family
 *    (flannel.<VNI>: `type vxlan id VNI local PUBLIC_IP dev IFACE dstport
 *    PORT nolearning`; IPv6: flannel-v6.<VNI>), with the family's MTU, the
 *    address <subnet>.0/32 (v6: <subnet>::/128), the VTEP MAC kept when one
 *    is known, and brings it up.
 * 2) Each peer is three entries, added in flannel's order so the kernel
 *    never ARPs for the gateway: neigh (<subnet>.0 → VtepMAC, permanent),
 *    FDB (VtepMAC → PublicIP), route (<subnet> via <subnet>.0 onlink). A
 *    `direct` peer is one route via its PublicIP on the underlay instead.
 *    Everything is written over netlink from the daemon itself
 *    (net/netlink/batch.ts): pipelined requests, no process, whatever the
 *    number of peers.
 * 3) upsert() is all-or-nothing per peer, not per call: every line of the
 *    batch is tried; a peer with a line the kernel refuses (or that is not
 *    valid here) has the entries this call applied for it deleted again
 *    (route, FDB, neigh) and is reported in a PeerProgramError naming only
 *    the failed peers (the daemon keeps them pending and retries them); the
 *    other peers of the batch stay programmed. remove() deletes route, FDB,
 *    neigh, best effort.
 * 4) reconcile() re-creates a missing device (keeping its MAC), observes
 *    what is programmed (routes, neighbours, FDB on the vxlan device; routes
 *    via the underlay inside the cluster network) and diffs it with the
 *    desired set through diffKernel (kerneldiff.ts), the function `twill
 *    status` uses too: stale routes go first, missing or wrong entries are
 *    (re)applied per peer (a failing peer is rolled back and reported in a
 *    PeerProgramError, the others still go in), other leftovers last. It
 *    touches only entries inside the cluster network or on its own devices,
 *    never our own subnet or routes the kernel made.
 * 5) host-gw (flannel's backend/hostgw): no device at all; every peer is
 *    direct, one route `<subnet> via <PublicIP> dev <underlay>` per peer,
 *    and the same diff and repair over the underlay's routes.
 * IPv4 and IPv6 run through the same code: a FamilyPlane holds what differs
 * (device, addresses), and the batches of both families are merged.
 */
import { PeerProgramError, type Dataplane, type DeviceInfo, type LocalFamily, type LocalNode, type Peer, type SyncResult } from "./types.js";
import { TwillError, errorMessage } from "../errors.js";
import { parseMAC } from "../lease/mac.js";
import { formatIP, formatPrefix, ipEqual, prefixOverlaps, type Family } from "../net/ip.js";
import { netlinkBatch } from "../net/netlink/batch.js";
import { describe, type NlOp } from "../net/netlink/ops.js";
import type { BatchFailure } from "../net/netlink/error.js";
import { deleteLink, ensureAddress, ensureVxlan, getLink, hostPrefix, listFdb, listNeighs, listRoutes, type LogFn } from "../net/link.js";
import { deviceDrift, driftCounts, type Drift } from "./drift.js";
import {
  ADD_ORDER, DELETE_ORDER, deleteOf, diffKernel, peerEntries, type KernelEntry, type KernelRepair, type KernelTables, type Table,
} from "./kerneldiff.js";

const subnetKey = (p: Peer): string => formatPrefix(p.subnet);

/** Reads one family's tables: the vxlan device's routes, neighbours and FDB, and the underlay's routes. */
export async function observeKernel(lf: Pick<LocalFamily, "device" | "iface" | "network" | "subnet">, family: Family): Promise<KernelTables> {
  // No device (host-gw): only the underlay's routes.
  const [routes, underlayRoutes, neighs, fdb] = await Promise.all([
    lf.device ? listRoutes(lf.device, family) : [], listRoutes(lf.iface, family), lf.device ? listNeighs(lf.device, family) : [], lf.device ? listFdb(lf.device) : [],
  ]);
  return { family, device: lf.device, underlay: lf.iface, network: lf.network, own: lf.subnet, routes, underlayRoutes, neighs, fdb };
}

/** Everything one address family needs; v4 and v6 are two instances of this. */
class FamilyPlane {
  constructor(readonly family: Family, readonly local: LocalFamily, readonly hostGw = false) {}

  /** The vxlan device; "" with host-gw (there is none). */
  get dev(): string {
    return this.hostGw ? "" : this.local.device;
  }

  ownsPeer(p: Peer): boolean {
    return p.subnet.ip.family === this.family;
  }

  async ensureDevice(node: LocalNode, mac: string | undefined, log: LogFn): Promise<DeviceInfo> {
    const info = await ensureVxlan(
      {
        name: this.dev, vni: node.vni, port: node.port, external: false, localIP: this.local.publicIP,
        dev: this.local.iface, mtu: this.local.mtu, learning: node.learning ?? false, arpOff: false, family: this.family,
        ...(mac !== undefined ? { mac } : {}),
      },
      log,
    );
    await ensureAddress(this.dev, hostPrefix(this.local.subnet.ip));
    return info;
  }

  checkPeer(p: Peer): void {
    const what = `peer ${subnetKey(p)}`;
    if (p.publicIP.family !== this.family) {
      throw new TwillError("ERR_DATAPLANE", `${what}: public IP ${formatIP(p.publicIP)} is not IPv${this.family}`);
    }
    if (prefixOverlaps(p.subnet, this.local.subnet)) {
      throw new TwillError("ERR_DATAPLANE", `${what} overlaps our own subnet ${formatPrefix(this.local.subnet)}`);
    }
    if (!p.direct) parseMAC(p.vtepMAC, `${what} VtepMAC`);
  }

  entries(p: Peer): KernelEntry[] {
    return peerEntries(p, this.dev, this.local.iface);
  }

  /** Observes this family's tables and compares them with `desired`. */
  async diff(desired: readonly Peer[]): Promise<KernelRepair> {
    return diffKernel(await observeKernel({ ...this.local, device: this.dev }, this.family), desired);
  }
}

// ---- running batches ---------------------------------------------------------------

/** Deletes, table by table in `order`, ignoring failures (entries already gone). */
function deleteAll(ops: readonly NlOp[], order: readonly Table[] = DELETE_ORDER): void {
  for (const table of order) {
    try {
      netlinkBatch(ops.filter((o) => o.kind === table), { force: true });
    } catch {
      // best effort: a delete that cannot run now is retried by the next reconcile
    }
  }
}

const deletesOf = (entries: readonly KernelEntry[]): NlOp[] => entries.map((e) => deleteOf(e.op));

/**
 * Adds `entries` table by table (pipelined: every op is sent, failures come
 * back by index), trying every line; a peer whose line fails is left out of
 * the later tables. Returns the failures, one per failed peer, and the
 * entries that were applied.
 */
function addEach(entries: readonly KernelEntry[]): { failures: { peer: Peer; message: string }[]; applied: KernelEntry[] } {
  const failed = new Map<Peer, string>();
  const applied: KernelEntry[] = [];
  for (const table of ADD_ORDER) {
    const batch = entries.filter((e) => e.op.kind === table && !failed.has(e.peer));
    let failures: readonly BatchFailure[];
    try {
      failures = netlinkBatch(batch.map((e) => e.op), { force: true }).failures;
    } catch (e) {
      failures = [{ index: -1, line: "", message: errorMessage(e) }];
    }
    const bad = new Set<number>();
    for (const f of failures) {
      const hit = f.index >= 0 ? [f.index] : batch.map((_, i) => i); // unknown op: treat the whole table as failed
      for (const i of hit) {
        bad.add(i);
        failed.set(batch[i]!.peer, `${f.line || describe(batch[i]!.op)}: ${f.message}`);
      }
    }
    batch.forEach((e, i) => { if (!bad.has(i)) applied.push(e); });
  }
  return { failures: [...failed].map(([peer, message]) => ({ peer, message })), applied };
}

/**
 * Adds `entries` all or nothing per peer: a peer any of whose lines fails
 * keeps none of what this call added for it (flannel's rollback, for that
 * peer only); the others stay. Returns the failures, one per failed peer.
 */
function addPerPeer(entries: readonly KernelEntry[]): { peer: Peer; message: string }[] {
  const { failures, applied } = addEach(entries);
  if (failures.length) {
    const failed = new Set(failures.map((f) => f.peer));
    deleteAll(deletesOf(applied.filter((e) => failed.has(e.peer))));
  }
  return failures;
}

/** One PeerProgramError naming the failed peers (the first five in the message). */
function programError(what: string, failures: readonly { peer: Peer; message: string }[]): PeerProgramError {
  const list = failures.slice(0, 5).map((x) => `${subnetKey(x.peer)} (${x.message})`).join("; ");
  const more = failures.length > 5 ? ` and ${failures.length - 5} more` : "";
  return new PeerProgramError("ERR_NETLINK", `${what} could not program ${failures.length} peer${failures.length === 1 ? "" : "s"}, rolled back alone: ${list}${more}`, failures.map((x) => x.peer));
}

// ---- the dataplane -------------------------------------------------------------------------

export interface KernelDataplaneOptions {
  /** Where to say what was replaced and why (default: stderr). */
  readonly log?: LogFn;
}

export class KernelDataplane implements Dataplane {
  readonly kind = "kernel" as const;
  private node: LocalNode | undefined;
  private planes: FamilyPlane[] = [];
  /** The peer last programmed for each subnet: what an upsert that changes it must clean up after. */
  private last = new Map<string, Peer>();
  /** The VTEP MAC of each device, kept so a re-created device gets the same one. */
  private readonly macs = new Map<Family, string>();
  private readonly log: LogFn;
  /** Calls run one at a time: reconcile reads, then writes, and must not interleave with upsert. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: KernelDataplaneOptions = {}) {
    this.log = opts.log ?? ((m) => process.stderr.write(`twill: ${m}\n`));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  setup(local: LocalNode): Promise<{ v4?: DeviceInfo; v6?: DeviceInfo }> {
    return this.serial(() => this.setupNow(local));
  }

  private async setupNow(local: LocalNode): Promise<{ v4?: DeviceInfo; v6?: DeviceInfo }> {
    this.node = local;
    this.planes = [];
    const hostGw = local.backend === "host-gw";
    if (local.v4) this.planes.push(new FamilyPlane(4, local.v4, hostGw));
    if (local.v6) this.planes.push(new FamilyPlane(6, local.v6, hostGw));
    if (this.planes.length === 0) throw new TwillError("ERR_DATAPLANE", "neither IPv4 nor IPv6 is enabled");
    const out: { v4?: DeviceInfo; v6?: DeviceInfo } = {};
    if (hostGw) return out;
    for (const f of this.planes) if (f.local.vtepMAC) this.macs.set(f.family, parseMAC(f.local.vtepMAC, `${f.dev} VTEP MAC`));
    for (const f of this.planes) out[f.family === 4 ? "v4" : "v6"] = await this.ensureDevice(f);
    return out;
  }

  private async ensureDevice(f: FamilyPlane): Promise<DeviceInfo> {
    const info = await f.ensureDevice(this.node!, this.macs.get(f.family), this.log);
    this.macs.set(f.family, info.mac);
    return info;
  }

  /**
   * Splits peers by family. Strict: every peer must belong to a family that
   * is set up and be valid; otherwise (for best-effort removal) such peers
   * are skipped, and each is handed to `skipped` with why.
   */
  private byPlane(peers: readonly Peer[], strict = true, skipped?: (p: Peer, e: unknown) => void): Map<FamilyPlane, Peer[]> {
    if (!this.node) throw new TwillError("ERR_DATAPLANE", "the kernel dataplane is not set up");
    const out = new Map<FamilyPlane, Peer[]>(this.planes.map((f) => [f, []]));
    for (const p of peers) {
      try {
        const f = this.planes.find((x) => x.ownsPeer(p));
        if (!f) throw new TwillError("ERR_DATAPLANE", `peer ${subnetKey(p)} is IPv${p.subnet.ip.family}, which is not set up`);
        f.checkPeer(p);
        out.get(f)!.push(p);
      } catch (e) {
        if (strict) throw e;
        skipped?.(p, e);
      }
    }
    return out;
  }

  upsert(peers: readonly Peer[]): Promise<void> {
    return this.serial(() => this.upsertNow(peers));
  }

  private async upsertNow(peers: readonly Peer[]): Promise<void> {
    // A peer that is not valid here fails alone, like one the kernel refuses.
    const invalid: { peer: Peer; message: string }[] = [];
    const valid = [...this.byPlane(peers, false, (peer, e) => invalid.push({ peer, message: errorMessage(e) }))];
    const refused = addPerPeer(valid.flatMap(([f, ps]) => ps.flatMap((p) => f.entries(p))));
    const failed = new Set(refused.map((x) => x.peer));
    // What failed keeps its previous `last` (whatever of the old peer is left); the reconcile repairs it.
    const groups = valid.map(([f, ps]) => [f, ps.filter((p) => !failed.has(p))] as const);
    // A subnet that changed hands (another VTEP MAC or public IP, or now
    // direct): the replaces above overwrote its route and neighbour, but the
    // old FDB entry is keyed by the old MAC, and a neighbour is left when the
    // peer became direct. Delete what only the old peer had.
    const leftovers: NlOp[] = [];
    for (const [f, ps] of groups) {
      for (const p of ps) {
        const key = subnetKey(p);
        const was = this.last.get(key);
        this.last.set(key, p);
        if (!was || was.direct) continue;
        const [oldNeigh, oldFdb] = f.entries(was);
        if (p.direct || was.vtepMAC.toLowerCase() !== p.vtepMAC.toLowerCase() || !ipEqual(was.publicIP, p.publicIP)) leftovers.push(deleteOf(oldFdb!.op));
        if (p.direct) leftovers.push(deleteOf(oldNeigh!.op));
      }
    }
    deleteAll(leftovers);
    if (invalid.length || refused.length) throw programError("upsert", [...invalid, ...refused]);
  }

  remove(peers: readonly Peer[]): Promise<void> {
    return this.serial(() => this.removeNow(peers));
  }

  private async removeNow(peers: readonly Peer[]): Promise<void> {
    // What is programmed for the subnet may be another peer than the one handed in: delete that one's entries.
    const actual = peers.map((p) => this.last.get(subnetKey(p)) ?? p);
    for (const p of peers) this.last.delete(subnetKey(p));
    const entries = [...this.byPlane(actual, false)].flatMap(([f, ps]) => ps.flatMap((p) => f.entries(p)));
    deleteAll(deletesOf(entries));
  }

  reconcile(desired: readonly Peer[]): Promise<SyncResult> {
    return this.serial(() => this.reconcileNow(desired));
  }

  private async reconcileNow(desired: readonly Peer[]): Promise<SyncResult> {
    const groups = this.byPlane(desired);
    this.last = new Map(desired.map((p) => [subnetKey(p), p]));
    const deviceDrifts: Drift[] = [];
    for (const f of this.planes) {
      if (f.hostGw) continue;
      deviceDrifts.push(...deviceDrift(f.dev, await getLink(f.dev), this.macs.get(f.family)));
      await this.ensureDevice(f); // re-creates a device someone deleted
    }
    const plans = await Promise.all([...groups].map(([f, ps]) => f.diff(ps)));
    deleteAll(plans.flatMap((p) => p.before));
    const work = plans.flatMap((p) => p.work);
    // A peer that failed in one table keeps nothing of this round (flannel's all-or-nothing per peer).
    const failures = addPerPeer(work.flatMap((w) => w.entries));
    deleteAll(plans.flatMap((p) => p.after));
    const drift = [...deviceDrifts, ...plans.flatMap((p) => p.drift)];
    if (failures.length > 0) throw programError("reconcile", failures);
    return { ...driftCounts(drift), drift };
  }

  /** What a reconcile would repair now, without repairing it. */
  async check(desired: readonly Peer[]): Promise<KernelRepair["drift"]> {
    const out: Drift[] = [];
    for (const [f, ps] of this.byPlane(desired)) {
      if (f.hostGw) {
        out.push(...(await f.diff(ps)).drift);
        continue;
      }
      const dev = await getLink(f.dev);
      out.push(...deviceDrift(f.dev, dev, this.macs.get(f.family)));
      out.push(...(dev ? (await f.diff(ps)).drift : diffKernel({ family: f.family, device: f.dev, underlay: f.local.iface, network: f.local.network, own: f.local.subnet, routes: [], underlayRoutes: [], neighs: [], fdb: [] }, ps).drift));
    }
    return out;
  }

  async close(): Promise<void> {
    // Nothing runs in the background; the kernel keeps forwarding.
  }

  teardown(): Promise<void> {
    return this.serial(() => this.teardownNow());
  }

  private async teardownNow(): Promise<void> {
    for (const f of this.planes) {
      try {
        // Only the routes: the neighbours and FDB entries go with the device.
        deleteAll((await f.diff([])).before);
      } catch {
        // the underlay or device may be gone already
      }
      if (!f.hostGw) await deleteLink(f.dev);
    }
  }
}
