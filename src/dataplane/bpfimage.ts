/**
 * The wanted content of the bpf dataplane's maps, packed: the image the
 * diff (bpfdiff.ts) compares the maps with, and the daemon's shadow of what
 * it wrote.
 *
 * How it works:
 * 1) Each wanted twill_peers entry is a slot: its key and value bytes live
 *    at slot × size in two growable Buffers (`keys`, `vals`), exactly as the
 *    map holds them, so a first reconcile hands the two Buffers to one batch
 *    update as they are, and comparing an entry with the map is a byte
 *    compare. Beside them, per slot: the Peer it came from (none for our own
 *    subnet, the cluster network and entries adopted from a pinned map), the
 *    kind, and whether the value bytes are exact (the daemon knows the peer
 *    id it wrote; `twill status` does not). A ByteIndex finds a slot by its
 *    key bytes wherever they are (a dump, a batch): no string, no object per
 *    entry, so 100,000 peers cost a few MiB and make no garbage.
 * 2) Peer ids live in the value bytes: a slot keeps its id across updates,
 *    a new key takes the next one, and an image adopted from a pinned map
 *    starts above the ids it found (a restart keeps every peer's counters).
 * 3) twill_remotes is derived the same way: one remote per underlay address
 *    (its key bytes in `rkeys`), with the first slot behind it (further
 *    ones, rare, apart); its value is that slot's id. Changes say which
 *    addresses must be rewritten, by their key bytes as a latin1 string.
 * 4) `sync` makes the image the desired set: a peer whose slot already holds
 *    the same Peer object costs one key encode and one lookup; others are
 *    encoded; slots no longer wanted are dropped. `version` moves only when
 *    some byte or slot changed, so "nothing changed" is one compare.
 * 5) Streaming (a first start): `sync` can hand each run of new slots and
 *    new remotes to a writer as soon as it is encoded, so the kernel fills
 *    the maps while the rest is still being encoded. What was handed over
 *    is marked `sent` until its bytes change again (a later value, a slot
 *    freed or reused, a remote's first slot replaced): the repair after it
 *    writes only what is not sent.
 */
import { type IP, type Prefix } from "../net/ip.js";
import { encodeEpKeyAt, encodeLpmKey, encodePeer, encodePeerFields, EP_KEY, LPM_KEY, PEER, PeerKind, peerIdAt, peerKindAt } from "../bpf/layout.js";
import { ByteIndex } from "./byteindex.js";
import type { Peer } from "./types.js";

export const KEY_SIZE = LPM_KEY.size;
export const VALUE_SIZE = PEER.size;
export const REMOTE_KEY_SIZE = EP_KEY.size;

/** A map key as a latin1 string (one char a byte): for the few keys events touch. */
export const keyString = (buf: Buffer, at: number, size: number): string => buf.toString("latin1", at, at + size);

/** Yields to the event loop when it is time: a promise to await then, else nothing (see bpfdiff.ts yieldToEvents). */
export type Pause = () => Promise<void> | undefined;
/** Items between two looks at the clock. */
export const SLICE = 64;

export const peerKind = (p: Peer): PeerKind => (p.direct ? PeerKind.Direct : PeerKind.Vxlan);

/** Encodes a peer's value with `id` at `at`. */
export function encodePeerValue(p: Peer, id: number, buf: Buffer, at: number): void {
  encodePeerFields(peerKind(p), p.publicIP, p.vtepMAC, p.vni, id, buf, at);
}

/** Copies `n` bytes (a loop: cheaper than a native call for a few dozen bytes). */
function copyBytes(from: Buffer, fromAt: number, to: Buffer, toAt: number, n: number): void {
  for (let i = 0; i < n; i++) to[toAt + i] = from[fromAt + i]!;
}
/** Whether `n` bytes of `a` at `ai` equal those of `b` at `bi`. */
export function sameBytes(a: Buffer, ai: number, b: Buffer, bi: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[ai + i] !== b[bi + i]) return false;
  return true;
}

/**
 * A copy of `a` with room for `cap` items (holes past its length): one
 * allocation, where filling slot after slot would grow it step by step.
 */
function grownArray<T>(a: Array<T | undefined>, cap: number): Array<T | undefined> {
  const b = new Array<T | undefined>(cap);
  for (let i = 0; i < a.length; i++) b[i] = a[i];
  return b;
}

/** A grown copy of a typed array. */
function grownTo<T extends Uint8Array | Int32Array | Uint32Array>(a: T, cap: number, fill?: number): T {
  const b = new (a.constructor as new (n: number) => T)(cap);
  if (fill !== undefined) b.fill(fill);
  b.set(a);
  return b;
}

/**
 * A writer for streaming (see 5): `write` gets each run of new slots and
 * remotes, about every `every` slots, already marked sent; a write that
 * fails unmarks them (markSent(…, false)).
 */
export interface Stream {
  readonly every: number;
  write(from: number, to: number, rfrom: number, rto: number): void;
}

export class BpfImage {
  keys: Buffer = Buffer.alloc(0);
  vals: Buffer = Buffer.alloc(0);
  /** Slots in use or freed below this. */
  top = 0;
  peer: Array<Peer | undefined> = [];
  /** Our own subnet and the cluster network (no Peer). */
  prefix: Array<Prefix | undefined> = [];
  kind = new Uint8Array(0);
  exact = new Uint8Array(0);
  live = new Uint8Array(0);
  /** Moves with every change of a slot's bytes, a slot added or dropped. */
  version = 0;
  private readonly index = new ByteIndex(KEY_SIZE, () => this.keys);
  private free: number[] = [];
  private mark = new Uint32Array(0);
  /** Slots / remotes handed to a stream writer whose bytes did not change since (see 5). */
  private sentSlot = new Uint8Array(0);
  private sentRemote = new Uint8Array(0);
  /** Some mark may be set (clearSent has work to do). */
  private anySent = false;
  /** The remote of each slot (-1: none). */
  private remoteOf = new Int32Array(0);
  private gen = 0;
  private nextId = 1;

  /** Remotes: key bytes at r × REMOTE_KEY_SIZE, the first slot behind each (-1: free), further slots. */
  rkeys: Buffer = Buffer.alloc(0);
  private rfirst = new Int32Array(0);
  private readonly rmore = new Map<number, number[]>();
  private rtop = 0;
  private rfree: number[] = [];
  private readonly rindex = new ByteIndex(REMOTE_KEY_SIZE, () => this.rkeys);

  private readonly scratchKey = Buffer.alloc(KEY_SIZE);
  private readonly scratchVal = Buffer.alloc(VALUE_SIZE);

  /** Wanted trie entries. */
  get size(): number {
    return this.index.count;
  }
  /** Wanted twill_remotes entries. */
  get remoteCount(): number {
    return this.rindex.count;
  }
  /** Remotes in use or freed below this. */
  get remoteTop(): number {
    return this.rtop;
  }

  /** The peer id in a slot's value. */
  idAt(slot: number): number {
    return peerIdAt(this.vals, slot * VALUE_SIZE);
  }

  /** The slot whose key is at buf[at..]; -1 when none. */
  slotOf(buf: Buffer, at: number): number {
    return this.index.find(buf, at);
  }

  /** The remote whose key is at buf[at..]; -1 when none. */
  remoteOfKey(buf: Buffer, at: number): number {
    return this.rindex.find(buf, at);
  }

  /** The first slot behind remote r (-1: r is free). */
  remoteFirst(r: number): number {
    return this.rfirst[r] ?? -1;
  }

  /** Whether `ok` holds for every slot behind remote r (no array made: the diff asks this of every remote). */
  remoteSlotsAll(r: number, ok: (slot: number) => boolean): boolean {
    const first = this.remoteFirst(r);
    if (first < 0) return true;
    if (!ok(first)) return false;
    const more = this.rmore.get(r);
    return !more || more.every(ok);
  }

  /** The underlay address of remote r. */
  remoteIP(r: number): IP | undefined {
    const first = this.remoteFirst(r);
    return first < 0 ? undefined : this.peer[first]?.publicIP;
  }

  private grow(need: number): void {
    let cap = this.kind.length;
    if (need <= cap) return;
    while (cap < need) cap = Math.max(64, cap * 2);
    const keys = Buffer.alloc(cap * KEY_SIZE), vals = Buffer.alloc(cap * VALUE_SIZE);
    this.keys.copy(keys);
    this.vals.copy(vals);
    this.keys = keys;
    this.vals = vals;
    this.peer = grownArray(this.peer, cap);
    this.prefix = grownArray(this.prefix, cap);
    this.kind = grownTo(this.kind, cap);
    this.exact = grownTo(this.exact, cap);
    this.live = grownTo(this.live, cap);
    this.mark = grownTo(this.mark, cap);
    this.sentSlot = grownTo(this.sentSlot, cap);
    this.remoteOf = grownTo(this.remoteOf, cap, -1);
    this.index.reserve(cap);
  }

  private growRemotes(need: number): void {
    let cap = this.rfirst.length;
    if (need <= cap) return;
    while (cap < need) cap = Math.max(64, cap * 2);
    const rkeys = Buffer.alloc(cap * REMOTE_KEY_SIZE);
    this.rkeys.copy(rkeys);
    this.rkeys = rkeys;
    this.rfirst = grownTo(this.rfirst, cap, -1);
    this.sentRemote = grownTo(this.sentRemote, cap);
    this.rindex.reserve(cap);
  }

  /**
   * Adopts a map's entries (keys then values, back to back) as the image:
   * exact bytes, no peers. Ids continue above the highest found.
   */
  adopt(bytes: Buffer, count: number): void {
    const stride = KEY_SIZE + VALUE_SIZE;
    this.grow(this.top + count);
    for (let i = 0; i < count; i++) {
      const o = i * stride;
      const slot = this.place(bytes, o);
      copyBytes(bytes, o + KEY_SIZE, this.vals, slot * VALUE_SIZE, VALUE_SIZE);
      this.kind[slot] = peerKindAt(this.vals, slot * VALUE_SIZE);
      this.exact[slot] = 1;
      this.nextId = Math.max(this.nextId, this.idAt(slot) + 1);
    }
    this.version++;
  }

  /** The slot of the key at src[at..], made (key bytes copied) when new. */
  private place(src: Buffer, at: number): number {
    const h = this.index.hash(src, at);
    const slot = this.index.findHashed(src, at, h);
    return slot >= 0 ? slot : this.newSlot(src, at, h);
  }

  /** The slot the next new key takes (a freed one first). */
  private nextSlot(): number {
    return this.free.length ? this.free[this.free.length - 1]! : this.top;
  }

  /** The remote the next new underlay address takes (a freed one first). */
  private nextRemote(): number {
    return this.rfree.length ? this.rfree[this.rfree.length - 1]! : this.rtop;
  }

  /** A new slot for the key at src[at..] (not in the index; `h` its hash), its bytes copied unless they are already there. */
  private newSlot(src: Buffer, at: number, h: number): number {
    const slot = this.free.pop() ?? this.top++;
    this.grow(slot + 1);
    if (src !== this.keys || at !== slot * KEY_SIZE) copyBytes(src, at, this.keys, slot * KEY_SIZE, KEY_SIZE);
    this.index.addHashed(slot, h);
    this.sentSlot[slot] = 0;
    this.live[slot] = 1;
    this.mark[slot] = this.gen;
    this.peer[slot] = undefined;
    this.prefix[slot] = undefined;
    this.version++;
    return slot;
  }

  /**
   * Sets the entry of `peer` whose key is at keyBuf[keyAt..], keeping its
   * id; writes the value into `out` at `outAt` when given (the batch the
   * caller sends). Returns the slot; addresses whose twill_remotes entry
   * must be rewritten are added to `touched` (key strings). The key is
   * hashed once; a new entry's value is encoded where it lives.
   */
  setPeer(keyBuf: Buffer, keyAt: number, peer: Peer, touched?: Set<string>, exact = true, out?: Buffer, outAt = 0): number {
    const h = this.index.hash(keyBuf, keyAt);
    const had = this.index.findHashed(keyBuf, keyAt, h);
    const ex = exact ? 1 : 0;
    let slot: number;
    if (had < 0) {
      slot = this.newSlot(keyBuf, keyAt, h);
      encodePeerValue(peer, exact ? this.nextId++ : 0, this.vals, slot * VALUE_SIZE);
    } else {
      slot = had;
      const at = slot * VALUE_SIZE;
      if (this.peer[slot] === peer && this.exact[slot] === ex) {
        if (out) copyBytes(this.vals, at, out, outAt, VALUE_SIZE);
        this.mark[slot] = this.gen;
        return slot;
      }
      const v = this.scratchVal;
      encodePeerValue(peer, exact ? this.idAt(slot) || this.nextId++ : 0, v, 0);
      if (this.exact[slot] !== ex || !sameBytes(v, 0, this.vals, at, VALUE_SIZE)) {
        copyBytes(v, 0, this.vals, at, VALUE_SIZE);
        this.sentSlot[slot] = 0;
        this.version++;
      }
    }
    if (out) copyBytes(this.vals, slot * VALUE_SIZE, out, outAt, VALUE_SIZE);
    this.peer[slot] = peer;
    this.prefix[slot] = undefined;
    this.kind[slot] = peerKind(peer);
    this.exact[slot] = ex;
    this.mark[slot] = this.gen;
    this.setRemote(slot, peer.publicIP, touched);
    return slot;
  }

  /**
   * setPeer for the key encoded at slot `top`: what newSlot, setPeer and
   * setRemote do for a key new to the image, with as few calls as can be —
   * a first start runs this once per peer, mostly before V8 has optimised
   * anything, where every call costs. A key the image has already goes the
   * general way.
   */
  private appendPeer(p: Peer, exact: boolean): void {
    const slot = this.top, at = slot * KEY_SIZE;
    if (this.index.findOrAdd(this.keys, at, slot) >= 0) {
      this.setPeer(this.keys, at, p, undefined, exact);
      return;
    }
    this.top++;
    const kind = p.direct ? PeerKind.Direct : PeerKind.Vxlan;
    encodePeerFields(kind, p.publicIP, p.vtepMAC, p.vni, exact ? this.nextId++ : 0, this.vals, slot * VALUE_SIZE);
    this.sentSlot[slot] = 0;
    this.live[slot] = 1;
    this.mark[slot] = this.gen;
    this.peer[slot] = p; // (a slot at the top has never held an own prefix)
    this.kind[slot] = kind;
    this.exact[slot] = exact ? 1 : 0;
    this.version++;
    // Its underlay address: a new remote at rtop, unless the address is known (or a freed remote is to be reused).
    const r = this.rtop;
    if (this.rfree.length || r >= this.rfirst.length) return this.setRemote(slot, p.publicIP);
    const rat = r * REMOTE_KEY_SIZE;
    encodeEpKeyAt(p.publicIP, this.rkeys, rat);
    const had = this.rindex.findOrAdd(this.rkeys, rat, r);
    if (had >= 0) {
      this.remoteOf[slot] = had;
      this.addBehind(had, slot);
      return;
    }
    this.rtop++;
    this.rfirst[r] = slot;
    this.sentRemote[r] = 0;
    this.remoteOf[slot] = r;
  }

  /** Puts `slot` behind remote r (its first slot, or one more). */
  private addBehind(r: number, slot: number): void {
    if (this.rfirst[r]! < 0) this.rfirst[r] = slot;
    else {
      let more = this.rmore.get(r);
      if (!more) this.rmore.set(r, (more = []));
      more.push(slot);
    }
  }

  /** Sets a LOCAL or CLUSTER entry (id 0, no remote). */
  setOwn(prefix: Prefix, kind: PeerKind): number {
    const slot = this.place(encodeLpmKey(prefix, this.scratchKey, 0), 0);
    const v = this.scratchVal;
    encodePeer({ kind, vni: 0, id: 0 }, v, 0);
    const at = slot * VALUE_SIZE;
    if (!this.exact[slot] || !sameBytes(v, 0, this.vals, at, VALUE_SIZE)) {
      copyBytes(v, 0, this.vals, at, VALUE_SIZE);
      this.sentSlot[slot] = 0;
      this.version++;
    }
    this.setRemote(slot, undefined);
    this.peer[slot] = undefined;
    this.prefix[slot] = prefix;
    this.kind[slot] = kind;
    this.exact[slot] = 1;
    this.mark[slot] = this.gen;
    return slot;
  }

  /** Drops the key at buf[at..]; returns the id its value held (0: none, or not there). */
  delete(buf: Buffer, at: number, touched?: Set<string>): number {
    const slot = this.index.find(buf, at);
    if (slot < 0) return 0;
    const id = this.idAt(slot);
    this.dropSlot(slot, touched);
    return id;
  }

  private dropSlot(slot: number, touched?: Set<string>): void {
    this.setRemote(slot, undefined, touched);
    this.index.remove(slot);
    this.live[slot] = 0;
    this.peer[slot] = undefined;
    this.prefix[slot] = undefined;
    this.vals.fill(0, slot * VALUE_SIZE, (slot + 1) * VALUE_SIZE);
    this.exact[slot] = 0;
    this.sentSlot[slot] = 0;
    this.free.push(slot);
    this.version++;
  }

  /** Moves a slot to the underlay address `ip` (none: away from any); changed addresses go into `touched`. */
  private setRemote(slot: number, ip: IP | undefined, touched?: Set<string>): void {
    const cur = this.remoteOf[slot]!;
    let next = -1;
    if (ip) {
      // The key is encoded where a new remote would keep it: no copy, one hash.
      const c = this.nextRemote();
      this.growRemotes(c + 1);
      const at = c * REMOTE_KEY_SIZE;
      encodeEpKeyAt(ip, this.rkeys, at);
      const h = this.rindex.hash(this.rkeys, at);
      next = this.rindex.findHashed(this.rkeys, at, h);
      if (next >= 0 && next === cur) return;
      if (next < 0) {
        next = this.rfree.pop() ?? this.rtop++;
        this.rindex.addHashed(next, h);
        this.rfirst[next] = -1;
        this.sentRemote[next] = 0;
      }
    } else if (cur < 0) return;
    if (cur >= 0) {
      const more = this.rmore.get(cur);
      if (this.rfirst[cur] === slot) {
        this.sentRemote[cur] = 0;
        if (more?.length) this.rfirst[cur] = more.shift()!;
        else {
          this.rfirst[cur] = -1;
          this.rindex.remove(cur);
          this.rfree.push(cur);
        }
      } else if (more) {
        const i = more.indexOf(slot);
        if (i >= 0) more.splice(i, 1);
      }
      if (more && !more.length) this.rmore.delete(cur);
      touched?.add(keyString(this.rkeys, cur * REMOTE_KEY_SIZE, REMOTE_KEY_SIZE));
    }
    this.remoteOf[slot] = next;
    if (next < 0) return;
    this.addBehind(next, slot);
    touched?.add(keyString(this.rkeys, next * REMOTE_KEY_SIZE, REMOTE_KEY_SIZE));
  }

  /** The live slots' ids (for sweeping counters of gone peers). */
  liveIds(): Set<number> {
    const out = new Set<number>([0]);
    for (let s = 0; s < this.top; s++) if (this.live[s]) out.add(this.idAt(s));
    return out;
  }

  /**
   * Makes the image exactly `peers` plus the own and cluster entries.
   * `exact`: values carry the ids this image assigns (the daemon's shadow);
   * otherwise ids are unknown (`twill status`) and the diff decodes.
   * Keys in `keep` (latin1 strings) are left as they are: an event wrote
   * them meanwhile.
   */
  async sync(d: { peers: readonly Peer[]; own: readonly Prefix[]; networks: readonly Prefix[] }, o: { exact: boolean; keep?: ReadonlySet<string>; pause?: Pause; stream?: Stream }): Promise<void> {
    const g = ++this.gen;
    this.grow(this.top + d.peers.length + d.own.length + d.networks.length - this.free.length);
    this.growRemotes(this.rtop + d.peers.length - this.rfree.length);
    for (const n of d.networks) this.setOwn(n, PeerKind.Cluster);
    for (const p of d.own) this.setOwn(p, PeerKind.Local);
    const keep = o.keep, stream = o.stream;
    // Streaming hands over runs of new slots at the top (and new remotes at rtop): only while nothing freed is reused.
    let sentTop = this.top, sentRtop = this.rtop;
    const flush = (): void => {
      if (!stream || (this.top === sentTop && this.rtop === sentRtop)) return;
      if (this.free.length === 0 && this.rfree.length === 0) {
        this.markSent(sentTop, this.top, sentRtop, this.rtop);
        stream.write(sentTop, this.top, sentRtop, this.rtop);
      }
      sentTop = this.top;
      sentRtop = this.rtop;
    };
    const peers = d.peers, n = peers.length;
    for (let i = 0; i < n; i++) {
      const p = peers[i]!;
      if (stream && this.top - sentTop >= stream.every) flush();
      if (o.pause && (i + 1) % SLICE === 0) {
        const w = o.pause();
        if (w) await w;
      }
      // The key is encoded where a new entry would keep it (setPeer then copies nothing).
      const c = this.nextSlot();
      if (c >= this.kind.length) this.grow(c + 1);
      const at = c * KEY_SIZE;
      encodeLpmKey(p.subnet, this.keys, at);
      if (keep?.size && keep.has(keyString(this.keys, at, KEY_SIZE))) {
        const s = this.index.find(this.keys, at);
        if (s >= 0) this.mark[s] = this.gen;
        continue;
      }
      if (c === this.top) this.appendPeer(p, o.exact);
      else this.setPeer(this.keys, at, p, undefined, o.exact);
    }
    flush();
    for (let s = 0; s < this.top; s++) {
      if (!this.live[s] || this.mark[s] === g) continue;
      if (keep?.size && keep.has(keyString(this.keys, s * KEY_SIZE, KEY_SIZE))) continue;
      this.dropSlot(s);
    }
  }

  /*
   * The diff's two scans of the whole image (bpfdiff.ts). Small functions
   * of their own: V8 optimises them at once, where a loop in the diff's
   * big async function runs interpreted until that function is compiled —
   * at 100,000 slots the difference is milliseconds. They do not yield.
   */

  /**
   * Marks in `missed` the live slots not `found` and returns how many;
   * pushes onto `write` those to be written (with `unsent`, not the ones
   * marked sent) and onto `own` those that are our own or cluster entries.
   */
  scanMissing(found: Uint8Array, missed: Uint8Array, write: number[], own: number[], unsent: boolean): number {
    const live = this.live, sent = this.sentSlot, peer = this.peer, top = this.top;
    let n = 0;
    for (let s = 0; s < top; s++) {
      if (found[s] === 1 || live[s] !== 1) continue;
      missed[s] = 1;
      n++;
      if (!unsent || sent[s] !== 1) write.push(s);
      if (peer[s] === undefined) own.push(s);
    }
    return n;
  }

  /**
   * The remotes not `seen`: pushes onto `write` those to be written (with
   * `unsent`, not the ones marked sent); returns those whose first slot
   * was `found` (their absence is drift of its own).
   */
  scanRemotes(seen: Uint8Array, found: Uint8Array, write: number[], unsent: boolean): number[] {
    const first = this.rfirst, sent = this.sentRemote, top = this.rtop;
    const out: number[] = [];
    for (let r = 0; r < top; r++) {
      const f = first[r]!;
      if (f < 0 || seen[r] === 1) continue;
      if (!unsent || sent[r] !== 1) write.push(r);
      if (found[f] === 1) out.push(r);
    }
    return out;
  }

  /** Marks slots from..to-1 and remotes rfrom..rto-1 as written to the maps with their bytes now (or clears the marks). */
  markSent(from: number, to: number, rfrom: number, rto: number, sent = true): void {
    this.anySent ||= sent;
    this.sentSlot.fill(sent ? 1 : 0, from, to);
    this.sentRemote.fill(sent ? 1 : 0, rfrom, rto);
  }
  isSent(slot: number): boolean {
    return this.sentSlot[slot] === 1;
  }
  isRemoteSent(r: number): boolean {
    return this.sentRemote[r] === 1;
  }
  /** Forgets every mark (after the repair that used them). */
  clearSent(): void {
    if (!this.anySent) return;
    this.sentSlot.fill(0);
    this.sentRemote.fill(0);
    this.anySent = false;
  }

  /** Whether the image is slots 0..size-1 with none freed: then `keys`/`vals` are a batch as they are. */
  get dense(): boolean {
    return this.free.length === 0 && this.top === this.index.count;
  }
}

/** Builds an image of `d` (values without ids: the diff decodes each entry). */
export async function bpfImage(d: { peers: readonly Peer[]; own: readonly Prefix[]; networks: readonly Prefix[] }, pause?: Pause): Promise<BpfImage> {
  const image = new BpfImage();
  await image.sync(d, { exact: false, ...(pause ? { pause } : {}) });
  return image;
}
