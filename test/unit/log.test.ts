/**
 * The pino-backed logger: the line format (level word, ISO time, bound
 * fields, "msg"), the level threshold, errors logged with their stable code,
 * and that a line written just before process.exit() is not lost.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createLogger, nullLogger } from "../../src/log.js";
import { TwillError } from "../../src/errors.js";

function capture(level: Parameters<typeof createLogger>[0], bound: Record<string, unknown> = {}) {
  const lines: string[] = [];
  return { log: createLogger(level, bound, (l) => lines.push(l)), lines, recs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

test("one JSON object per line: level word, ISO time, bound fields, fields, msg", () => {
  const c = capture("info", { node: "h1" });
  c.log.info("ready", { peers: 3, big: 12345678901234567890n });
  assert.equal(c.lines.length, 1);
  assert.ok(!c.lines[0]!.includes("\n"));
  assert.match(c.lines[0]!, /"msg":"ready"/, "tests and tools grep for this form");
  const r = c.recs()[0]!;
  assert.equal(r.level, "info");
  assert.match(String(r.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual({ node: r.node, peers: r.peers, big: r.big, msg: r.msg }, { node: "h1", peers: 3, big: "12345678901234567890", msg: "ready" });
  assert.equal(r.pid, undefined);
  assert.equal(r.hostname, undefined);
});

test("the level threshold drops lower levels; child loggers keep the level and add fields", () => {
  const c = capture("warn");
  c.log.debug("d");
  c.log.info("i");
  c.log.warn("w");
  c.log.child({ peer: "10.244.1.0/24" }).error("e", { n: 1 });
  assert.deepEqual(c.recs().map((r) => [r.level, r.msg, r.peer]), [["warn", "w", undefined], ["error", "e", "10.244.1.0/24"]]);
  const d = capture("debug");
  d.log.debug("x");
  assert.equal(d.recs()[0]!.level, "debug");
});

test("an Error field is logged as its message with the stable code; an explicit code wins", () => {
  const c = capture("info");
  c.log.error("start failed", { err: new TwillError("ERR_BPF_LOAD", "verifier said no") });
  c.log.warn("io", { err: Object.assign(new Error("no such file"), { code: "ENOENT" }) });
  c.log.warn("plain", { err: new Error("boom") });
  c.log.warn("mine", { code: "ERR_STORE", err: new TwillError("ERR_NETLINK", "x") });
  const r = c.recs();
  assert.deepEqual([r[0]!.err, r[0]!.code], ["verifier said no", "ERR_BPF_LOAD"]);
  assert.equal(r[1]!.code, "ENOENT");
  assert.equal(r[2]!.code, "ERR_UNKNOWN");
  assert.equal(r[3]!.code, "ERR_STORE");
});

test("fields named like pino's own keys do not make a line with a key twice", () => {
  const c = capture("info");
  c.log.info("m", { level: "x", msg: "y", time: 1 });
  const line = c.lines[0]!;
  assert.equal(line.match(/"level":/g)?.length, 1, line);
  assert.equal(line.match(/"msg":/g)?.length, 1, line);
  const r = c.recs()[0]!;
  assert.deepEqual([r.level, r.msg, r["field.level"], r["field.msg"]], ["info", "m", "x", "y"]);
});

test("nullLogger writes nothing and does not throw", () => {
  nullLogger.error("x", { err: new Error("y") });
  nullLogger.child({ a: 1 }).info("z");
});

test("stderr is written synchronously: the line logged right before process.exit() is there", () => {
  const logModule = new URL("../../src/log.js", import.meta.url).href;
  const script = `
    const { createLogger } = await import(${JSON.stringify(logModule)});
    const log = createLogger("info", { node: "n1" });
    for (let i = 0; i < 2000; i++) log.info("filler " + "x".repeat(100), { i });
    log.error("start failed", { err: Object.assign(new Error("last words"), { code: "ERR_LEASE_LOST" }) });
    process.exit(1);`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", cwd: fileURLToPath(new URL(".", import.meta.url)) });
  assert.equal(r.status, 1, r.stderr.slice(-500));
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 2001);
  const last = JSON.parse(lines.at(-1)!);
  assert.deepEqual([last.level, last.msg, last.err, last.code, last.node], ["error", "start failed", "last words", "ERR_LEASE_LOST", "n1"]);
  assert.equal(r.stdout, "", "logs go to stderr only");
});
