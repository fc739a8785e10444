/**
 * The lease directory's index: DirStore's parsed cache, saved to one file so
 * that a fresh process lists 100,000 leases without reading and parsing
 * 100,000 files.
 *
 *   <dir>/.subnets.index                        the index (outside subnets/:
 *   <dir>/.subnets.index.<rand>.tmp             writing it changes nothing there)
 *
 * How it works:
 *  - Every entry is the name, stamp (inode, size, mtime, ctime) and read
 *    time of one lease file, and the lease parsed from it. DirStore trusts an
 *    entry only when the file's stamp now is the same (and the racy rule
 *    holds), exactly as it trusts its in-memory cache; so an index written by
 *    any process (several nodes may share a directory), at any time, is
 *    valid for every reader: an entry is either verified or re-read.
 *  - The format is lines of tab-separated fields (measured against JSON at
 *    100,000 leases: same size, decoding builds the leases directly):
 *      twill-lease-index 1 <inode of subnets/>
 *      <name> <ino> <size> <mtimeMs> <ctimeMs> <readAt> <subnet> <ipv6Subnet>
 *        <publicIP> <publicIPv6> <backendType> <vni> <vtepMAC> <v6 vni> <v6 vtepMAC>
 *      ...
 *      end <count>
 *    IPv4 is dotted, IPv6 is 32 hex digits (no parser needed), "" is absent.
 *    Leases whose name or backend type holds a tab or newline, and files that
 *    are not leases, are left out (read at the next start: they are rare).
 *  - Writes are atomicfile.ts's writeAtomic (temp file with a random name,
 *    O_EXCL|O_NOFOLLOW, mode 0644, fsync, rename): concurrent writers never
 *    see each other's partial file; the last rename wins.
 *  - decodeIndex throws on anything it does not recognize (another version, a
 *    truncated file, a bad field): the caller ignores the index and rebuilds it.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { writeAtomic } from "../atomicfile.js";
import type { IP, Prefix } from "../net/ip.js";
import { readRegularFile } from "../saferead.js";
import { BytePool } from "./parse.js";
import type { Lease, VxlanLeaseData } from "./types.js";

export const INDEX_NAME = ".subnets.index";
const MAGIC = "twill-lease-index 1";
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HEX32_RE = /^[0-9a-f]{32}$/;
/** The biggest index read (100,000 leases take ~15 MB). */
const MAX_INDEX_BYTES = 512 * 1024 * 1024;
/** A temp file this old is a crashed writer's. */
const STALE_TMP_MS = 60_000;

/** One lease file as read: its stamp, when it was read, and the lease. */
export interface IndexEntry {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly readAt: number;
  readonly lease: Lease;
}

/** Lets the caller yield to the event loop between pieces of work: a promise when it is time to. */
export type Tick = () => Promise<void> | undefined;

class BadIndex extends Error {}

const ip4 = (b: Uint8Array) => `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
const hex16 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const ipText = (ip: IP | undefined) => (!ip ? "" : ip.family === 4 ? ip4(ip.bytes) : hex16(ip.bytes));
const prefixText = (p: Prefix | undefined) => (p ? `${ipText(p.ip)}/${p.len}` : "");
const dataText = (d: VxlanLeaseData | undefined) => (d ? `${d.vni}\t${d.vtepMAC}` : "\t");
const plain = (s: string) => !/[\t\n\r]/.test(s);

/** The index line of one entry; undefined when it cannot be written as one. */
function encodeEntry(name: string, e: IndexEntry): string | undefined {
  const l = e.lease;
  if (!plain(name) || !plain(l.backendType) || l.expiration !== undefined) return undefined;
  return `${name}\t${e.ino}\t${e.size}\t${e.mtimeMs}\t${e.ctimeMs}\t${e.readAt}\t${prefixText(l.subnet)}\t${prefixText(l.ipv6Subnet)}\t` +
    `${ipText(l.publicIP)}\t${ipText(l.publicIPv6)}\t${l.backendType}\t${dataText(l.backendData)}\t${dataText(l.backendV6Data)}\n`;
}

/** The index text of `entries` (a live iterator is fine: every entry stands alone). */
export async function encodeIndex(subnetsIno: number, entries: Iterable<[string, IndexEntry]>, tick: Tick): Promise<string> {
  const chunks = [`${MAGIC} ${subnetsIno}\n`];
  let count = 0;
  for (const [name, e] of entries) {
    const wait = tick();
    if (wait) await wait;
    const line = encodeEntry(name, e);
    if (line === undefined) continue;
    chunks.push(line);
    count++;
  }
  chunks.push(`end ${count}\n`);
  return chunks.join("");
}

function num(s: string): number {
  const n = s === "" ? NaN : Number(s);
  if (!Number.isFinite(n)) throw new BadIndex(`${JSON.stringify(s)} is not a number`);
  return n;
}

/** Reads one line's tab-separated fields in place. */
class Fields {
  private at: number;
  constructor(private readonly line: string) {
    this.at = 0;
  }
  next(): string {
    if (this.at > this.line.length) throw new BadIndex("too few fields");
    let end = this.line.indexOf("\t", this.at);
    if (end < 0) end = this.line.length;
    const out = this.line.slice(this.at, end);
    this.at = end + 1;
    return out;
  }
  done(): void {
    if (this.at <= this.line.length) throw new BadIndex("too many fields");
  }
}

function decodeIP(s: string, pool: BytePool): IP | undefined {
  if (s === "") return undefined;
  if (s.length === 32) {
    if (!HEX32_RE.test(s)) throw new BadIndex(`bad IPv6 ${JSON.stringify(s)}`);
    const bytes = pool.take(16);
    for (let i = 0; i < 16; i++) bytes[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    return { family: 6, bytes };
  }
  const bytes = pool.take(4);
  let i = 0, v = 0, digits = 0;
  for (let k = 0; k <= s.length; k++) {
    const c = k < s.length ? s.charCodeAt(k) : 46; // a final "."
    if (c >= 48 && c <= 57 && digits < 3) {
      v = v * 10 + c - 48;
      digits++;
    } else if (c === 46 && digits > 0 && v <= 255 && i < 4) {
      bytes[i++] = v;
      v = digits = 0;
    } else {
      throw new BadIndex(`bad IP ${JSON.stringify(s)}`);
    }
  }
  if (i !== 4) throw new BadIndex(`bad IP ${JSON.stringify(s)}`);
  return { family: 4, bytes };
}

function decodePrefix(s: string, family: 4 | 6, pool: BytePool): Prefix | undefined {
  if (s === "") return undefined;
  const slash = s.indexOf("/");
  const ip = slash > 0 ? decodeIP(s.slice(0, slash), pool) : undefined;
  const len = slash > 0 ? num(s.slice(slash + 1)) : NaN;
  if (ip?.family !== family || !Number.isInteger(len) || len < 1 || len > (family === 4 ? 32 : 128)) {
    throw new BadIndex(`bad prefix ${JSON.stringify(s)}`);
  }
  return { ip, len };
}

function decodeData(vni: string, mac: string): VxlanLeaseData | undefined {
  if (vni === "" && mac === "") return undefined;
  const n = num(vni);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffff || !MAC_RE.test(mac)) throw new BadIndex(`bad backend data ${vni} ${mac}`);
  return { vni: n, vtepMAC: mac };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function decodeEntry(line: string, pool: BytePool): [string, IndexEntry] {
  const f = new Fields(line);
  const name = f.next();
  const ino = num(f.next()), size = num(f.next()), mtimeMs = num(f.next()), ctimeMs = num(f.next()), readAt = num(f.next());
  const subnet = decodePrefix(f.next(), 4, pool);
  const ipv6Subnet = decodePrefix(f.next(), 6, pool);
  const publicIP = decodeIP(f.next(), pool);
  const publicIPv6 = decodeIP(f.next(), pool);
  const backendType = f.next();
  const backendData = decodeData(f.next(), f.next());
  const backendV6Data = decodeData(f.next(), f.next());
  f.done();
  if (!name || (!subnet && !ipv6Subnet) || publicIP?.family === 6 || publicIPv6?.family === 4) throw new BadIndex(`bad entry ${JSON.stringify(name)}`);
  // The shape (and property order) of parseLease's leases, without spreads: they cost.
  const lease = { key: name } as Mutable<Lease>;
  if (subnet) lease.subnet = subnet;
  if (ipv6Subnet) lease.ipv6Subnet = ipv6Subnet;
  if (publicIP) lease.publicIP = publicIP;
  if (publicIPv6) lease.publicIPv6 = publicIPv6;
  lease.backendType = backendType;
  if (backendData) lease.backendData = backendData;
  if (backendV6Data) lease.backendV6Data = backendV6Data;
  return [name, { ino, size, mtimeMs, ctimeMs, readAt, lease }];
}

/** The entries of an index written for the subnets/ directory with inode `subnetsIno`; throws on anything else. */
export async function decodeIndex(text: string, subnetsIno: number, tick: Tick): Promise<Map<string, IndexEntry>> {
  const head = `${MAGIC} ${subnetsIno}\n`;
  if (!text.startsWith(head)) throw new BadIndex(`not "${MAGIC}" for this directory: ${JSON.stringify(text.slice(0, 40))}`);
  const out = new Map<string, IndexEntry>();
  const pool = new BytePool();
  let at = head.length;
  for (;;) {
    const wait = tick();
    if (wait) await wait;
    const nl = text.indexOf("\n", at);
    if (nl < 0) throw new BadIndex("truncated");
    const line = text.slice(at, nl);
    at = nl + 1;
    if (line.startsWith("end ")) {
      if (num(line.slice(4)) !== out.size || at !== text.length) throw new BadIndex(`${out.size} entries, the end line says ${line}`);
      return out;
    }
    const [name, e] = decodeEntry(line, pool);
    out.set(name, e);
  }
}

/** The index of `dir`, or undefined when there is none or it is not one (missing, corrupt, another version or directory). */
export async function loadIndex(dir: string, subnetsIno: number, tick: Tick): Promise<Map<string, IndexEntry> | undefined> {
  try {
    // Only a regular file (saferead.ts): a FIFO planted here must not hold the list.
    const got = await readRegularFile(path.join(dir, INDEX_NAME), MAX_INDEX_BYTES);
    return got.ok ? await decodeIndex(got.text, subnetsIno, tick) : undefined;
  } catch {
    return undefined; // a hint only: the caller reads the files and writes a new one
  }
}

/** Writes the index of `dir` atomically; also removes temp files that crashed writers left. */
export async function saveIndex(dir: string, text: string): Promise<void> {
  await writeAtomic(path.join(dir, INDEX_NAME), text, 0o644);
  for (const name of await fs.readdir(dir)) {
    if (!name.startsWith(`${INDEX_NAME}.`) || !name.endsWith(".tmp")) continue;
    const st = await fs.stat(path.join(dir, name)).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > STALE_TMP_MS) await fs.rm(path.join(dir, name), { force: true });
  }
}
