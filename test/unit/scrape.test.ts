/**
 * The machinery of a /metrics scrape at 10,000 peers, without a kernel:
 * work in slices (sortSteps, runSliced), twill_stats as typed rows
 * (StatRows: per-CPU sums, exact sums), families written by twill
 * (byte for byte what prom-client writes), the scrape-time ranking of peers
 * (the same result as capPeers over peerTraffic), node-wide totals on the
 * fast path, and the sliced read of the maps (fake maps fed real bytes).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import client from "prom-client";
import type { BpfMap } from "../../src/bpf/map.js";
import { numPossibleCpus } from "../../src/bpf/libbpf.js";
import { COUNTERS, LPM_KEY, PEER, PeerKind, STAT, encodeLpmKey, encodePeer } from "../../src/bpf/layout.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import { Family, Registry, Samples, formatValue } from "../../src/metrics/exposition.js";
import { peerRowsSteps } from "../../src/metrics/peerrows.js";
import { breather, runAtOnce, runSliced, sortSteps } from "../../src/metrics/slices.js";
import { ExactSum, StatRows, counterName, counterNumber } from "../../src/metrics/statrows.js";
import { MonotonicTotals } from "../../src/metrics/totals.js";
import { capPeers, peerTraffic, readDataplaneStatsSliced, readPeerEntries, type PeerEntry, type StatTable } from "../../src/peerstats.js";

/** A deterministic pseudo-random generator (xorshift32), so a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

test("sortSteps sorts as Array.prototype.sort does (stably), pausing on long arrays", () => {
  for (const [n, keys] of [[0, 1], [1, 1], [1000, 7], [5000, 3], [20011, 1000], [20011, 1]] as const) {
    const r = rng(n + keys);
    const a = Array.from({ length: n }, (_, i) => ({ k: r(keys), i }));
    const cmp = (x: { k: number }, y: { k: number }) => x.k - y.k;
    const want = [...a].sort(cmp);
    let pauses = 0;
    const steps = sortSteps(a, cmp);
    for (let s = steps.next(); !s.done; s = steps.next()) pauses++;
    assert.deepEqual(a, want, `n=${n}: same order as the built-in sort, ties in their first order`);
    if (n > 4096) assert.ok(pauses >= n / 1024, `n=${n}: paused ${pauses} times`);
  }
});

test("runSliced yields to the event loop once a slice is spent; runAtOnce never does", async () => {
  function* busy(ms: number, steps: number) {
    for (let i = 0; i < steps; i++) {
      const end = performance.now() + ms;
      while (performance.now() < end);
      yield;
    }
    return steps;
  }
  let ticks = 0;
  const tick = setInterval(() => ticks++, 0);
  try {
    assert.equal(runAtOnce(busy(1, 10)), 10);
    assert.equal(ticks, 0, "nothing else ran during runAtOnce");
    assert.equal(await runSliced(busy(1, 40), breather(4)), 40);
    assert.ok(ticks >= 3, `a timer ran ${ticks} times during 40 ms of work in 4 ms slices`);
  } finally {
    clearInterval(tick);
  }
});

test("StatRows sums each counter over CPUs exactly below 2^53, from a dump's bytes", () => {
  const ncpu = 4, vs = 16 * ncpu, ks = 8;
  const entries: Array<[number, number, bigint[], bigint[]]> = [
    [7, 1, [1n, 2n, 3n, 4n], [100n, 200n, 300n, 400n]],
    [8, 3, [2n ** 32n + 5n, 2n ** 32n - 1n, 0n, 1n], [2n ** 40n, 2n ** 41n, 2n ** 33n + 7n, 0n]],
    [0, 40, [2n ** 50n, 2n ** 50n, 2n ** 50n, 2n ** 50n - 1n], [0n, 0n, 0n, 0n]], // a counter this build does not know
  ];
  const keys = Buffer.alloc(entries.length * ks), values = Buffer.alloc(entries.length * vs);
  entries.forEach(([id, c, p, b], i) => {
    keys.writeUInt32LE(id, i * ks);
    keys.writeUInt32LE(c, i * ks + 4);
    for (let cpu = 0; cpu < ncpu; cpu++) {
      values.writeBigUInt64LE(p[cpu]!, i * vs + cpu * 16);
      values.writeBigUInt64LE(b[cpu]!, i * vs + cpu * 16 + 8);
    }
  });
  const rows = new StatRows(1); // grows
  rows.addDump(keys, values, entries.length, ks, vs, ncpu);
  assert.equal(rows.length, 3);
  entries.forEach(([id, c, p, b], i) => {
    assert.equal(rows.peerIds[i], id);
    assert.equal(rows.counters[i], c);
    assert.equal(BigInt(rows.packets[i]!), p.reduce((x, y) => x + y), `row ${i} packets`);
    assert.equal(BigInt(rows.bytes[i]!), b.reduce((x, y) => x + y), `row ${i} bytes`);
  });
  assert.equal(counterName(40), "counter_40");
  assert.equal(counterNumber("counter_40"), 40);
  assert.equal(counterNumber("encap_fast"), COUNTERS.indexOf("encap_fast"));
  assert.throws(() => counterNumber("nonsense"), /not in enum twill_counter/);
});

test("ExactSum stays exact past 2^53, where adding Numbers would round", () => {
  const s = new ExactSum();
  const big = Number.MAX_SAFE_INTEGER - 2;
  for (let i = 0; i < 5; i++) s.add(big);
  s.add(3);
  assert.equal(s.value, 5n * BigInt(big) + 3n);
  assert.notEqual(BigInt(big * 5 + 3), s.value, "(the same sum in Numbers is off)");
});

test("a Family writes exactly what prom-client writes for the same samples, in registration order", async () => {
  const labelNames = ["peer_subnet", "note"] as const;
  const samples: Array<[string[], number]> = [
    [["10.0.1.0/24", "plain"], 0],
    [["10.0.2.0/24", 'quote " and backslash \\ and\nnewline'], 1.5],
    [["fd00::/64", ""], 1e21],
    [["10.0.3.0/24", "big"], 2 ** 53 + 2],
    [["10.0.4.0/24", "nan"], NaN],
    [["10.0.5.0/24", "inf"], Infinity],
  ];
  const help = "Help with a backslash \\ and a\nnewline, \"quotes\".";
  // prom-client: a gauge, a counter set through inc(), another gauge.
  const theirs = new client.Registry();
  new client.Gauge({ name: "a_first", help: "First.", registers: [theirs] }).set(1);
  const c = new client.Gauge({ name: "b_family_total", help, labelNames, registers: [theirs] });
  for (const [l, v] of samples) c.set({ peer_subnet: l[0]!, note: l[1]! }, v);
  new client.Gauge({ name: "c_last", help: "Last.", labelNames: ["x"], registers: [theirs] }).set({ x: "y" }, 2);
  // Ours: the same, the middle one a Family.
  const ours = new Registry();
  new client.Gauge({ name: "a_first", help: "First.", registers: [ours] }).set(1);
  let s: Samples | undefined;
  const f = new Family({ name: "b_family_total", help, type: "gauge", labelNames, registers: [ours], collect: async () => s });
  s = f.samples();
  for (const [l, v] of samples) s.add(l, v);
  new client.Gauge({ name: "c_last", help: "Last.", labelNames: ["x"], registers: [ours] }).set({ x: "y" }, 2);
  assert.equal(await ours.metrics(), await theirs.metrics());
  assert.deepEqual(await ours.getMetricsAsJSON(), await theirs.getMetricsAsJSON(), "get() as prom-client's");
  // No samples: HELP and TYPE only, as prom-client writes a metric without series.
  s = undefined;
  c.reset();
  assert.equal(await ours.metrics(), await theirs.metrics());
  assert.equal(formatValue(-Infinity), "-Inf");
  assert.throws(() => new Family({ name: "bad name", help: "x", type: "gauge", labelNames: [], registers: [], collect: async () => undefined }), /not a metric name/);
});

test("an OpenMetrics registry formats a Family through prom-client", async () => {
  const r = new Registry();
  r.setContentType(client.Registry.OPENMETRICS_CONTENT_TYPE as never);
  let s: Samples | undefined;
  const f = new Family({ name: "x_total", help: "X.", type: "counter", labelNames: ["a"], registers: [r], collect: async () => s });
  s = f.samples();
  s.add(["1"], 3);
  assert.match(await r.metrics(), /^x_total\{a="1"\} 3$/m);
  assert.match(await r.metrics(), /# EOF\n$/);
});

/** Random peers and counters: both paths, own/cluster entries, ids shared or unknown, drops, unknown counters, many ties. */
function randomNode(seed: number, n: number): { peers: PeerEntry[]; table: StatTable; rows: StatRows } {
  const r = rng(seed);
  const peers: PeerEntry[] = [{ prefix: "10.0.0.0/24", kind: "local", vni: 0, id: 0 }, { prefix: "10.0.0.0/8", kind: "cluster", vni: 0, id: 0 }];
  for (let i = 1; i <= n; i++) {
    const kind = r(4) === 0 ? "direct" : "vxlan";
    // Some entries share an id (0: counters of no peer); the rest have their own.
    const id = r(20) === 0 ? r(3) : i;
    // Subnets from a small space: some peers share one, and ties in bytes reach the names.
    peers.push({ prefix: `10.${1 + r(3)}.${r(256)}.${i % 7}/32`, kind, remote: `192.168.${i >> 8}.${i & 255}`, vni: 1, id });
  }
  const table: StatTable = new Map();
  const tuples: Array<[number, string, number, number]> = [];
  const names = [...COUNTERS, "counter_77"];
  for (let id = 0; id <= n + 5; id++) {
    if (r(3) === 0) continue; // idle: no counters
    const used = new Set<string>();
    for (let k = r(5); k > 0; k--) {
      const name = names[r(names.length)]!;
      if (used.has(name)) continue;
      used.add(name);
      const packets = r(4) === 0 ? 0 : r(1000), bytes = packets * (r(3) === 0 ? 100 : 1 + r(1500));
      tuples.push([id, name, packets, bytes]);
      if (!table.has(id)) table.set(id, new Map());
      table.get(id)!.set(name, { packets: BigInt(packets), bytes: BigInt(bytes) });
    }
  }
  return { peers, table, rows: StatRows.of(tuples) };
}

test("the scrape-time ranking (peerRowsSteps) gives what capPeers(peerTraffic(...)) gives", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    for (const [n, limit] of [[0, 5], [3, 5], [60, 5], [400, 50], [3000, 500]] as const) {
      const { peers, table, rows } = randomNode(seed * 1000 + n, n);
      const want = capPeers(peerTraffic(peers, table), limit);
      const got = runAtOnce(peerRowsSteps(peers, rows, limit));
      assert.deepEqual(got, want, `seed ${seed}, ${n} peers, limit ${limit}`);
    }
  }
});

test("node-wide totals: the same keys again are compared row by row; a restarted or vanished entry stays counted", () => {
  const m = new MonotonicTotals();
  const big = Number.MAX_SAFE_INTEGER - 10;
  m.update(StatRows.of([[1, "encap", 10, big], [2, "encap", 5, 50], [0, "miss", 1, 1]]));
  // Same keys, same order: entry 2 restarted from 0.
  let t = m.update(StatRows.of([[1, "encap", 11, big + 1], [2, "encap", 1, 10], [0, "miss", 1, 1]]));
  assert.deepEqual(t.get("encap"), { packets: 11n + 5n + 1n, bytes: BigInt(big) + 1n + 50n + 10n }, "exact past 2^53");
  // Other keys: entry 2 gone, an unknown counter appears.
  t = m.update(StatRows.of([[1, "encap", 12, big + 1], [0, "miss", 1, 1], [3, "counter_90", 4, 4]]));
  assert.deepEqual(t.get("encap"), { packets: 12n + 5n + 1n, bytes: BigInt(big) + 1n + 50n + 10n });
  assert.deepEqual([...t.keys()].slice(0, COUNTERS.length), [...COUNTERS], "every counter of the enum first, in order");
  assert.deepEqual(t.get("counter_90"), { packets: 4n, bytes: 4n });
});

/** A map that dumps `keys`/`values` (count entries) as BpfMap.dump and dumpSliced do: chunks of `chunk`, one after the other. */
function fakeMap(name: string, ks: number, vs: number, keys: Buffer, values: Buffer, count: number, chunk = 4096): BpfMap {
  const chunks = Array.from({ length: Math.ceil(count / chunk) }, (_, c) => {
    const at = c * chunk, n = Math.min(chunk, count - at);
    return [keys.subarray(at * ks, (at + n) * ks), values.subarray(at * vs, (at + n) * vs), n] as const;
  });
  return {
    name, keySize: ks, lookupSize: vs, maxEntries: 1 << 20,
    dump: (cb: (k: Buffer, v: Buffer, n: number) => void) => {
      for (const [k, v, n] of chunks) cb(k, v, n);
    },
    dumpSliced: async (cb: (k: Buffer, v: Buffer, n: number) => Promise<void>) => {
      for (const [k, v, n] of chunks) await cb(k, v, n);
    },
    dumpAsync: async () => {
      await new Promise<void>((r) => setImmediate(r));
      return { keys: keys.subarray(0, count * ks), values: values.subarray(0, count * vs), count };
    },
  } as unknown as BpfMap;
}

test("readDataplaneStatsSliced reads peers (as readPeerEntries decodes them) and counters from a dump, yielding", async () => {
  const n = 6000, ncpu = numPossibleCpus();
  const pk = Buffer.alloc(n * LPM_KEY.size), pv = Buffer.alloc(n * PEER.size);
  for (let i = 0; i < n; i++) {
    const v6 = i % 10 === 0;
    encodeLpmKey(parsePrefix(v6 ? `fd00:${i.toString(16)}::/64` : `10.${i >> 8}.${i & 255}.0/24`), pk, i * LPM_KEY.size);
    encodePeer({ kind: i % 3 ? PeerKind.Vxlan : PeerKind.Direct, remote: parseIP(v6 ? `fd01::${i.toString(16)}` : `192.168.${i >> 8}.${i & 255}`), vtepMAC: i % 3 ? `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}` : undefined, vni: 1, id: i + 1 }, pv, i * PEER.size);
  }
  const vs = Math.ceil(STAT.size / 8) * 8 * ncpu;
  const sk = Buffer.alloc(2 * n * 8), sv = Buffer.alloc(2 * n * vs);
  for (let e = 0; e < 2 * n; e++) {
    sk.writeUInt32LE((e >> 1) + 1, e * 8);
    sk.writeUInt32LE(e & 1 ? 3 : 1, e * 8 + 4);
    for (let c = 0; c < ncpu; c++) {
      sv.writeBigUInt64LE(BigInt(e + c), e * vs + c * 16);
      sv.writeBigUInt64LE(BigInt((e + c) * 1000), e * vs + c * 16 + 8);
    }
  }
  const maps = {
    twill_peers: fakeMap("twill_peers", LPM_KEY.size, PEER.size, pk, pv, n),
    twill_stats: fakeMap("twill_stats", 8, vs, sk, sv, 2 * n),
    twill_remotes: fakeMap("twill_remotes", 20, 8, Buffer.alloc(20 * 7), Buffer.alloc(8 * 7), 7, 3),
  };
  let ticks = 0;
  const tick = setInterval(() => ticks++, 0);
  let yields = 0;
  const breathe = breather(0); // yields at every chance
  const s = await readDataplaneStatsSliced(maps, async (reserve) => {
    yields++;
    await breathe(reserve);
  }).finally(() => clearInterval(tick));
  assert.ok(yields > 10 && ticks > 0, `yielded ${yields} times, a timer ran ${ticks} times`);
  const want = readPeerEntries(maps.twill_peers);
  assert.equal(s.peers.length, n);
  for (let i = 0; i < n; i += 7) {
    const p = s.peers[i]!, w = want[i]!;
    assert.deepEqual({ prefix: p.prefix, kind: p.kind, remote: p.remote, vtepMAC: p.vtepMAC, vni: p.vni, id: p.id }, { ...w, vtepMAC: w.vtepMAC }, `peer ${i}`);
  }
  assert.equal(s.counters.length, 2 * n);
  assert.equal(s.counters.packets[5], ncpu * 5 + (ncpu * (ncpu - 1)) / 2);
  assert.deepEqual(s.maps, [
    { name: "twill_peers", entries: n, capacity: 1 << 20 },
    { name: "twill_stats", entries: 2 * n, capacity: 1 << 20 },
    { name: "twill_remotes", entries: 7, capacity: 1 << 20 },
  ]);
});
