/**
 * Hitless upgrade from the released version (git commit d002ee4, where the
 * vxlan driver encapsulates) to this tree's build (BPF encap by default):
 *
 *   h1 (--fast-path) [p1] ──ping every 10 ms both ways── [p1] h2
 *                    [p1] ──iperf3 TCP 300 Mbit/s, receiver intervals of 100 ms──▶ [p1]
 *
 *   released tree: /tmp/<prefix>-released  (git archive d002ee4, its src/ compiled by tsc,
 *                  its bpf/twill.c by its Makefile's recipe; see test/lib/released.ts)
 *   pins:          /sys/fs/bpf/<prefix>/h1, h2  (the same before and after)
 *
 * Both daemons start on the released build. While the traffic runs, h1's
 * daemon is stopped (SIGTERM) and this tree's started on the same pin
 * directory, then h2's (a rolling upgrade: for a while a released node and
 * an upgraded one talk to each other). Then:
 * - no ping was lost either way, and no 100 ms of the TCP stream carried ~nothing;
 * - the peer entries are all there (maps adopted, or migrated where the
 *   layout changed), the released links are kept (same link ids) and run
 *   this build's programs, and a program is attached to the underlay's
 *   ingress (where the BPF decap runs);
 * - fresh traffic both ways moves the BPF encap counters (encap_fast on h1,
 *   encap on h2) and the BPF receive counters (delivered on h1, decap on h2).
 * Then both nodes roll back to the released build, one at a time, under
 * ping: it must adopt this build's pins (the config map keeps 0.1's layout
 * for that) and lose nothing.
 * If this build refuses the released pins, the test fails quoting the log
 * lines (ERR_BPF_PIN_INCOMPATIBLE names the map and the difference).
 * It needs the git history (a full clone); without git or the commit it is
 * skipped, saying why.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { randomPrefix } from "../lib/cluster.js";
import { TwillCluster, type BpfState, type TwillNode } from "../lib/twill.js";
import { ping, pingStream, tcpTransfer, type PingStreamResult } from "../lib/traffic.js";
import { onCleanup, runJson } from "../lib/exec.js";
import { DEFAULT_OBJECT, lastRunLog, linkProgs, describeStalls, mbps, stalls, startOn, tcpStream, type LinkProg } from "../lib/upgrade.js";
import { buildRevision, revisionUnavailable, type RevisionBuild } from "../lib/released.js";
import { delta, moved, type Count } from "../lib/counters.js";
import { withDiagnostics } from "../lib/diagnostics.js";

const RELEASED = "d002ee4";
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const fmt = (c: Count): string => `${c.packets} pkts/${c.bytes} B`;

function pingLine(what: string, r: PingStreamResult): string {
  return `${what}: ${r.received}/${r.sent} answered, longest gap ${r.longestGapMs} ms`;
}

interface Snapshot { state: BpfState; links: Record<string, LinkProg> }

describe(`hitless upgrade from the released version (${RELEASED})`, () => {
  let tc: TwillCluster | undefined;
  let rel: RevisionBuild;
  let unavailable: string | undefined;

  before(async () => {
    unavailable = await revisionUnavailable(RELEASED);
    if (unavailable) return;
    const prefix = randomPrefix("tw");
    const dir = `/tmp/${prefix}-released`; // swept with the cluster (same prefix); this covers a failed build
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    rel = await buildRevision(RELEASED, dir);
    tc = await TwillCluster.create({
      prefix, hosts: 2, podsPerHost: 1,
      nodes: [{ dataplane: "bpf", fastPath: true, entry: rel.entry }, { dataplane: "bpf", entry: rel.entry }],
    });
  });
  after(async () => tc && (await tc.destroy()));

  async function snapshot(n: TwillNode): Promise<Snapshot> {
    const state = await tc!.maps(n);
    return { state, links: await linkProgs(state.ids.links) };
  }

  async function ifindex(n: TwillNode, dev: string): Promise<number> {
    const [l] = await runJson<Array<{ ifindex: number }>>("ip", ["-j", "link", "show", "dev", dev], { netns: n.host.netns });
    return l!.ifindex;
  }

  test("released -> this build under ping and TCP: nothing lost, pins adopted, links kept, BPF encap in use; and back", async (t) => {
    if (unavailable) {
      t.skip(`cannot build the released version ${RELEASED}: ${unavailable}`);
      return;
    }
    const c = tc!;
    await withDiagnostics(c, () => upgrade(c));
  });

  async function upgrade(c: TwillCluster): Promise<void> {
    const [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
    const [a, b] = [n1.host.pods[0]!, n2.host.pods[0]!];
    assert.deepEqual(await c.allPairs(), [], "the released build does not forward");
    const base = [await snapshot(n1), await snapshot(n2)];

    const streamSeconds = 16;
    const s1 = pingStream(a.netns, b.ip, 10);
    const s2 = pingStream(b.netns, a.ip, 10);
    const tcp = await tcpStream(a.netns, b.netns, b.ip, { seconds: streamSeconds, bitrate: "300M" });
    const t0 = Date.now();
    const upgradedAt: number[] = [];
    let refused: { node: string; exitCode: number; log: string } | undefined;
    let upgraded = false;
    try {
      await sleep(1500);
      for (const n of [n1, n2]) {
        await c.stop(n, "SIGTERM");
        n.opts.entry = undefined; // this tree's bin/twill from now on (and its `twill maps`)
        // 0.1's map sizes, so the rollback below can adopt the maps (0.1 refuses
        // pinned maps of another size; the default capacity resizes them, which
        // loader-teardown.test.ts covers).
        n.opts.extraArgs = ["--peer-capacity", "65536"];
        const r = await startOn(c, n, DEFAULT_OBJECT);
        if (!r.ready) {
          refused = { node: n.host.name, exitCode: r.exitCode, log: lastRunLog(c, n) };
          break;
        }
        upgradedAt.push(Date.now() - t0);
        await sleep(2000);
      }
      upgraded = !refused;
    } finally {
      if (!upgraded) {
        tcp.done.catch(() => {}); // the stream is cut short: its report does not matter
        const [p1, p2] = await Promise.all([s1.stop(), s2.stop(), tcp.stop()]);
        if (refused) refused.log += `\n(meanwhile, on the pinned dataplane: ${pingLine("h1->h2", p1!)}; ${pingLine("h2->h1", p2!)})`;
      }
    }
    if (refused) {
      const lines = refused.log.split("\n").filter((l) => /ERR_|INCOMPATIBLE|error|mismatch|meanwhile/i.test(l));
      assert.fail(`this build refused to take over from ${RELEASED} on ${refused.node} (exit ${refused.exitCode}):\n` +
        `${lines.join("\n") || refused.log.slice(-3000)}`);
    }
    const stream = await tcp.done;
    const streamEndMs = stream.startedAtMs - t0 + streamSeconds * 1000;
    const [r1, r2] = await Promise.all([s1.stop(), s2.stop()]);
    await tcp.stop();
    const st = stalls(stream);
    const up = [await snapshot(n1), await snapshot(n2)];

    console.log(`upgraded h1 at ${upgradedAt[0]} ms, h2 at ${upgradedAt[1]} ms, stream ends at ${streamEndMs} ms`);
    console.log(pingLine("h1->h2", r1) + "; " + pingLine("h2->h1", r2));
    console.log(`tcp h1->h2: ${mbps(stream.bytes, streamSeconds)} Mbit/s average, ${stream.retransmits} retransmits; ` +
      `per 100 ms: median ${mbps(st.medianBytes, 0.1)} Mbit/s, min ${mbps(st.min.bytes, 0.1)} Mbit/s at ${st.min.startS.toFixed(1)} s ` +
      `(${Math.round(st.minShare * 100)}% of median), weakest 200 ms ${Math.round(st.minPairShare * 100)}% of median`);
    for (const [i, n] of c.nodes.entries()) {
      const [b0, u] = [base[i]!, up[i]!];
      for (const name of new Set([...Object.keys(b0.state.ids.maps), ...Object.keys(u.state.ids.maps)])) {
        const [was, now] = [b0.state.ids.maps[name], u.state.ids.maps[name]];
        const how = was === undefined ? "new" : now === undefined ? "gone" : now === was ? "adopted" : "re-created/migrated";
        console.log(`${n.host.name} map ${name}: id ${was ?? "-"} -> ${now ?? "-"} (${how})`);
      }
      for (const name of new Set([...Object.keys(b0.links), ...Object.keys(u.links)])) {
        const [x, y] = [b0.links[name], u.links[name]];
        console.log(`${n.host.name} link ${name}: ${x ? `link ${x.linkId} ${x.prog} ${x.tag}` : "(none)"} -> ${y ? `link ${y.linkId} ${y.prog} ${y.tag}` : "(none)"}`);
      }
    }

    // the upgrade of both nodes happened while the stream ran
    assert.equal(upgradedAt.length, 2);
    assert.ok(upgradedAt[1]! + 500 < streamEndMs, `h2 was upgraded at ${upgradedAt[1]} ms, after the TCP stream (ended ${streamEndMs} ms)`);
    assert.ok(r1.sent > 400 && r2.sent > 400, `too few pings: ${r1.sent}, ${r2.sent}`);
    assert.deepEqual([r1.lost, r2.lost], [0, 0], `pings lost: h1->h2 ${r1.lostSeqs}, h2->h1 ${r2.lostSeqs}`);
    assert.deepEqual(st.stalled, [], `the TCP stream stalled (100 ms intervals with < 5% of the median ${st.medianBytes} bytes): ${describeStalls(stream, st)}`);

    for (const [i, n] of c.nodes.entries()) {
      const name = n.host.name;
      const [b0, u] = [base[i]!, up[i]!];
      const peerKey = (p: BpfState["peers"][number]) => JSON.stringify([p.prefix, p.kind, p.remote, p.vtepMAC, p.vni, p.id]);
      assert.deepEqual(u.state.peers.map(peerKey).sort(), b0.state.peers.map(peerKey).sort(), `${name}: peer entries not carried over from ${RELEASED}`);
      assert.ok(Object.keys(b0.links).length >= 2, `${name}: the released build pinned ${Object.keys(b0.links).length} links`);
      const oldProgs = new Set(Object.values(b0.links).map((l) => l.progId));
      for (const [link, l0] of Object.entries(b0.links)) {
        const l1 = u.links[link];
        assert.ok(l1, `${name}: the released link ${link} is gone after the upgrade`);
        assert.equal(l1.linkId, l0.linkId, `${name} ${link}: link re-created instead of kept`);
      }
      for (const [link, l1] of Object.entries(u.links)) {
        // (a daemon keeps a program whose tag is the same as its own build's: with bpf/ changed since the release, none is)
        assert.ok(!oldProgs.has(l1.progId), `${name} ${link}: still runs the released program ${l1.prog} (prog id ${l1.progId}, tag ${l1.tag})`);
      }
      const eth0 = await ifindex(n, "eth0");
      const onUnderlay = Object.entries(u.state.ids.links).filter(([, l]) => l.ifindex === eth0);
      assert.ok(onUnderlay.length > 0, `${name}: no program attached to the underlay eth0 (ifindex ${eth0}) for the BPF decap: links ${JSON.stringify(u.state.ids.links)}`);
    }

    // after the upgrade, the BPF encap path carries the traffic
    const size = 4 * 1024 * 1024;
    const before = [await c.maps(n1), await c.maps(n2)];
    for (const [x, y] of [[a, b], [b, a]] as const) {
      const tr = await tcpTransfer(x.netns, y.netns, y.ip, size);
      assert.equal(tr.receivedSha256, tr.sentSha256, `${x.host.name} -> ${y.host.name}: transfer corrupted`);
    }
    assert.equal((await ping(a.netns, b.ip, { count: 5 })).received, 5);
    const afterT = [await c.maps(n1), await c.maps(n2)];
    console.log(`after the upgrade, h1: ${moved(before[0]!, afterT[0]!)}; h2: ${moved(before[1]!, afterT[1]!)}`);
    const expect = [["encap_fast", "delivered"], ["encap", "decap"]] as const;
    for (const [i, n] of c.nodes.entries()) {
      const [sent, got] = expect[i]!;
      const s = delta(before[i]!, afterT[i]!, sent);
      const r = delta(before[i]!, afterT[i]!, got);
      const dev = delta(before[i]!, afterT[i]!, "encap_device");
      assert.ok(s.bytes >= size, `${n.host.name}: ${sent} moved ${fmt(s)} for a ${size}-byte transfer (${moved(before[i]!, afterT[i]!)})`);
      assert.ok(r.bytes >= size, `${n.host.name}: ${got} moved ${fmt(r)} for a ${size}-byte transfer (${moved(before[i]!, afterT[i]!)})`);
      assert.ok(dev.packets <= Math.max(3, s.packets / 100), `${n.host.name}: the vxlan driver still encapsulates (${fmt(dev)})`);
    }
    assert.deepEqual(await c.allPairs(), [], "pods unreachable after the upgrade");
    await rollback(c);
  }

  /** Back to the released build, one node at a time, under ping: it must adopt this build's pins. */
  async function rollback(c: TwillCluster): Promise<void> {
    const [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
    const [a, b] = [n1.host.pods[0]!, n2.host.pods[0]!];
    const s1 = pingStream(a.netns, b.ip, 10);
    const s2 = pingStream(b.netns, a.ip, 10);
    const refusals: string[] = [];
    try {
      await sleep(500);
      for (const n of [n1, n2]) {
        await c.stop(n, "SIGTERM");
        n.opts.entry = rel.entry;
        n.opts.extraArgs = []; // 0.1 has no --peer-capacity
        const r = await startOn(c, n, rel.object);
        if (!r.ready) {
          const lines = lastRunLog(c, n).split("\n").filter((l) => /ERR_|INCOMPATIBLE|error|mismatch/i.test(l));
          refusals.push(`${n.host.name} (exit ${r.exitCode}): ${lines.join(" | ")}`);
        }
        await sleep(1000);
      }
    } finally {
      const [r1, r2] = await Promise.all([s1.stop(), s2.stop()]);
      console.log(`rollback: ${pingLine("h1->h2", r1)}; ${pingLine("h2->h1", r2)}`);
      assert.deepEqual(refusals, [], `the released build refused this build's pins on rollback`);
      assert.deepEqual([r1.lost, r2.lost], [0, 0], `pings lost during the rollback: h1->h2 ${r1.lostSeqs}, h2->h1 ${r2.lostSeqs}`);
    }
    assert.deepEqual(await c.allPairs(), [], "pods unreachable after the rollback");
  }
});
