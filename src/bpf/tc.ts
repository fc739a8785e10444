/**
 * Attaching programs as tc cls_bpf filters: the fallback for kernels
 * without tcx (before 6.6).
 *
 * How it works: libbpf's bpf_tc_* API creates the clsact qdisc (an existing
 * one is fine) and one direct-action filter at twill's own handle and
 * priority on the hook. The filter belongs to the device, so it outlives the
 * controller with no pin. Re-attaching queries the filter first: the same
 * program tag is adopted as is (no qdisc request: the filter implies its
 * qdisc), another program is swapped in atomically with BPF_TC_F_REPLACE.
 * The structs are libbpf 1.1's bpf_tc_hook and bpf_tc_opts, laid out by
 * hand (size_t sz first). A filter is twill's when it sits at twill's handle
 * (0x7411) and priority (1) and runs a program named twill_*: teardown
 * removes only those (tcDetachOwned); filters at other handles, priorities
 * or of other kinds (u32, flower) are never touched, since bpf_tc_detach
 * deletes by kind "bpf", handle and priority only. Attaching never
 * replaces another tool's program found at twill's handle (ERR_BPF_ATTACH).
 */
import { TwillError } from "../errors.js";
import { libbpf, check, closeFd, errnoName, quietly } from "./libbpf.js";
import type { Direction } from "./attach.js";

const BPF_TC_INGRESS = 1, BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;
/** twill's filter handle and priority on every hook it uses. */
export const TC_HANDLE = 0x7411, TC_PRIORITY = 1;

function hook(ifindex: number, dir: Direction): Buffer {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(24n, 0);
  b.writeInt32LE(ifindex, 8);
  b.writeUInt32LE(dir === "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS, 12);
  return b;
}

function opts(progFd = 0, flags = 0): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64LE(32n, 0);
  b.writeInt32LE(progFd, 8);
  b.writeUInt32LE(flags, 12);
  b.writeUInt32LE(TC_HANDLE, 20);
  b.writeUInt32LE(TC_PRIORITY, 24);
  return b;
}

/** The id of the program in twill's filter on a hook, or 0 when there is none. */
export function tcQuery(ifindex: number, dir: Direction): number {
  const o = opts();
  const r = quietly(() => libbpf().tc_query(hook(ifindex, dir), o));
  if (r === -2 || r === -22) return 0; // ENOENT; EINVAL "Cannot find specified filter chain"
  check(r, "ERR_BPF_ATTACH", `querying tc ${dir} on ifindex ${ifindex}`);
  return o.readUInt32LE(16);
}

export function tcAttach(progFd: number, ifindex: number, dir: Direction, sameProg: (progId: number) => boolean): "created" | "updated" | "adopted" {
  const a = libbpf();
  // Our filter in place (the common case, at every reconcile): one query, no qdisc request.
  const current = tcQuery(ifindex, dir);
  if (current && sameProg(current)) return "adopted";
  if (current) {
    // Never replace another tool's filter that happens to sit at twill's handle and priority.
    const name = progNameById(current);
    if (name !== undefined && !name.startsWith(PROG_PREFIX)) {
      throw new TwillError("ERR_BPF_ATTACH", `attaching tc ${dir} on ifindex ${ifindex}: another program (${name}, id ${current}) holds twill's filter handle 0x${TC_HANDLE.toString(16)} priority ${TC_PRIORITY}; not replacing it`);
    }
  }
  const h = hook(ifindex, dir);
  // EEXIST (the qdisc is there, e.g. for the other direction) is fine: libbpf's complaint about it is demoted.
  const r = quietly(() => a.tc_hook_create(h));
  if (r < 0 && r !== -17) throw new TwillError("ERR_BPF_ATTACH", `creating the clsact qdisc on ifindex ${ifindex}: ${errnoName(r)}`);
  check(a.tc_attach(h, opts(progFd, current ? BPF_TC_F_REPLACE : 0)), "ERR_BPF_ATTACH", `attaching tc ${dir} on ifindex ${ifindex}`);
  return current ? "updated" : "created";
}

/** The name of a loaded program (the kernel keeps 15 characters), by id; undefined when it is gone. */
export function progNameById(id: number): string | undefined {
  const a = libbpf();
  const fd = a.prog_by_id(id);
  if (fd < 0) return undefined;
  try {
    // struct bpf_prog_info: name[BPF_OBJ_NAME_LEN] at offset 64.
    const info = Buffer.alloc(96);
    const len = new Uint32Array([info.length]);
    if (a.get_info(fd, info, len) < 0) return undefined;
    const name = info.subarray(64, 80);
    const end = name.indexOf(0);
    return name.toString("latin1", 0, end < 0 ? 16 : end);
  } finally {
    closeFd(fd);
  }
}

/** Every program twill loads is named twill_* (bpf/twill.c). */
export const PROG_PREFIX = "twill_";

/**
 * Removes the filter at twill's handle and priority only when it runs one of
 * twill's programs (name twill_*): another tool's cls_bpf filter that happens
 * to sit at the same handle and priority, and every other filter, stay.
 * Returns what it found.
 */
export function tcDetachOwned(ifindex: number, dir: Direction): "removed" | "none" | "foreign" {
  const id = tcQuery(ifindex, dir);
  if (!id) return "none";
  const name = progNameById(id);
  if (name === undefined || !name.startsWith(PROG_PREFIX)) return "foreign";
  return tcDetach(ifindex, dir) ? "removed" : "none";
}

/** Removes twill's filter from a hook; false when there was none. */
export function tcDetach(ifindex: number, dir: Direction): boolean {
  const r = quietly(() => libbpf().tc_detach(hook(ifindex, dir), opts()));
  return r === 0;
}

export { closeFd };
