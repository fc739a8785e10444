/**
 * A SIGTERM that reaches the daemon while it is still starting (a rolling
 * update, a node drain, a kubelet restart) stops it at the start's next
 * step, with exit code 0 and the dataplane left as it is, like a SIGTERM
 * after start.
 *
 *   h1: twill bpf, 10,000 leases in its lease directory (10.0.0.0/8, /24s),
 *       so listing and programming them takes a while after /healthz answers.
 *
 * The signal is sent as soon as /healthz answers: the health server is the
 * first thing start() makes, so the daemon is then reading the config, the
 * leases or acquiring its own. Before the fix the daemon logged
 * "stopping", went on to set up the dataplane (its netlink watchers among
 * it) and logged "ready" with its health server closed — and sometimes
 * never exited, node's exit waiting for a poll() that nothing woke (that
 * part is pinned down by netlink.test.ts). A second start must then adopt
 * whatever the first one made and program every lease.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, type TwillNode } from "../lib/twill.js";
import { spawnIn, waitFor } from "../lib/exec.js";

const PEERS = 10_000;
const NET = { Network: "10.0.0.0/8", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1, Port: 8472 } };
const hex = (n: number): string => n.toString(16).padStart(2, "0");

describe("SIGTERM while the daemon is starting", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 1, startNodes: false, netConfig: NET });
    for (let i = 1; i <= PEERS; i++) {
      writeFileSync(join(tc.leaseDir, "subnets", `10.${i >> 8}.${i & 255}.0-24`), JSON.stringify({
        PublicIP: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, PublicIPv6: null, BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: `02:5c:00:${hex(i >> 16)}:${hex((i >> 8) & 255)}:${hex(i & 255)}` },
      }));
    }
  });
  after(async () => tc && (await tc.destroy()));

  test("exits with code 0 within 10 s; the next start programs every lease", async () => {
    const n: TwillNode = tc.nodes[0]!;
    const [entry, ...args] = tc.args(n);
    const proc = spawnIn(n.host.netns, entry!, args, { logFile: n.logFile });
    const exited = new Promise<number | null>((res) => proc.on("exit", (code) => res(code)));
    await waitFor(async () => proc.exitCode !== null || (await tc.http(n, "/healthz")) !== "", { timeoutMs: 20_000, intervalMs: 20, what: "/healthz answering" });
    const readyBefore = (await tc.http(n, "/readyz")).startsWith("ready");
    proc.kill("SIGTERM");
    assert.equal(readyBefore, false, "the daemon was still starting when signalled");
    const t0 = Date.now();
    const code = await Promise.race([exited, new Promise<string>((res) => setTimeout(() => res("still running 10 s after SIGTERM"), 10_000))]);
    const log = tc.log(n);
    if (code !== 0) proc.kill("SIGKILL");
    assert.equal(code, 0, `${code}; ready when signalled: ${readyBefore}\n${log.slice(-3000)}`);
    assert.match(log, /"msg":"stopping; the dataplane keeps forwarding"/);
    // It stopped where it was: it did not go on to set the dataplane up and declare itself ready.
    assert.doesNotMatch(log, /"msg":"ready"/, "the start went on after the signal");
    console.log(`signalled ${readyBefore ? "after" : "before"} ready; exited 0 after ${Date.now() - t0} ms`);

    await tc.start(n);
    await waitFor(async () => (await tc.metric(n, "twill_leases", { state: "peer" })) === PEERS, { timeoutMs: 20_000, intervalMs: 200, what: `${PEERS} peers programmed` });
    const maps = await tc.maps(n);
    assert.equal(maps.peers.filter((p) => p.kind === "vxlan").length, PEERS);
  });
});
