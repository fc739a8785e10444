/**
 * An idle node starts no process: every reconcile, pod-port sync, firewall
 * check and lease-store check runs inside the daemon (netlink, bpf(2),
 * inotify), none spawns `ip`, `bridge` or `iptables`. Counted, not timed:
 * strace follows the daemon's whole process tree for 10 s and records every
 * execve; there must be none.
 *
 *   h1 [p1] --fast-path ── underlay ── h2 [p1]      leases in one directory,
 *   --reconcile-period 1: ten reconciles happen while strace watches.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { TwillCluster } from "../lib/twill.js";
import { spawnIn, stopProcess, sleep } from "../lib/exec.js";

describe("an idle node (2 hosts, bpf, one with the fast path)", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, reconcileSeconds: 1, nodes: [{ fastPath: true }, {}] });
  });
  after(async () => tc && (await tc.destroy()));

  test("starts no process in 10 s while ten reconciles run", async () => {
    const n = tc.nodes[0]!;
    assert.deepEqual(await tc.allPairs(), [], "the cluster forwards before we watch it");
    const pid = n.proc!.pid!;
    const trace = `/tmp/${tc.cluster.prefix}-idle-execve.txt`;
    const runs = await tc.metric(n, "twill_reconcile_duration_seconds_count");
    // bpf(2) too: the reconciles' map reads prove strace was attached and saw the daemon work.
    const st = spawnIn(undefined, "strace", ["-f", "-qq", "-e", "trace=execve,execveat,bpf", "-o", trace, "-p", String(pid)]);
    try {
      await sleep(10_000);
    } finally {
      await stopProcess(st, { signal: "SIGINT", graceMs: 2000 });
    }
    const after = await tc.metric(n, "twill_reconcile_duration_seconds_count");
    const lines = readFileSync(trace, "utf8").split("\n");
    rmSync(trace, { force: true });
    const execs = lines.filter((l) => /execve/.test(l));
    const bpfCalls = lines.filter((l) => /\bbpf\(/.test(l)).length;
    console.log(`reconciles while traced: ${after - runs}; bpf(2) calls seen: ${bpfCalls}; execve calls: ${execs.length}`);
    assert.ok(after - runs >= 5, `the daemon reconciled while traced (${after - runs} runs)`);
    assert.ok(bpfCalls > 0, "strace saw the daemon's bpf(2) calls (it was attached)");
    assert.deepEqual(execs, [], "no process started");
  });
});
