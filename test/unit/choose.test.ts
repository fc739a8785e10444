/**
 * --dataplane auto (dataplane/choose.ts): bpf with CAP_BPF+CAP_PERFMON (or
 * CAP_SYS_ADMIN), CAP_NET_ADMIN and a bpffs under the pin directory; the
 * kernel dataplane otherwise, with the reason; an explicit bpf that cannot
 * run is an error naming what is missing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { bpfUnavailable, chooseDataplane, effectiveCaps, fsTypeOf, type HostFacts } from "../../src/dataplane/choose.js";
import { isTwillError } from "../../src/errors.js";

const MOUNTS = [
  "22 1 0:21 / / rw,relatime - overlay overlay rw",
  "23 22 0:22 / /sys ro,nosuid - sysfs sysfs ro",
  "24 23 0:23 / /sys/fs/bpf rw,nosuid - bpf bpf rw,mode=700",
  "25 22 0:24 / /run/flannel rw - tmpfs tmpfs rw",
  "26 22 0:25 / /my\\040dir rw - bpf bpf rw",
].join("\n");
const caps = (...bits: number[]) => `Name:\tnode\nCapEff:\t${bits.reduce((a, b) => a | (1n << BigInt(b)), 0n).toString(16).padStart(16, "0")}\n`;
const facts = (status: string, mountinfo = MOUNTS): HostFacts => ({ status: () => status, mountinfo: () => mountinfo });

// kube-flannel's container: NET_ADMIN (12) and NET_RAW (13) only.
const KUBE_FLANNEL = caps(12, 13);
const TWILL_DS = caps(12, 13, 38, 39);
const ROOT = caps(...Array.from({ length: 41 }, (_, i) => i));

test("CapEff and the mount holding a path are read as the kernel writes them", () => {
  assert.equal(effectiveCaps("CapEff:\t000001ffffffffff\n"), 0x1ffffffffffn);
  assert.equal(effectiveCaps("Name: x\n"), undefined);
  assert.equal(fsTypeOf("/sys/fs/bpf/twill", MOUNTS), "bpf");
  assert.equal(fsTypeOf("/sys/fs/bpf", MOUNTS), "bpf");
  assert.equal(fsTypeOf("/sys/fs/bpfx/twill", MOUNTS), "sysfs", "a sibling with the same prefix is not under the mount");
  assert.equal(fsTypeOf("/run/flannel/x", MOUNTS), "tmpfs");
  assert.equal(fsTypeOf("/my dir/p", MOUNTS), "bpf", "mountinfo's \\040 escapes");
  assert.equal(fsTypeOf("/sys/fs/bpf/../../../tmp", MOUNTS), "overlay", "resolved before matching");
});

test("auto: bpf when it can run, else kernel with the reason; kernel when asked", () => {
  assert.deepEqual(chooseDataplane("auto", "/sys/fs/bpf/twill", facts(TWILL_DS)), { kind: "bpf", reason: "" });
  assert.deepEqual(chooseDataplane("auto", "/sys/fs/bpf/twill", facts(ROOT)), { kind: "bpf", reason: "" });
  assert.deepEqual(chooseDataplane("auto", "/sys/fs/bpf/twill", facts(caps(12, 21))), { kind: "bpf", reason: "" }, "CAP_SYS_ADMIN implies BPF and PERFMON");
  const k = chooseDataplane("auto", "/sys/fs/bpf/twill", facts(KUBE_FLANNEL));
  assert.equal(k.kind, "kernel");
  assert.match(k.reason, /^bpf unavailable: the process lacks CAP_BPF/);
  assert.match(chooseDataplane("auto", "/sys/fs/bpf/twill", facts(caps(12, 39))).reason, /CAP_PERFMON/);
  const noFs = chooseDataplane("auto", "/sys/fs/bpf/twill", facts(ROOT, MOUNTS.split("\n").filter((l) => !l.includes("/sys/fs/bpf")).join("\n")));
  assert.equal(noFs.kind, "kernel");
  assert.match(noFs.reason, /--bpf-pin-dir \/sys\/fs\/bpf\/twill is not on a bpffs mount \(it is on sysfs/);
  assert.deepEqual(chooseDataplane("kernel", "/nowhere", facts(KUBE_FLANNEL)), { kind: "kernel", reason: "" });
  assert.match(bpfUnavailable("/sys/fs/bpf/t", facts(caps(21))), /CAP_NET_ADMIN/);
});

test("bpf() refused (a seccomp profile that blocks it) with every capability: auto runs kernel and says why", () => {
  const seccomp: HostFacts = { ...facts(ROOT), bpf: () => -1 };
  const k = chooseDataplane("auto", "/sys/fs/bpf/twill", seccomp);
  assert.equal(k.kind, "kernel");
  assert.match(k.reason, /bpf\(\) is refused \(Operation not permitted: a seccomp profile/);
  assert.deepEqual(chooseDataplane("auto", "/sys/fs/bpf/twill", { ...facts(ROOT), bpf: () => 0 }), { kind: "bpf", reason: "" });
});

test("an explicit --dataplane bpf that cannot run is an error naming what is missing", () => {
  assert.throws(() => chooseDataplane("bpf", "/sys/fs/bpf/twill", facts(KUBE_FLANNEL)),
    (e) => isTwillError(e, "ERR_DATAPLANE") && /--dataplane bpf cannot run here: the process lacks CAP_BPF/.test(e.message));
});

test("this process (root in the test): the real /proc says bpf can run under /sys/fs/bpf", () => {
  assert.equal(bpfUnavailable("/sys/fs/bpf/choose-test"), "");
});
