/**
 * The kernel probe of the BPF VXLAN path (src/bpf/probe.ts): it answers
 * from the names in a BTF string table, so a file with and without them
 * shows both answers, and this machine's own BTF shows the real one.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { probeBpfEncap } from "../../src/bpf/probe.js";

const dir = mkdtempSync(join(tmpdir(), "twill-probe-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const names = (...n: string[]): Buffer => Buffer.from(`\0junk\0${n.join("\0")}\0more\0`, "latin1");

test("a kernel with every flag: BPF encapsulation", () => {
  const f = join(dir, "new");
  writeFileSync(f, names("BPF_F_ADJ_ROOM_ENCAP_L2_ETH", "BPF_F_ADJ_ROOM_DECAP_L3_IPV4", "BPF_F_ADJ_ROOM_DECAP_L3_IPV6"));
  assert.deepEqual(probeBpfEncap(f), { ok: true, reason: "" });
});

test("a kernel without the DECAP_L3 flags: the device path, and the reason names them", () => {
  const f = join(dir, "old");
  writeFileSync(f, names("BPF_F_ADJ_ROOM_ENCAP_L2_ETH", "BPF_F_ADJ_ROOM_DECAP_L3_IPV4X"));
  const r = probeBpfEncap(f);
  assert.equal(r.ok, false);
  assert.match(r.reason, /lacks BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6$/);
});

test("no BTF at all: the device path, and the reason says the file is missing", () => {
  const r = probeBpfEncap(join(dir, "absent"));
  assert.equal(r.ok, false);
  assert.match(r.reason, /cannot read the kernel's BTF .*ENOENT/);
});

test("this machine's kernel (6.18) has what the BPF path needs", { skip: !existsSync("/sys/kernel/btf/vmlinux") && "no /sys/kernel/btf/vmlinux" }, () => {
  assert.deepEqual(probeBpfEncap(), { ok: true, reason: "" });
});
