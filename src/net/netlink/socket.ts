/**
 * A netlink socket: requests with acks, dumps, pipelined batches, and
 * non-blocking reads for event subscribers.
 *
 * How it works:
 * 1) `NlSocket.open(protocol)` makes a SOCK_RAW|SOCK_CLOEXEC netlink socket
 *    in the caller's network namespace, binds it (port id chosen by the
 *    kernel, optional multicast groups), turns on NETLINK_CAP_ACK (errors do
 *    not echo the request) and NETLINK_EXT_ACK (the kernel's error text), and
 *    raises the buffers to 4 MiB so pipelined acks and big dumps fit.
 *    Request sockets are blocking with a 10 s receive timeout, so a lost
 *    answer is an error, never a hang.
 * 2) Every datagram is read by peeking its size first (MSG_PEEK|MSG_TRUNC)
 *    and growing the buffer when needed, so nothing is ever cut short.
 * 3) `dump` sends one NLM_F_DUMP request and collects messages until
 *    NLMSG_DONE; a dump the kernel marks NLM_F_DUMP_INTR (the table changed
 *    under it) is redone, up to 5 times.
 * 4) `transact` sends many requests (each with NLM_F_ACK and its own
 *    sequence number) in ONE send and reads until every one is answered; the
 *    kernel applies them in order and keeps going after a failure, so the
 *    result is a per-sequence error map. Answers with other sequence numbers
 *    (left over from an earlier request that timed out) are skipped.
 * All calls are synchronous koffi calls: microseconds for a request, a few
 * milliseconds for a dump of thousands of entries.
 */
import {
  AF_NETLINK, MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC, NETLINK_ADD_MEMBERSHIP, NETLINK_CAP_ACK, NETLINK_EXT_ACK,
  NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN,
  SO_RCVBUF, SO_RCVBUFFORCE, SO_RCVTIMEO, SO_SNDBUF, SO_SNDBUFFORCE, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW, SOL_NETLINK, SOL_SOCKET,
} from "./consts.js";
import { NetlinkError } from "./error.js";
import { E, errno, libc, strerror } from "./libc.js";
import { encodeMessage, parseError, splitMessages, type Message, type NlError } from "./message.js";

const BUF_BYTES = 4 << 20;
const RECV_TIMEOUT_S = 10;
const DUMP_RETRIES = 5;

export interface OpenOptions {
  /** Multicast groups to join (RTNLGRP_*, NFNLGRP_*). */
  readonly groups?: readonly number[];
  /** Non-blocking (event subscribers read with MSG_DONTWAIT on the event loop). */
  readonly nonblock?: boolean;
}

/** Thrown by `recv` when the kernel dropped messages for us (ENOBUFS): re-dump. */
export class OverrunError extends NetlinkError {
  constructor(what: string) {
    super(what, strerror(E.ENOBUFS), undefined, E.ENOBUFS);
    this.name = "OverrunError";
  }
}

const intBuf = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};

export class NlSocket {
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private buf = Buffer.alloc(64 * 1024);
  private closed = false;

  private constructor(readonly fd: number, readonly protocol: number) {}

  static open(protocol: number, opts: OpenOptions = {}): NlSocket {
    const c = libc();
    const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | (opts.nonblock ? SOCK_NONBLOCK : 0), protocol) as number;
    if (fd < 0) throw sysError(`netlink socket (protocol ${protocol})`);
    const s = new NlSocket(fd, protocol);
    try {
      const sa = Buffer.alloc(12);
      sa.writeUInt16LE(AF_NETLINK, 0);
      if (c.bind(fd, sa, sa.length) < 0) throw sysError("netlink bind");
      s.setInt(SOL_NETLINK, NETLINK_CAP_ACK, 1);
      s.setInt(SOL_NETLINK, NETLINK_EXT_ACK, 1);
      // FORCE needs CAP_NET_ADMIN; without it the plain option is capped by rmem_max.
      if (!s.trySetInt(SOL_SOCKET, SO_RCVBUFFORCE, BUF_BYTES)) s.trySetInt(SOL_SOCKET, SO_RCVBUF, BUF_BYTES);
      if (!s.trySetInt(SOL_SOCKET, SO_SNDBUFFORCE, BUF_BYTES)) s.trySetInt(SOL_SOCKET, SO_SNDBUF, BUF_BYTES);
      if (!opts.nonblock) {
        const tv = Buffer.alloc(16);
        tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_S), 0);
        s.setRaw(SOL_SOCKET, SO_RCVTIMEO, tv);
      }
      for (const g of opts.groups ?? []) s.setInt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g);
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  private setRaw(level: number, name: number, val: Buffer): void {
    if (libc().setsockopt(this.fd, level, name, val, val.length) < 0) throw sysError(`netlink setsockopt ${level}/${name}`);
  }
  private setInt(level: number, name: number, v: number): void {
    this.setRaw(level, name, intBuf(v));
  }
  private trySetInt(level: number, name: number, v: number): boolean {
    const b = intBuf(v);
    return libc().setsockopt(this.fd, level, name, b, b.length) === 0;
  }

  nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc().close(this.fd);
  }

  /** Sends one datagram (one or more messages). */
  send(data: Buffer, what: string): void {
    for (;;) {
      const n = Number(libc().send(this.fd, data, data.length, 0));
      if (n >= 0) return;
      const err = errno();
      if (err !== E.EINTR) throw sysError(what, err);
    }
  }

  /**
   * Reads one datagram's messages; undefined when `dontwait` and nothing is
   * queued. Throws OverrunError on ENOBUFS (messages were dropped).
   */
  recv(what: string, dontwait = false): Message[] | undefined {
    const c = libc();
    const flags = dontwait ? MSG_DONTWAIT : 0;
    for (;;) {
      const size = Number(c.recv(this.fd, this.buf, 0, MSG_PEEK | MSG_TRUNC | flags));
      if (size < 0) {
        const err = errno();
        if (err === E.EINTR) continue;
        if (err === E.EAGAIN) {
          if (dontwait) return undefined;
          throw new NetlinkError(what, `no answer from the kernel in ${RECV_TIMEOUT_S} s`, undefined, err);
        }
        if (err === E.ENOBUFS) throw new OverrunError(what);
        throw sysError(what, err);
      }
      if (size > this.buf.length) this.buf = Buffer.alloc(Math.max(size, this.buf.length * 2));
      const n = Number(c.recv(this.fd, this.buf, this.buf.length, flags));
      if (n < 0) {
        const err = errno();
        if (err === E.EINTR) continue;
        if (err === E.ENOBUFS) throw new OverrunError(what);
        throw sysError(what, err);
      }
      // Copy out: the receive buffer is reused by the next call.
      return splitMessages(Buffer.from(this.buf.subarray(0, n)));
    }
  }

  /** A dump: every message answering one NLM_F_DUMP request, redone while the kernel says it was interrupted. */
  dump(type: number, header: Uint8Array, attrs: readonly Buffer[], what: string): Message[] {
    let out: Message[] = [];
    for (let attempt = 0; attempt < DUMP_RETRIES; attempt++) {
      const seq = this.nextSeq();
      this.send(encodeMessage(type, NLM_F_REQUEST | NLM_F_DUMP, seq, header, attrs), what);
      out = [];
      let intr = false;
      for (let done = false; !done; ) {
        for (const m of this.recv(what)!) {
          if (m.seq !== seq) continue;
          if (m.flags & NLM_F_DUMP_INTR) intr = true;
          if (m.type === NLMSG_DONE) {
            const err = m.body.length >= 4 ? -m.body.readInt32LE(0) : 0;
            if (err > 0) throw kernelError(what, { errno: err });
            done = true;
            break;
          }
          if (m.type === NLMSG_ERROR) {
            const e = parseError(m);
            if (e.errno !== 0) throw kernelError(what, e);
            continue;
          }
          if (m.type === NLMSG_OVERRUN) throw new OverrunError(what);
          out.push(m);
        }
      }
      if (!intr) break;
    }
    return out;
  }

  /**
   * One request with NLM_F_ACK; returns the messages the kernel sent before
   * the ack (a GET's answer). Throws a NetlinkError naming `what`.
   */
  request(type: number, flags: number, header: Uint8Array, attrs: readonly Buffer[], what: string): Message[] {
    const r = this.tryRequest(type, flags, header, attrs, what);
    if ("errno" in r) throw kernelError(what, r);
    return r.replies;
  }

  /**
   * request() for answers the caller expects to be "no" (a GET of a device
   * that may not exist): the kernel's refusal comes back as its NlError, not
   * thrown, so no error object (errno text, stack trace) is built for it.
   */
  tryRequest(type: number, flags: number, header: Uint8Array, attrs: readonly Buffer[], what: string): { replies: Message[] } | NlError {
    const seq = this.nextSeq();
    const { errors, replies } = this.transact([encodeMessage(type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, header, attrs)], [seq], what);
    const e = errors.get(seq);
    return e && e.errno !== 0 ? e : { replies };
  }

  /**
   * Sends `msgs` (encoded with NLM_F_ACK and the sequence numbers `seqs`) in
   * one datagram and reads until each is answered. Returns the answers by
   * sequence number (errno 0 = applied) and any other replies.
   */
  transact(msgs: readonly Buffer[], seqs: readonly number[], what: string): { errors: Map<number, NlError>; replies: Message[] } {
    this.send(msgs.length === 1 ? msgs[0]! : Buffer.concat(msgs), what);
    const waiting = new Set(seqs);
    const errors = new Map<number, NlError>();
    const replies: Message[] = [];
    while (waiting.size > 0) {
      for (const m of this.recv(what)!) {
        if (m.type === NLMSG_ERROR) {
          const e = parseError(m);
          if (waiting.delete(e.seq)) errors.set(e.seq, e);
        } else if (waiting.has(m.seq)) {
          replies.push(m);
        }
      }
    }
    return { errors, replies };
  }
}

/** A NetlinkError from the kernel's answer: strerror text, plus its extended ack. */
export function kernelError(what: string, e: Pick<NlError, "errno" | "extack">): NetlinkError {
  const text = strerror(e.errno) + (e.extack ? ` (${e.extack.replace(/\.$/, "")})` : "");
  return new NetlinkError(what, text, undefined, e.errno);
}

function sysError(what: string, err = errno()): NetlinkError {
  return new NetlinkError(what, strerror(err), undefined, err);
}

let shared: NlSocket | undefined;
/** The process's request socket for NETLINK_ROUTE (opened on first use). */
export function rtnl(): NlSocket {
  return (shared ??= NlSocket.open(0));
}
