/**
 * An idle node starts no process: every reconcile, pod-port sync, firewall
 * check and lease-store check runs inside the daemon (netlink, bpf(2),
 * inotify), none spawns `ip`, `bridge` or `iptables`. And it does not
 * re-read what events already track: the pod bridge's ports follow link
 * events, so no reconcile dumps the links; re-asserting an attachment that
 * is in place does not look the programs up by id, and a reconcile that
 * finds nothing changed reads no map back. Counted, not timed:
 * strace follows the daemon's whole process tree for 10 s and records every
 * execve, bpf(2) and netlink send.
 *
 *   h1 [p1] --fast-path ── underlay ── h2 [p1]      leases in one directory,
 *   --reconcile-period 1: ten reconciles happen while strace watches.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { TwillCluster } from "../lib/twill.js";
import { spawnIn, stopProcess, sleep, waitFor } from "../lib/exec.js";

describe("an idle node (2 hosts, bpf, one with the fast path)", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, reconcileSeconds: 1, nodes: [{ fastPath: true }, {}] });
  });
  after(async () => tc && (await tc.destroy()));

  test("starts no process, dumps no links and looks up no program by id in 10 s while ten reconciles run", async () => {
    const n = tc.nodes[0]!;
    // Just made: each daemon learns the other's lease within about a second.
    let failures: string[] = [];
    await waitFor(async () => (failures = await tc.allPairs()).length === 0, { timeoutMs: 15_000, intervalMs: 200, what: "the cluster forwarding" }).catch(() => {});
    assert.deepEqual(failures, [], "the cluster forwards before we watch it");
    const pid = n.proc!.pid!;
    const trace = `/tmp/${tc.cluster.prefix}-idle-execve.txt`;
    const runs = await tc.metric(n, "twill_reconcile_duration_seconds_count");
    // bpf(2) too: the reconciles' map reads prove strace was attached and saw the daemon work;
    // sendto: the netlink requests (a dump of the links would be the pod watcher re-reading what events track).
    const st = spawnIn(undefined, "strace", ["-f", "-qq", "-e", "trace=execve,execveat,bpf,sendto", "-o", trace, "-p", String(pid)]);
    try {
      await sleep(10_000);
    } finally {
      await stopProcess(st, { signal: "SIGINT", graceMs: 2000 });
    }
    const after = await tc.metric(n, "twill_reconcile_duration_seconds_count");
    const lines = readFileSync(trace, "utf8").split("\n");
    rmSync(trace, { force: true });
    const execs = lines.filter((l) => /execve/.test(l));
    const bpfCalls = lines.filter((l) => /\bbpf\(/.test(l));
    const byCommand = new Map<string, number>();
    for (const l of bpfCalls) {
      const cmd = /\bbpf\((BPF_[A-Z_]+)/.exec(l)?.[1] ?? "?";
      byCommand.set(cmd, (byCommand.get(cmd) ?? 0) + 1);
    }
    const sends = lines.filter((l) => /\bsendto\(/.test(l));
    // strace runs outside the node's namespace, so it may print netlink types and flags undecoded (0x12, 0x300).
    const linkDumps = sends.filter((l) => /nlmsg_type=(?:RTM_GETLINK|0x12\b)[^}]*nlmsg_flags=[^,}]*(?:NLM_F_DUMP|0x300)/.test(l));
    const reconciles = after - runs;
    console.log(`reconciles while traced: ${reconciles}; execve calls: ${execs.length}; netlink sends: ${sends.length}, link dumps: ${linkDumps.length}; ` +
      `bpf(2) calls: ${bpfCalls.length} (${[...byCommand].sort((a, b) => b[1] - a[1]).map(([c, k]) => `${c} ${k}`).join(", ")})`);
    assert.ok(reconciles >= 5, `the daemon reconciled while traced (${reconciles} runs)`);
    assert.ok(bpfCalls.length > 0, "strace saw the daemon's bpf(2) calls (it was attached)");
    assert.ok((byCommand.get("BPF_OBJ_GET") ?? 0) >= reconciles, "every reconcile re-checked the pinned links (it opened their pins)");
    assert.deepEqual(execs, [], "no process started");
    assert.deepEqual(linkDumps, [], "no reconcile dumped the links (the pod watcher follows link events)");
    assert.equal(byCommand.get("BPF_PROG_GET_FD_BY_ID") ?? 0, 0, "no attachment in place made the daemon look a program up by id");
    // Nothing changed, so a reconcile reads no map back (the shadow and the maps' entry counts say so). Only the
    // re-list every 30 periods reads both maps (one batch each at this size): at most one falls in 10 s.
    const mapReads = (byCommand.get("BPF_MAP_LOOKUP_BATCH") ?? 0) + (byCommand.get("BPF_MAP_GET_NEXT_KEY") ?? 0);
    assert.ok(mapReads <= 2, `the idle reconciles read no map back (${mapReads} map reads in ${reconciles} reconciles)`);
  });
});
