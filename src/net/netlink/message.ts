/**
 * Netlink messages (struct nlmsghdr) and the kernel's error/ack messages.
 *
 * How it works:
 * 1) `encodeMessage` lays out the 16-byte header (u32 length, u16 type, u16
 *    flags, u32 sequence, u32 port id = 0: "the kernel") followed by a fixed
 *    family header (ifinfomsg, rtmsg, ...) and the attributes, padded to 4.
 * 2) `splitMessages` walks one datagram from the kernel into messages; a
 *    message's `body` is everything after its header.
 * 3) `parseError` reads an NLMSG_ERROR body: a negative errno (0 = ack), the
 *    original request's header, and with NETLINK_EXT_ACK the kernel's
 *    "extack" text ("Nexthop has invalid gateway") that iproute2 prints as
 *    "Error: ...". With NETLINK_CAP_ACK the request itself is not echoed.
 */
import { align4, getStr, parseAttrs } from "./attrs.js";
import { NLM_F_ACK_TLVS, NLMSG_HDRLEN, NLMSGERR_ATTR_MSG } from "./consts.js";

export interface Message {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  /** The payload after the 16-byte header. */
  readonly body: Buffer;
}

export function encodeMessage(type: number, flags: number, seq: number, header: Uint8Array, attrs: readonly Buffer[] = []): Buffer {
  const payload = Buffer.concat([Buffer.from(header.buffer, header.byteOffset, header.byteLength), Buffer.alloc(align4(header.length) - header.length), ...attrs]);
  const out = Buffer.alloc(NLMSG_HDRLEN + payload.length);
  out.writeUInt32LE(out.length, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(flags, 6);
  out.writeUInt32LE(seq >>> 0, 8);
  out.writeUInt32LE(0, 12);
  payload.copy(out, NLMSG_HDRLEN);
  return out;
}

/** The messages in one datagram (a short or bad length ends the walk). */
export function splitMessages(buf: Buffer): Message[] {
  const out: Message[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) break;
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      body: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

export interface NlError {
  /** A positive errno; 0 for an ack. */
  readonly errno: number;
  /** The sequence number of the request this answers. */
  readonly seq: number;
  /** The kernel's extended ack message, when it gave one. */
  readonly extack?: string;
}

export function parseError(m: Message): NlError {
  const b = m.body;
  const errno = b.length >= 4 ? -b.readInt32LE(0) || 0 : 0;
  const seq = b.length >= 4 + NLMSG_HDRLEN ? b.readUInt32LE(4 + 8) : m.seq;
  let extack: string | undefined;
  if (m.flags & NLM_F_ACK_TLVS && b.length >= 4 + NLMSG_HDRLEN) {
    // Capped: the echoed request is its header only; otherwise its full length.
    const reqLen = b.readUInt32LE(4);
    const tlvAt = 4 + (m.flags & 0x100 ? NLMSG_HDRLEN : align4(reqLen));
    if (tlvAt < b.length) extack = getStr(parseAttrs(b, tlvAt), NLMSGERR_ATTR_MSG);
  }
  return { errno, seq, ...(extack ? { extack } : {}) };
}
