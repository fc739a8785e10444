/**
 * `twill teardown` removes what twill created and nothing else.
 *
 *   netns pa<run>n (one per run; nothing in the host's namespace)
 *   ┌───────────────────────────────────────────────────────────────┐
 *   │ d0 (veth)   ingress: twill_from_pod  cls_bpf 0x7411 prio 1     │ twill's: removed
 *   │                      pa_other        cls_bpf 0x1    prio 2     │ another tool's: stays
 *   │                      u32 match-all                  prio 3     │ another tool's: stays
 *   │ d1 (veth)   ingress: twill_from_pod  tcx link, pinned          │ twill's: removed
 *   │ d2 (veth)   ingress: pa_other        cls_bpf 0x7411 prio 1     │ another tool's, at twill's
 *   │                                                                │ handle: stays
 *   │ pabr (bridge) egress:  twill_to_pod    cls_bpf 0x7411 prio 1     │ twill's: removed
 *   └───────────────────────────────────────────────────────────────┘
 *   /sys/fs/bpf/pa<run>/
 *     node/maps/twill_*        twill's maps      removed
 *     node/links/from_pod-N    twill's tcx link  removed
 *     node/maps/other_map      another tool's    stays (and node/ with it)
 *     node/theirs              another tool's    stays
 *     other/m                  another tool's    stays
 *
 * Also: a --bpf-pin-dir not on a bpffs is refused before anything is
 * removed, and a node name that would lead out of /sys/fs/bpf/twill
 * (`--node-name=../x`) is refused as a flag.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { onCleanup, run } from "../lib/exec.js";
import { ROOT, TWILL } from "../lib/twill.js";

const RUN = `pa${randomBytes(2).toString("hex")}`;
const NETNS = `${RUN}n`;
const BPFFS = `/sys/fs/bpf/${RUN}`;
const PIN = join(BPFFS, "node");
const TMP = `/tmp/${RUN}`;
const OBJECT = join(ROOT, "build", "bpf", "twill.o");

function cleanup(): void {
  for (const [cmd, args] of [["ip", ["netns", "del", NETNS]]] as const) {
    try { execFileSync(cmd, args, { stdio: "ignore" }); } catch { /* not there */ }
  }
  for (const d of [BPFFS, `/sys/fs/bpf/${RUN}x`, TMP]) rmSync(d, { recursive: true, force: true });
}
onCleanup(cleanup);

const ns = (cmd: string, args: string[]) => run(cmd, args, { netns: NETNS, allowFail: true });
const filters = async (dev: string, dir: "ingress" | "egress") => (await ns("tc", ["filter", "show", "dev", dev, dir])).stdout;

/** Loads twill's object into PIN and attaches like the bpf dataplane does: tc on d0 and pabr, tcx (pinned) on d1. */
const ATTACH = `
import { loadObject } from ${JSON.stringify(join(ROOT, "dist", "src", "bpf", "loader.js"))};
import { Attacher } from ${JSON.stringify(join(ROOT, "dist", "src", "bpf", "attach.js"))};
import { ifNameToIndex } from ${JSON.stringify(join(ROOT, "dist", "src", "bpf", "libbpf.js"))};
const pin = process.argv[1];
const l = loadObject(${JSON.stringify(OBJECT)}, pin);
const at = (mode, prog, dev, dir, role) => {
  const i = ifNameToIndex(dev);
  return new Attacher(mode).attach(l.progs[prog], i, dir, pin + "/links/" + role + "-" + i);
};
at("tc", "twill_from_pod", "d0", "ingress", "from_pod");
at("tc", "twill_to_pod", "pabr", "egress", "to_pod");
const r = at("tcx", "twill_from_pod", "d1", "ingress", "from_pod");
try {
  at("tc", "twill_from_pod", "d2", "ingress", "from_pod");
  console.log("d2 attached");
} catch (e) {
  console.log("d2 refused: " + e.code + " " + e.message);
}
l.close();
console.log(r);
`;

describe("twill teardown removes only twill's", () => {
  before(async () => {
    cleanup();
    mkdirSync(TMP, { recursive: true });
    await run("ip", ["netns", "add", NETNS]);
    const must = async (cmd: string, args: string[]) => {
      const r = await ns(cmd, args);
      assert.equal(r.code, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
      return r;
    };
    for (const d of ["d0", "d1", "d2"]) await must("ip", ["link", "add", d, "type", "veth", "peer", "name", `${d}p`]);
    await must("ip", ["link", "add", "pabr", "type", "bridge"]);
    // another tool's program: not named twill_*
    writeFileSync(join(TMP, "other.c"), [
      '#include "vmlinux.h"',
      "#include <bpf/bpf_helpers.h>",
      'SEC("tc") int pa_other(struct __sk_buff *skb) { return 0; }',
      'char LICENSE[] SEC("license") = "GPL";',
    ].join("\n"));
    execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", join(ROOT, "build", "bpf"), "-c", join(TMP, "other.c"), "-o", join(TMP, "other.o")]);
    mkdirSync(join(BPFFS, "other"), { recursive: true });
    execFileSync("bpftool", ["prog", "load", join(TMP, "other.o"), join(BPFFS, "other", "prog"), "type", "classifier"]);
    execFileSync("bpftool", ["map", "create", join(BPFFS, "other", "m"), "type", "array", "key", "4", "value", "4", "entries", "1", "name", "pa_other_m"]);
    const pinned = join(BPFFS, "other", "prog");
    await must("tc", ["qdisc", "add", "dev", "d2", "clsact"]);
    await must("tc", ["filter", "add", "dev", "d2", "ingress", "prio", "1", "handle", "0x7411", "bpf", "da", "object-pinned", pinned]);
    // twill's attachments, from inside the namespace
    const r = await must(process.execPath, ["--input-type=module", "-e", ATTACH, PIN]);
    assert.match(r.stdout, /^created$/m);
    assert.match(r.stdout, /^d2 refused: ERR_BPF_ATTACH .*another program \(pa_other, id \d+\) holds twill's filter handle 0x7411/m, "twill does not replace another tool's filter at its handle");
    // another tool's: a pin inside twill's pin directory and beside it, filters on the same links
    execFileSync("bpftool", ["map", "create", join(PIN, "maps", "other_map"), "type", "array", "key", "4", "value", "4", "entries", "1", "name", "pa_other_m2"]);
    execFileSync("bpftool", ["map", "create", join(PIN, "theirs"), "type", "array", "key", "4", "value", "4", "entries", "1", "name", "pa_other_m3"]);
    await must("tc", ["filter", "add", "dev", "d0", "ingress", "prio", "2", "handle", "0x1", "bpf", "da", "object-pinned", pinned]);
    await must("tc", ["filter", "add", "dev", "d0", "ingress", "prio", "3", "u32", "match", "u32", "0", "0", "flowid", "1:1"]);
  });
  after(cleanup);

  test("twill's pins, links and filters go; another tool's pins and filters stay", async () => {
    assert.match(await filters("d0", "ingress"), /twill_from_pod/);
    assert.match(await filters("pabr", "egress"), /twill_to_pod/);
    const linkPins = execFileSync("ls", [join(PIN, "links")], { encoding: "utf8" });
    assert.match(linkPins, /^from_pod-\d+$/m);
    const r = await ns(process.execPath, [TWILL, "teardown", "--bpf-pin-dir", PIN, "--node-name", "pa-node", "--log-level", "error"]);
    assert.equal(r.code, 0, r.stderr);

    const d0 = await filters("d0", "ingress");
    assert.doesNotMatch(d0, /twill_/, d0);
    assert.match(d0, /pa_other.*direct-action|handle 0x1 .*pa_other/s, `another tool's cls_bpf filter on d0 is gone:\n${d0}`);
    assert.match(d0, /u32/, `another tool's u32 filter on d0 is gone:\n${d0}`);
    const d2 = await filters("d2", "ingress");
    assert.match(d2, /handle 0x7411 .*pa_other/s, `another tool's filter at twill's handle on d2 is gone:\n${d2}`);
    assert.doesNotMatch(await filters("pabr", "egress"), /twill_/);
    // the tcx link: unpinned and detached (no program left on d1's ingress)
    assert.ok(!existsSync(join(PIN, "links")), "links/ is left");
    const progs = execFileSync("bpftool", ["-j", "link", "show"], { encoding: "utf8" });
    const ifindex = Number((await ns("cat", ["/sys/class/net/d1/ifindex"])).stdout.trim());
    const onD1 = (JSON.parse(progs) as Array<{ ifindex?: number; type?: string }>).filter((l) => l.type === "tcx" && l.ifindex === ifindex);
    assert.equal(onD1.length, 0, `a tcx link is left on d1: ${JSON.stringify(onD1)}`);
    // pins: twill's gone, another tool's kept
    for (const m of ["twill_peers", "twill_config", "twill_stats"]) assert.ok(!existsSync(join(PIN, "maps", m)), `${m} is left`);
    for (const p of [join(PIN, "maps", "other_map"), join(PIN, "theirs"), join(BPFFS, "other", "m"), join(BPFFS, "other", "prog")]) {
      assert.ok(existsSync(p), `${p} was removed`);
    }
  });

  test("a --bpf-pin-dir that is not on a bpffs is refused (--dataplane bpf) or left alone (auto), and nothing under it removed", async () => {
    const dir = join(TMP, "pins");
    mkdirSync(join(dir, "maps"), { recursive: true });
    writeFileSync(join(dir, "maps", "twill_peers"), "not a pin");
    const r = await ns(process.execPath, [TWILL, "teardown", "--dataplane", "bpf", "--bpf-pin-dir", dir, "--node-name", "pa-node"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /ERR_INVALID_FLAG|--bpf-pin-dir/);
    assert.match(r.stderr, new RegExp(`"${dir}" for --bpf-pin-dir: not on a bpffs mount \\(it is on `));
    assert.ok(existsSync(join(dir, "maps", "twill_peers")));
    // auto (the default): there can be no pins off bpffs; the BPF part is skipped, said in the log
    const a = await ns(process.execPath, [TWILL, "teardown", "--bpf-pin-dir", dir, "--node-name", "pa-node"]);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stderr, /--bpf-pin-dir is not on a bpffs: no BPF pins or links to remove/);
    assert.ok(existsSync(join(dir, "maps", "twill_peers")));
  });

  test("a node name leading out of /sys/fs/bpf/twill is refused as a flag (exit 2)", async () => {
    const victim = `/sys/fs/bpf/${RUN}x`;
    mkdirSync(victim);
    execFileSync("bpftool", ["map", "create", join(victim, "m"), "type", "array", "key", "4", "value", "4", "entries", "1", "name", "pa_victim"]);
    for (const args of [[`--node-name=../${RUN}x`], ["--node-name", "../x"], ["--node-name", "Node_1"]]) {
      const r = await ns(process.execPath, [TWILL, ...args, "teardown"]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /ERR_INVALID_FLAG|invalid value .* for --node-name: not a Kubernetes node name/);
    }
    const env = await run("env", [`NODE_NAME=../${RUN}x`, process.execPath, TWILL, "teardown"], { netns: NETNS, allowFail: true });
    assert.equal(env.code, 2, env.stderr);
    assert.match(env.stderr, /for \$NODE_NAME \(--node-name\)/);
    assert.ok(existsSync(join(victim, "m")), "the pin outside /sys/fs/bpf/twill was removed");
  });
});
