/**
 * The daemon's per-key bookkeeping stays bounded by the live leases, and a
 * re-list that finds the leases as they were moves nothing.
 *
 * How it works: a Daemon is driven without start() (no devices, no source
 * process): its lease source is a fake whose list() is answered by the test
 * (so an event can arrive while a list is under way), its dataplane a fake
 * that records upserts, removes and the desired sets reconciles get. The test sets what start() would have set
 * (config, own lease) and calls the methods start() and the watch call:
 * apply() for a batch of events, resync() for a re-list. Private state is
 * read through one typed view (Internals): this is a white-box test of it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Daemon, type DaemonOptions } from "../../src/daemon.js";
import { createLogger, nullLogger, type Logger } from "../../src/log.js";
import { parseNetConfig } from "../../src/config/netconf.js";
import { parseLease } from "../../src/lease/parse.js";
import type { Lease, NetConfig } from "../../src/lease/types.js";
import type { LeaseEvent, LeaseSource, ListResult } from "../../src/lease/source.js";
import { PeerProgramError, type Dataplane, type Peer, type SyncResult } from "../../src/dataplane/types.js";
import { formatIP, formatPrefix } from "../../src/net/ip.js";

const CONFIG = parseNetConfig(JSON.stringify({ Network: "10.0.0.0/8", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1 } }));
const hex = (n: number): string => n.toString(16).padStart(2, "0");
const key = (i: number): string => `10.${i >> 8}.${i & 255}.0-24`;
/** Peer i's lease as flannel writes it; `mac` varies the VTEP MAC's last byte. */
const lease = (i: number, mac = i & 255): Lease => parseLease(key(i), JSON.stringify({
  PublicIP: `172.16.${i >> 8}.${i & 255}`, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: `02:5c:00:00:${hex(i >> 8)}:${hex(mac)}` },
}));
const OWN = lease(0xfffe);

/** A lease source whose lists the test answers (in order), one at a time. */
class FakeSource implements LeaseSource {
  readonly kind = "etcd";
  private waiting: Array<(r: ListResult) => void> = [];
  readConfig = async (): Promise<NetConfig> => CONFIG;
  list(): Promise<ListResult> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  /** Answers the oldest list() still waiting. */
  answer(leases: Lease[], errors: ListResult["errors"] = []): void {
    const w = this.waiting.shift();
    if (!w) throw new Error("no list() is waiting");
    w({ leases: [OWN, ...leases], errors });
  }
  acquire = async (): Promise<Lease> => OWN;
  writeLease = async (): Promise<void> => {};
  watch = (): (() => void) => () => {};
  close = async (): Promise<void> => {};
}

class FakeDataplane implements Dataplane {
  readonly kind = "bpf" as const;
  readonly upserts: string[] = [];
  readonly removes: string[] = [];
  /** The subnets of each desired set reconcile was handed. */
  readonly reconciled: string[][] = [];
  setup = async () => ({});
  async upsert(peers: readonly Peer[]): Promise<void> {
    for (const p of peers) this.upserts.push(formatPrefix(p.subnet));
  }
  async remove(peers: readonly Peer[]): Promise<void> {
    for (const p of peers) this.removes.push(formatPrefix(p.subnet));
  }
  async reconcile(desired: readonly Peer[]): Promise<SyncResult> {
    this.reconciled.push(desired.map((p) => formatPrefix(p.subnet)));
    return { added: 0, updated: 0, removed: 0, drift: [] };
  }
  check = async () => [];
  close = async (): Promise<void> => {};
  teardown = async (): Promise<void> => {};
}

/** The private state this test reads and the methods it calls. */
interface Internals {
  dp: Dataplane;
  config: NetConfig;
  own: Lease;
  ready: boolean;
  known: Map<string, Peer[]>;
  eventSeq: Map<string, number>;
  reported: Map<string, string>;
  apply(events: readonly LeaseEvent[]): Promise<void>;
  resync(full: boolean): Promise<void>;
  desired(): Peer[];
}

/** A daemon set up as start() would leave it before its first list (no list asked for yet). */
function fresh(log: Logger = nullLogger): { d: Internals; source: FakeSource; dp: FakeDataplane } {
  const source = new FakeSource();
  const dp = new FakeDataplane();
  const opts = { source, dataplane: "bpf", reconcileSeconds: 10, healthzPort: 0, version: "test" } as unknown as DaemonOptions;
  const d = new Daemon(opts, log) as unknown as Internals;
  Object.assign(d, { dp, config: CONFIG, own: OWN });
  return { d, source, dp };
}

/** A daemon started on `leases`: start()'s first list, taken whole, and its repair. */
function daemon(leases: Lease[], log: Logger = nullLogger): { d: Internals; source: FakeSource; dp: FakeDataplane; started: Promise<void> } {
  const { d, source, dp } = fresh(log);
  const started = d.resync(true).then(() => void (d.ready = true));
  source.answer(leases);
  return { d, source, dp, started };
}

const put = (l: Lease): LeaseEvent => ({ type: "put", key: l.key, lease: l });
const del = (i: number): LeaseEvent => ({ type: "delete", key: key(i) });
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, k) => from + k);

test("events leave no per-key sequence numbers behind when no re-list is under way", async () => {
  const { d, started } = daemon(range(1, 100).map((i) => lease(i)));
  await started;
  assert.equal(d.known.size, 100);
  // churn round a ring: put a new key, delete an old one
  for (let k = 0; k < 200; k++) await d.apply([put(lease(101 + k)), del(1 + k)]);
  assert.equal(d.known.size, 100);
  assert.equal(d.eventSeq.size, 0, "sequence numbers of 400 events are still kept");
});

test("an event that arrives while a re-list is under way wins over the list, and its sequence number is dropped after", async () => {
  const { d, source, started } = daemon(range(1, 10).map((i) => lease(i)));
  await started;
  const listing = d.resync(false);
  // the list was read before these events: it still has lease 3 and not lease 11
  await d.apply([put(lease(11)), del(3)]);
  assert.equal(d.eventSeq.size, 2, "events during a list must be remembered until it is applied");
  source.answer(range(1, 10).map((i) => lease(i)));
  await listing;
  assert.ok(d.known.has(key(11)), "the list undid the put of lease 11");
  assert.ok(!d.known.has(key(3)), "the list brought back the deleted lease 3");
  assert.equal(d.eventSeq.size, 0);
});

test("an event that arrives before the start's list is checked against the listed leases: a second claim on a public IP is not programmed", async () => {
  // The watch starts before the first list: a batch can be applied first. Checked then, against an index
  // holding none of the listed leases, a lease naming lease 1's public IP would pass and stay beside it.
  const { d, source, dp } = fresh();
  const started = d.resync(true);
  const claim = parseLease(key(50), JSON.stringify({ PublicIP: "172.16.0.1", PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: "02:5c:00:00:00:32" } }));
  await d.apply([put(claim), put(lease(11))]);
  source.answer(range(1, 10).map((i) => lease(i)));
  await started;
  assert.ok(d.known.has(key(1)), "the listed owner of 172.16.0.1 was dropped");
  assert.ok(!d.known.has(key(50)), "a second lease with 172.16.0.1 is programmed beside the first");
  assert.ok(d.known.has(key(11)), "an honest lease put before the list was applied is lost");
  assert.ok(!dp.upserts.includes("10.0.50.0/24"));
});

test("overlapping re-lists keep the sequence numbers until the last one is applied", async () => {
  const { d, source, started } = daemon(range(1, 10).map((i) => lease(i)));
  await started;
  const first = d.resync(false);
  await d.apply([del(4)]);
  const second = d.resync(false);
  source.answer(range(1, 10).map((i) => lease(i))); // read before the delete
  await first;
  assert.equal(d.eventSeq.size, 1, "the second list still needs the delete's number");
  await d.apply([del(5)]);
  source.answer(range(1, 10).filter((i) => i !== 4).map((i) => lease(i))); // read after the first delete, before the second
  await second;
  assert.ok(!d.known.has(key(4)) && !d.known.has(key(5)));
  assert.equal(d.eventSeq.size, 0);
});

test("a re-list that finds every lease as it was writes nothing and keeps the desired set", async () => {
  const { d, source, dp, started } = daemon(range(1, 50).map((i) => lease(i)));
  await started;
  const before = d.desired();
  const listing = d.resync(false);
  source.answer(range(1, 50).map((i) => lease(i))); // fresh objects, equal values
  await listing;
  assert.equal(d.desired(), before, "the desired set was rebuilt (the dataplane would rebuild its shadow)");
  assert.deepEqual([dp.upserts, dp.removes], [[], []]);
  // ... and one that differs in one lease writes that one
  const again = d.resync(false);
  source.answer(range(1, 50).map((i) => (i === 7 ? lease(i, 0xee) : lease(i))));
  await again;
  assert.notEqual(d.desired(), before);
  assert.deepEqual([dp.upserts, dp.removes], [["10.0.7.0/24"], []]);
});

test("a rejected lease is reported once, and remembered only while its key exists", async () => {
  // 10.0.9.0-25: a /25 where the network's subnets are /24s: rejected
  const wrong = parseLease("10.0.9.0-25", JSON.stringify({ PublicIP: "172.16.1.9", BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: "02:5c:00:00:01:09" } }));
  const good = lease(9);
  const lines: string[] = [];
  const { d, source, started } = daemon([good, wrong], createLogger("info", {}, (l) => lines.push(l)));
  await started;
  const reports = () => lines.filter((l) => l.includes('"msg":"lease rejected"') && l.includes(wrong.key)).length;
  assert.deepEqual([[...d.reported.keys()], reports()], [[wrong.key], 1]);
  // the same lease in the next list: not reported again
  const relist = d.resync(false);
  source.answer([good, wrong]);
  await relist;
  assert.deepEqual([[...d.reported.keys()], reports()], [[wrong.key], 1]);
  // deleted by an event: forgotten (a lease written there later is reported again)
  await d.apply([{ type: "delete", key: wrong.key }]);
  assert.equal(d.reported.size, 0);
  const again = d.resync(false);
  source.answer([good, wrong]);
  await again;
  assert.deepEqual([[...d.reported.keys()], reports()], [[wrong.key], 2]);
  // gone from a list: forgotten too
  const last = d.resync(false);
  source.answer([good]);
  await last;
  assert.equal(d.reported.size, 0);
});

test("a re-list applied during start, after the start's repair took the desired set, programs what it adds", async () => {
  // The lease source's re-list (a directory watch's, say) is answered right
  // after the start's list and queued behind it; the start's repair takes the
  // desired set between the two. Its lease must reach the dataplane anyway.
  const { d, source, dp } = fresh();
  const started = d.resync(true);
  const watched = d.resync(false);
  source.answer([]); // the start's list: no peer yet
  source.answer([lease(1), lease(2)]); // the watch's, after two nodes joined
  await Promise.all([started, watched]);
  d.ready = true;
  assert.deepEqual([...d.known.keys()].sort(), [key(1), key(2)]);
  const written = new Set([...dp.upserts, ...dp.reconciled.flat()]);
  assert.deepEqual(["10.0.1.0/24", "10.0.2.0/24"].filter((s) => !written.has(s)), [], `upserts ${JSON.stringify(dp.upserts)}, reconciles ${JSON.stringify(dp.reconciled)}`);
});

test("one public IP, two leases: by events the second is held back until the first lets go; a re-list keeps the first owner", async () => {
  const lines: string[] = [];
  const { d, source, dp, started } = daemon([], createLogger("info", {}, (l) => lines.push(l)));
  await started;
  const withIP = (i: number, ip: string): Lease => ({ ...lease(i), publicIP: parseLease(key(i), JSON.stringify({ PublicIP: ip, BackendType: "x" })).publicIP! });
  const a = withIP(21, "172.20.0.1"), b = withIP(20, "172.20.0.1"); // b's key sorts first, but a arrives first
  await d.apply([put(a)]);
  await d.apply([put(b)]);
  assert.deepEqual([...d.known.keys()], [a.key]);
  assert.ok(!dp.upserts.includes("10.0.20.0/24"));
  const line = lines.find((l) => l.includes('"msg":"lease rejected"') && l.includes(b.key))!;
  assert.match(line, /"code":"ERR_PUBLIC_IP_CONFLICT"/);
  assert.match(line, /PublicIP 172\.20\.0\.1 of subnet 10\.0\.20\.0\/24 is already the public IP of lease 10\.0\.21\.0-24/);
  // A full list keeps the first owner: a stays although b's key sorts first (found by the chaos soak: every
  // re-list used to hand an honest node's address to a planted lease with an earlier key, for a period).
  const [removed, upserted] = [dp.removes.length, dp.upserts.length];
  const relist = d.resync(false);
  source.answer([a, b]);
  await relist;
  assert.deepEqual([...d.known.keys()], [a.key]);
  assert.ok(!dp.removes.slice(removed).includes("10.0.21.0/24") && !dp.upserts.slice(upserted).includes("10.0.20.0/24"), "the re-list moved the address");
  // b moves to another public IP: it is taken at once.
  await d.apply([put(withIP(20, "172.20.0.2"))]);
  assert.deepEqual([...d.known.keys()].sort(), [b.key, a.key].sort());
  // b claims a's address: b is withdrawn (its entry no longer says what b says), a stays; b comes back once a goes.
  await d.apply([put(withIP(20, "172.20.0.1"))]);
  assert.deepEqual([...d.known.keys()], [a.key]);
  await d.apply([del(21)]);
  assert.deepEqual([...d.known.keys()], [b.key]);
  assert.equal(formatIP(d.known.get(b.key)![0]!.publicIP), "172.20.0.1");
});

test("a lease naming this node's own public IP is rejected (ERR_INVALID_PUBLIC_IP)", async () => {
  const lines: string[] = [];
  const { d, started } = daemon([], createLogger("info", {}, (l) => lines.push(l)));
  await started;
  Object.assign(d, { publicIP: OWN.publicIP });
  const mine = { ...lease(30), publicIP: OWN.publicIP! };
  await d.apply([put(mine)]);
  assert.equal(d.known.has(mine.key), false);
  assert.ok(lines.some((l) => l.includes(mine.key) && l.includes('"code":"ERR_INVALID_PUBLIC_IP"') && l.includes("is this node's own public IP")), lines.join("\n"));
});

test("a PeerProgramError naming one peer of a batch leaves only that peer pending; it is retried with the next batch", async () => {
  const { d, dp, started } = daemon([]);
  await started;
  let refuse = true;
  dp.upsert = async (peers: readonly Peer[]): Promise<void> => {
    const bad = peers.filter((p) => refuse && formatPrefix(p.subnet) === "10.0.41.0/24");
    for (const p of peers) if (!bad.includes(p)) dp.upserts.push(formatPrefix(p.subnet));
    if (bad.length) throw new PeerProgramError("ERR_NETLINK", "refused", bad);
  };
  await (d as unknown as { serialize(fn: () => Promise<void>): Promise<void> }).serialize(() => d.apply([put(lease(40)), put(lease(41)), put(lease(42))]));
  const pending = () => (d as unknown as { pending: Map<string, unknown> }).pending;
  assert.deepEqual([...pending().keys()], ["10.0.41.0/24"]);
  assert.deepEqual(dp.upserts, ["10.0.40.0/24", "10.0.42.0/24"]);
  assert.equal(d.known.size, 3, "the leases are known: the failed peer is still wanted");
  refuse = false;
  await d.apply([put(lease(43))]);
  assert.equal(pending().size, 0);
  assert.deepEqual(dp.upserts.slice(2).sort(), ["10.0.41.0/24", "10.0.43.0/24"]);
});
