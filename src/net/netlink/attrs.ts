/**
 * Netlink attributes (struct nlattr / rtattr): encoding and decoding.
 *
 * How it works:
 * 1) An attribute is a 4-byte header (u16 length including the header, u16
 *    type) and a payload padded to 4 bytes. `attr(type, payload)` encodes
 *    one; `nest(type, children)` wraps already encoded attributes (the
 *    NLA_F_NESTED bit is set, as iproute2 does for IFLA_LINKINFO).
 * 2) Payload helpers: u8/u16/u32 in host order (x86 and arm64 are little
 *    endian, and so is every machine twill runs on), be16 for the vxlan port,
 *    NUL-terminated strings, raw bytes for addresses.
 * 3) `parseAttrs(buf)` splits a payload into a Map type → payload (the last
 *    one wins, as in the kernel's nla_parse), masking the NESTED/BYTEORDER
 *    bits. A truncated attribute ends the parse instead of throwing: the
 *    kernel is trusted for framing, and a short buffer means "no more".
 */

export const align4 = (n: number): number => (n + 3) & ~3;

/** One attribute: header + payload + padding. */
export function attr(type: number, payload: Uint8Array): Buffer {
  const len = 4 + payload.length;
  const out = Buffer.alloc(align4(len));
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  out.set(payload, 4);
  return out;
}

/** A nested attribute holding `children` (each already encoded). */
export function nest(type: number, children: readonly Buffer[]): Buffer {
  return attr(type | 0x8000, Buffer.concat(children));
}

export const u8 = (type: number, v: number): Buffer => attr(type, Uint8Array.of(v & 0xff));
export function u16(type: number, v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return attr(type, b);
}
export function be16(type: number, v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return attr(type, b);
}
export function u32(type: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return attr(type, b);
}
export const str = (type: number, s: string): Buffer => attr(type, Buffer.from(s + "\0", "utf8"));
export const bytes = (type: number, b: Uint8Array): Buffer => attr(type, b);

/** Attribute payloads by type (NESTED/BYTEORDER bits masked off). */
export type Attrs = ReadonlyMap<number, Buffer>;

export function parseAttrs(buf: Buffer, offset = 0, end = buf.length): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = offset;
  while (off + 4 <= end) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > end) break;
    out.set(buf.readUInt16LE(off + 2) & 0x3fff, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

// ---- payload readers: undefined when the attribute is absent or too short ----

export const getU8 = (a: Attrs, t: number): number | undefined => {
  const b = a.get(t);
  return b && b.length >= 1 ? b[0] : undefined;
};
export const getU16 = (a: Attrs, t: number): number | undefined => {
  const b = a.get(t);
  return b && b.length >= 2 ? b.readUInt16LE(0) : undefined;
};
export const getBE16 = (a: Attrs, t: number): number | undefined => {
  const b = a.get(t);
  return b && b.length >= 2 ? b.readUInt16BE(0) : undefined;
};
export const getU32 = (a: Attrs, t: number): number | undefined => {
  const b = a.get(t);
  return b && b.length >= 4 ? b.readUInt32LE(0) : undefined;
};
/** A NUL-terminated string attribute. */
export const getStr = (a: Attrs, t: number): string | undefined => {
  const b = a.get(t);
  if (!b) return undefined;
  const nul = b.indexOf(0);
  return b.toString("utf8", 0, nul < 0 ? b.length : nul);
};
