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
 * hand (size_t sz first).
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
  const h = hook(ifindex, dir);
  // EEXIST (the qdisc is there, e.g. for the other direction) is fine: libbpf's complaint about it is demoted.
  const r = quietly(() => a.tc_hook_create(h));
  if (r < 0 && r !== -17) throw new TwillError("ERR_BPF_ATTACH", `creating the clsact qdisc on ifindex ${ifindex}: ${errnoName(r)}`);
  check(a.tc_attach(h, opts(progFd, current ? BPF_TC_F_REPLACE : 0)), "ERR_BPF_ATTACH", `attaching tc ${dir} on ifindex ${ifindex}`);
  return current ? "updated" : "created";
}

/** Removes twill's filter from a hook; false when there was none. */
export function tcDetach(ifindex: number, dir: Direction): boolean {
  const r = quietly(() => libbpf().tc_detach(hook(ifindex, dir), opts()));
  return r === 0;
}

export { closeFd };
