/**
 * EtcdSource against a real etcd (test/lib/etcd.ts), on loopback:
 *
 *   this process ── EtcdSource ×N ──JSON gateway (/v3/...)──▶ etcd 127.0.0.1:<port>  (/tmp/et<hex>/data)
 *                └─ etcdctl (a stock flanneld's writes) ──────────▶      "
 *   + a second etcd with TLS and --client-cert-auth for the TLS test.
 *
 * Each test uses its own key prefix (/t<n>/network), so they share one
 * server; leases are written with etcdctl in flannel's exact JSON, as a
 * stock flanneld would write them. Both servers and their directories are
 * removed in after() and, failing that, at process exit.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { EtcdSource, type EtcdSourceOptions } from "../../src/lease/etcdsource.js";
import { EtcdClient } from "../../src/lease/etcdclient.js";
import type { LeaseEvent, ListResult } from "../../src/lease/source.js";
import { findOverlaps } from "../../src/lease/allocate.js";
import { isTwillError, type TwillError } from "../../src/errors.js";
import { formatIP, formatPrefix, parseIP } from "../../src/net/ip.js";
import { EtcdServer } from "../lib/etcd.js";
import { sleep, waitFor } from "../lib/exec.js";

const FLANNEL_LEASE = (ip: string, mac: string) =>
  `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
const CONFIG = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`;
const mac = (i: number) => `02:00:00:00:00:${i.toString(16).padStart(2, "0")}`;
const vx = (i: number) => ({ vni: 1, vtepMAC: mac(i) });

/** Records what a watch delivers; with relist, answers onResync with list() as the daemon does. */
class Recorder {
  readonly events: LeaseEvent[] = [];
  readonly errors: TwillError[] = [];
  readonly lists: ListResult[] = [];
  batches = 0;
  resyncs = 0;
  readonly stop: () => void;
  constructor(src: EtcdSource, relist = true) {
    this.stop = src.watch({
      onEvents: (ev) => {
        this.events.push(...ev);
        this.batches++;
      },
      onResync: () => {
        this.resyncs++;
        if (relist) src.list().then((r) => this.lists.push(r), (e: TwillError) => this.errors.push(e));
      },
      onError: (e) => this.errors.push(e),
    });
  }
  has(type: "put" | "delete", key: string): boolean {
    return this.events.some((e) => e.type === type && e.key === key);
  }
  waitFor(type: "put" | "delete", key: string, timeoutMs = 5000): Promise<void> {
    return waitFor(() => this.has(type, key), { what: `a ${type} event for ${key} (got ${JSON.stringify(this.events.map((e) => [e.type, e.key]))})`, timeoutMs, intervalMs: 20 });
  }
}

describe("EtcdSource with a real etcd", () => {
  let etcd: EtcdServer;
  let n = 0;
  before(async () => {
    // Short-lived auth tokens, so the auth test sees one expire.
    etcd = await EtcdServer.start({ authTokenTTLSeconds: 2 });
  });
  after(async () => {
    await etcd?.destroy();
  });

  /** A fresh key prefix holding `config`. */
  async function network(config = CONFIG): Promise<string> {
    const prefix = `/t${++n}/network`;
    if (config) await etcd.etcdctl(["put", `${prefix}/config`, config]);
    return prefix;
  }
  function source(t: TestContext, prefix: string, o: Partial<EtcdSourceOptions> = {}): EtcdSource {
    const s = new EtcdSource({ endpoints: [etcd.endpoint], prefix, ...o });
    t.after(() => s.close());
    return s;
  }
  const put = (key: string, value: string, ...flags: string[]) => etcd.etcdctl(["put", ...flags, key, value]);
  /** What a source that never listed before says (one page). */
  async function freshList(prefix: string): Promise<ListResult> {
    const f = new EtcdSource({ endpoints: [etcd.endpoint], prefix });
    try {
      return await f.list();
    } finally {
      await f.close();
    }
  }

  /** A key's value and etcd lease id (decimal; etcdctl's JSON has it as a number too big for a double). */
  async function getKey(key: string): Promise<{ value: string; lease: bigint } | undefined> {
    const text = (await etcd.etcdctl(["get", key, "-w", "json"])).stdout;
    const kv = (JSON.parse(text) as { kvs?: { value: string }[] }).kvs?.[0];
    if (!kv) return undefined;
    const lease = /"lease":(\d+)/.exec(text)?.[1];
    return { value: Buffer.from(kv.value, "base64").toString("utf8"), lease: BigInt(lease ?? 0) };
  }
  /** `etcdctl lease timetolive`: granted TTL and remaining seconds. */
  async function timeToLive(id: bigint): Promise<{ granted: number; remaining: number }> {
    const out = (await etcd.etcdctl(["lease", "timetolive", id.toString(16)])).stdout;
    const m = /granted with TTL\((\d+)s\), remaining\((-?\d+)s\)/.exec(out);
    if (!m) throw new Error(`unexpected etcdctl output: ${out}`);
    return { granted: Number(m[1]), remaining: Number(m[2]) };
  }

  test("readConfig: parsed; missing → ERR_STORE (retryable); invalid → ERR_INVALID_CONFIG", async (t) => {
    const good = await network(`{"Network":"10.5.0.0/16","SubnetLen":20,"Backend":{"Type":"vxlan","VNI":4}}`);
    const c = await source(t, good).readConfig();
    assert.equal(formatPrefix(c.network!), "10.5.0.0/16");
    assert.equal(c.subnetLen, 20);
    assert.equal(c.backend.type === "vxlan" && c.backend.vni, 4);
    const missing = await network("");
    await assert.rejects(source(t, missing).readConfig(), (e) => isTwillError(e, "ERR_STORE") && e.retryable && /not found/.test(e.message));
    const bad = await network(`{"Network":"10.5.0.0/16","SubnetLen":40}`);
    await assert.rejects(source(t, bad).readConfig(), (e) => isTwillError(e, "ERR_INVALID_CONFIG") && /SubnetLen 40/.test(e.message));
    // a trailing slash in --etcd-prefix is cleaned as flannel's path.Join does
    assert.equal((await source(t, good + "/").readConfig()).subnetLen, 20);
  });

  test("acquire: a new subnet, flannel's JSON, attached to an etcd lease with a 24 h TTL", async (t) => {
    const prefix = await network();
    const s = source(t, prefix);
    const lease = await s.acquire({ publicIP: parseIP("192.168.50.1"), backendData: vx(1) });
    assert.match(lease.key, /^10\.244\.\d+\.0-24$/);
    assert.ok(lease.expiration && Math.abs(lease.expiration - Date.now() - 86_400_000) < 60_000, "expiration ≈ now + 24 h");
    const kv = await getKey(`${prefix}/subnets/${lease.key}`);
    assert.ok(kv, "the key exists");
    assert.equal(kv.value, FLANNEL_LEASE("192.168.50.1", mac(1)));
    assert.notEqual(kv.lease, 0n, "attached to an etcd lease");
    const ttl = await timeToLive(kv.lease);
    assert.equal(ttl.granted, 86_400);
    assert.ok(ttl.remaining > 86_000, `remaining ${ttl.remaining}`);
    const listed = await s.list();
    assert.deepEqual(listed.leases.map((l) => l.key), [lease.key]);
    assert.equal(listed.leases[0]!.expiration, lease.expiration, "our own lease carries its expiry");
  });

  test("acquire: the lease of our public IP is reused after a restart (same subnet, new backend data, fresh etcd lease)", async (t) => {
    const prefix = await network();
    const first = source(t, prefix);
    const a = await first.acquire({ publicIP: parseIP("192.168.50.2"), backendData: vx(2) });
    const before = await getKey(`${prefix}/subnets/${a.key}`);
    await first.close();
    assert.ok(await getKey(`${prefix}/subnets/${a.key}`), "close() leaves the lease in place");
    const second = source(t, prefix);
    const b = await second.acquire({ publicIP: parseIP("192.168.50.2"), backendData: vx(3) });
    assert.equal(b.key, a.key);
    const after = await getKey(`${prefix}/subnets/${a.key}`);
    assert.equal(after!.value, FLANNEL_LEASE("192.168.50.2", mac(3)));
    assert.notEqual(after!.lease, before!.lease, "re-put with a new etcd lease");
    assert.equal((await timeToLive(after!.lease)).granted, 86_400);

    // a lease written by a stock flanneld for our IP is ours too
    await put(`${prefix}/subnets/10.244.200.0-24`, FLANNEL_LEASE("192.168.50.3", "aa:bb:cc:dd:ee:03"));
    const c = await source(t, prefix).acquire({ publicIP: parseIP("192.168.50.3"), backendData: vx(4) });
    assert.equal(c.key, "10.244.200.0-24");
    assert.equal((await getKey(`${prefix}/subnets/${c.key}`))!.value, FLANNEL_LEASE("192.168.50.3", mac(4)));
  });

  test("acquire: the previous subnet is honoured when free and in range, else a new one", async (t) => {
    const prefix = await network();
    const prev = (s: string) => ({ subnet: { ip: parseIP(s), len: 24 } });
    const a = await source(t, prefix).acquire({ publicIP: parseIP("192.168.50.4"), backendData: vx(4), previous: prev("10.244.77.0") });
    assert.equal(a.key, "10.244.77.0-24");
    const b = await source(t, prefix).acquire({ publicIP: parseIP("192.168.50.5"), backendData: vx(5), previous: prev("10.244.77.0") });
    assert.notEqual(b.key, "10.244.77.0-24", "taken by someone else");
    const c = await source(t, prefix).acquire({ publicIP: parseIP("192.168.50.6"), backendData: vx(6), previous: prev("10.99.1.0") });
    assert.match(c.key, /^10\.244\./, "outside the network: ignored");
  });

  test("acquire: 6 sources at once, never the same subnet (IPv4, and dual stack)", async (t) => {
    // 7 usable /30s (the first is never used); one is held by a stock flanneld: 6 free for 6 nodes.
    const v4 = await network(`{"Network":"10.250.0.0/27","SubnetLen":30,"Backend":{"Type":"vxlan"}}`);
    await put(`${v4}/subnets/10.250.0.4-30`, FLANNEL_LEASE("192.168.60.100", "aa:bb:cc:dd:ee:64"));
    let races = 0;
    const onLog = (_l: string, m: string) => { if (m.startsWith("lost a race")) races++; };
    const got = await Promise.all([1, 2, 3, 4, 5, 6].map((i) =>
      source(t, v4, { onLog }).acquire({ publicIP: parseIP(`192.168.60.${i}`), backendData: vx(i) })));
    assert.equal(new Set(got.map((l) => l.key)).size, 6, `distinct: ${got.map((l) => l.key).join(" ")}`);
    const all = await source(t, v4).list();
    assert.equal(all.leases.length, 7);
    assert.deepEqual(findOverlaps(all.leases), []);

    const ds = await network(`{"Network":"10.251.0.0/27","SubnetLen":30,"EnableIPv6":true,"IPv6Network":"fd00:251::/123","IPv6SubnetLen":126,"Backend":{"Type":"vxlan"}}`);
    await put(`${ds}/subnets/10.251.0.4-30&fd00:251::4-126`,
      `{"PublicIP":"192.168.61.100","PublicIPv6":"fd00:61::100","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:65"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:65"}}`);
    const races4 = races;
    const got6 = await Promise.all([1, 2, 3, 4, 5, 6].map((i) =>
      source(t, ds, { onLog }).acquire({ publicIP: parseIP(`192.168.61.${i}`), publicIPv6: parseIP(`fd00:61::${i}`), backendData: vx(i), backendV6Data: vx(i) })));
    const all6 = await source(t, ds).list();
    assert.equal(all6.leases.length, 7, all6.leases.map((l) => l.key).join(" "));
    assert.ok(got6.every((l) => /^10\.251\.0\.\d+-30&fd00:251::[0-9a-f]*-126$/.test(l.key)), got6.map((l) => l.key).join(" "));
    assert.deepEqual(findOverlaps(all6.leases).map(([x, y]) => `${x.key} ~ ${y.key}`), [], "no subnet of either family shared");
    console.log(`6 concurrent acquisitions: ${races4} lost races (IPv4), ${races - races4} (dual stack), each retried`);
  });

  test("watch: put/delete events for etcdctl writes, from right after the list (nothing lost in between)", async (t) => {
    const prefix = await network();
    const s = source(t, prefix);
    await put(`${prefix}/subnets/10.244.8.0-24`, FLANNEL_LEASE("192.168.50.98", "aa:bb:cc:dd:ee:00"));
    const listed = await s.list();
    assert.deepEqual(listed.leases.map((l) => l.key), ["10.244.8.0-24"]);
    // written after the list but before watch(): must still be delivered
    await put(`${prefix}/subnets/10.244.9.0-24`, FLANNEL_LEASE("192.168.50.99", "aa:bb:cc:dd:ee:01"));
    const rec = new Recorder(s);
    t.after(rec.stop);
    await rec.waitFor("put", "10.244.9.0-24");
    const ev = rec.events.find((e) => e.key === "10.244.9.0-24")!;
    assert.equal(formatIP(ev.lease!.publicIP!), "192.168.50.99");
    assert.equal(ev.lease!.backendData!.vtepMAC, "aa:bb:cc:dd:ee:01");
    assert.ok(!rec.has("put", "10.244.8.0-24"), "nothing from before the list");

    await put(`${prefix}/subnets/10.244.10.0-24`, FLANNEL_LEASE("192.168.50.100", "01:00:5e:00:00:01"));
    await rec.waitFor("put", "10.244.10.0-24");
    const bad = rec.events.find((e) => e.key === "10.244.10.0-24")!;
    assert.ok(!bad.lease && isTwillError(bad.error, "ERR_INVALID_LEASE") && /not a unicast MAC/.test(bad.error.message), "a bad value is an event with an error");
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.9.0-24`]);
    await rec.waitFor("delete", "10.244.9.0-24");
    // one transaction, one batch
    await etcd.etcdctl(["txn"], {
      input: `\nput ${prefix}/subnets/10.244.11.0-24 ${JSON.stringify(FLANNEL_LEASE("192.168.50.101", "aa:bb:cc:dd:ee:02"))}\ndel ${prefix}/subnets/10.244.8.0-24\n\n\n`, // no compares; two puts; no failure ops
    });
    await rec.waitFor("delete", "10.244.8.0-24");
    const i = rec.events.findIndex((e) => e.key === "10.244.11.0-24");
    assert.equal(rec.events[i + 1]?.key, "10.244.8.0-24", "the transaction's events in order");
    assert.equal(rec.resyncs, 0);
    assert.deepEqual(rec.errors, []);
  });

  test("watch: a lease whose etcd lease expires is reported deleted", async (t) => {
    const prefix = await network();
    const s = source(t, prefix);
    await s.list();
    const rec = new Recorder(s);
    t.after(rec.stop);
    const grant = (await etcd.etcdctl(["lease", "grant", "2"])).stdout;
    const id = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
    assert.ok(id, grant);
    await put(`${prefix}/subnets/10.244.12.0-24`, FLANNEL_LEASE("192.168.50.102", "aa:bb:cc:dd:ee:03"), `--lease=${id}`);
    await rec.waitFor("put", "10.244.12.0-24");
    const t0 = Date.now();
    await rec.waitFor("delete", "10.244.12.0-24", 8000);
    console.log(`a 2 s etcd lease expired → delete event after ${Date.now() - t0} ms`);
  });

  test("watch: compaction past the start revision → onResync, re-list, then events again", async (t) => {
    const prefix = await network();
    const s = source(t, prefix);
    await s.list(); // revision R
    await put(`${prefix}/subnets/10.244.13.0-24`, FLANNEL_LEASE("192.168.50.103", "aa:bb:cc:dd:ee:04"));
    await put(`${prefix}/subnets/10.244.14.0-24`, FLANNEL_LEASE("192.168.50.104", "aa:bb:cc:dd:ee:05"));
    await etcd.etcdctl(["compact", String(await etcd.revision())]); // R + 2 stays; R + 1 is gone
    const rec = new Recorder(s);
    t.after(rec.stop);
    await waitFor(() => rec.lists.length > 0, { what: "a re-list after onResync" });
    assert.equal(rec.resyncs, 1);
    assert.deepEqual(rec.lists[0]!.leases.map((l) => l.key).sort(), ["10.244.13.0-24", "10.244.14.0-24"], "the re-list has what the watch missed");
    await put(`${prefix}/subnets/10.244.15.0-24`, FLANNEL_LEASE("192.168.50.105", "aa:bb:cc:dd:ee:06"));
    await rec.waitFor("put", "10.244.15.0-24");
    assert.ok(!rec.has("put", "10.244.13.0-24"), "events come after the re-list's revision");
    assert.deepEqual(rec.errors, [], "compaction is not an error");

    // A daemon that does not list in time: the watch starts anyway, from a revision before onResync.
    const lazy = source(t, prefix, { resyncWaitMs: 300 });
    await lazy.list();
    await put(`${prefix}/subnets/10.244.16.0-24`, FLANNEL_LEASE("192.168.50.106", "aa:bb:cc:dd:ee:07"));
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.16.0-24`]);
    await etcd.etcdctl(["compact", String(await etcd.revision())]); // compacting at X keeps X: two writes put R + 1 out of reach
    const rec2 = new Recorder(lazy, false);
    t.after(rec2.stop);
    await waitFor(() => rec2.resyncs > 0, { what: "onResync" });
    await put(`${prefix}/subnets/10.244.17.0-24`, FLANNEL_LEASE("192.168.50.107", "aa:bb:cc:dd:ee:08"));
    await rec2.waitFor("put", "10.244.17.0-24");
  });

  test("renewal: a 3 s lease renewed 1.5 s before expiry outlives its TTL; a deleted lease is not brought back", async (t) => {
    const prefix = await network();
    const logs: string[] = [];
    const s = source(t, prefix, { leaseTTLSeconds: 3, renewMarginSeconds: 1.5, onLog: (_l, m) => logs.push(m) });
    const own = await s.acquire({ publicIP: parseIP("192.168.50.7"), backendData: vx(7) });
    const key = `${prefix}/subnets/${own.key}`;
    const first = await getKey(key);
    assert.equal((await timeToLive(first!.lease)).granted, 3);
    await s.list();
    const rec = new Recorder(s);
    t.after(rec.stop);
    await sleep(7000);
    const now = await getKey(key);
    assert.ok(now, "still there after more than twice its TTL");
    assert.notEqual(now.lease, first!.lease, "attached to a newer etcd lease");
    assert.ok((await timeToLive(now.lease)).remaining > 0);
    assert.equal(now.value, FLANNEL_LEASE("192.168.50.7", mac(7)));
    assert.ok(logs.filter((m) => m === "lease renewed").length >= 3, logs.join("; "));
    assert.ok(!rec.has("delete", own.key));

    await etcd.etcdctl(["del", key]);
    await rec.waitFor("delete", own.key);
    await sleep(2500);
    assert.equal(await getKey(key), undefined, "renewal did not resurrect it");
    assert.ok(logs.includes("our lease is gone from etcd; not renewing it"), logs.join("; "));
  });

  test("writeLease: puts our lease back, on our etcd lease", async (t) => {
    const prefix = await network();
    const s = source(t, prefix);
    const own = await s.acquire({ publicIP: parseIP("192.168.50.8"), backendData: vx(8) });
    const key = `${prefix}/subnets/${own.key}`;
    const mine = (await getKey(key))!.lease;
    await put(key, FLANNEL_LEASE("192.168.50.200", "aa:bb:cc:dd:ee:c8")); // someone overwrites it, without a lease
    await s.writeLease(own);
    const kv = await getKey(key);
    assert.equal(kv!.value, FLANNEL_LEASE("192.168.50.8", mac(8)));
    assert.equal(kv!.lease, mine);
    await assert.rejects(s.writeLease({ ...own, key: "10.244.250.0-24" }), (e) => isTwillError(e, "ERR_LEASE_CONFLICT"));
  });

  test("etcd down and back: ERR_STORE meanwhile, watch errors, renewal retried, then resync and events", async (t) => {
    const prefix = await network();
    const logs: string[] = [];
    const s = source(t, prefix, { leaseTTLSeconds: 10, renewMarginSeconds: 8, renewRetryMs: 500, callTimeoutMs: 3000, onLog: (_l, m) => logs.push(m) });
    const own = await s.acquire({ publicIP: parseIP("192.168.50.9"), backendData: vx(9) });
    await s.list();
    const rec = new Recorder(s);
    t.after(rec.stop);
    await put(`${prefix}/subnets/10.244.18.0-24`, FLANNEL_LEASE("192.168.50.108", "aa:bb:cc:dd:ee:09"));
    await rec.waitFor("put", "10.244.18.0-24");

    await etcd.stop();
    const t0 = Date.now();
    await assert.rejects(s.list(), (e) => isTwillError(e, "ERR_STORE") && e.retryable);
    await assert.rejects(s.readConfig(), (e) => isTwillError(e, "ERR_STORE") && e.retryable);
    const failFast = Date.now() - t0;
    await waitFor(() => rec.errors.length > 0, { what: "the watch to report the loss" });
    await sleep(3000); // a renewal falls due (every 2 s) while etcd is down
    const resyncsBefore = rec.resyncs;
    await etcd.start();
    const t1 = Date.now();
    await waitFor(() => rec.resyncs > resyncsBefore && rec.lists.length > 0, { what: "a resync after etcd came back", timeoutMs: 20_000 });
    const recovered = Date.now() - t1;
    await put(`${prefix}/subnets/10.244.19.0-24`, FLANNEL_LEASE("192.168.50.109", "aa:bb:cc:dd:ee:0a"));
    await rec.waitFor("put", "10.244.19.0-24");
    assert.ok(rec.lists.at(-1)!.leases.some((l) => l.key === own.key), "our lease survived");
    assert.ok(rec.errors.every((e) => isTwillError(e, "ERR_STORE") && e.retryable), rec.errors.map((e) => e.message).join("; "));
    const failed = logs.findIndex((m) => m.startsWith("renewing our lease failed"));
    assert.ok(failed >= 0, `a renewal failed while etcd was down: ${logs.join("; ")}`);
    await waitFor(() => logs.slice(failed).includes("lease renewed"), { what: "a renewal after etcd came back" });
    console.log(`etcd down: list+readConfig failed in ${failFast} ms; ${rec.errors.length} watch errors; resync ${recovered} ms after etcd was healthy again`);
  });


  test("several endpoints: an unreachable one is skipped, for calls and the watch", async (t) => {
    const prefix = await network();
    const dead = "http://127.0.0.1:1";
    const s = source(t, prefix, { endpoints: [dead, etcd.endpoint, dead], callTimeoutMs: 2000 });
    assert.equal((await s.readConfig()).subnetLen, 24);
    const own = await s.acquire({ publicIP: parseIP("192.168.50.30"), backendData: vx(30) });
    await s.list();
    const rec = new Recorder(s);
    t.after(rec.stop);
    await put(`${prefix}/subnets/10.244.230.0-24`, FLANNEL_LEASE("192.168.50.130", "aa:bb:cc:dd:ee:1e"));
    await rec.waitFor("put", "10.244.230.0-24");
    assert.ok(!rec.has("put", own.key), `our own put came as an event: ${JSON.stringify(rec.events.map((e) => [e.type, e.key]))}, ${rec.resyncs} resyncs, errors ${rec.errors.map((e) => e.message).join("; ")}`);
  });

  test("lists read only what changed since the last; a delete makes a keys-only read of every key that reads and parses no value it had; pages meet exactly", async (t) => {
    const prefix = await network();
    const lease = (i: number, gen = 0) => put(`${prefix}/subnets/10.244.${100 + i}.0-24`, FLANNEL_LEASE(`192.168.70.${i}`, mac(i + gen * 50)));
    for (let i = 1; i <= 12; i++) await lease(i);
    await put(`${prefix}/subnets/10.244.99.0-24`, `{"PublicIP":"192.168.70.999"}`); // not a lease: an error entry
    const s = source(t, prefix, { listPageSize: 5 });
    const fresh = () => freshList(prefix);
    const first = await s.list();
    assert.equal(first.leases.length, 12);
    assert.deepEqual(first.errors.map((e) => e.key), ["10.244.99.0-24"]);
    assert.deepEqual(first, await fresh(), "3 pages of 5 read as one");
    assert.equal(s.listTransport, "grpc");
    assert.deepEqual(s.counts, { fullLists: 1, changeLists: 0, keyLists: 0, changeValueReads: 0, parsed: 13 });

    await lease(13);
    await lease(14);
    await lease(1, 1); // changed
    const second = await s.list();
    assert.deepEqual(second, await fresh());
    assert.equal(second.leases.find((l) => l.key === "10.244.101.0-24")!.backendData!.vtepMAC, mac(51));
    assert.deepEqual(second.leases.map((l) => l.key), second.leases.map((l) => l.key).sort(), "key order");
    assert.deepEqual(s.counts, { fullLists: 1, changeLists: 1, keyLists: 0, changeValueReads: 1, parsed: 16 }, "only the 3 changed keys read and parsed");
    assert.deepEqual(await s.list(), second);
    assert.deepEqual(s.counts, { fullLists: 1, changeLists: 2, keyLists: 0, changeValueReads: 1, parsed: 16 }, "nothing changed: no value read, nothing parsed");

    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.105.0-24`]);
    const third = await s.list();
    assert.deepEqual(third, await fresh());
    assert.ok(!third.leases.some((l) => l.key === "10.244.105.0-24"));
    assert.deepEqual(s.counts, { fullLists: 1, changeLists: 3, keyLists: 1, changeValueReads: 1, parsed: 16 }, "a delete: every key read (keys only, in pages), no value read, nothing parsed");

    // A change and a delete (a churning store's re-list): the changes are read first, the delete
    // makes the keys-only read of every key; only the changed values are read and parsed, once.
    await lease(2, 1);
    await lease(3, 1);
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.106.0-24`]);
    const fourth = await s.list();
    assert.deepEqual(fourth, await fresh());
    assert.equal(fourth.leases.find((l) => l.key === "10.244.102.0-24")!.backendData!.vtepMAC, mac(52));
    assert.deepEqual(s.counts, { fullLists: 1, changeLists: 4, keyLists: 2, changeValueReads: 2, parsed: 18 }, "a change and a delete: each changed value read and parsed once");
  });

  test("a scan at a given revision reads every page at it, though keys were added after it (between the pages)", async (t) => {
    const prefix = await network();
    const key = (i: number) => `${prefix}/subnets/10.244.${i}.0-24`;
    for (let i = 1; i <= 5; i++) await put(key(i), "{}");
    const client = new EtcdClient({ endpoints: [etcd.endpoint], tls: false });
    t.after(() => client.close());
    const at = (await client.range(Buffer.from(key(1)))).revision;
    for (let i = 6; i <= 9; i++) await put(key(i), "{}"); // after `at`, and between every page's keys
    const pages = [];
    for await (const p of client.scan(Buffer.from(`${prefix}/subnets/`), Buffer.from(`${prefix}/subnets0`), { revision: at, pageSize: 2, keysOnly: true })) pages.push(p);
    assert.deepEqual(pages.flatMap((p) => p.kvs.map((kv) => kv.key)), [1, 2, 3, 4, 5].map(key).sort());
    assert.deepEqual(pages.map((p) => [p.revision, p.total]), [[at, 5], [at, 5], [at, 5]]);
  });

  test("the watch keeps the kept list current: it holds the events' own leases, and a churned store's next list parses and re-reads nothing the events brought", async (t) => {
    const prefix = await network();
    const lease = (i: number, gen = 0) => put(`${prefix}/subnets/10.244.${160 + i}.0-24`, FLANNEL_LEASE(`192.168.72.${i}`, mac(i + gen * 50)));
    for (let i = 1; i <= 6; i++) await lease(i);
    const s = source(t, prefix);
    const fresh = () => freshList(prefix);
    const eventLease = (key: string) => [...rec.events].reverse().find((e) => e.key === key)!.lease!;
    await s.list();
    assert.equal(s.keptLeases, 6);
    const rec = new Recorder(s);
    t.after(rec.stop);
    const counts = { ...s.counts };
    const since = (): Record<string, number> => Object.fromEntries(Object.entries(s.counts).map(([k, v]) => [k, v - counts[k as keyof typeof counts]]));

    // a change: the kept list holds the event's lease (the very object), and the next list re-uses it
    await lease(1, 1);
    await rec.waitFor("put", "10.244.161.0-24");
    assert.equal(eventLease("10.244.161.0-24").backendData!.vtepMAC, mac(51));
    assert.equal(s.keptLeases, 6);
    const second = await s.list();
    assert.deepEqual(second, await fresh());
    assert.equal(second.leases.find((l) => l.key === "10.244.161.0-24"), eventLease("10.244.161.0-24"), "one copy: the event's lease is the list's");
    assert.deepEqual(since(), { fullLists: 0, changeLists: 1, keyLists: 0, changeValueReads: 0, parsed: 0 }, "keys and mod_revisions read, no value");

    // a change and a delete (churn): the delete is a tombstone, so the next list reads only the changes and parses nothing
    await lease(2, 1);
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.163.0-24`]);
    await rec.waitFor("delete", "10.244.163.0-24");
    assert.equal(s.keptLeases, 5);
    const third = await s.list();
    assert.deepEqual(third, await fresh());
    assert.ok(!third.leases.some((l) => l.key === "10.244.163.0-24"));
    assert.deepEqual(since(), { fullLists: 0, changeLists: 2, keyLists: 0, changeValueReads: 0, parsed: 0 });

    // deleted and created again: the put after the delete is adopted; so is a new key (not in the kept list), which the list then places
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.164.0-24`]);
    await lease(4, 1);
    await lease(7);
    await rec.waitFor("put", "10.244.167.0-24");
    const fourth = await s.list();
    assert.deepEqual(fourth, await fresh());
    assert.equal(fourth.leases.find((l) => l.key === "10.244.164.0-24"), eventLease("10.244.164.0-24"));
    assert.equal(fourth.leases.find((l) => l.key === "10.244.167.0-24"), eventLease("10.244.167.0-24"), "the new key: the event's lease");
    assert.deepEqual(fourth.leases.map((l) => l.key), fourth.leases.map((l) => l.key).sort(), "key order");
    assert.deepEqual(since(), { fullLists: 0, changeLists: 3, keyLists: 0, changeValueReads: 0, parsed: 0 }, "no value read, nothing parsed");
    assert.equal(s.keptLeases, 6);

    // what no event told the kept list still shows: a delete while the watch is stopped makes the count differ, every key is read (keys only)
    rec.stop();
    await new Promise((r) => setTimeout(r, 200));
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.165.0-24`]);
    await lease(6, 2);
    assert.deepEqual(await s.list(), await fresh());
    assert.deepEqual(since(), { fullLists: 0, changeLists: 4, keyLists: 1, changeValueReads: 1, parsed: 1 }, "the missed put read and parsed; the missed delete found by the keys-only read");
    assert.deepEqual(rec.errors, []);
  });

  test("events that land while a list reads: the list is etcd's at its revision with them applied (deletes, an update, a new key), and reads no value they brought", async (t) => {
    const prefix = await network();
    const key = (i: number) => `10.244.${180 + i}.0-24`;
    const lease = (i: number, gen = 0) => put(`${prefix}/subnets/${key(i)}`, FLANNEL_LEASE(`192.168.73.${i}`, mac(i + gen * 50)));
    const del = (i: number) => etcd.etcdctl(["del", `${prefix}/subnets/${key(i)}`]);
    for (let i = 1; i <= 6; i++) await lease(i);
    // A proxy (HTTP/1.1: lists use the gateway) that holds etcd's answer to the next range until `during` has run:
    // the read is done, so `during`'s writes come after its revision, and their events before its answer.
    let during: (() => Promise<void>) | undefined;
    const proxy = http.createServer((req, res) => {
      const up = http.request(etcd.endpoint + req.url, { method: req.method, headers: req.headers }, (r) => {
        const hook = req.url === "/v3/kv/range" ? during : undefined;
        if (!hook) {
          res.writeHead(r.statusCode!, r.headers);
          return void r.pipe(res);
        }
        during = undefined;
        const body: Buffer[] = [];
        r.on("data", (c: Buffer) => body.push(c));
        r.on("end", () => void hook().finally(() => {
          res.writeHead(r.statusCode!, r.headers);
          res.end(Buffer.concat(body));
        }));
      });
      up.on("error", () => res.destroy());
      req.pipe(up);
    });
    proxy.on("clientError", (_e, socket) => socket.destroy());
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    t.after(() => proxy.close());
    const s = source(t, prefix, { endpoints: [`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`] });
    await s.list();
    const rec = new Recorder(s);
    t.after(rec.stop);
    await lease(1, 1); // the watch runs (its first event)
    await rec.waitFor("put", key(1));
    const counts = { ...s.counts };
    const since = (): Record<string, number> => Object.fromEntries(Object.entries(s.counts).map(([k, v]) => [k, v - counts[k as keyof typeof counts]]));
    const eventLease = (i: number) => [...rec.events].reverse().find((e) => e.key === key(i))!.lease!;

    /** A list while `writes` land, the last a new key `last`: it must be a fresh list's, with the events' own leases at `fromEvents`. */
    const listDuring = async (writes: () => Promise<unknown>, last: number, keys: number[], fromEvents: number[]) => {
      during = async () => {
        await writes();
        await rec.waitFor("put", key(last));
      };
      const got = await s.list();
      assert.equal(during, undefined, "the list's read was held");
      assert.deepEqual(got, await freshList(prefix));
      assert.deepEqual(got.leases.map((l) => l.key), keys.map(key));
      for (const i of fromEvents) assert.equal(got.leases.find((l) => l.key === key(i)), eventLease(i), `lease ${i}: the event's own`);
    };

    // two deletes, an update and a new key while the list reads: the count differs, every key is read (keys only)
    await listDuring(async () => {
      await del(2);
      await del(3);
      await lease(4, 1);
      await lease(7);
    }, 7, [1, 4, 5, 6, 7], [4, 7]);
    assert.deepEqual(since(), { fullLists: 0, changeLists: 1, keyLists: 1, changeValueReads: 0, parsed: 0 });

    // a delete and a new key while the list reads: the count agrees; the changes alone make the list
    await listDuring(async () => {
      await del(5);
      await lease(8);
    }, 8, [1, 4, 6, 7, 8], [8]);
    assert.deepEqual(since(), { fullLists: 0, changeLists: 2, keyLists: 1, changeValueReads: 0, parsed: 0 });
    assert.equal(s.keptLeases, 5);
    assert.deepEqual(rec.errors, []);
  });

  test("where gRPC cannot be spoken (an HTTP/1.1 proxy in front of etcd), lists use the gateway, with the same result", async (t) => {
    const prefix = await network();
    for (let i = 1; i <= 7; i++) await put(`${prefix}/subnets/10.244.${140 + i}.0-24`, FLANNEL_LEASE(`192.168.71.${i}`, mac(i)));
    let preface = 0;
    const proxy = http.createServer((req, res) => {
      if (req.method === "PRI") { // HTTP/2's preface: not spoken here
        preface++;
        return req.socket.destroy();
      }
      const up = http.request(etcd.endpoint + req.url, { method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode!, r.headers);
        r.pipe(res);
      });
      up.on("error", () => res.destroy());
      req.pipe(up);
    });
    proxy.on("clientError", (_e, socket) => {
      preface++;
      socket.destroy();
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    t.after(() => proxy.close());
    const via = source(t, prefix, { endpoints: [`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`], listPageSize: 3 });
    const direct = source(t, prefix);
    const got = await via.list();
    assert.equal(got.leases.length, 7);
    assert.deepEqual(got, await direct.list());
    assert.equal(via.listTransport, "gateway");
    assert.equal(direct.listTransport, "grpc");
    assert.ok(preface > 0, "gRPC was tried first");
    await put(`${prefix}/subnets/10.244.150.0-24`, FLANNEL_LEASE("192.168.71.50", mac(50)));
    assert.deepEqual(await via.list(), await direct.list(), "and the lists of changes too");
    assert.equal(via.counts.changeLists, 1);
    await etcd.etcdctl(["del", `${prefix}/subnets/10.244.143.0-24`]);
    const after = await via.list();
    assert.deepEqual(after, await direct.list(), "and a delete's keys-only read of every key (pages of 3)");
    assert.ok(!after.leases.some((l) => l.key === "10.244.143.0-24"));
    assert.deepEqual([via.counts.keyLists, via.counts.fullLists], [1, 1]);
  });

  // Last: it turns authentication on for the whole server.
  test("username and password (etcd auth): works with the role's prefix; a wrong password or prefix → ERR_STORE", async (t) => {
    const prefix = await network();
    const ctl = (...a: string[]) => etcd.etcdctl(a);
    await ctl("user", "add", "root", "--new-user-password=rootpw");
    await ctl("user", "grant-role", "root", "root");
    await ctl("role", "add", "flannel");
    await ctl("role", "grant-permission", "flannel", "--prefix=true", "readwrite", `${prefix}/`);
    await ctl("user", "add", "flannel", "--new-user-password=flannelpw");
    await ctl("user", "grant-role", "flannel", "flannel");
    await ctl("auth", "enable");
    etcd.etcdctlUser = "root:rootpw";
    const s = source(t, prefix, { username: "flannel", password: "flannelpw", allowInsecureCredentials: true });
    const own = await s.acquire({ publicIP: parseIP("192.168.50.10"), backendData: vx(10) });
    assert.equal((await getKey(`${prefix}/subnets/${own.key}`))!.value, FLANNEL_LEASE("192.168.50.10", mac(10)));
    await s.list();
    const rec = new Recorder(s);
    t.after(rec.stop);
    await put(`${prefix}/subnets/10.244.220.0-24`, FLANNEL_LEASE("192.168.50.110", "aa:bb:cc:dd:ee:0b"));
    await rec.waitFor("put", "10.244.220.0-24");
    // The token expires when unused for 2 s: the next call authenticates again.
    await sleep(3500);
    assert.deepEqual((await s.list()).leases.map((l) => l.key).sort(), [own.key, "10.244.220.0-24"].sort());
    assert.equal(s.listTransport, "grpc", "the token goes in gRPC's metadata too");
    await put(`${prefix}/subnets/10.244.221.0-24`, FLANNEL_LEASE("192.168.50.111", "aa:bb:cc:dd:ee:0c"));
    await rec.waitFor("put", "10.244.221.0-24");
    await assert.rejects(source(t, prefix, { username: "flannel", password: "wrong", allowInsecureCredentials: true }).readConfig(),
      (e) => isTwillError(e, "ERR_STORE") && /authentication failed/.test(e.message));
    await assert.rejects(source(t, "/elsewhere", { username: "flannel", password: "flannelpw", allowInsecureCredentials: true }).list(),
      (e) => isTwillError(e, "ERR_STORE") && /permission denied/.test(e.message));
  });
});

describe("EtcdSource with TLS client certificates", () => {
  let etcd: EtcdServer;
  before(async () => {
    etcd = await EtcdServer.start({ tls: true });
    await etcd.etcdctl(["put", "/coreos.com/network/config", CONFIG]);
  });
  after(async () => {
    await etcd?.destroy();
  });

  test("with the CA, a client certificate and key: works; without a client certificate: ERR_STORE", async (t) => {
    const tls = etcd.tls!;
    const good = new EtcdSource({ endpoints: [etcd.endpoint], cafile: tls.ca, certfile: tls.clientCert, keyfile: tls.clientKey });
    t.after(() => good.close());
    assert.equal((await good.readConfig()).subnetLen, 24);
    const own = await good.acquire({ publicIP: parseIP("192.168.52.1"), backendData: vx(1) });
    assert.deepEqual((await good.list()).leases.map((l) => l.key), [own.key]);
    assert.equal(good.listTransport, "grpc", "over TLS (ALPN h2), with the client certificate");

    const noCert = new EtcdSource({ endpoints: [etcd.endpoint], cafile: tls.ca, callTimeoutMs: 3000 });
    t.after(() => noCert.close());
    await assert.rejects(noCert.readConfig(), (e) => isTwillError(e, "ERR_STORE") && e.retryable && e.message.includes(etcd.endpoint));
    const noCA = new EtcdSource({ endpoints: [etcd.endpoint], certfile: tls.clientCert, keyfile: tls.clientKey, callTimeoutMs: 3000 });
    t.after(() => noCA.close());
    await assert.rejects(noCA.list(), (e) => isTwillError(e, "ERR_STORE"), "the server's CA is not a system root");
  });
});
