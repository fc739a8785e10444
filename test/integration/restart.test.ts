/**
 * The dataplane outlives its controller (2 hosts, bpf; h1 with --fast-path):
 *
 *   h1/p1 --ping every 10 ms--> h2/p1        (and h2/p1 --> h1/p1)
 *
 * Both controllers are killed with SIGKILL while the pings run: nothing is
 * lost during the kill and for 2 s after. They are restarted: the new
 * processes adopt the pinned maps and links (same kernel ids, same entries,
 * nothing flushed), and again nothing is lost.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { TwillCluster } from "../lib/twill.js";
import { pingStream } from "../lib/traffic.js";

describe("controller SIGKILL and restart", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf" }] });
  });
  after(async () => tc && (await tc.destroy()));

  test("no ping lost across SIGKILL and restart; pins adopted, not flushed", async () => {
    const [a, b] = [tc.nodes[0]!.host.pods[0]!, tc.nodes[1]!.host.pods[0]!];
    const before = await Promise.all(tc.nodes.map((n) => tc.maps(n)));
    const s1 = pingStream(a.netns, b.ip, 10);
    const s2 = pingStream(b.netns, a.ip, 10);
    await new Promise((r) => setTimeout(r, 500));
    await Promise.all(tc.nodes.map((n) => tc.stop(n, "SIGKILL")));
    await new Promise((r) => setTimeout(r, 2000));
    const down = await Promise.all(tc.nodes.map((n) => tc.maps(n)));
    await Promise.all(tc.nodes.map((n) => tc.start(n)));
    await new Promise((r) => setTimeout(r, 1500));
    const [r1, r2] = await Promise.all([s1.stop(), s2.stop()]);
    const after = await Promise.all(tc.nodes.map((n) => tc.maps(n)));
    console.log(`h1->h2: ${r1.received}/${r1.sent}, longest gap ${r1.longestGapMs} ms; h2->h1: ${r2.received}/${r2.sent}, longest gap ${r2.longestGapMs} ms`);
    assert.ok(r1.sent > 200 && r2.sent > 200, `too few pings: ${r1.sent}, ${r2.sent}`);
    assert.deepEqual([r1.lost, r2.lost], [0, 0], `lost h1->h2 ${r1.lostSeqs}, h2->h1 ${r2.lostSeqs}`);
    for (const i of [0, 1]) {
      const name = tc.nodes[i]!.host.name;
      assert.deepEqual(down[i]!.ids, before[i]!.ids, `${name}: pins changed while the controller was down`);
      assert.deepEqual(after[i]!.ids.maps, before[i]!.ids.maps, `${name}: maps were re-created instead of adopted`);
      assert.deepEqual(after[i]!.ids.links, before[i]!.ids.links, `${name}: links were re-created instead of adopted`);
      assert.deepEqual(after[i]!.peers, before[i]!.peers, `${name}: peer entries changed`);
      assert.match(tc.log(tc.nodes[i]!).split("--- start").pop()!, /"msg":"ready"/);
    }
  });
});
