import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { DirStore } from "../../src/lease/dirstore.js";
import { findOverlaps } from "../../src/lease/allocate.js";
import { isTwillError } from "../../src/errors.js";
import { formatPrefix, parseIP } from "../../src/net/ip.js";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const storeModule = pathToFileURL(path.resolve(here, "../../src/lease/dirstore.js")).href;
const ipModule = pathToFileURL(path.resolve(here, "../../src/net/ip.js")).href;

async function withStore(config: string | undefined, fn: (s: DirStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "twill-dirstore-"));
  try {
    if (config !== undefined) await fs.writeFile(path.join(dir, "config"), config);
    await fn(new DirStore(dir), dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const mac = (i: number) => `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
const V4 = `{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}}`;

test("config: read, missing (ERR_STORE, retryable), invalid (ERR_INVALID_CONFIG)", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s) => {
    assert.equal(formatPrefix((await s.readConfig()).network!), "10.244.0.0/16");
  });
  await withStore(undefined, async (s) => {
    await assert.rejects(s.readConfig(), (e) => isTwillError(e, "ERR_STORE") && e.retryable && /not found/.test(e.message));
  });
  await withStore(`{"Network":"10.244.0.0/16","SubnetLen":40}`, async (s) => {
    await assert.rejects(s.readConfig(), (e) => isTwillError(e, "ERR_INVALID_CONFIG") && /SubnetLen 40/.test(e.message));
  });
});

test("list: good leases parsed, a bad file reported (not thrown), dotfiles ignored", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    assert.deepEqual(await s.list(), { leases: [], errors: [] }, "no subnets dir yet");
    const sub = path.join(dir, "subnets");
    await fs.mkdir(sub);
    await fs.writeFile(path.join(sub, "10.244.1.0-24"), V4);
    await fs.writeFile(path.join(sub, "10.244.2.0-24"), V4.replace("8e:d0:f8:0a:41:19", "01:00:5e:00:00:01"));
    await fs.writeFile(path.join(sub, "not-a-key"), V4);
    await fs.writeFile(path.join(sub, ".10.244.3.0-24.123.0.tmp"), "{half a fi");
    const { leases, errors } = await s.list();
    assert.deepEqual(leases.map((l) => l.key), ["10.244.1.0-24"]);
    assert.deepEqual(errors.map((e) => e.key).sort(), ["10.244.2.0-24", "not-a-key"]);
    assert.ok(errors.every((e) => isTwillError(e.error, "ERR_INVALID_LEASE")));
    assert.match(errors.find((e) => e.key === "10.244.2.0-24")!.error.message, /BackendData.VtepMAC "01:00:5e:00:00:01" is not a unicast MAC/);
  });
});

test("write, delete, and keys that are not keys", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    const lease = await s.acquire({ publicIP: parseIP("192.168.1.1"), backendData: { vni: 1, vtepMAC: mac(1) }, random: () => 0 });
    assert.equal(lease.key, "10.244.1.0-24");
    assert.equal(await fs.readFile(path.join(dir, "subnets", lease.key), "utf8"),
      `{"PublicIP":"192.168.1.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}`);
    await s.deleteLease(lease.key);
    await s.deleteLease(lease.key); // already gone: fine
    assert.deepEqual((await s.list()).leases, []);
    await assert.rejects(s.deleteLease("../config"), (e) => isTwillError(e, "ERR_INVALID_LEASE"));
    assert.ok(await fs.stat(path.join(dir, "config")));
    assert.deepEqual((await fs.readdir(path.join(dir, "subnets"))), [], "no temp files left behind");
  });
});

test("reuse by public IP rewrites our lease with the new backend data; previous subnet honoured; stale deleted", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s) => {
    const me = parseIP("192.168.1.1");
    const first = await s.acquire({ publicIP: me, backendData: { vni: 1, vtepMAC: mac(1) } });
    const again = await s.acquire({ publicIP: me, backendData: { vni: 1, vtepMAC: mac(2) } });
    assert.equal(again.key, first.key);
    const stored = (await s.list()).leases;
    assert.equal(stored.length, 1);
    assert.equal(stored[0]!.backendData!.vtepMAC, mac(2));

    const other = parseIP("192.168.1.2");
    const prev = await s.acquire({ publicIP: other, backendData: { vni: 1, vtepMAC: mac(3) }, previous: { subnet: { ip: parseIP("10.244.99.0"), len: 24 } } });
    assert.equal(prev.key, "10.244.99.0-24");

    // A lease of ours from an older config (wrong length) is deleted, a fitting one created.
    await s.writeLease({ key: "10.244.200.0-25", subnet: { ip: parseIP("10.244.200.0"), len: 25 }, publicIP: parseIP("192.168.1.3"), backendType: "vxlan", backendData: { vni: 1, vtepMAC: mac(4) } });
    const fresh = await s.acquire({ publicIP: parseIP("192.168.1.3"), backendData: { vni: 1, vtepMAC: mac(4) } });
    const keys = (await s.list()).leases.map((l) => l.key);
    assert.ok(!keys.includes("10.244.200.0-25"));
    assert.ok(keys.includes(fresh.key));
  });
});

/** Acquires in a separate node process (a second "node" starting at the same time). */
async function childAcquire(dir: string, ip: string, i: number, forceFirst: boolean): Promise<string> {
  const src = `
    const { DirStore } = await import(${JSON.stringify(storeModule)});
    const { parseIP } = await import(${JSON.stringify(ipModule)});
    let n = 0;
    const random = ${forceFirst ? "() => (n++ % 2 === 0 ? 0 : Math.random())" : "Math.random"};
    const l = await new DirStore(${JSON.stringify(dir)}).acquire({
      publicIP: parseIP(${JSON.stringify(ip)}), random,
      backendData: { vni: 1, vtepMAC: ${JSON.stringify(mac(i))} },
      ${forceFirst ? `publicIPv6: parseIP("fd00::${i}"), backendV6Data: { vni: 1, vtepMAC: ${JSON.stringify(mac(i + 100))} },` : ""}
    });
    process.stdout.write(l.key);`;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", src]);
  return stdout;
}

async function race(config: string, dual: boolean): Promise<void> {
  await withStore(config, async (s, dir) => {
    const inProcess = Array.from({ length: 8 }, (_, i) => {
      let n = 0;
      // Everyone wants the first free IPv4 subnet: maximum contention.
      const random = () => (n++ % 2 === 0 ? 0 : Math.random());
      return s.acquire({
        publicIP: parseIP(`192.168.2.${i + 1}`), random, backendData: { vni: 1, vtepMAC: mac(i + 1) },
        ...(dual && { publicIPv6: parseIP(`fd00::${i + 1}`), backendV6Data: { vni: 1, vtepMAC: mac(i + 101) } }),
      }).then((l) => l.key);
    });
    const children = [childAcquire(dir, "192.168.3.1", 50, dual), childAcquire(dir, "192.168.3.2", 51, dual)];
    const keys = await Promise.all([...inProcess, ...children]);
    assert.equal(new Set(keys).size, 10, `distinct keys: ${keys.join(" ")}`);
    const { leases, errors } = await s.list();
    assert.deepEqual(errors, []);
    assert.deepEqual(leases.map((l) => l.key).sort(), [...keys].sort(), "every acquirer's lease is stored, nothing else");
    assert.deepEqual(findOverlaps(leases).map(([a, b]) => `${a.key} ~ ${b.key}`), [], "no two leases share a subnet");
    assert.deepEqual((await fs.readdir(path.join(dir, "subnets"))).filter((n) => n.startsWith(".")), [], "no temp files left");
  });
}

test("8 concurrent acquirers and 2 other processes never share a subnet (IPv4)", async () => {
  await race(`{"Network":"10.0.0.0/24","SubnetLen":28}`, false); // only 15 subnets: heavy contention
});

test("...nor in dual stack, where racing keys differ (same IPv4, different IPv6 subnet)", async () => {
  await race(`{"Network":"10.0.0.0/24","SubnetLen":28,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`, true);
});

test("watch fires (debounced) on add and remove, not for temp files, and stops", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    let calls = 0;
    let wake: () => void = () => undefined;
    const next = () => new Promise<void>((r) => (wake = r));
    const stop = s.watch(() => { calls++; wake(); }, { debounceMs: 30 });
    try {
      let fired = next();
      const lease = await s.acquire({ publicIP: parseIP("192.168.1.1"), backendData: { vni: 1, vtepMAC: mac(1) } });
      await fired;
      assert.equal(calls, 1, "one debounced call for the add (temp file + link + unlink)");
      fired = next();
      await s.deleteLease(lease.key);
      await fired;
      assert.equal(calls, 2);
      await fs.writeFile(path.join(dir, "subnets", ".scratch"), "x");
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(calls, 2, "dotfiles are not leases");
    } finally {
      stop();
    }
    await fs.writeFile(path.join(dir, "subnets", "10.244.9.0-24"), V4);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(calls, 2, "stopped");
  });
});

/** Lease files for the index tests: IPv4, dual stack, another backend type, and one bad file. */
async function writeLeases(sub: string, n: number): Promise<void> {
  await fs.mkdir(sub, { recursive: true });
  for (let i = 1; i <= n; i++) await fs.writeFile(path.join(sub, `10.244.${i}.0-24`), V4.replace("8e:d0:f8:0a:41:19", mac(i)));
  await fs.writeFile(path.join(sub, "10.245.1.0-24&fc00:0:0:1::-64"),
    `{"PublicIP":"192.168.77.9","PublicIPv6":"fd00::9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:01:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:01:02"}}`);
  await fs.writeFile(path.join(sub, "10.245.2.0-24"), `{"PublicIP":"192.168.77.10","PublicIPv6":null,"BackendType":"host-gw"}`);
  await fs.writeFile(path.join(sub, "10.245.3.0-24"), "{not json");
  // Files changed within a second of being read are not trusted by their stamp (the racy rule).
  await new Promise((r) => setTimeout(r, 1100));
}

const indexed = { indexMinLeases: 0, indexEveryMs: 0 };
/** An index's text without its read times (the 6th field). */
const withoutReadAt = (text: string) => text.replace(/^((?:[^\t\n]*\t){5})[^\t\n]*/gm, "$1");

test("index: a fresh store takes unchanged leases from it (same leases as parsing), re-reads changed and new ones", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    const sub = path.join(dir, "subnets");
    await writeLeases(sub, 40);
    const before = await s.list();
    assert.equal(s.counts.reads, 43);
    await s.idle();
    assert.equal(s.counts.indexWrites, 0);
    assert.equal(await fs.stat(path.join(dir, ".subnets.index")).then(() => true, () => false), false, "no index below indexMinLeases");

    const a = new DirStore(dir, indexed);
    assert.deepEqual(await a.list(), before);
    await a.idle();
    assert.equal(a.counts.indexWrites, 1, "written after the first list");
    a.close();

    const b = new DirStore(dir, indexed);
    assert.deepEqual(await b.list(), before, "the index's leases are parseLease's, field for field");
    assert.deepEqual(b.counts, { reads: 1, fromIndex: 42, indexWrites: 0 }, "only the bad file (not indexed) is read");
    await b.idle();
    assert.equal(b.counts.indexWrites, 0, "nothing changed: the index is not rewritten");
    b.close();

    // Behind the index: one lease changed (new stamp), one deleted, one added.
    await fs.writeFile(path.join(sub, "10.244.5.0-24"), V4.replace("8e:d0:f8:0a:41:19", mac(500)));
    await fs.rm(path.join(sub, "10.244.6.0-24"));
    await fs.writeFile(path.join(sub, "10.244.99.0-24"), V4.replace("8e:d0:f8:0a:41:19", mac(99)));
    const c = new DirStore(dir, indexed);
    const { leases } = await c.list();
    assert.equal(leases.find((l) => l.key === "10.244.5.0-24")?.backendData?.vtepMAC, mac(500), "the changed lease is read again");
    assert.ok(!leases.some((l) => l.key === "10.244.6.0-24"), "the deleted lease is gone");
    assert.ok(leases.some((l) => l.key === "10.244.99.0-24"), "the new lease is read");
    assert.deepEqual(c.counts, { reads: 3, fromIndex: 40, indexWrites: 0 });
    await c.idle();
    assert.equal(c.counts.indexWrites, 1, "rewritten: it held a changed and a deleted lease");
    c.close();
  });
});

test("index: missing, corrupt, truncated or foreign ones are ignored and rebuilt; steady state writes nothing", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    await writeLeases(path.join(dir, "subnets"), 20);
    const want = await s.list();
    const file = path.join(dir, ".subnets.index");
    const a = new DirStore(dir, indexed);
    await a.list();
    await a.idle();
    a.close();
    const good = await fs.readFile(file, "utf8");
    const bad = {
      corrupt: good.replace("\t192.168.77.2\t", "\t192.168.777.2\t"),
      truncated: good.slice(0, good.lastIndexOf("end ")),
      foreign: good.replace(/^twill-lease-index 1/, "twill-lease-index 2"),
      garbage: "\u0000\u0001not an index",
    };
    for (const [what, text] of Object.entries(bad)) {
      await fs.writeFile(file, text);
      const b = new DirStore(dir, indexed);
      assert.deepEqual(await b.list(), want, what);
      assert.equal(b.counts.fromIndex, 0, what);
      assert.equal(b.counts.reads, 23, what);
      await b.idle();
      assert.equal(b.counts.indexWrites, 1, `${what}: rebuilt`);
      b.close();
      assert.equal(withoutReadAt(await fs.readFile(file, "utf8")), withoutReadAt(good), `${what}: rebuilt as it was`);
    }

    // Steady state: lists, full validations, a fresh process: nothing written.
    const stamp = (await fs.stat(file)).mtimeMs;
    const c = new DirStore(dir, indexed);
    for (let i = 0; i < 3; i++) await c.list();
    await c.idle();
    assert.equal(c.counts.indexWrites, 0);
    c.close();
    await c.list(); // without its watcher: a full validation
    await c.idle();
    assert.equal(c.counts.indexWrites, 0);
    assert.equal((await fs.stat(file)).mtimeMs, stamp);
    assert.deepEqual((await fs.readdir(dir)).sort(), [".subnets.index", "config", "subnets"], "no temp files left");

    // A change is written, once.
    await c.writeLease({ key: "10.244.200.0-24", subnet: { ip: parseIP("10.244.200.0"), len: 24 }, publicIP: parseIP("192.168.1.3"), backendType: "vxlan", backendData: { vni: 1, vtepMAC: mac(4) } });
    await c.list();
    await c.idle();
    await c.list();
    await c.idle();
    assert.equal(c.counts.indexWrites, 1);
    assert.match(await fs.readFile(file, "utf8"), /^10\.244\.200\.0-24\t/m);
    c.close();
  });
});

test("reader threads: a big read shared out gives the same list as one thread, errors and all", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    const sub = path.join(dir, "subnets");
    await writeLeases(sub, 150);
    // Not a regular file: the reader thread leaves it to this thread, which reports it (never opened).
    await fs.mkdir(path.join(sub, "10.245.9.0-24"));
    const want = await s.list();
    assert.equal(s.parallel.files, 0, "one thread below PARALLEL_MIN");
    const t = new DirStore(dir, { readers: 2, parallelMin: 10 });
    const got = await t.list();
    t.close();
    assert.deepEqual(got, want);
    assert.equal(t.parallel.failed, 0);
    assert.equal(t.parallel.files, 153, "every file but the directory came from a reader thread");
    assert.equal(t.counts.reads, 154);
    assert.ok(got.errors.some((e) => e.key === "10.245.9.0-24" && isTwillError(e.error, "ERR_LEASE_FILE") && /is a directory/.test(e.error.message)),
      JSON.stringify(got.errors.map((e) => [e.key, e.error.message])));
    assert.deepEqual(got.leases.map((l) => l.key), got.leases.map((l) => l.key).sort(), "key order");

    // A thread that dies half-way: what it did not deliver is read here; nothing lost.
    const u = new DirStore(dir, { readers: 2, parallelMin: 10, readBatch: 20, readerDiesAfter: 2 });
    assert.deepEqual(await u.list(), want);
    u.close();
    assert.equal(u.parallel.failed, 2, "both threads died");
    // Each thread delivers at most its 2 batches of 20 before it dies; how many a thread gets before the other
    // and this thread have taken the rest depends on scheduling (a busy machine: one may deliver none).
    assert.ok(u.parallel.files <= 80 && u.parallel.files % 20 === 0, `whole batches from the threads, at most 2 each: ${u.parallel.files}`);
    assert.equal(u.counts.reads, 154);
  });
});

test("key order: names that come and go keep list() sorted, without sorting again", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (s, dir) => {
    const sub = path.join(dir, "subnets");
    await writeLeases(sub, 30);
    await s.list();
    const lease = (i: number) => ({ key: `10.244.${i}.0-24`, subnet: { ip: parseIP(`10.244.${i}.0`), len: 24 }, publicIP: parseIP("192.168.1.3"), backendType: "vxlan", backendData: { vni: 1, vtepMAC: mac(i) } });
    for (const i of [200, 7, 150, 31, 99]) await s.writeLease(lease(i));
    for (const i of [3, 150, 12]) await s.deleteLease(`10.244.${i}.0-24`);
    const keys = (await s.list()).leases.map((l) => l.key);
    assert.deepEqual(keys, [...keys].sort());
    assert.ok(keys.includes("10.244.200.0-24") && keys.includes("10.244.99.0-24") && !keys.includes("10.244.150.0-24") && !keys.includes("10.244.3.0-24"));
    const fresh = new DirStore(dir);
    assert.deepEqual(await fresh.list(), await s.list(), "the same as a fresh store's list");
    fresh.close();
  });
});

test("index: the first write waits a period after the first list (start-up is busy enough)", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (_s, dir) => {
    await writeLeases(path.join(dir, "subnets"), 20);
    const s = new DirStore(dir, { indexMinLeases: 0, indexEveryMs: 300 });
    await s.list();
    await s.idle();
    assert.equal(s.counts.indexWrites, 0, "not right after the first list");
    await new Promise((r) => setTimeout(r, 400));
    await s.idle();
    assert.equal(s.counts.indexWrites, 1, "a period later");
    s.close();
  });
});

test("reader threads check the index's stamps too: unchanged files come from it, changed and new ones are read", async () => {
  await withStore(`{"Network":"10.244.0.0/16"}`, async (_s, dir) => {
    const sub = path.join(dir, "subnets");
    await writeLeases(sub, 120);
    const a = new DirStore(dir, indexed);
    await a.list();
    await a.idle();
    a.close();
    assert.equal(a.counts.indexWrites, 1);
    // Behind the index: one lease changed, one deleted, one added.
    await fs.writeFile(path.join(sub, "10.244.5.0-24"), V4.replace("8e:d0:f8:0a:41:19", mac(500)));
    await fs.rm(path.join(sub, "10.244.6.0-24"));
    await fs.writeFile(path.join(sub, "10.244.150.0-24"), V4.replace("8e:d0:f8:0a:41:19", mac(150)));
    const readOnly = { indexMinLeases: 0, indexEveryMs: 60_000 }; // uses the index; writes none within the test
    const one = new DirStore(dir, { ...readOnly, readers: 1 });
    const want = await one.list();
    one.close();
    const t = new DirStore(dir, { ...readOnly, readers: 2, parallelMin: 10 });
    const got = await t.list();
    t.close();
    assert.deepEqual(got, want, "the same list as one thread");
    assert.equal(got.leases.find((l) => l.key === "10.244.5.0-24")?.backendData?.vtepMAC, mac(500), "the changed lease is read again");
    assert.ok(!got.leases.some((l) => l.key === "10.244.6.0-24") && got.leases.some((l) => l.key === "10.244.150.0-24"));
    assert.deepEqual(t.counts, { reads: 3, fromIndex: 120, indexWrites: 0 }, "the bad file, the changed one and the new one are read; the rest come from the index");
    assert.deepEqual(t.counts, one.counts);
    assert.equal(t.parallel.failed, 0);
    assert.equal(t.parallel.files, 2, "the new and the bad file (not indexed) read by threads; the changed one after, here");
  });
});
