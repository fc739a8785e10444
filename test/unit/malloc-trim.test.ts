/**
 * releaseFreedMemory (daemon.ts, called after every reconcile) hands freed
 * malloc memory back to the kernel: glibc keeps it resident otherwise.
 *
 * How it works: a child node (with --expose-gc) allocates 80 MB of buffers
 * in 2 KiB pieces (malloc'd from glibc's arena, below its mmap threshold),
 * frees 15 of every 16 (the survivors pin the arena: it cannot shrink from
 * its top) and collects them; the freed memory must still be resident, and
 * after releaseFreedMemory() most of it must be gone. Readings are RssAnon
 * from /proc/self/status.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const DAEMON = pathToFileURL(resolve(import.meta.dirname, "..", "..", "src", "daemon.js")).href;
const MB = 1e6;

const CHILD = `
import { readFileSync } from "node:fs";
const { releaseFreedMemory } = await import(${JSON.stringify(DAEMON)});
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
