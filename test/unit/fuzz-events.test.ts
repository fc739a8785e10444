/**
 * Fuzzing the event path: random batches of lease puts, deletes and bad
 * leases go through the daemon's apply() (the watch's path), with the
 * dataplane failing now and then, and the dataplane's table is checked
 * against a model of the leases after every batch; at the end a re-list
 * must leave the table exactly what leasesToPeers says of the live leases
 * (the leases the daemon held before it first: first owner kept).
 *
 * How it works: a Daemon is driven without start() as in
 * daemon-bookkeeping.test.ts (fake source and dataplane; the fake dataplane
 * keeps a table subnet → Peer, as the trie keys entries, and throws a
 * PeerProgramError for a random part of an upsert now and then). The lease
 * space is small and overlapping (Kubernetes-style podCIDRs of lengths 23,
 * 24 and 25 in one /21, dual-stack keys), so conflicts are common. The model
 * is the set of live leases: a put that parses replaces a key's lease, a
 * bad put keeps its last good one, a delete drops it. After each batch:
 *  - no two table entries overlap (the index never lets a clash in);
 *  - every table entry is a peer of a live lease, as that lease says now
 *    (unless its update failed and waits for the retry);
 *  - no two table entries share a public IP (the index never lets a second
 *    lease claim one), unless one of them waits for a retry;
 *  - every live lease that overlaps no other live lease, shares no public
 *    IP with one (the pools are small: conflicts are common), and is not
 *    waiting for a retry, is in the table.
 * Seeds: a fixed list in `make test` (each a reproducible run); set
 * TWILL_FUZZ_SEED=<n> to run one more seed (printed) — a random one with
 * TWILL_FUZZ_SEED=random. A seed that ever failed is added to SEEDS as a
 * regression case.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Daemon, type DaemonOptions } from "../../src/daemon.js";
import { nullLogger } from "../../src/log.js";
import { parseNetConfig } from "../../src/config/netconf.js";
import { parseLease } from "../../src/lease/parse.js";
import { TwillError } from "../../src/errors.js";
import type { Lease, NetConfig } from "../../src/lease/types.js";
import type { LeaseEvent, LeaseSource, ListResult } from "../../src/lease/source.js";
import { PeerProgramError, type Dataplane, type Peer, type SyncResult } from "../../src/dataplane/types.js";
import { formatIP, formatPrefix, ipEqual, prefixOverlaps } from "../../src/net/ip.js";
import { leasesToPeers } from "../../src/peers.js";
import { mulberry32 } from "../lib/prng.js";

/** Fixed seeds run by `make test`; add any seed that ever failed. */
const SEEDS = [1, 2, 3, 7, 42, 1337, 99991, 20261202];
const STEPS = Number(process.env.TWILL_FUZZ_STEPS ?? 400);


const CONFIG: NetConfig = parseNetConfig(JSON.stringify({ Network: "10.0.0.0/8", EnableIPv6: true, IPv6Network: "fc00::/48", Backend: { Type: "vxlan", VNI: 1 } }));
/** Our own lease, outside the fuzzed /21. */
const OWN = parseLease("10.9.9.0-24", JSON.stringify({ PublicIP: "172.16.9.9", PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: "02:00:00:00:09:09" } }));

/** The lease keys the fuzz uses: podCIDRs of several lengths in 10.1.0.0/21 (they overlap), some dual stack. */
const KEYS: string[] = (() => {
  const out: string[] = [];
  for (let i = 0; i < 8; i++) out.push(`10.1.${i}.0-24`);
  for (let i = 0; i < 8; i += 2) out.push(`10.1.${i}.0-23`);
  for (let i = 0; i < 4; i++) out.push(`10.1.${i}.${(i & 1) * 128}-25`);
  for (let i = 0; i < 4; i++) out.push(`10.1.${i + 4}.0-24&fc00:0:0:${i}::-64`);
  return out;
})();

class FakeSource implements LeaseSource {
  // "kube": podCIDRs of any length (no SubnetLen check), so leases overlap
  readonly kind = "kube";
  private waiting: Array<(r: ListResult) => void> = [];
  readConfig = async (): Promise<NetConfig> => CONFIG;
  list(): Promise<ListResult> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  answer(leases: Lease[]): void {
    const w = this.waiting.shift();
    if (!w) throw new Error("no list() is waiting");
    w({ leases: [OWN, ...leases], errors: [] });
  }
  acquire = async (): Promise<Lease> => OWN;
  writeLease = async (): Promise<void> => {};
  watch = (): (() => void) => () => {};
  close = async (): Promise<void> => {};
}

/** A dataplane that is a table subnet → Peer (as the trie keys them), failing part of an upsert now and then. */
class TableDataplane implements Dataplane {
  readonly kind = "bpf" as const;
  readonly table = new Map<string, Peer>();
  failRate = 0;
  constructor(private readonly rnd: () => number) {}
  setup = async () => ({});
  async upsert(peers: readonly Peer[]): Promise<void> {
    const failed = peers.filter(() => this.rnd() < this.failRate);
    for (const p of peers) if (!failed.includes(p)) this.table.set(formatPrefix(p.subnet), p);
    if (failed.length) throw new PeerProgramError("ERR_BPF_MAP", `fuzz: ${failed.length} peers not written`, failed);
  }
  async remove(peers: readonly Peer[]): Promise<void> {
    for (const p of peers) this.table.delete(formatPrefix(p.subnet));
  }
  async reconcile(desired: readonly Peer[]): Promise<SyncResult> {
    this.table.clear();
    for (const p of desired) this.table.set(formatPrefix(p.subnet), p);
    return { added: 0, updated: 0, removed: 0, drift: [] };
  }
  check = async () => [];
  close = async (): Promise<void> => {};
  teardown = async (): Promise<void> => {};
}

interface Internals {
  dp: Dataplane;
  config: NetConfig;
  own: Lease;
  ready: boolean;
  known: Map<string, Peer[]>;
  pending: Map<string, { peer: Peer; remove: boolean }>;
  apply(events: readonly LeaseEvent[]): Promise<void>;
  resync(full: boolean): Promise<void>;
}

const hex = (n: number): string => n.toString(16).padStart(2, "0");

async function run(seed: number): Promise<void> {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const where = (step: number) => `(seed ${seed}, step ${step}; replay: TWILL_FUZZ_SEED=${seed})`;

  /** A lease for `key` with a random public IP and MAC from small pools (so values repeat and change). */
  const leaseFor = (key: string): Lease => {
    const dual = key.includes("&");
    return parseLease(key, JSON.stringify({
      PublicIP: `172.16.1.${1 + int(6)}`, PublicIPv6: dual ? `fd00::${1 + int(6)}` : null, BackendType: "vxlan",
      BackendData: { VNI: 1, VtepMAC: `02:5c:00:00:01:${hex(1 + int(6))}` },
      ...(dual ? { BackendV6Data: { VNI: 1, VtepMAC: `02:5c:00:00:02:${hex(1 + int(6))}` } } : {}),
    }));
  };

  const source = new FakeSource();
  const dp = new TableDataplane(rnd);
  const opts = { source, dataplane: "bpf", reconcileSeconds: 10, healthzPort: 0, version: "fuzz" } as unknown as DaemonOptions;
  const d = new Daemon(opts, nullLogger) as unknown as Internals;
  Object.assign(d, { dp, config: CONFIG, own: OWN });
  const live = new Map<string, Lease>();
  const rules = { config: CONFIG, own: { key: OWN.key, subnet: OWN.subnet! }, checkLength: false };

  const step = async (k: number): Promise<void> => {
    dp.failRate = rnd() < 0.1 ? 0.3 : 0;
    const events: LeaseEvent[] = [];
    for (let n = 1 + int(5); n > 0; n--) {
      const key = pick(KEYS);
      const r = rnd();
      if (r < 0.55) {
        const l = leaseFor(key);
        events.push({ type: "put", key, lease: l });
      } else if (r < 0.7) {
        events.push({ type: "put", key, error: new TwillError("ERR_INVALID_LEASE", `fuzz: bad lease ${key}`) });
      } else {
        events.push({ type: "delete", key });
      }
    }
    // The model: the last event of a key wins; a bad put keeps the last good lease.
    for (const e of events) {
      if (e.type === "delete") live.delete(e.key);
      else if (e.lease) live.set(e.key, e.lease);
    }
    // As the daemon's work queue runs it: a dataplane failure is counted there, the failed peers stay pending.
    await d.apply(events).catch((e: unknown) => {
      if (!(e instanceof PeerProgramError)) throw e;
    });
    check(k);
  };

  const peersOf = (l: Lease): { subnet: string; ip: string; mac: string }[] => [
    ...(l.subnet ? [{ subnet: formatPrefix(l.subnet), ip: formatIP(l.publicIP!), mac: l.backendData!.vtepMAC }] : []),
    ...(l.ipv6Subnet ? [{ subnet: formatPrefix(l.ipv6Subnet), ip: formatIP(l.publicIPv6!), mac: l.backendV6Data!.vtepMAC }] : []),
  ];

  const check = (k: number): void => {
    const entries = [...dp.table.values()];
    for (let i = 0; i < entries.length; i++) {
      for (let j = i + 1; j < entries.length; j++) {
        assert.ok(!prefixOverlaps(entries[i]!.subnet, entries[j]!.subnet), `table entries overlap: ${formatPrefix(entries[i]!.subnet)} ${formatPrefix(entries[j]!.subnet)} ${where(k)}`);
      }
    }
    const owners = new Map<string, string>();
    for (const p of entries) {
      const s = formatPrefix(p.subnet), ip = formatIP(p.publicIP);
      if (d.pending.has(s)) continue;
      assert.ok(!owners.has(ip), `table entries ${owners.get(ip)} and ${s} share the public IP ${ip} ${where(k)}`);
      owners.set(ip, s);
    }
    const wanted = [...live.values()].flatMap((l) => peersOf(l).map((p) => ({ ...p, key: l.key })));
    for (const p of entries) {
      const s = formatPrefix(p.subnet);
      // (an update or remove the dataplane failed is pending: the entry may be the old one until the retry)
      if (d.pending.has(s)) continue;
      // Two keys may hold one subnet (10.1.4.0-24 and 10.1.4.0-24&fc00::-64): the entry is one of theirs.
      const ws = wanted.filter((x) => x.subnet === s);
      assert.ok(ws.length, `table has ${s}, which no live lease holds ${where(k)}`);
      assert.ok(ws.some((w) => w.ip === formatIP(p.publicIP) && w.mac === p.vtepMAC),
        `table has ${s} via ${formatIP(p.publicIP)} ${p.vtepMAC}, the leases say ${ws.map((w) => `${w.key}: ${w.ip} ${w.mac}`).join(", ")} ${where(k)}`);
    }
    for (const l of live.values()) {
      const mine = peersOf(l);
      const clash = [...live.values()].some((o) => o.key !== l.key && [o.subnet, o.ipv6Subnet].some((a) => a && [l.subnet, l.ipv6Subnet].some((b) => b && prefixOverlaps(a, b))));
      const sharesIP = [...live.values()].some((o) => o.key !== l.key && peersOf(o).some((a) => mine.some((b) => a.ip === b.ip)));
      if (clash || sharesIP || mine.some((p) => d.pending.has(p.subnet))) continue;
      for (const p of mine) {
        const e = dp.table.get(p.subnet);
        assert.ok(e && formatIP(e.publicIP) === p.ip && e.vtepMAC === p.mac, `live lease ${l.key} (no overlap) is not programmed as it says: ${p.subnet} ${where(k)}`);
      }
    }
  };

  {
    // Start: the first list, empty, taken whole.
    const started = d.resync(true).then(() => void (d.ready = true));
    source.answer([]);
    await started;
    for (let k = 0; k < STEPS; k++) await step(k);
    // A re-list (no failures now): the table is then exactly what the full-list rules say.
    dp.failRate = 0;
    // The leases the daemon holds before the re-list keep what they hold (first owner kept); the others follow in key order.
    const holders = new Set(d.known.keys());
    const relist = d.resync(true);
    source.answer([...live.values()]);
    await relist;
    const { peers } = leasesToPeers([OWN, ...live.values()], rules, (l) => holders.has(l.key));
    const want = peers.map((p) => `${formatPrefix(p.subnet)} ${formatIP(p.publicIP)} ${p.vtepMAC}`).sort();
    const have = [...dp.table.values()].map((p) => `${formatPrefix(p.subnet)} ${formatIP(p.publicIP)} ${p.vtepMAC}`).sort();
    assert.deepEqual(have, want, `after a re-list the table is not what the leases say ${where(STEPS)}`);
    assert.ok(peers.every((p) => !ipEqual(p.publicIP, OWN.publicIP!)));
  }
}

const extra = process.env.TWILL_FUZZ_SEED;
const seeds = [...SEEDS, ...(extra === undefined ? [] : [extra === "random" ? (Date.now() ^ (process.pid << 16)) >>> 0 : Number(extra) >>> 0])];
for (const seed of seeds) {
  test(`event path fuzz: ${STEPS} random batches of puts, deletes and bad leases, the table against the model (seed ${seed})`, async (t) => {
    t.diagnostic(`seed ${seed} (replay: TWILL_FUZZ_SEED=${seed})`);
    await run(seed);
  });
}
