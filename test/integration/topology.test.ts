/**
 * Self-test of the cluster library (no twill involved): the underlay carries
 * host-to-host traffic, the CNI bridge plugin makes pods from a hand-written
 * subnet file, pods on one host talk to each other and to their host, and
 * destroy() leaves nothing behind.
 */

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { Cluster, addPod, delPod, leftovers, randomPrefix, writeSubnetFile, type Pod } from "../lib/cluster.js";
import { ping, pingStream, tcpTransfer, startEchoServer, tcpRequest, tcpConnect, kernelStateCounts } from "../lib/traffic.js";
import { run } from "../lib/exec.js";
import { existsSync } from "node:fs";
import { join } from "node:path";

const prefix = randomPrefix("tt");
let cluster: Cluster | undefined;

after(async () => {
  await cluster?.destroy();
});

/** Runs `fn`; on failure, appends the cluster's state to the error. */
async function withDump(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (cluster && e instanceof Error) e.message += "\n" + (await cluster.dump());
    throw e;
  }
}

test("topology: underlay, CNI pods, traffic, cleanup", async (t) => {
  const c = await Cluster.create({ prefix, hosts: 2, ipv6: true });
  cluster = c;
  const [h1, h2] = [c.host(1), c.host(2)];
  let a1: Pod | undefined;
  let a2: Pod | undefined;

  await t.test("hosts reach each other on the underlay, both ways, v4 and v6", () =>
    withDump(async () => {
      assert.equal(h1.underlayIP, "192.168.50.11");
      assert.equal(h2.underlayIP, "192.168.50.12");
      const results = await Promise.all([
        ping(h1.netns, h2.underlayIP, { count: 3 }),
        ping(h2.netns, h1.underlayIP, { count: 3 }),
        ping(h1.netns, h2.underlayIPv6!, { count: 3 }),
        ping(h2.netns, h1.underlayIPv6!, { count: 3 }),
      ]);
      for (const r of results) assert.equal(r.received, 3, r.raw);
      // the router answers, and nothing beyond it does
      assert.equal((await ping(h1.netns, h1.gateway, { count: 1 })).received, 1);
    }),
  );

  await t.test("pods from the bridge plugin with a flannel subnet file", () =>
    withDump(async () => {
      writeSubnetFile(c.subnetFile(h1), { network: "10.244.0.0/16", subnet: "10.244.1.1/24", mtu: 1450, ipMasq: true });
      writeSubnetFile(c.subnetFile(h2), { network: "10.244.0.0/16", subnet: "10.244.2.1/24", mtu: 1450, ipMasq: true });
      a1 = await addPod(c, h1, "a1");
      a2 = await addPod(c, h1, "a2");
      assert.match(a1.ip, /^10\.244\.1\.\d+$/);
      assert.match(a2.ip, /^10\.244\.1\.\d+$/);
      assert.notEqual(a1.ip, a2.ip);
      assert.equal(a1.gateway, "10.244.1.1");
      assert.ok(a1.veth, "the plugin reports the host-side veth");
      const cni0 = await run("ip", ["-4", "-o", "addr", "show", "dev", "cni0"], { netns: h1.netns });
      assert.match(cni0.stdout, /10\.244\.1\.1\/24/);
      const link = await run("ip", ["-o", "link", "show", "dev", "eth0"], { netns: a1.netns });
      assert.match(link.stdout, /mtu 1450/);
      const routes = await run("ip", ["-4", "route", "show"], { netns: a1.netns });
      assert.match(routes.stdout, /10\.244\.0\.0\/16 via 10\.244\.1\.1/);
      assert.match(routes.stdout, /default via 10\.244\.1\.1/);
    }),
  );

  await t.test("pod to pod on one host, and host to pod through cni0", () =>
    withDump(async () => {
      assert.ok(a1 && a2);
      const [ab, ba, hp] = await Promise.all([
        ping(a1.netns, a2.ip, { count: 5 }),
        ping(a2.netns, a1.ip, { count: 5 }),
        ping(h1.netns, a1.ip, { count: 5 }),
      ]);
      assert.equal(ab.received, 5, ab.raw);
      assert.equal(ba.received, 5, ba.raw);
      assert.equal(hp.received, 5, hp.raw);
      // 1450-byte packets (1422 bytes of ICMP payload) fit the pod MTU with DF; larger ones do not
      const fits = await ping(a1.netns, a2.ip, { count: 2, size: 1450 - 28 });
      assert.equal(fits.received, 2, fits.raw);
      const tooBig = await ping(a1.netns, a2.ip, { count: 1, size: 1450 - 27 });
      assert.equal(tooBig.received, 0, tooBig.raw);
    }),
  );

  await t.test("8 MB over TCP between pods arrives intact", () =>
    withDump(async () => {
      assert.ok(a1 && a2);
      const r = await tcpTransfer(a1.netns, a2.netns, a2.ip);
      assert.equal(r.bytes, 8 * 1024 * 1024);
      assert.equal(r.sentBytes, r.bytes);
      assert.equal(r.receivedSha256, r.sentSha256);
      assert.equal(r.peer, a1.ip);
    }),
  );

  await t.test("echo server, request, connect, ping stream", () =>
    withDump(async () => {
      assert.ok(a1 && a2);
      const echo = await startEchoServer(a2.netns, 8080);
      try {
        assert.equal(await tcpRequest(a1.netns, a2.ip, 8080, "hello twill\n"), "hello twill\n");
        assert.equal(echo.peers()[0]?.peer, a1.ip);
        assert.equal((await tcpConnect(a1.netns, a2.ip, 8080)).connected, true);
        const refused = await tcpConnect(a1.netns, a2.ip, 8081);
        assert.equal(refused.connected, false);
        assert.equal(refused.error, "ECONNREFUSED");
      } finally {
        await echo.stop();
      }
      const stream = pingStream(a1.netns, a2.ip, 10);
      await new Promise((r) => setTimeout(r, 500));
      const s = await stream.stop();
      assert.ok(s.sent >= 20, `sent ${s.sent}:\n${s.raw}`);
      assert.equal(s.lost, 0, s.raw);
      // a stream to nobody loses everything it accounts for
      const dead = pingStream(a1.netns, "10.244.1.250", 10);
      await new Promise((r) => setTimeout(r, 300));
      const d = await dead.stop();
      assert.ok(d.sent >= 10 && d.received === 0 && d.lost === d.sent, `${JSON.stringify({ ...d, raw: undefined })}`);
    }),
  );

  await t.test("kernel state counts on a device", () =>
    withDump(async () => {
      // a stand-in vxlan device with flannel-style per-peer entries for one peer
      const dev = "vx0";
      await run("ip", ["-batch", "-"], {
        netns: h1.netns,
        input: [
          `link add ${dev} type vxlan id 42 local ${h1.underlayIP} dev eth0 dstport 8472 nolearning`,
          `addr add 10.244.1.0/32 dev ${dev}`,
          `link set ${dev} up`,
          `neigh replace 10.244.2.0 lladdr 02:00:00:00:00:02 dev ${dev} nud permanent`,
          `route replace 10.244.2.0/24 via 10.244.2.0 dev ${dev} onlink`,
        ].join("\n") + "\n",
      });
      await run("bridge", ["fdb", "replace", "02:00:00:00:00:02", "dev", dev, "dst", h2.underlayIP, "self", "permanent"], { netns: h1.netns });
      const k = await kernelStateCounts(h1.netns, dev);
      assert.equal(k.routes, 1, k.detail.routes.join("\n"));
      assert.equal(k.neighbours, 1, k.detail.neighbours.join("\n"));
      assert.equal(k.fdb, 1, k.detail.fdb.join("\n"));
      await run("ip", ["link", "del", dev], { netns: h1.netns });
    }),
  );

  await t.test("delPod releases the pod", () =>
    withDump(async () => {
      assert.ok(a2);
      const ns = a2.netns;
      await delPod(c, a2);
      assert.equal(h1.pods.length, 1);
      const list = await run("ip", ["netns", "list"]);
      assert.ok(!list.stdout.includes(ns));
      assert.ok(!existsSync(join(h1.dir, "cni", "ipam", "cbr0", a2.ip)), "host-local released the address");
      const again = await addPod(c, h1, "a3");
      assert.equal((await ping(again.netns, a1!.ip, { count: 1 })).received, 1);
    }),
  );

  await c.destroy();
  await c.destroy(); // idempotent
  assert.deepEqual(await leftovers(prefix), []);
  cluster = undefined;
});
