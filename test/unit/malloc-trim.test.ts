/**
 * memtrim.ts: releaseFreedMemory (the daemon calls it after every
 * reconcile) hands freed malloc memory back to the kernel, which glibc
 * keeps resident otherwise; trimAfterFullCollections calls it after full
 * collections, never after young ones, at most once per MIN_GAP_MS.
 *
 * How it works: a child node (with --expose-gc) allocates 80 MB of buffers
 * in 2 KiB pieces (malloc'd from glibc's arena, below its mmap threshold),
 * frees 15 of every 16 (the survivors pin the arena: it cannot shrink from
 * its top) and collects them; the freed memory must still be resident, and
 * after releaseFreedMemory() most of it must be gone. Readings are RssAnon
 * from /proc/self/status. The trigger: a child with --expose-gc counts the
 * trims of a stand-in while it collects fully (gc()), young only
 * (gc({ type: "minor" })), and after stop().
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const MEMTRIM = pathToFileURL(resolve(import.meta.dirname, "..", "..", "src", "memtrim.js")).href;
const MB = 1e6;

const CHILD = `
import { readFileSync } from "node:fs";
const { releaseFreedMemory } = await import(${JSON.stringify(MEMTRIM)});
const anon = () => Number(/^RssAnon:\\s+(\\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))[1]) * 1024;
const before = anon();
let bufs = [];
for (let i = 0; i < 40000; i++) bufs.push(Buffer.allocUnsafeSlow(2048).fill(1));
const full = anon();
bufs = bufs.filter((_, i) => i % 16 === 0);
for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); }
const freed = anon();
const ran = releaseFreedMemory();
console.log(JSON.stringify({ before, full, freed, trimmed: anon(), ran, kept: bufs.length }));
`;

test("freed malloc memory stays resident until releaseFreedMemory gives it back", () => {
  const r = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", CHILD], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split("\n").pop()!) as { before: number; full: number; freed: number; trimmed: number; ran: boolean };
  const allocated = m.full - m.before;
  assert.ok(allocated > 70 * MB, `the buffers took ${allocated / MB} MB`);
  assert.ok(m.ran, "no malloc_trim in this libc");
  // without the call glibc keeps (nearly) all of it
  assert.ok(m.freed - m.before > 0.6 * allocated, `glibc already returned the memory by itself: ${(m.full - m.freed) / MB} MB`);
  // with it, at least half of the 15/16 freed goes
  assert.ok(m.freed - m.trimmed > 0.5 * (15 / 16) * allocated, `released ${(m.freed - m.trimmed) / MB} MB of ${((15 / 16) * allocated) / MB} MB freed`);
});

const TRIGGER = `
const { trimAfterFullCollections, MIN_GAP_MS } = await import(${JSON.stringify(MEMTRIM)});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Node hands a gc entry to observers when the event loop next wakes: wake it a few times.
const settle = async () => { for (let i = 0; i < 5; i++) await sleep(20); };
let trims = 0;
const stop = trimAfterFullCollections(() => { trims++; return true; });
const out = {};
for (let i = 0; i < 5; i++) { globalThis.gc({ type: "minor" }); await settle(); }
out.afterYoung = trims;
globalThis.gc();
await settle();
out.afterOneFull = trims;
// three more full collections within MIN_GAP_MS of that trim: one trim, once the gap has passed
for (let i = 0; i < 3; i++) { globalThis.gc(); await settle(); }
out.withinGap = trims;
await sleep(MIN_GAP_MS);
await settle();
out.afterGap = trims;
stop();
globalThis.gc();
await sleep(MIN_GAP_MS);
await settle();
out.afterStop = trims;
console.log(JSON.stringify(out));
`;

test("a trim follows full collections (one per MIN_GAP_MS), never young ones, and none after stop()", () => {
  const r = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", TRIGGER], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split("\n").pop()!) as Record<string, number>;
  assert.deepEqual(m, { afterYoung: 0, afterOneFull: 1, withinGap: 1, afterGap: 2, afterStop: 2 });
});
