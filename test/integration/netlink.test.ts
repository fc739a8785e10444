/**
 * twill's own rtnetlink against the kernel, checked with iproute2's eyes.
 *
 *   netns nl<rand>
 *   ┌───────────────────────────────────────────────────────────────┐
 *   │ d0 10.1.0.1/24 fd00::1/64 ── veth ── d0p                      │
 *   │ vx4: vxlan id 7 local 10.1.0.1 dev d0 dstport 8472 nolearning │
 *   │ vx6: vxlan external local fd00::1 dev d0 dstport 4789, noarp  │
 *   │ br0 (bridge) ── v1 (veth), later v2                           │
 *   └───────────────────────────────────────────────────────────────┘
 *
 * A netlink socket belongs to the netns of the process that opens it, so
 * the netlink side runs in a child (this same file, NLTEST_CHILD=<scenario>,
 * started with nsenter --net) that prints JSON; the parent compares it with
 * `ip -j` / `bridge -j` and drives the events. Everything is removed in a
 * finally.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const SELF = fileURLToPath(import.meta.url);
const CHILD = process.env["NLTEST_CHILD"];

// ---- child side: runs inside the namespace -------------------------------------------

const out = (x: unknown): void => {
  process.stdout.write(JSON.stringify(x, (_k, v) => (v instanceof Uint8Array ? Array.from(v).join(",") : v)) + "\n");
};

async function child(scenario: string): Promise<void> {
  const L = await import("../../src/net/link.js");
  const { parseIP, parsePrefix, formatIP, formatPrefix } = await import("../../src/net/ip.js");
  const ipText = (r: { dst: { ip: unknown; len: number } }) => formatPrefix(r.dst as never);
  if (scenario === "objects") {
    const logs: string[] = [];
    const spec4 = { name: "vx4", vni: 7, port: 8472, external: false, localIP: parseIP("10.1.0.1"), dev: "d0", mtu: 1400,
      mac: "02:11:22:33:44:55", learning: false as const, arpOff: false, family: 4 as const };
    const a = await L.ensureVxlan(spec4, (m) => logs.push(m));
    const again = await L.ensureVxlan(spec4, (m) => logs.push(m)); // adopted as is
    await L.ensureVxlan({ name: "vx6", vni: 0, port: 4789, external: true, localIP: parseIP("fd00::1"), dev: "d0", mtu: 1380,
      learning: false, arpOff: true, family: 6 }, (m) => logs.push(m));
    await L.ensureAddress("vx4", "10.244.1.0/32");
    await L.ensureAddress("vx4", "10.244.1.0/32");
    await L.ensureAddress("vx6", "fc00:0:0:1::/128");
    await L.routeReplace(parsePrefix("10.244.2.0/24"), "vx4", { via: parseIP("10.244.2.0"), onlink: true });
    await L.neighReplace(parseIP("10.244.2.0"), "02:00:00:00:00:02", "vx4");
    await L.fdbAdd("replace", "02:00:00:00:00:02", "vx4", parseIP("10.1.0.2"));
    await L.fdbAdd("append", "00:00:00:00:00:00", "vx4", parseIP("10.1.0.3"));
    const one = await L.getLink("vx4");
    const routes = (await L.listRoutes("vx4", 4)).map((r) => ({ dst: ipText(r), gw: r.gateway && formatIP(r.gateway), flags: r.flags, protocol: r.protocol ?? "boot" }));
    const neighs = (await L.listNeighs("vx4", 4)).map((n) => ({ dst: formatIP(n.dst), lladdr: n.lladdr, state: n.state }));
    const fdb = (await L.listFdb("vx4")).map((f) => ({ mac: f.mac, dst: f.dst && formatIP(f.dst), flags: f.flags, state: f.state }));
    const addrs = (await L.getAddrs("vx4")).map((x) => `${formatIP(x.local)}/${x.prefixLen} ${x.scope}`);
    const underlay = await L.findUnderlay({ canReach: parseIP("10.1.0.9") });
    const byDefault = await L.findUnderlay({}).catch((e: Error) => e.message);
    // incompatible: same name, other VNI → replaced with a message saying why
    const b = await L.ensureVxlan({ ...spec4, vni: 8 }, (m) => logs.push(m));
    const links = (await L.listLinks()).filter((l) => l.name.startsWith("vx"));
    const missing = await L.getLink("nope0");
    const noAddrs = await L.getAddrs("nope0").then(() => "no error", (e: Error) => e.message);
    const ports = await L.bridgePorts("br0");
    out({ a, again, b, links, one, routes, neighs, fdb, addrs, underlay: { ...underlay, ipv4: underlay.ipv4 && formatIP(underlay.ipv4) }, byDefault, missing: missing ?? null, noAddrs, logs, ports });
    return;
  }
  if (scenario === "batch") {
    const { netlinkBatch } = await import("../../src/net/netlink/batch.js");
    await L.ensureVxlan({ name: "vx4", vni: 7, port: 8472, external: false, localIP: parseIP("10.1.0.1"), dev: "d0", mtu: 1400,
      learning: false, arpOff: false, family: 4 });
    const r = (n: number, onlink: boolean) => ({ kind: "route" as const, action: "replace" as const, dst: parsePrefix(`10.244.${n}.0/24`),
      via: parseIP(`10.244.${n}.0`), dev: "vx4", ...(onlink ? { onlink } : {}) });
    const list = async () => (await L.listRoutes("vx4", 4)).map(ipText).sort();
    let stop: unknown;
    try {
      netlinkBatch([r(2, true), r(3, false), r(4, true)]);
    } catch (e) {
      const be = e as { name: string; failedIndex?: number; message: string; errno?: number };
      stop = { name: be.name, failedIndex: be.failedIndex, message: be.message, errno: be.errno };
    }
    const afterStop = await list();
    const forced = netlinkBatch([r(2, true), r(3, false), r(4, true), { ...r(5, true), dev: "nope0" }], { force: true });
    const afterForce = await list();
    const del = (dst: string, via?: string) => ({ kind: "route" as const, action: "del" as const, dst: parsePrefix(dst), ...(via ? { via: parseIP(via) } : {}), dev: "vx4" });
    const lines = netlinkBatch([del("10.244.2.0/24", "10.244.2.0"), del("10.244.9.0/24"), del("10.244.4.0/24")], { force: true });
    const afterLines = await list();
    // 2,000 routes in one forced batch
    const many = Array.from({ length: 2000 }, (_, i) => ({ kind: "route" as const, action: "replace" as const,
      dst: parsePrefix(`10.${100 + (i >> 8)}.${i & 255}.0/24`), via: parseIP("10.244.2.0"), dev: "vx4", onlink: true }));
    const t0 = process.hrtime.bigint();
    const manyRes = netlinkBatch(many, { force: true });
    const manyMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const t1 = process.hrtime.bigint();
    netlinkBatch(many.map((m) => ({ ...m, action: "del" as const })));
    const manyDelMs = Number(process.hrtime.bigint() - t1) / 1e6;
    out({ stop, afterStop, forced, afterForce, lines, afterLines, manyFailures: manyRes.failures.length, manyMs, manyDelMs, left: (await list()).length });
    return;
  }
  if (scenario === "podwatch") {
    const { PodWatcher } = await import("../../src/dataplane/podwatch.js");
    const log = { warn: (m: string) => out({ warn: m }), info() {}, debug() {}, error() {} };
    const w = new PodWatcher("br0", async (ports) => out({ t: Date.now(), ports: ports.map((p) => p.name).sort() }), log as never, 1000);
    w.start();
    // A line "kick" from the parent is a reconcile's kick(); the parent closing
    // stdin stops the watcher, and the process must then exit on its own (no timer or poll left).
    createInterface({ input: process.stdin }).on("line", (l) => {
      if (l !== "kick") return;
      w.kick();
      out({ kicked: Date.now() });
    });
    process.stdin.on("end", () => w.stop());
    return;
  }
  if (scenario === "firewall") {
    const { watchFirewall } = await import("../../src/net/firewall-watch.js");
    const { ensureForward } = await import("../../src/net/masq.js");
    const fw = await watchFirewall((reason) => out({ change: reason }), { debounceMs: 50 });
    await ensureForward(parsePrefix("10.244.0.0/16")); // our own change: must not be reported
    out({ ready: true, mode: fw.mode });
    process.stdin.resume();
    process.stdin.on("end", () => fw.stop());
    return;
  }
  if (scenario === "exit-explicit" || scenario === "exit-throw") {
    // A subscription left open (no stop()): the process must still exit at once, by process.exit or by an uncaught exception.
    const { watchLinks } = await import("../../src/net/netlink/link-events.js");
    watchLinks(() => {}, () => {});
    out({ ready: true });
    setTimeout(() => {
      if (scenario === "exit-explicit") process.exit(0);
      throw new Error("boom (on purpose)");
    }, 200);
    return;
  }
  throw new Error(`unknown scenario ${scenario}`);
}

// ---- parent side -------------------------------------------------------------------------

const NS = `nl${randomBytes(2).toString("hex")}`;
const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: "utf8" });
const inNs = (cmd: string, ...args: string[]): string => sh("ip", "netns", "exec", NS, cmd, ...args);
const ipj = (...args: string[]): any[] => JSON.parse(sh("ip", "-n", NS, "-j", ...args) || "[]");

function childJSON(scenario: string): any {
  const text = execFileSync("nsenter", [`--net=/run/netns/${NS}`, process.execPath, SELF], {
    encoding: "utf8", env: { ...process.env, NLTEST_CHILD: scenario }, timeout: 60_000,
  });
  return JSON.parse(text.trim().split("\n").pop()!);
}

/** Starts a long-running child scenario; lines of JSON arrive through `next`. */
function startChild(scenario: string, traceFile?: string, syscalls = "execve") {
  const argv = [`--net=/run/netns/${NS}`, process.execPath, SELF];
  const [cmd, args] = traceFile ? ["strace", ["-f", "-qq", "-e", `trace=${syscalls}`, "-o", traceFile, "nsenter", ...argv]] : ["nsenter", argv];
  const p = spawn(cmd as string, args as string[], { env: { ...process.env, NLTEST_CHILD: scenario }, stdio: ["pipe", "pipe", "inherit"] });
  const lines: any[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: p.stdout! }).on("line", (l) => {
    lines.push(JSON.parse(l));
    waiters.splice(0).forEach((w) => w());
  });
  const exited = new Promise<number | null>((res) => p.on("exit", (code) => res(code)));
  /** Waits for a line matching `pred` (looking at lines not yet consumed). */
  let seen = 0;
  async function next(pred: (x: any) => boolean, what: string, ms = 3000): Promise<any> {
    const deadline = Date.now() + ms;
    for (;;) {
      while (seen < lines.length) {
        const x = lines[seen++];
        if (pred(x)) return x;
      }
      if (Date.now() > deadline) throw new Error(`child ${scenario}: no ${what} within ${ms} ms; got ${JSON.stringify(lines)}`);
      await new Promise<void>((res) => {
        waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }
  return { p, next, exited, lines };
}

if (CHILD) {
  await child(CHILD);
} else {
  before(() => {
    sh("ip", "netns", "add", NS);
    for (const c of [
      ["link", "set", "lo", "up"],
      ["link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
      ["addr", "add", "10.1.0.1/24", "dev", "d0"],
      ["addr", "add", "fd00::1/64", "dev", "d0", "nodad"],
      ["link", "set", "d0", "up"], ["link", "set", "d0p", "up"],
      ["link", "add", "br0", "type", "bridge"], ["link", "set", "br0", "up"],
      ["link", "add", "v1", "type", "veth", "peer", "name", "v1p"], ["link", "set", "v1", "master", "br0"],
    ]) sh("ip", "-n", NS, ...c);
  });
  after(() => {
    try { sh("ip", "netns", "del", NS); } catch { /* already gone */ }
  });

  test("links, addresses, routes, neighbours, FDB and route get read back as iproute2 reports them", () => {
    const r = childJSON("objects");
    for (const name of ["vx4", "vx6"]) {
      const ip = ipj("-d", "link", "show", "dev", name)[0];
      const mine = r.links.find((l: any) => l.name === name);
      const d = ip.linkinfo.info_data;
      assert.deepEqual(
        { ifindex: mine.ifindex, mtu: mine.mtu, mac: mine.mac, flags: mine.flags, kind: mine.kind,
          id: mine.vxlan.id, port: mine.vxlan.port, dev: mine.vxlan.dev, learning: mine.vxlan.learning, external: mine.vxlan.external },
        { ifindex: ip.ifindex, mtu: ip.mtu, mac: ip.address, flags: ip.flags, kind: ip.linkinfo.info_kind,
          id: d.id ?? 0, port: d.port, dev: d.link, learning: d.learning, external: d.external ?? false },
        name,
      );
    }
    const vx4 = ipj("-d", "link", "show", "dev", "vx4")[0];
    assert.equal(vx4.linkinfo.info_data.local, "10.1.0.1");
    assert.equal(ipj("-d", "link", "show", "dev", "vx6")[0].linkinfo.info_data.local6, "fd00::1");
    assert.equal(vx4.linkinfo.info_data.id, 8, "the incompatible VNI replaced the device");
    assert.equal(r.a.ifindex, r.again.ifindex, "a compatible device is adopted");
    assert.notEqual(r.b.ifindex, r.a.ifindex);
    assert.ok(r.logs.some((m: string) => /vx4: vxlan id 7 != 8; replacing the device/.test(m)), r.logs.join("\n"));
    assert.deepEqual([r.one.vxlan.dev, r.one.vxlan.id, r.one.ifindex], ["d0", 7, r.a.ifindex]);
    assert.equal(r.missing, null);
    assert.match(r.noAddrs, /addr show dev nope0: Cannot find device "nope0"/);
    assert.deepEqual(r.ports, [{ name: "v1", ifindex: ipj("link", "show", "dev", "v1")[0].ifindex, kind: "veth" }]);
    assert.ok(r.addrs.includes("10.244.1.0/32 global"), r.addrs.join(", "));
    // routes/neigh/fdb were read before vx4 was replaced: compare with what iproute2 would have shown
    assert.deepEqual(r.routes, [{ dst: "10.244.2.0/24", gw: "10.244.2.0", flags: ["onlink"], protocol: "boot" }]);
    assert.deepEqual(r.neighs, [{ dst: "10.244.2.0", lladdr: "02:00:00:00:00:02", state: ["PERMANENT"] }]);
    assert.deepEqual(
      r.fdb.filter((f: any) => f.dst).sort((a: any, b: any) => a.mac.localeCompare(b.mac)),
      [{ mac: "00:00:00:00:00:00", dst: "10.1.0.3", flags: ["self"], state: "permanent" },
       { mac: "02:00:00:00:00:02", dst: "10.1.0.2", flags: ["self"], state: "permanent" }],
    );
    assert.deepEqual([r.underlay.name, r.underlay.ipv4, r.underlay.mtu], ["d0", "10.1.0.1", 1500]);
    assert.match(String(r.byDefault), /no underlay interface matches the default route/);
  });

  test("batch: without force it stops at the failing op (failedIndex); with force it tries all and lists failures", () => {
    sh("ip", "-n", NS, "link", "del", "vx4");
    const r = childJSON("batch");
    assert.equal(r.stop.name, "BatchError");
    assert.equal(r.stop.failedIndex, 1);
    assert.equal(r.stop.errno, 101);
    assert.match(r.stop.message, /^route replace 10\.244\.3\.0\/24 via 10\.244\.3\.0 dev vx4 \(op 2 of 3\): Network is unreachable/);
    assert.deepEqual(r.afterStop, ["10.244.2.0/24"], "ops after the failure were not applied");
    assert.deepEqual(r.forced.failures.map((f: any) => [f.index, f.line, f.message.split(" (")[0]]), [
      [1, "route replace 10.244.3.0/24 via 10.244.3.0 dev vx4", "Network is unreachable"],
      [3, "route replace 10.244.5.0/24 via 10.244.5.0 dev nope0 onlink", 'Cannot find device "nope0"'],
    ]);
    assert.deepEqual(r.afterForce, ["10.244.2.0/24", "10.244.4.0/24"]);
    assert.deepEqual(r.lines.failures.map((f: any) => [f.index, f.line, f.message]), [[1, "route del 10.244.9.0/24 dev vx4", "No such process"]]);
    assert.deepEqual(r.afterLines, []);
    assert.equal(r.manyFailures, 0);
    assert.equal(r.left, 0);
    process.stderr.write(`    2000 route replaces (forced, pipelined): ${r.manyMs.toFixed(1)} ms; 2000 deletes one by one: ${r.manyDelMs.toFixed(1)} ms\n`);
    const ip = ipj("route", "show", "dev", "vx4");
    assert.deepEqual(ip, []);
  });

  test("PodWatcher: ports from events within ~100 ms; a kick re-reports the ports without reading them again, and is free with none; no process started; exits when stopped", async () => {
    const trace = `/tmp/${NS}-execve.txt`;
    const c = startChild("podwatch", trace, "execve,sendto");
    const reports = () => c.lines.filter((x) => x.ports).length;
    try {
      await c.next((x) => x.ports && x.ports.join() === "v1", "initial port list [v1]", 10_000);
      sh("ip", "-n", NS, "link", "add", "v2", "type", "veth", "peer", "name", "v2p");
      const t0 = Date.now();
      sh("ip", "-n", NS, "link", "set", "v2", "master", "br0");
      const added = await c.next((x) => x.ports && x.ports.join() === "v1,v2", "[v1,v2] after enslaving v2");
      const t1 = Date.now();
      sh("ip", "-n", NS, "link", "del", "v2");
      await c.next((x) => x.ports && x.ports.join() === "v1", "[v1] after deleting v2");
      const t2 = Date.now();
      sh("ip", "-n", NS, "link", "set", "v1", "nomaster");
      await c.next((x) => x.ports && x.ports.length === 0, "[] after v1 left the bridge");
      process.stderr.write(`    port seen ${added.t - t0} ms after enslave (reported ${t1 - t0} ms); removal ${Date.now() - t2} ms\n`);
      assert.ok(added.t - t0 < 150, `port reported after ${added.t - t0} ms`);
      // 2 s idle: nothing more may be reported
      await new Promise((res) => setTimeout(res, 2000));
      assert.equal(reports(), 4, JSON.stringify(c.lines));
      // No ports, and that is settled: a kick reports nothing.
      c.p.stdin!.write("kick\n");
      await c.next((x) => x.kicked, "the kick's acknowledgement");
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(reports(), 4, `a kick with no ports reported something: ${JSON.stringify(c.lines)}`);
      // With a port, a kick reports it again (the dataplane re-checks its attachment).
      sh("ip", "-n", NS, "link", "set", "v1", "master", "br0");
      await c.next((x) => x.ports && x.ports.join() === "v1", "[v1] after v1 rejoined the bridge");
      c.p.stdin!.write("kick\n");
      await c.next((x) => x.ports && x.ports.join() === "v1", "[v1] again after a kick");
      assert.equal(reports(), 6, JSON.stringify(c.lines));
      c.p.stdin!.end();
      const code = await Promise.race([c.exited, new Promise((res) => setTimeout(() => res("timeout"), 5000))]);
      assert.equal(code, 0, "the child exits by itself once the watcher is stopped");
      const lines = readFileSync(trace, "utf8").split("\n");
      const execs = lines.filter((l) => /execve\(/.test(l) && / = 0$/.test(l));
      // nsenter itself, then node: nothing else
      assert.deepEqual(execs.map((l) => /execve\("([^"]+)"/.exec(l)![1]!.split("/").pop()), ["nsenter", "node"], execs.join("\n"));
      // The ports were read once, at start: events and kicks did not dump the links again.
      // (strace runs outside the namespace, so it may print the type and flags undecoded: 0x12, 0x300.)
      const linkDumps = lines.filter((l) => /sendto\(/.test(l) && /nlmsg_type=(?:RTM_GETLINK|0x12\b)[^}]*nlmsg_flags=[^,}]*(?:NLM_F_DUMP|0x300)/.test(l));
      assert.equal(linkDumps.length, 1, `link dumps:\n${linkDumps.join("\n")}`);
    } finally {
      c.p.kill("SIGKILL");
      rmSync(trace, { force: true });
      sh("ip", "-n", NS, "link", "set", "v1", "master", "br0");
    }
  });

  test("a process with a netlink subscription still open exits at once (process.exit, uncaught exception)", async () => {
    for (const [scenario, code] of [["exit-explicit", 0], ["exit-throw", 1]] as const) {
      const c = startChild(scenario);
      try {
        await c.next((x) => x.ready, "ready", 15_000);
        const t0 = Date.now();
        const got = await Promise.race([c.exited, new Promise<string>((res) => setTimeout(() => res("still running 5 s later"), 5000))]);
        assert.equal(got, code, `${scenario}: ${got} (the poll() in flight held the exit)`);
        console.log(`${scenario}: exited ${code} ${Date.now() - t0} ms after ready`);
      } finally {
        c.p.kill("SIGKILL");
      }
    }
  });

  test("firewall watcher: other processes' changes to flannel's chains are reported, ours and other tables are not", async () => {
    const c = startChild("firewall");
    try {
      const ready = await c.next((x) => x.ready, "ready", 15_000);
      assert.equal(ready.mode, "events");
      await new Promise((res) => setTimeout(res, 300));
      inNs("iptables", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT");
      inNs("iptables", "-t", "filter", "-F", "FLANNEL-FWD");
      const ch = await c.next((x) => x.change, "a change report");
      assert.match(ch.change, /filter\/FLANNEL-FWD changed \(pid \d+\)/);
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(c.lines.filter((x) => x.change).length, 1, JSON.stringify(c.lines));
      c.p.stdin!.end();
      assert.equal(await c.exited, 0);
    } finally {
      c.p.kill("SIGKILL");
    }
  });
}
