/**
 * The bpf dataplane's diff: the twill_peers trie and the twill_remotes map
 * as they are, against the peers the leases want. Used by the reconcile
 * (which then applies the repair) and by `twill status` (which prints the
 * drift), so the two agree by construction.
 *
 * How it works:
 * 1) The desired state is an image (bpfimage.ts): every peer, our own
 *    subnets (LOCAL entries) and the cluster networks (CLUSTER entries),
 *    packed as the map holds them. The daemon keeps the image between
 *    reconciles (a shadow of what it wrote, with the exact value bytes), so
 *    a reconcile costs one batch dump of each map and a byte comparison per
 *    entry. The observed maps are dumps (keys and values back to back),
 *    read in place: no Buffer per entry. Given a `pause`, the diff yields
 *    to the event loop every SLICE entries of the dumps once it has run
 *    SLICE_MS, so lease events are not held up by a reconcile of a large
 *    map; its two scans of the whole image (BpfImage.scanMissing,
 *    scanRemotes: a byte test per slot) run without yielding (the whole
 *    diff of a 100,000-peer first start measured 7-9 ms).
 * 2) An observed entry whose bytes equal the shadow's is fine without being
 *    decoded. Otherwise it is decoded and compared by what matters to the
 *    packet path (kind, remote, VTEP MAC, VNI): a peer id that differs is
 *    repaired silently (it only names the counters), anything else is
 *    drift: changed, or stale when nothing wants the key; a wanted key not
 *    seen is missing.
 * 3) The repair names image slots to write and offsets of observed entries
 *    to delete. A missing peer entry is kept as its Peer until the drift is
 *    read: a first reconcile of 100,000 peers is 100,000 "missing" that
 *    nobody prints, so the repair carries their count and builds the list
 *    (and each entry's words) only when asked.
 * 4) twill_remotes must hold exactly the underlay addresses of the peers
 *    (the senders whose VXLAN BPF strips): a missing or stale address is
 *    drift of its own only when no missing or stale peer entry explains it
 *    (a vanished peer is one drift, not two); its value (the id of a subnet
 *    behind the address) is bookkeeping and repaired silently.
 */
import { formatIP, formatPrefix, ipEqual, type IP, type Prefix } from "../net/ip.js";
import { decodeEpKey, decodeLpmKey, decodePeer, encodeEpKey, EP_KEY, PeerKind, REMOTE, remoteIdAt, type PeerValue } from "../bpf/layout.js";
import { driftCounts, type Drift, type DriftKind } from "./drift.js";
import type { Peer } from "./types.js";
import { BpfImage, KEY_SIZE, keyString, REMOTE_KEY_SIZE, sameBytes, SLICE, VALUE_SIZE, type Pause } from "./bpfimage.js";

export { bpfImage, BpfImage, type Pause } from "./bpfimage.js";

/** A dump of a map: `count` entries, each key then value, back to back (BpfMap.snapshot). */
export interface Dump {
  readonly bytes: Buffer;
  readonly count: number;
}

export interface BpfObserved {
  readonly peers: Dump;
  readonly remotes: Dump;
}

export interface BpfRepair {
  /** Built on first read (see 3); the same list every time. */
  readonly drift: readonly Drift[];
  /** driftCounts(drift), without building it. */
  readonly counts: { added: number; updated: number; removed: number };
  /** Image slots to (re)write into twill_peers (peers and own entries), in slot order. */
  readonly writeSlots: number[];
  /** Offsets in the observed twill_peers dump of the entries to delete. */
  readonly deleteAt: number[];
  /** twill_remotes: the image's remotes whose entry must be (re)written; dump offsets of entries to delete. */
  readonly writeRemotes: number[];
  readonly deleteRemotesAt: number[];
}

const KIND_NAME: Record<number, string> = { [PeerKind.Vxlan]: "vxlan", [PeerKind.Direct]: "direct", [PeerKind.Local]: "local", [PeerKind.Cluster]: "cluster" };
const kindName = (k: number): string => KIND_NAME[k] ?? `kind ${k}`;

/** The longest a reconcile holds the event loop between two yields. */
const SLICE_MS = 2;
let sliceStart = performance.now();
/**
 * Yields (setImmediate) once SLICE_MS have passed since the last yield:
 * returns the promise to await then, and nothing before (a loop awaits
 * only when it must; an await costs even when there is nothing to wait for).
 */
export const yieldToEvents: Pause = () => {
  if (performance.now() - sliceStart < SLICE_MS) return undefined;
  return new Promise<void>((r) => setImmediate(r)).then(() => {
    sliceStart = performance.now();
  });
};

/** A drift whose words are made when read (and by JSON.stringify): a first start has 100,000 that nobody prints. */
abstract class LazyDrift implements Drift {
  abstract readonly kind: DriftKind;
  abstract readonly subject: string;
  abstract readonly detail: string;
  toJSON(): Drift {
    return { kind: this.kind, subject: this.subject, detail: this.detail };
  }
}

/** A wanted trie entry the map lacks. */
class MissingEntry extends LazyDrift {
  readonly kind = "missing";
  constructor(private readonly p: Peer | undefined, private readonly prefix: Prefix | undefined, private readonly entryKind: PeerKind) {
    super();
  }
  get subject(): string {
    return formatPrefix(this.p?.subnet ?? this.prefix!);
  }
  get detail(): string {
    const p = this.p;
    if (p) return `twill_peers has no entry for it (the lease says ${p.direct ? "direct" : "vxlan"} to ${formatIP(p.publicIP)}${p.direct ? "" : `, VTEP MAC ${p.vtepMAC}`})`;
    return this.entryKind === PeerKind.Local ? "twill_peers has no LOCAL entry for our own subnet" : "twill_peers has no CLUSTER entry for the cluster network";
  }
}

/** A peer address twill_remotes lacks. */
class MissingRemote extends LazyDrift {
  readonly kind = "missing";
  constructor(private readonly ip: IP) {
    super();
  }
  get subject(): string {
    return formatIP(this.ip);
  }
  get detail(): string {
    return "twill_remotes does not accept VXLAN from this peer's PublicIP (it falls back to the vxlan device)";
  }
}

const describePeer = (v: PeerValue): string =>
  `${kindName(v.kind)}${v.remote ? ` to ${formatIP(v.remote)}` : ""}${v.kind === PeerKind.Vxlan && v.vtepMAC ? `, VTEP MAC ${v.vtepMAC}` : ""}`;

/** What differs between a wanted peer and its decoded entry, in words; [] when nothing that matters does. */
function peerDiffs(p: Peer, v: PeerValue): string[] {
  const out: string[] = [];
  const path = p.direct ? "direct" : "vxlan";
  if (v.kind !== (p.direct ? PeerKind.Direct : PeerKind.Vxlan)) out.push(`path is ${kindName(v.kind)}, the lease makes it ${path}`);
  if (!v.remote || !ipEqual(v.remote, p.publicIP)) out.push(`public IP is ${v.remote ? formatIP(v.remote) : "unknown"}, the lease says ${formatIP(p.publicIP)}`);
  if (!p.direct && v.kind === PeerKind.Vxlan) {
    if (v.vtepMAC !== p.vtepMAC.toLowerCase()) out.push(`VTEP MAC is ${v.vtepMAC ?? "unknown"}, the lease says ${p.vtepMAC}`);
    if (v.vni !== p.vni) out.push(`VNI is ${v.vni}, the lease says ${p.vni}`);
  }
  return out;
}


/**
 * The missing trie entries of a diff, kept as the slots' Peers at the
 * moment of the diff (copied in one go: a first start has 100,000) and
 * listed in slot order only when read.
 */
class Missing {
  constructor(
    readonly count: number,
    private readonly missed: Uint8Array,
    private readonly peers: ReadonlyArray<Peer | undefined>,
    private readonly own: ReadonlyMap<number, MissingEntry>,
  ) {}
  list(): MissingEntry[] {
    const out: MissingEntry[] = [];
    for (let s = 0; s < this.missed.length; s++) {
      if (!this.missed[s]) continue;
      const p = this.peers[s];
      out.push(p ? new MissingEntry(p, undefined, PeerKind.Vxlan) : this.own.get(s)!);
    }
    return out;
  }
}

/** A diff's repair; its drift is what it found in the maps, with the missing entries made only when read. */
class Repair implements BpfRepair {
  private list?: readonly Drift[];
  constructor(
    private readonly head: readonly Drift[],
    private readonly missing: Missing,
    private readonly tail: readonly Drift[],
    readonly writeSlots: number[],
    readonly deleteAt: number[],
    readonly writeRemotes: number[],
    readonly deleteRemotesAt: number[],
  ) {}
  get drift(): readonly Drift[] {
    return (this.list ??= [...this.head, ...this.missing.list(), ...this.tail]);
  }
  get counts(): { added: number; updated: number; removed: number } {
    const h = driftCounts(this.head), t = driftCounts(this.tail);
    return { added: h.added + this.missing.count + t.added, updated: h.updated + t.updated, removed: h.removed + t.removed };
  }
}

/** Whether `a` is in ascending order. */
function ascending(a: readonly number[]): boolean {
  for (let i = 1; i < a.length; i++) if (a[i - 1]! > a[i]!) return false;
  return true;
}

/**
 * Compares the maps with the image; returns the drift and its repair.
 * Writes nothing. `unsent`: the repair leaves out slots and remotes the
 * image marks as sent (streamed to the map after the dump was read: a
 * first start's), which are still counted and listed as drift.
 */
export async function diffBpf(image: BpfImage, seen: BpfObserved, pause?: Pause, o: { unsent?: boolean } = {}): Promise<BpfRepair> {
  const unsent = o.unsent === true;
  const drift: Drift[] = [];
  const writeSlots: number[] = [], deleteAt: number[] = [];
  const found = new Uint8Array(image.top);
  /** twill_remotes keys whose staleness a stale peer entry already says. */
  const explained = new Set<string>();
  const stride = KEY_SIZE + VALUE_SIZE;
  const bytes = seen.peers.bytes;
  let i = 0;
  for (let n = 0; n < seen.peers.count; n++) {
    if (pause && ++i % SLICE === 0) {
      const w = pause();
      if (w) await w;
    }
    const o = n * stride;
    const slot = image.slotOf(bytes, o);
    if (slot >= 0 && image.exact[slot] && sameBytes(bytes, o + KEY_SIZE, image.vals, slot * VALUE_SIZE, VALUE_SIZE)) {
      found[slot] = 1;
      continue;
    }
    const have = decodePeer(bytes.subarray(o + KEY_SIZE, o + stride));
    const subject = formatPrefix(decodeLpmKey(bytes.subarray(o, o + KEY_SIZE)));
    if (slot < 0) {
      deleteAt.push(o);
      if (have.remote) explained.add(keyString(encodeEpKey(have.remote), 0, REMOTE_KEY_SIZE));
      const what = have.kind === PeerKind.Local ? "marks it as our own subnet (LOCAL), but our lease is another one"
        : have.kind === PeerKind.Cluster ? "marks it as the cluster network (CLUSTER), but the network config says otherwise"
        : `has an entry (${describePeer(have)}) that no lease backs`;
      drift.push({ kind: "stale", subject, detail: `twill_peers ${what}` });
      continue;
    }
    found[slot] = 1;
    const peer = image.peer[slot];
    if (!peer) {
      if (have.kind !== image.kind[slot]) {
        drift.push({ kind: "changed", subject, detail: `twill_peers has a ${kindName(have.kind)} entry, it must be ${kindName(image.kind[slot]!)}` });
        writeSlots.push(slot);
      }
      continue;
    }
    const diffs = peerDiffs(peer, have);
    if (diffs.length) drift.push({ kind: "changed", subject, detail: `twill_peers: ${diffs.join("; ")}` });
    // Only the peer id differs (or the bytes did): rewrite without calling it drift.
    writeSlots.push(slot);
  }
  // A peer's Peer stands for its MissingEntry until the drift is read; our own and cluster entries (a few) get theirs now.
  const seenWrites = writeSlots.length > 0;
  const missed = new Uint8Array(image.top), ownSlots: number[] = [];
  const missingCount = image.scanMissing(found, missed, writeSlots, ownSlots, unsent);
  const own = new Map(ownSlots.map((slot) => [slot, new MissingEntry(undefined, image.prefix[slot] ?? decodeLpmKey(image.keys.subarray(slot * KEY_SIZE, (slot + 1) * KEY_SIZE)), image.kind[slot]!)]));
  const missing = new Missing(missingCount, missed, missingCount ? image.peer.slice(0, image.top) : [], own);
  // In slot order: the missing ones are; the seen ones come in the dump's order (sorted only when they break it).
  if (seenWrites && !ascending(writeSlots)) writeSlots.sort((a, b) => a - b);

  const remoteDrift: Drift[] = [];
  const writeRemotes: number[] = [], deleteRemotesAt: number[] = [];
  const remoteSeen = new Uint8Array(image.remoteTop);
  const rstride = REMOTE_KEY_SIZE + REMOTE.size;
  const rbytes = seen.remotes.bytes;
  for (let n = 0; n < seen.remotes.count; n++) {
    if (pause && ++i % SLICE === 0) {
      const w = pause();
      if (w) await w;
    }
    const o = n * rstride;
    const r = image.remoteOfKey(rbytes, o);
    if (r < 0) {
      deleteRemotesAt.push(o);
      if (!explained.has(keyString(rbytes, o, REMOTE_KEY_SIZE))) remoteDrift.push({ kind: "stale", subject: formatIP(decodeEpKey(rbytes.subarray(o, o + EP_KEY.size))), detail: "twill_remotes accepts VXLAN from this address, but no lease has it as its PublicIP" });
      continue;
    }
    remoteSeen[r] = 1;
    // Its value (the id of a subnet behind the address) is bookkeeping: repaired silently.
    const first = image.remoteFirst(r);
    if (image.exact[first] && remoteIdAt(rbytes, o + REMOTE_KEY_SIZE) !== image.idAt(first)) writeRemotes.push(r);
  }
  for (const r of image.scanRemotes(remoteSeen, found, writeRemotes, unsent)) {
    // A missing peer entry behind it already says it (a vanished peer is one drift, not two).
    if (!image.remoteSlotsAll(r, (s) => found[s] === 1)) continue;
    remoteDrift.push(new MissingRemote(image.remoteIP(r)!));
  }
  return new Repair(drift, missing, remoteDrift, writeSlots, deleteAt, writeRemotes, deleteRemotesAt);
}
