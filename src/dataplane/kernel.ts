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
 *    Everything is written with `ip -batch` / `bridge -batch`: one process
 *    per table per call, whatever the number of peers.
 * 3) upsert() is all-or-nothing per call: when a line fails, the entries the
 *    call already applied are deleted again (route, FDB, neigh) and the
 *    error names the peer. remove() deletes route, FDB, neigh, best effort.
 * 4) reconcile() re-creates a missing device (keeping its MAC), reads what
 *    is programmed (routes, neighbours, FDB on the vxlan device; routes via
 *    the underlay inside the cluster network) and makes it exactly the
 *    desired set: stale routes go first, missing or wrong entries are
 *    (re)applied per peer (a failing peer is rolled back and reported, the
 *    others still go in), stale neighbours and FDB entries last. It touches
 *    only entries inside the cluster network or on its own devices, never
 *    our own subnet or routes the kernel made.
 * IPv4 and IPv6 run through the same code: a FamilyPlane holds what differs
 * (device, addresses), and the batches of both families are merged, so dual
 * stack still costs one process per table.
 */
import type { Dataplane, DeviceInfo, LocalFamily, LocalNode, Peer, SyncResult } from "./types.js";
import { TwillError, errorMessage } from "../errors.js";
import { parseMAC } from "../lease/mac.js";
import {
  formatIP, formatPrefix, ipEqual, makePrefix, prefixContains, prefixContainsIP, prefixOverlaps, type Family, type IP,
} from "../net/ip.js";
import { BatchError, NetlinkError, bridgeBatch, ipBatch, type BatchFailure } from "../net/iproute.js";
import {
  deleteLink, ensureAddress, ensureVxlan, hostPrefix, listFdb, listNeighs, listRoutes,
  type FdbEntry, type LogFn, type NeighEntry, type RouteEntry,
} from "../net/link.js";

/** The kernel tables a peer lives in, in the order they are added. */
type Table = "neigh" | "fdb" | "route";
const ADD_ORDER: readonly Table[] = ["neigh", "fdb", "route"];
const DELETE_ORDER: readonly Table[] = ["route", "fdb", "neigh"];

/** One kernel entry of one peer: the batch line that adds it and the one that deletes it. */
interface Entry {
  readonly table: Table;
  readonly add: string;
  readonly del: string;
  readonly peer: Peer;
}

interface Line {
  readonly table: Table;
  readonly text: string;
}

/** What is programmed for one family, as read back from the kernel. */
interface Actual {
  /** Routes on the vxlan device inside the cluster network (not ours, not kernel-made). */
  readonly tunnelRoutes: readonly RouteEntry[];
  /** Routes with a gateway on the underlay inside the cluster network. */
  readonly directRoutes: readonly RouteEntry[];
  readonly neighs: readonly NeighEntry[];
  readonly fdb: readonly FdbEntry[];
}

interface Plan {
  /** Desired peers whose entries are missing or wrong, with the entries to (re)apply. */
  readonly work: readonly { readonly peer: Peer; readonly entries: readonly Entry[]; readonly fresh: boolean }[];
  /** Deletes of stale routes, run before anything is added. */
  readonly before: readonly Line[];
  /** Deletes of stale neighbours/FDB entries and leftover routes, run last. */
  readonly after: readonly Line[];
  /** How many vanished peers the deletes sweep. */
  readonly removed: number;
}

const ipText = formatIP;
const subnetKey = (p: Peer): string => formatPrefix(p.subnet);
/** flannel's gateway for a peer: the subnet's network address (10.244.2.0, fc00:0:0:2::). */
const gatewayOf = (p: Peer): IP => p.subnet.ip;

/** Everything one address family needs; v4 and v6 are two instances of this. */
class FamilyPlane {
  constructor(readonly family: Family, readonly local: LocalFamily) {}

  get dev(): string {
    return this.local.device;
  }

  ownsPeer(p: Peer): boolean {
    return p.subnet.ip.family === this.family;
  }

  async ensureDevice(node: LocalNode, mac: string | undefined, log: LogFn): Promise<DeviceInfo> {
    const info = await ensureVxlan(
      {
        name: this.dev, vni: node.vni, port: node.port, external: false, localIP: this.local.publicIP,
        dev: this.local.iface, mtu: this.local.mtu, learning: false, arpOff: false, family: this.family,
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
      throw new TwillError("ERR_DATAPLANE", `${what}: public IP ${ipText(p.publicIP)} is not IPv${this.family}`);
    }
    if (prefixOverlaps(p.subnet, this.local.subnet)) {
      throw new TwillError("ERR_DATAPLANE", `${what} overlaps our own subnet ${formatPrefix(this.local.subnet)}`);
    }
    if (!p.direct) parseMAC(p.vtepMAC, `${what} VtepMAC`);
  }

  /** The peer's entries in add order; flannel's exact commands. */
  entries(p: Peer): Entry[] {
    const subnet = subnetKey(p), pub = ipText(p.publicIP), dev = this.dev;
    if (p.direct) {
      const iface = this.local.iface;
      return [{ table: "route", peer: p,
        add: `route replace ${subnet} via ${pub} dev ${iface}`, del: `route del ${subnet} via ${pub} dev ${iface}` }];
    }
    const gw = ipText(gatewayOf(p)), mac = p.vtepMAC.toLowerCase();
    return [
      { table: "neigh", peer: p,
        add: `neigh replace ${gw} lladdr ${mac} dev ${dev} nud permanent`, del: `neigh del ${gw} dev ${dev}` },
      { table: "fdb", peer: p,
        add: `fdb replace ${mac} dev ${dev} dst ${pub} self permanent`, del: `fdb del ${mac} dev ${dev} dst ${pub} self` },
      { table: "route", peer: p,
        add: `route replace ${subnet} via ${gw} dev ${dev} onlink`, del: `route del ${subnet} via ${gw} dev ${dev}` },
    ];
  }

  /** True for routes twill may own: inside the cluster network, not our subnet, not kernel-made. */
  private inScope(r: RouteEntry): boolean {
    return prefixContains(this.local.network, r.dst) && !prefixOverlaps(r.dst, this.local.subnet) && r.protocol !== "kernel";
  }

  async read(): Promise<Actual> {
    const [tunnel, under, neighs, fdb] = await Promise.all([
      listRoutes(this.dev, this.family),
      listRoutes(this.local.iface, this.family),
      listNeighs(this.dev, this.family),
      listFdb(this.dev),
    ]);
    return {
      tunnelRoutes: tunnel.filter((r) => this.inScope(r)),
      directRoutes: under.filter((r) => this.inScope(r) && r.gateway !== undefined),
      neighs: neighs.filter((n) => prefixContainsIP(this.local.network, n.dst)),
      fdb: fdb.filter((f) => f.dst !== undefined && f.flags.includes("self")),
    };
  }

  private routeLine(r: RouteEntry): Line {
    const via = r.gateway ? ` via ${ipText(r.gateway)}` : "";
    return { table: "route", text: `route del ${formatPrefix(r.dst)}${via} dev ${r.dev ?? this.dev}` };
  }

  /** Compares `desired` (this family's peers) with `actual`: what to add, fix and sweep. */
  plan(desired: readonly Peer[], actual: Actual): Plan {
    const want = new Map(desired.map((p) => [subnetKey(p), p]));
    const peers = [...want.values()];
    const wantNeigh = new Map(peers.filter((p) => !p.direct).map((p) => [ipText(gatewayOf(p)), p.vtepMAC.toLowerCase()]));
    const wantFdb = new Set(peers.filter((p) => !p.direct).map((p) => `${p.vtepMAC.toLowerCase()} ${ipText(p.publicIP)}`));
    const routes = [...actual.tunnelRoutes, ...actual.directRoutes];
    const routesAt = groupBy(routes, (r) => formatPrefix(r.dst));
    const neighAt = new Map(actual.neighs.map((n) => [ipText(n.dst), n]));
    const fdbOf = groupBy(actual.fdb, (f) => f.mac);

    // Which subnet an entry belongs to: routes by dst, neighbours by their address, FDB via the neighbour using its MAC.
    const len = this.local.subnet.len;
    const neighSubnet = (n: NeighEntry) => formatPrefix(makePrefix(n.dst, len));
    const macSubnet = new Map(actual.neighs.filter((n) => n.lladdr).map((n) => [n.lladdr!, neighSubnet(n)]));

    const before: Line[] = [], after: Line[] = [];
    const touched = new Set<string>(); // subnets with stale or leftover entries
    for (const r of routes) {
      const key = formatPrefix(r.dst);
      const p = want.get(key);
      if (!p) {
        before.push(this.routeLine(r));
        touched.add(key);
      } else if (!this.sameRouteTarget(r, p)) {
        after.push(this.routeLine(r)); // replaced in place, or a leftover with another metric
        touched.add(key);
      }
    }
    for (const n of actual.neighs) {
      if (n.state.includes("PERMANENT") && !wantNeigh.has(ipText(n.dst))) {
        after.push({ table: "neigh", text: `neigh del ${ipText(n.dst)} dev ${this.dev}` });
        touched.add(neighSubnet(n));
      }
    }
    for (const f of actual.fdb) {
      if (!f.dst || wantFdb.has(`${f.mac} ${ipText(f.dst)}`)) continue;
      after.push({ table: "fdb", text: `fdb del ${f.mac} dev ${this.dev} dst ${ipText(f.dst)} self` });
      touched.add(macSubnet.get(f.mac) ?? `fdb ${f.mac} ${ipText(f.dst)}`);
    }

    const work: { peer: Peer; entries: Entry[]; fresh: boolean }[] = [];
    for (const [key, p] of want) {
      const entries = this.entries(p).filter((e) => !this.satisfied(e, neighAt, fdbOf, routesAt));
      if (entries.length === 0 && !touched.has(key)) continue;
      const gw = ipText(gatewayOf(p));
      const fresh = !routesAt.has(key) && !neighAt.has(gw) && !(p.direct ? false : fdbOf.has(p.vtepMAC.toLowerCase()));
      work.push({ peer: p, entries, fresh: fresh && !touched.has(key) });
    }
    const removed = [...touched].filter((k) => !want.has(k)).length;
    return { work, before, after, removed };
  }

  private sameRouteTarget(r: RouteEntry, p: Peer): boolean {
    const [dev, gw] = p.direct ? [this.local.iface, p.publicIP] : [this.dev, gatewayOf(p)];
    return r.dev === dev && r.gateway !== undefined && ipEqual(r.gateway, gw);
  }

  private satisfied(
    e: Entry, neighAt: Map<string, NeighEntry>, fdbOf: Map<string, FdbEntry[]>, routesAt: Map<string, RouteEntry[]>,
  ): boolean {
    const p = e.peer;
    const mac = p.vtepMAC.toLowerCase();
    switch (e.table) {
      case "neigh": {
        const n = neighAt.get(ipText(gatewayOf(p)));
        return n !== undefined && n.lladdr === mac && n.state.includes("PERMANENT");
      }
      case "fdb":
        return (fdbOf.get(mac) ?? []).some((f) => f.dst !== undefined && ipEqual(f.dst, p.publicIP) && f.state === "permanent");
      case "route":
        return (routesAt.get(subnetKey(p)) ?? []).some(
          (r) => this.sameRouteTarget(r, p) && (p.direct || r.flags.includes("onlink")),
        );
    }
  }
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) {
    const k = key(it);
    const list = m.get(k);
    if (list) list.push(it);
    else m.set(k, [it]);
  }
  return m;
}

// ---- running batches ---------------------------------------------------------------

function runTable(table: Table, lines: readonly string[], force: boolean) {
  return table === "fdb" ? bridgeBatch(lines, { force }) : ipBatch(lines, { force });
}

/** Deletes, table by table in `order`, ignoring failures (entries already gone). */
async function deleteAll(lines: readonly Line[], order: readonly Table[] = DELETE_ORDER): Promise<void> {
  for (const table of order) {
    const text = lines.filter((l) => l.table === table).map((l) => l.text);
    try {
      await runTable(table, text, true);
    } catch {
      // best effort: a delete that cannot run now is retried by the next reconcile
    }
  }
}

const deletesOf = (entries: readonly Entry[]): Line[] => entries.map((e) => ({ table: e.table, text: e.del }));

/**
 * Adds `entries` table by table; on the first failing line deletes what this
 * call added and throws ERR_NETLINK naming the peer.
 */
async function addAtomically(entries: readonly Entry[]): Promise<void> {
  const applied: Entry[] = [];
  for (const table of ADD_ORDER) {
    const batch = entries.filter((e) => e.table === table);
    try {
      await runTable(table, batch.map((e) => e.add), false);
      applied.push(...batch);
    } catch (e) {
      // A batch that stopped says where; a tool that died may have applied any line; a batch we refused applied none.
      const at = e instanceof BatchError ? e.failedIndex : e instanceof NetlinkError ? undefined : 0;
      applied.push(...(at === undefined ? batch : batch.slice(0, at)));
      await deleteAll(deletesOf(applied));
      const peer = at !== undefined ? batch[at]?.peer : undefined;
      const who = peer ? `peer ${subnetKey(peer)}` : `the ${table} batch`;
      throw new TwillError(
        "ERR_NETLINK",
        `adding ${who} failed, rolled back ${applied.length} entries of this batch: ${errorMessage(e)}`,
        { cause: e, retryable: true },
      );
    }
  }
}

/**
 * Adds `work` table by table, trying every line; a peer whose line fails is
 * left out of the later tables and its entries are deleted again. Returns the
 * failures, one per failed peer.
 */
async function addEach(entries: readonly Entry[]): Promise<{ peer: Peer; message: string }[]> {
  const failed = new Map<Peer, string>();
  for (const table of ADD_ORDER) {
    const batch = entries.filter((e) => e.table === table && !failed.has(e.peer));
    let failures: readonly BatchFailure[];
    try {
      failures = (await runTable(table, batch.map((e) => e.add), true)).failures;
    } catch (e) {
      failures = [{ index: -1, line: "", message: errorMessage(e) }];
    }
    for (const f of failures) {
      const hit = f.index >= 0 ? [batch[f.index]!] : batch; // unknown line: treat the whole table as failed
      for (const e of hit) failed.set(e.peer, `${f.line || e.add}: ${f.message}`);
    }
  }
  if (failed.size > 0) await deleteAll(deletesOf(entries.filter((e) => failed.has(e.peer))));
  return [...failed].map(([peer, message]) => ({ peer, message }));
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
    if (local.v4) this.planes.push(new FamilyPlane(4, local.v4));
    if (local.v6) this.planes.push(new FamilyPlane(6, local.v6));
    if (this.planes.length === 0) throw new TwillError("ERR_DATAPLANE", "neither IPv4 nor IPv6 is enabled");
    for (const f of this.planes) if (f.local.vtepMAC) this.macs.set(f.family, parseMAC(f.local.vtepMAC, `${f.dev} VTEP MAC`));
    const out: { v4?: DeviceInfo; v6?: DeviceInfo } = {};
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
   * is set up and be valid; otherwise (for best-effort removal) such peers are skipped.
   */
  private byPlane(peers: readonly Peer[], strict = true): Map<FamilyPlane, Peer[]> {
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
      }
    }
    return out;
  }

  upsert(peers: readonly Peer[]): Promise<void> {
    return this.serial(() => this.upsertNow(peers));
  }

  private async upsertNow(peers: readonly Peer[]): Promise<void> {
    const entries = [...this.byPlane(peers)].flatMap(([f, ps]) => ps.flatMap((p) => f.entries(p)));
    await addAtomically(entries);
  }

  remove(peers: readonly Peer[]): Promise<void> {
    return this.serial(() => this.removeNow(peers));
  }

  private async removeNow(peers: readonly Peer[]): Promise<void> {
    const entries = [...this.byPlane(peers, false)].flatMap(([f, ps]) => ps.flatMap((p) => f.entries(p)));
    await deleteAll(deletesOf(entries));
  }

  reconcile(desired: readonly Peer[]): Promise<SyncResult> {
    return this.serial(() => this.reconcileNow(desired));
  }

  private async reconcileNow(desired: readonly Peer[]): Promise<SyncResult> {
    const groups = this.byPlane(desired);
    for (const f of this.planes) await this.ensureDevice(f); // re-creates a device someone deleted
    const plans = await Promise.all([...groups].map(async ([f, ps]) => f.plan(ps, await f.read())));
    await deleteAll(plans.flatMap((p) => p.before));
    const work = plans.flatMap((p) => p.work);
    const failures = await addEach(work.flatMap((w) => w.entries));
    await deleteAll(plans.flatMap((p) => p.after));
    if (failures.length > 0) {
      const list = failures.slice(0, 5).map((x) => `${subnetKey(x.peer)} (${x.message})`).join("; ");
      const more = failures.length > 5 ? ` and ${failures.length - 5} more` : "";
      throw new TwillError("ERR_NETLINK", `reconcile could not program ${failures.length} peers: ${list}${more}`, {
        retryable: true,
      });
    }
    const fresh = work.filter((w) => w.fresh).length;
    return { added: fresh, updated: work.length - fresh, removed: plans.reduce((n, p) => n + p.removed, 0) };
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
        const actual = await f.read();
        await deleteAll(f.plan([], { ...actual, tunnelRoutes: [], neighs: [], fdb: [] }).before);
      } catch {
        // the underlay or device may be gone already
      }
      await deleteLink(f.dev);
    }
  }
}
