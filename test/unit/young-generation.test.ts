/**
 * bin/twill keeps V8's young generation at 1 MiB per semi-space (2 MiB of
 * new space) however it is started: through its #! line, or as
 * `node bin/twill` (some service managers' way, which skips the #! line's flags) —
 * and leaves V8's flags alone when the command line gives them.
 *
 * How it works: a module preloaded with --import runs, at exit, a workload
 * that makes V8 grow a young generation it may grow (many objects that
 * survive a few scavenges), then prints the new space's size. `twill --help`
 * is the program: it starts the CLI and exits. The same workload under plain
 * `node` must grow the new space, or the test could not tell.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..", "..", "..");
const TWILL = join(ROOT, "bin", "twill");
const MiB = 2 ** 20;

const dir = mkdtempSync(join(tmpdir(), "twD"));
after(() => rmSync(dir, { recursive: true, force: true }));
const preload = join(dir, "young.mjs");
writeFileSync(preload, `
import { getHeapSpaceStatistics } from "node:v8";
process.on("exit", () => {
  const keep = [];
  for (let r = 0; r < 150; r++) {
    const a = [];
    for (let i = 0; i < 20000; i++) a.push({ i, s: "x" + i });
    keep.push(a);
    if (keep.length > 4) keep.shift();
  }
  const s = getHeapSpaceStatistics().find((x) => x.space_name === "new_space");
  process.stderr.write("\\nnew_space " + s.space_size + "\\n");
});
`);

/** The new space's size (bytes) at the exit of `cmd args` with the workload preloaded. */
function newSpace(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): number {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
  const m = /^new_space (\d+)$/m.exec(r.stderr);
  if (!m) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status} without a reading:\n${r.stderr.slice(-2000)}`);
  return Number(m[1]);
}

test("the workload grows the young generation of a plain node", () => {
  assert.ok(newSpace(process.execPath, ["--import", preload, "-e", "0"]) > 4 * MiB);
});

test("node bin/twill: the young generation stays at 1 MiB per semi-space", () => {
  assert.ok(newSpace(process.execPath, ["--import", preload, TWILL, "--help"]) <= 2 * MiB);
});

test("bin/twill through its #! line: the same", () => {
  assert.ok(newSpace(TWILL, ["--help"], { NODE_OPTIONS: `--import=${preload}` }) <= 2 * MiB);
});

test("V8 flags given on the command line are left as asked", () => {
  assert.ok(newSpace(process.execPath, ["--max-semi-space-size=8", "--import", preload, TWILL, "--help"]) > 4 * MiB);
});
