/**
 * VTEP MAC addresses: parse, convert, and make a random one.
 *
 * How it works: a MAC travels as text — lower-case, colon separated
 * ("8e:d0:f8:0a:41:19"), the form flannel's Go code writes into leases and
 * annotations. `parseMAC` is the one gate from untyped text: it accepts upper
 * case, returns the lower-case form, and rejects anything a VTEP cannot be
 * (wrong shape, the multicast bit set, all zeros) with ERR_INVALID_MAC naming
 * the field and the value. Bytes are only needed at the edges (netlink, BPF
 * maps), hence `macToBytes` / `bytesToMAC`.
 */
import { randomBytes } from "node:crypto";
import { TwillError, showValue } from "../errors.js";

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Why `s` is not a usable unicast MAC, or undefined when it is one. */
function macProblem(lower: string): string | undefined {
  if (!MAC_RE.test(lower)) return "is not a MAC address (want six hex octets like 8e:d0:f8:0a:41:19)";
  if (parseInt(lower.slice(0, 2), 16) & 1) return "is not a unicast MAC (the multicast bit is set)";
  if (lower === "00:00:00:00:00:00") return "is not a unicast MAC (it is all zeros)";
  return undefined;
}

/** Validates a unicast MAC and returns it lower-cased; throws ERR_INVALID_MAC. */
export function parseMAC(s: unknown, what = "MAC"): string {
  if (s === undefined) throw new TwillError("ERR_INVALID_MAC", `${what} is missing`);
  const lower = typeof s === "string" ? s.toLowerCase() : "";
  const problem = typeof s === "string" ? macProblem(lower) : "is not a string";
  if (problem) throw new TwillError("ERR_INVALID_MAC", `${what} ${showValue(s)} ${problem}`);
  return lower;
}

export function tryParseMAC(s: unknown): string | undefined {
  return typeof s === "string" && !macProblem(s.toLowerCase()) ? s.toLowerCase() : undefined;
}

/** "8e:d0:f8:0a:41:19" → 6 bytes. Accepts any well-formed MAC (also multicast). */
export function macToBytes(mac: string): Uint8Array {
  const lower = mac.toLowerCase();
  if (!MAC_RE.test(lower)) throw new TwillError("ERR_INVALID_MAC", `MAC ${showValue(mac)} is not a MAC address`);
  return Uint8Array.from(lower.split(":").map((h) => parseInt(h, 16)));
}

/** 6 bytes → "8e:d0:f8:0a:41:19". */
export function bytesToMAC(bytes: Uint8Array): string {
  if (bytes.length !== 6) throw new TwillError("ERR_INVALID_MAC", `MAC bytes have length ${bytes.length}, not 6`);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** A random locally administered unicast MAC (what the kernel picks for a new vxlan device). */
export function randomMAC(random: (n: number) => Uint8Array = randomBytes): string {
  const b = Uint8Array.from(random(6));
  b[0] = (b[0]! & 0xfe) | 0x02;
  if (b.slice(1).every((x) => x === 0)) b[5] = 1; // never all-zero host part
  return bytesToMAC(b);
}
