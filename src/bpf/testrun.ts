/**
 * Running a loaded tc program on one crafted packet (BPF_PROG_TEST_RUN),
 * for packet-level tests that need neither namespaces nor devices.
 *
 * How it works: libbpf's bpf_prog_test_run_opts hands the kernel the packet
 * (Ethernet frame first), an optional `struct __sk_buff` to start from, and
 * buffers for what the program left: the packet, the context and the return
 * code. The kernel builds a fresh skb on the loopback device of the caller's
 * namespace (or on ctx.ifindex when given), runs the program once and copies
 * the skb back. It accepts only some context fields (net/bpf/test_run.c,
 * convert___skb_to_skb): mark, priority, ingress_ifindex, ifindex, cb,
 * tstamp, wire_len, gso_segs, gso_size, hwtstamp; every other byte must be
 * zero. Redirects are not carried out: a program's bpf_redirect* call only
 * shows as the return code TC_ACT_REDIRECT.
 *
 * The packet must be at least 14 bytes and fit one page with the kernel's
 * head- and tailroom (about 3.7 KB); on 6.18 an IPv4 or IPv6 frame must
 * also hold its whole IP header (20 / 40 bytes), or the run fails with EINVAL.
 */
import koffi from "koffi";
import { TwillError } from "../errors.js";
import { libbpf, errnoName } from "./libbpf.js";

/** libbpf 1.1's struct bpf_test_run_opts (size_t sz first; bpf_test_run_opts__last_field is batch_size). */
const TestRunOpts = koffi.struct("twill_bpf_test_run_opts", {
  sz: "size_t",
  data_in: "void *",
  data_out: "void *",
  data_size_in: "uint32",
  data_size_out: "uint32",
  ctx_in: "void *",
  ctx_out: "void *",
  ctx_size_in: "uint32",
  ctx_size_out: "uint32",
  retval: "uint32",
  repeat: "int",
  duration: "uint32",
  flags: "uint32",
  cpu: "uint32",
  batch_size: "uint32",
});

let fn: ((fd: number, opts: Record<string, unknown>) => number) | undefined;
function testRunFn(): (fd: number, opts: Record<string, unknown>) => number {
  fn ??= libbpf().lib.func("int bpf_prog_test_run_opts(int prog_fd, _Inout_ twill_bpf_test_run_opts *opts)");
  return fn;
}

/** sizeof(struct __sk_buff) on this kernel (checked against BTF by the packet tests). */
export const SKB_CTX_SIZE = 192;

/** Byte offsets of the `struct __sk_buff` fields a test run reads or reports. */
export const SKB_CTX = {
  len: 0, mark: 8, protocol: 16, priority: 32, ingress_ifindex: 36, ifindex: 40, cb: 48,
  tstamp: 152, wire_len: 160, gso_segs: 164, gso_size: 176, hwtstamp: 184,
} as const;

/** The `struct __sk_buff` fields the kernel accepts as input to a test run. */
export interface SkbCtxIn {
  mark?: number;
  priority?: number;
  /** skb->skb_iif (what a program reads as ingress_ifindex). */
  ingress_ifindex?: number;
  /** The device the skb is built on (> 1); loopback when absent. */
  ifindex?: number;
  /** The five __u32 of skb->cb. */
  cb?: readonly number[];
  tstamp?: bigint;
  /** Length on the wire (qdisc pkt_len); 0 = the packet's length. */
  wire_len?: number;
  gso_segs?: number;
  gso_size?: number;
  hwtstamp?: bigint;
}

/** The `struct __sk_buff` fields the kernel reports after the run. */
export interface SkbCtxOut {
  mark: number;
  priority: number;
  ingress_ifindex: number;
  ifindex: number;
  cb: number[];
  tstamp: bigint;
  wire_len: number;
  gso_segs: number;
}

export interface TestRunResult {
  /** The program's return code (a TC action for tc programs). */
  retval: number;
  /** The packet as the program left it. */
  data: Buffer;
  ctx: SkbCtxOut;
  /** Run time in ns as the kernel measured it. */
  duration: number;
}

/** Encodes the accepted input fields into a zeroed `struct __sk_buff`. */
export function encodeSkbCtx(c: SkbCtxIn): Buffer {
  const b = Buffer.alloc(SKB_CTX_SIZE);
  b.writeUInt32LE(c.mark ?? 0, SKB_CTX.mark);
  b.writeUInt32LE(c.priority ?? 0, SKB_CTX.priority);
  b.writeUInt32LE(c.ingress_ifindex ?? 0, SKB_CTX.ingress_ifindex);
  b.writeUInt32LE(c.ifindex ?? 0, SKB_CTX.ifindex);
  (c.cb ?? []).slice(0, 5).forEach((v, i) => b.writeUInt32LE(v >>> 0, SKB_CTX.cb + 4 * i));
  b.writeBigUInt64LE(c.tstamp ?? 0n, SKB_CTX.tstamp);
  b.writeUInt32LE(c.wire_len ?? 0, SKB_CTX.wire_len);
  b.writeUInt32LE(c.gso_segs ?? 0, SKB_CTX.gso_segs);
  b.writeUInt32LE(c.gso_size ?? 0, SKB_CTX.gso_size);
  b.writeBigUInt64LE(c.hwtstamp ?? 0n, SKB_CTX.hwtstamp);
  return b;
}

function decodeSkbCtx(b: Buffer): SkbCtxOut {
  return {
    mark: b.readUInt32LE(SKB_CTX.mark),
    priority: b.readUInt32LE(SKB_CTX.priority),
    ingress_ifindex: b.readUInt32LE(SKB_CTX.ingress_ifindex),
    ifindex: b.readUInt32LE(SKB_CTX.ifindex),
    cb: [0, 1, 2, 3, 4].map((i) => b.readUInt32LE(SKB_CTX.cb + 4 * i)),
    tstamp: b.readBigUInt64LE(SKB_CTX.tstamp),
    wire_len: b.readUInt32LE(SKB_CTX.wire_len),
    gso_segs: b.readUInt32LE(SKB_CTX.gso_segs),
  };
}

/** Room for what a program may add (encapsulation) in front of the packet. */
const OUT_SLACK = 512;

/**
 * Runs the program `progFd` once on `packet` (an Ethernet frame) with the
 * given `struct __sk_buff` fields. Returns the return code, the packet and
 * context as the program left them. Throws ERR_BPF_TEST_RUN when the kernel
 * refuses the run (EINVAL: a context field it does not accept, or a packet
 * shorter than 14 bytes or longer than a page).
 */
export function testRun(progFd: number, packet: Buffer, ctx: SkbCtxIn = {}): TestRunResult {
  const dataOut = Buffer.alloc(packet.length + OUT_SLACK);
  const ctxIn = encodeSkbCtx(ctx);
  const ctxOut = Buffer.alloc(SKB_CTX_SIZE);
  const opts: Record<string, unknown> = {
    sz: koffi.sizeof(TestRunOpts),
    data_in: packet,
    data_out: dataOut,
    data_size_in: packet.length,
    data_size_out: dataOut.length,
    ctx_in: ctxIn,
    ctx_out: ctxOut,
    ctx_size_in: ctxIn.length,
    ctx_size_out: ctxOut.length,
    retval: 0,
    repeat: 1,
    duration: 0,
    flags: 0,
    cpu: 0,
    batch_size: 0,
  };
  const r = testRunFn()(progFd, opts);
  if (r < 0) {
    throw new TwillError("ERR_BPF_TEST_RUN", `bpf_prog_test_run_opts(prog fd ${progFd}, ${packet.length} bytes): ${errnoName(r)}`);
  }
  const size = opts.data_size_out as number;
  return { retval: opts.retval as number, data: Buffer.from(dataOut.subarray(0, size)), ctx: decodeSkbCtx(ctxOut), duration: opts.duration as number };
}
