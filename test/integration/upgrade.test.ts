/**
 * Hitless upgrade and rollback (2 hosts, bpf; h1 with --fast-path):
 *
 *   h1/p1 --ping every 10 ms--> h2/p1   (and h2/p1 --> h1/p1)
 *   h1/p1 --iperf3 TCP, 300 Mbit/s, receiver intervals of 100 ms--> h2/p1
 *
 * "Version B" is a second build of bpf/twill.c made by the test with
 * -mcpu=v3: other instructions (so other program tags), the same behaviour,
 * the same maps. While the traffic runs, both daemons are stopped (SIGTERM)
 * and started on B, then stopped and started on the original build again.
 * Each time the pinned tcx links must be kept (same link ids) and their
 * programs swapped atomically (bpf_link_update: the tags of B, then the
 * original tags again), the pinned maps adopted (same map ids, same peer
 * entries); no ping may be lost and no 100 ms of the TCP stream may carry
 * ~nothing.
 *
 * "Version C" changes the value of twill_endpoints (struct twill_ep grows by
 * 4 bytes). Started on C, the daemon must refuse with ERR_BPF_PIN_INCOMPATIBLE
 * naming the map and the difference, exit non-zero, and leave the running
 * dataplane (maps, links, programs) untouched and forwarding.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { TwillCluster, type BpfState } from "../lib/twill.js";
import { pingStream, type PingStreamResult } from "../lib/traffic.js";
import {
  DEFAULT_OBJECT, buildObject, growEndpointValue, reorderEndpointValue, lastRunLog, linkProgs, describeStalls, mbps, stalls, startOn, tcpStream, type LinkProg,
} from "../lib/upgrade.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pingLine(what: string, r: PingStreamResult): string {
  return `${what}: ${r.received}/${r.sent} answered, longest gap ${r.longestGapMs} ms`;
}

describe("hitless upgrade and rollback", () => {
  let tc: TwillCluster;
  let variantB: string;
  let variantC: string;
  let variantD: string;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf" }] });
    const dir = join(tc.cluster.dir, "variants");
    [variantB, variantC, variantD] = await Promise.all([
      buildObject(dir, "b-mcpu-v3", { cflags: ["-mcpu=v3"] }),
      buildObject(dir, "c-endpoint-grown", { edit: growEndpointValue }),
      buildObject(dir, "d-endpoint-reordered", { edit: reorderEndpointValue }),
    ]);
  });
  after(async () => tc && (await tc.destroy()));

  /** Restarts every node on `object`, in parallel; fails with the log of a node that did not come up. */
  async function restartAll(object: string): Promise<void> {
    await Promise.all(tc.nodes.map(async (n) => {
      await tc.stop(n, "SIGTERM");
      const r = await startOn(tc, n, object);
      if (!r.ready) throw new Error(`twill on ${n.host.name} exited ${r.exitCode} on ${object}:\n${lastRunLog(tc, n).slice(-3000)}`);
    }));
  }

  async function snapshot(): Promise<Array<{ state: BpfState; links: Record<string, LinkProg> }>> {
    return Promise.all(tc.nodes.map(async (n) => {
      const state = await tc.maps(n);
      return { state, links: await linkProgs(state.ids.links) };
    }));
  }

  test("a build with other programs replaces them atomically, and rolls back, with no ping lost and no TCP stall", async () => {
    const [a, b] = [tc.nodes[0]!.host.pods[0]!, tc.nodes[1]!.host.pods[0]!];
    const base = await snapshot();
    const streamSeconds = 16;
    const s1 = pingStream(a.netns, b.ip, 10);
    const s2 = pingStream(b.netns, a.ip, 10);
    const tcp = await tcpStream(a.netns, b.netns, b.ip, { seconds: streamSeconds, bitrate: "300M" });
    let upgraded: Awaited<ReturnType<typeof snapshot>>;
    const t0 = Date.now();
    let tUp = 0;
    let tBack = 0;
    try {
      await sleep(1000);
      await restartAll(variantB);
      tUp = Date.now() - t0;
      await sleep(1000);
      upgraded = await snapshot();
      await restartAll(DEFAULT_OBJECT);
      tBack = Date.now() - t0;
      await sleep(1000);
    } catch (e) {
      await Promise.all([s1.stop(), s2.stop(), tcp.stop()]);
      throw e;
    }
    const stream = await tcp.done;
    const streamEndMs = stream.startedAtMs - t0 + streamSeconds * 1000;
    const [r1, r2] = await Promise.all([s1.stop(), s2.stop()]);
    await tcp.stop();
    const back = await snapshot();
    const st = stalls(stream);
    console.log(`upgrade done at ${tUp} ms, rollback done at ${tBack} ms, stream ends at ${streamEndMs} ms`);
    console.log(pingLine("h1->h2", r1) + "; " + pingLine("h2->h1", r2));
    console.log(`tcp h1->h2: ${mbps(stream.bytes, streamSeconds)} Mbit/s average, ${stream.retransmits} retransmits; ` +
      `per 100 ms: median ${mbps(st.medianBytes, 0.1)} Mbit/s, min ${mbps(st.min.bytes, 0.1)} Mbit/s at ${st.min.startS.toFixed(1)} s ` +
      `(${Math.round(st.minShare * 100)}% of median), weakest 200 ms ${Math.round(st.minPairShare * 100)}% of median`);
    for (const [i, n] of tc.nodes.entries()) {
      for (const [name, l] of Object.entries(base[i]!.links)) {
        console.log(`${n.host.name} ${name}: ${l.prog} tag ${l.tag} -> ${upgraded![i]!.links[name]?.tag} -> ${back[i]!.links[name]?.tag}`);
      }
    }

    // the whole upgrade and rollback happened while the stream ran
    assert.ok(tBack + 500 < streamEndMs, `the rollback finished at ${tBack} ms, after the TCP stream (ended ${streamEndMs} ms)`);
    assert.ok(r1.sent > 300 && r2.sent > 300, `too few pings: ${r1.sent}, ${r2.sent}`);
    assert.deepEqual([r1.lost, r2.lost], [0, 0], `pings lost: h1->h2 ${r1.lostSeqs}, h2->h1 ${r2.lostSeqs}`);
    assert.deepEqual(st.stalled, [], `the TCP stream stalled (100 ms intervals with < 5% of the median ${st.medianBytes} bytes): ${describeStalls(stream, st)}`);

    for (const [i, n] of tc.nodes.entries()) {
      const name = n.host.name;
      const [b0, up, bk] = [base[i]!, upgraded![i]!, back[i]!];
      assert.ok(Object.keys(b0.links).length > 0, `${name}: no pinned links`);
      for (const [st0, what] of [[up.state, "upgrade"], [bk.state, "rollback"]] as const) {
        assert.deepEqual(st0.ids.maps, b0.state.ids.maps, `${name}: maps re-created by the ${what} instead of adopted`);
        assert.deepEqual(st0.peers, b0.state.peers, `${name}: peer entries changed by the ${what}`);
        assert.deepEqual(Object.keys(st0.ids.links).sort(), Object.keys(b0.state.ids.links).sort(), `${name}: set of links changed by the ${what}`);
      }
      for (const [link, l0] of Object.entries(b0.links)) {
        const lu = up.links[link]!;
        const lb = bk.links[link]!;
        assert.deepEqual([lu.linkId, lb.linkId], [l0.linkId, l0.linkId], `${name} ${link}: link re-created instead of updated`);
        assert.equal(lu.prog, l0.prog, `${name} ${link}: runs another program after the upgrade`);
        assert.notEqual(lu.tag, l0.tag, `${name} ${link}: the variant build has the same tag (${l0.tag}): nothing was swapped`);
        assert.notEqual(lu.progId, l0.progId, `${name} ${link}: program not replaced by the upgrade`);
        assert.equal(lb.tag, l0.tag, `${name} ${link}: rollback did not restore the original program`);
        assert.notEqual(lb.progId, lu.progId, `${name} ${link}: program not replaced by the rollback`);
      }
      // the same program of B is attached wherever the original one was (tags are per program)
      const tagOf = (links: Record<string, LinkProg>): Record<string, string> => Object.fromEntries(Object.values(links).map((l) => [l.prog, l.tag]));
      assert.deepEqual(tagOf(bk.links), tagOf(b0.links), `${name}: tags after rollback`);
    }
    assert.deepEqual(await tc.allPairs(), [], "pods unreachable after rollback");
  });

  test("a build whose map layout changed is refused by name, and the running dataplane keeps forwarding", async () => {
    const [a, b] = [tc.nodes[0]!.host.pods[0]!, tc.nodes[1]!.host.pods[0]!];
    const n = tc.nodes[0]!;
    const before = await snapshot();
    const s1 = pingStream(a.netns, b.ip, 10);
    const s2 = pingStream(b.netns, a.ip, 10);
    let r: Awaited<ReturnType<typeof startOn>>;
    let during: Awaited<ReturnType<typeof snapshot>>;
    let r1: PingStreamResult;
    let r2: PingStreamResult;
    try {
      await sleep(500);
      await tc.stop(n, "SIGTERM");
      r = await startOn(tc, n, variantC);
      await sleep(1000);
      during = await snapshot();
    } finally {
      [r1, r2] = await Promise.all([s1.stop(), s2.stop()]);
    }
    const log = lastRunLog(tc, n);
    console.log(pingLine("h1->h2", r1) + "; " + pingLine("h2->h1", r2));
    console.log(`refusal: exit ${r.ready ? "none (ready)" : r.exitCode}: ${log.split("\n").filter((l) => /INCOMPATIBLE/.test(l)).join(" | ").slice(0, 600)}`);

    assert.equal(r.ready, false, `twill started on an object whose twill_endpoints layout differs from the pin:\n${log.slice(-2000)}`);
    assert.notEqual(r.ready ? 0 : r.exitCode, 0, "refused, but exited 0");
    assert.match(log, /ERR_BPF_PIN_INCOMPATIBLE/);
    assert.match(log, /twill_endpoints[^\n]*value size 12 pinned, 16 in this build/, "the message names the map and the difference");
    assert.doesNotMatch(log, /twill_(peers|config|stats) \(/, "only the changed map is named");
    assert.ok(r1.sent > 70 && r2.sent > 70, `too few pings: ${r1.sent}, ${r2.sent}`);
    assert.deepEqual([r1.lost, r2.lost], [0, 0], `pings lost: h1->h2 ${r1.lostSeqs}, h2->h1 ${r2.lostSeqs}`);
    for (const i of [0, 1]) {
      assert.deepEqual(during![i]!.state.ids, before[i]!.state.ids, `${tc.nodes[i]!.host.name}: pins, links or programs changed by the refused start`);
      assert.deepEqual(during![i]!.state.peers, before[i]!.state.peers, `${tc.nodes[i]!.host.name}: peer entries changed by the refused start`);
    }

    // the good build still adopts everything
    const again = await startOn(tc, n, DEFAULT_OBJECT);
    assert.ok(again.ready, `twill did not come back on the original build:\n${lastRunLog(tc, n).slice(-2000)}`);
    const after = await snapshot();
    assert.deepEqual(after[0]!.state.ids, before[0]!.state.ids, "h1: the original build did not adopt the pins and links");
    assert.deepEqual(await tc.allPairs(), [], "pods unreachable after the refused upgrade");
  });

  test("a build whose map value has the same size but another layout is refused too, not reinterpreted", async () => {
    const n = tc.nodes[0]!;
    const before = await snapshot();
    await tc.stop(n, "SIGTERM");
    const r = await startOn(tc, n, variantD);
    const log = lastRunLog(tc, n);
    const during = await snapshot();
    if (r.ready) await tc.stop(n, "SIGTERM");
    const again = await startOn(tc, n, DEFAULT_OBJECT); // leave h1 on the original build either way
    console.log(`reordered twill_ep: ${r.ready ? "ADOPTED the pinned twill_endpoints (silently reinterpreted)" : `refused, exit ${r.exitCode}`}`);
    assert.ok(again.ready, `twill did not come back on the original build:\n${lastRunLog(tc, n).slice(-2000)}`);
    assert.equal(r.ready, false, "twill adopted a pinned twill_endpoints whose value (struct twill_ep) has another layout of the same size");
    assert.match(log, /ERR_BPF_PIN_INCOMPATIBLE[^\n]*twill_endpoints/);
    assert.deepEqual(during[0]!.state.ids, before[0]!.state.ids, "h1: pins, links or programs changed by the refused start");
  });
});
