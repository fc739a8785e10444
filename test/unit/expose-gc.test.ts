/**
 * bin/twill exposes a full collection (globalThis.gc) however it is
 * started — through its #! line (--expose-gc) or as `node bin/twill` (set
 * at run time) — so the daemon's collectGarbage() after a periodic re-list
 * runs (src/daemon.ts). Without it collectGarbage() says it did nothing.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..", "..", "..");
const TWILL = join(ROOT, "bin", "twill");
const DAEMON = join(ROOT, "dist", "src", "daemon.js");

const dir = mkdtempSync(join(tmpdir(), "twG"));
after(() => rmSync(dir, { recursive: true, force: true }));
const preload = join(dir, "gc.mjs");
// At exit (after the CLI ran), ask the daemon module whether it can collect: it reads globalThis.gc when called.
writeFileSync(preload, `
process.on("exit", () => process.stderr.write("\\ngc " + typeof globalThis.gc + "\\n"));
`);

function gcType(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
  const m = /^gc (\w+)$/m.exec(r.stderr);
  if (!m) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status} without a reading:\n${r.stderr.slice(-2000)}`);
  return m[1]!;
}

test("plain node has no gc (the check can tell)", () => {
  assert.equal(gcType(process.execPath, ["--import", preload, "-e", "0"]), "undefined");
});

test("bin/twill through its #! line exposes gc", () => {
  assert.equal(gcType(TWILL, ["--help"], { NODE_OPTIONS: `--import=${preload}` }), "function");
});

test("node bin/twill exposes gc at run time", () => {
  assert.equal(gcType(process.execPath, ["--import", preload, TWILL, "--help"]), "function");
});

test("collectGarbage() runs a full collection when gc is exposed, and says so", () => {
  const probe = `const { collectGarbage } = await import(${JSON.stringify(DAEMON)});
const before = collectGarbage();
(await import("node:v8")).setFlagsFromString("--expose-gc");
globalThis.gc = (await import("node:vm")).runInNewContext("gc");
let n = 0; const real = globalThis.gc; globalThis.gc = () => { n++; real(); };
console.log(JSON.stringify({ before, after: collectGarbage(), calls: n }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", probe], { encoding: "utf8", timeout: 60_000 });
  assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), { before: false, after: true, calls: 1 });
});
