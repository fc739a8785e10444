/**
 * The bpf dataplane's diff: the twill_peers trie and the twill_remotes map
 * as they are, against the peers the leases want. Used by the reconcile
 * (which then applies the repair) and by `twill status` (which prints the
 * drift), so the two agree by construction.
 *
 * How it works:
 * 1) The desired state is an image keyed by the raw map key (hex): every
 *    peer, our own subnets (LOCAL entries) and the cluster networks (CLUSTER
 *    entries). The daemon keeps the image between reconciles (a shadow of
 *    what it wrote, with the exact value bytes) and rebuilds it only when
 *    the desired set changed, so a reconcile that finds nothing costs one
 *    batch dump of each map and a byte comparison per entry. Given a
 *    `pause`, both yield to the event loop every SLICE entries, so lease
 *    events are not held up by a reconcile of a large map.
 * 2) An observed entry whose bytes equal the shadow's is fine without being
 *    decoded. Otherwise it is decoded and compared by what matters to the
 *    packet path (kind, remote, VTEP MAC, VNI): a peer id that differs is
 *    repaired silently (it only names the counters), anything else is
 *    drift: changed, or stale when nothing wants the key; a wanted key not
 *    seen is missing.
 * 3) twill_remotes must hold exactly the underlay addresses of the peers
 *    (the senders whose VXLAN BPF strips): a missing or stale address is
 *    drift of its own only when no missing or stale peer entry explains it
 *    (a vanished peer is one drift, not two); its value (the id of a subnet
 *    behind the address) is bookkeeping and repaired silently.
 */
import { formatIP, formatPrefix, ipEqual, type IP, type Prefix } from "../net/ip.js";
import { decodeEpKey, decodeLpmKey, decodePeer, encodeEpKey, encodeLpmKey, PeerKind, type PeerValue } from "../bpf/layout.js";
import type { Drift } from "./drift.js";
import type { Peer } from "./types.js";

export interface BpfDesired {
  readonly peers: readonly Peer[];
  /** Our own subnets: LOCAL entries. */
  readonly own: readonly Prefix[];
  /** The cluster networks: CLUSTER entries. */
  readonly networks: readonly Prefix[];
}

/** One wanted trie entry; `value` is the exact bytes when the caller knows them (the daemon's shadow). */
export interface ImageEntry {
  readonly prefix: Prefix;
  readonly kind: PeerKind;
  readonly peer?: Peer;
  value?: Buffer;
}

/** The wanted trie (by key hex) and remotes (by key hex). */
export interface BpfImage {
  readonly trie: Map<string, ImageEntry>;
  readonly remotes: Map<string, IP>;
}

export interface BpfObserved {
  readonly peers: ReadonlyArray<readonly [Buffer, Buffer]>;
  readonly remotes: ReadonlyArray<readonly [Buffer, Buffer]>;
}

export interface BpfRepair {
  readonly drift: Drift[];
  /** Peers to (re)write. */
  readonly write: Peer[];
  /** Own entries to (re)write. */
  readonly writeOwn: ImageEntry[];
  /** Trie keys to delete. */
  readonly deleteKeys: Buffer[];
  /** twill_remotes: addresses whose entry must be (re)written, keys to delete. */
  readonly writeRemotes: IP[];
  readonly deleteRemotes: Buffer[];
}

const KIND_NAME: Record<number, string> = { [PeerKind.Vxlan]: "vxlan", [PeerKind.Direct]: "direct", [PeerKind.Local]: "local", [PeerKind.Cluster]: "cluster" };
const kindName = (k: number): string => KIND_NAME[k] ?? `kind ${k}`;

/**
 * With a `pause` (the daemon's reconcile) the work looks at the clock every
 * SLICE items and yields to the event loop when it has run SLICE_MS, so
 * lease events run between slices instead of waiting for a reconcile of
 * 100,000 peers; without one the work runs at once.
 */
export type Pause = () => Promise<void>;
/** Entries between two looks at the clock. */
const SLICE = 64;
/** The longest a reconcile holds the event loop between two yields. */
const SLICE_MS = 2;
let sliceStart = performance.now();
/** Yields (setImmediate) once SLICE_MS have passed since the last yield; otherwise returns at once. */
export const yieldToEvents: Pause = async () => {
  if (performance.now() - sliceStart < SLICE_MS) return;
  await new Promise<void>((r) => setImmediate(r));
  sliceStart = performance.now();
};

/** Builds the desired image; `value(peer)` gives a peer's exact bytes when known. */
export async function bpfImage(d: BpfDesired, value?: (p: Peer) => Buffer, pause?: Pause): Promise<BpfImage> {
  const trie = new Map<string, ImageEntry>();
  const remotes = new Map<string, IP>();
  for (const n of d.networks) trie.set(encodeLpmKey(n).toString("hex"), { prefix: n, kind: PeerKind.Cluster });
  for (const o of d.own) trie.set(encodeLpmKey(o).toString("hex"), { prefix: o, kind: PeerKind.Local });
  let i = 0;
  for (const p of d.peers) {
    if (pause && ++i % SLICE === 0) await pause();
    trie.set(encodeLpmKey(p.subnet).toString("hex"), { prefix: p.subnet, kind: p.direct ? PeerKind.Direct : PeerKind.Vxlan, peer: p, ...(value ? { value: value(p) } : {}) });
    remotes.set(encodeEpKey(p.publicIP).toString("hex"), p.publicIP);
  }
  return { trie, remotes };
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

/** Compares the maps with the image; returns the drift and its repair. Writes nothing. */
export async function diffBpf(image: BpfImage, seen: BpfObserved, pause?: Pause): Promise<BpfRepair> {
  const drift: Drift[] = [];
  const write: Peer[] = [], writeOwn: ImageEntry[] = [], deleteKeys: Buffer[] = [];
  const found = new Set<string>();
  /** twill_remotes keys whose drift a peer entry's drift already says. */
  const explained = new Set<string>();
  let i = 0;
  for (const [k, v] of seen.peers) {
    if (pause && ++i % SLICE === 0) await pause();
    const hex = k.toString("hex");
    const want = image.trie.get(hex);
    if (want?.value && want.value.equals(v)) {
      found.add(hex);
      continue;
    }
    const have = decodePeer(v);
    const subject = formatPrefix(decodeLpmKey(k));
    if (!want) {
      deleteKeys.push(k);
      if (have.remote) explained.add(encodeEpKey(have.remote).toString("hex"));
      const what = have.kind === PeerKind.Local ? "marks it as our own subnet (LOCAL), but our lease is another one"
        : have.kind === PeerKind.Cluster ? "marks it as the cluster network (CLUSTER), but the network config says otherwise"
        : `has an entry (${describePeer(have)}) that no lease backs`;
      drift.push({ kind: "stale", subject, detail: `twill_peers ${what}` });
      continue;
    }
    found.add(hex);
    if (!want.peer) {
      if (have.kind !== want.kind) {
        drift.push({ kind: "changed", subject, detail: `twill_peers has a ${kindName(have.kind)} entry, it must be ${kindName(want.kind)}` });
        writeOwn.push(want);
      }
      continue;
    }
    const diffs = peerDiffs(want.peer, have);
    if (diffs.length) drift.push({ kind: "changed", subject, detail: `twill_peers: ${diffs.join("; ")}` });
    // Only the peer id differs (or the bytes did): rewrite without calling it drift.
    write.push(want.peer);
  }
  for (const [hex, want] of image.trie) {
    if (pause && ++i % SLICE === 0) await pause();
    if (found.has(hex)) continue;
    const subject = formatPrefix(want.prefix);
    if (want.peer) {
      const p = want.peer;
      explained.add(encodeEpKey(p.publicIP).toString("hex"));
      drift.push({ kind: "missing", subject, detail: `twill_peers has no entry for it (the lease says ${p.direct ? "direct" : "vxlan"} to ${formatIP(p.publicIP)}${p.direct ? "" : `, VTEP MAC ${p.vtepMAC}`})` });
      write.push(p);
    } else {
      drift.push({ kind: "missing", subject, detail: want.kind === PeerKind.Local ? "twill_peers has no LOCAL entry for our own subnet" : "twill_peers has no CLUSTER entry for the cluster network" });
      writeOwn.push(want);
    }
  }
  const writeRemotes: IP[] = [], deleteRemotes: Buffer[] = [];
  const seenRemotes = new Set<string>();
  for (const [k] of seen.remotes) {
    const hex = k.toString("hex");
    seenRemotes.add(hex);
    if (!image.remotes.has(hex)) {
      deleteRemotes.push(k);
      if (!explained.has(hex)) drift.push({ kind: "stale", subject: formatIP(decodeEpKey(k)), detail: "twill_remotes accepts VXLAN from this address, but no lease has it as its PublicIP" });
    }
  }
  for (const [hex, ip] of image.remotes) {
    if (seenRemotes.has(hex)) continue;
    writeRemotes.push(ip);
    if (!explained.has(hex)) drift.push({ kind: "missing", subject: formatIP(ip), detail: "twill_remotes does not accept VXLAN from this peer's PublicIP (it falls back to the vxlan device)" });
  }
  return { drift, write, writeOwn, deleteKeys, writeRemotes, deleteRemotes };
}
