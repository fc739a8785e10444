/**
 * Paths: the node name is checked as Kubernetes checks one, the default pin
 * directory cannot leave /sys/fs/bpf/twill, --bpf-pin-dir must be absolute
 * and (for bpf and teardown) on a bpffs, and the pin directory is created
 * without Node's recursive mkdir, which spins for ever on sysfs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFlags } from "../../src/config/flags.js";
import { checkNodeName, defaultPinDir, nodeNameProblem } from "../../src/config/nodename.js";
import { makePinDir, requireBpffs } from "../../src/bpf/pindir.js";
import { isTwillError } from "../../src/errors.js";

const flagError = (re: RegExp) => (e: unknown) => isTwillError(e, "ERR_INVALID_FLAG") && re.test((e as Error).message);

test("node names: RFC 1123 subdomains only, as Kubernetes", () => {
  for (const ok of ["n1", "node-7", "ip-10-0-0-1.ec2.internal", "a", "0", "a".repeat(63) + "." + "b".repeat(63), "x".repeat(253)]) assert.equal(nodeNameProblem(ok), "", ok);
  for (const bad of ["", "..", ".", "../x", "a/b", "/abs", "Node1", "node_1", "-a", "a-", "a..b", ".a", "a.", "x".repeat(254), "a b", "a\u0000b"]) {
    assert.notEqual(nodeNameProblem(bad), "", JSON.stringify(bad));
  }
  assert.throws(() => checkNodeName("../x", "--node-name"), flagError(/invalid value "\.\.\/x" for --node-name: not a Kubernetes node name/));
});

test("flags: --node-name, $NODE_NAME and the hostname are checked; the default pin dir stays under /sys/fs/bpf/twill", () => {
  assert.throws(() => parseFlags(["--node-name=../x", "teardown"], {}, () => "h"), flagError(/"\.\.\/x" for --node-name:/));
  assert.throws(() => parseFlags([], { NODE_NAME: "../../etc" }, () => "h"), flagError(/for \$NODE_NAME \(--node-name\)/));
  assert.throws(() => parseFlags([], {}, () => "bad_host"), flagError(/"bad_host" for --node-name \(from the hostname/));
  // The kubelet lower-cases the hostname; so does twill.
  const o = parseFlags([], {}, () => "Worker-1.Example");
  assert.equal(o.nodeName, "worker-1.example");
  assert.equal(o.bpfPinDir, "/sys/fs/bpf/twill/worker-1.example");
  assert.equal(defaultPinDir("n1"), "/sys/fs/bpf/twill/n1");
  assert.throws(() => defaultPinDir(".."), flagError(/not inside \/sys\/fs\/bpf\/twill/));
  assert.throws(() => defaultPinDir("a/b"), flagError(/not inside/));
  // --bpf-pin-dir: absolute, normalized
  assert.throws(() => parseFlags(["--bpf-pin-dir", "pins"], {}, () => "h"), flagError(/"pins" for --bpf-pin-dir: not an absolute path/));
  assert.equal(parseFlags(["--bpf-pin-dir", "/sys/fs/bpf/a/../b/"], {}, () => "h").bpfPinDir, "/sys/fs/bpf/b");
});

const MOUNTINFO = [
  "22 1 0:21 / / rw - ext4 /dev/sda1 rw",
  "23 22 0:22 / /sys rw - sysfs sysfs rw",
  "24 23 0:23 / /sys/fs/bpf rw - bpf bpf rw",
].join("\n");

test("requireBpffs: a pin dir not on a bpffs is refused naming the flag, the path and the filesystem", () => {
  requireBpffs("/sys/fs/bpf/twill/n1", () => MOUNTINFO);
  assert.throws(() => requireBpffs("/var/lib/pins", () => MOUNTINFO), flagError(/"\/var\/lib\/pins" for --bpf-pin-dir: not on a bpffs mount \(it is on ext4/));
  // under `ip netns exec`: /sys is a fresh sysfs, /sys/fs/bpf is not mounted
  const netnsExec = MOUNTINFO.split("\n").slice(0, 2).join("\n");
  assert.throws(() => requireBpffs("/sys/fs/bpf/twill/n1", () => netnsExec), flagError(/it is on sysfs/));
  assert.throws(() => requireBpffs("/x", () => { throw new Error("EACCES"); }), flagError(/cannot tell whether --bpf-pin-dir \/x is on a bpffs/));
});

test("makePinDir creates each level once and fails once, naming the directory", () => {
  const dir = mkdtempSync(join(tmpdir(), "pa-pins-"));
  try {
    makePinDir(join(dir, "a", "b", "maps"));
    assert.ok(statSync(join(dir, "a", "b", "maps")).isDirectory());
    makePinDir(join(dir, "a", "b", "maps")); // there already: fine
    // sysfs refuses mkdir: one error, no loop (Node's recursive mkdir spins here)
    const t0 = Date.now();
    assert.throws(() => makePinDir("/sys/pa-no-such/twill/n1/maps"), (e) => isTwillError(e, "ERR_BPF_MAP") && /cannot create the pin directory \/sys\/pa-no-such\/twill\/n1\/maps: mkdir \/sys\/pa-no-such: E/.test((e as Error).message));
    assert.ok(Date.now() - t0 < 1000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
