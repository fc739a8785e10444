/**
 * Loads twill's BPF object, adopting the maps a previous run pinned.
 *
 * How it works: the object is opened with libbpf's pin_root_path set to the
 * node's maps directory, so every map declared LIBBPF_PIN_BY_NAME is reused
 * from its pin when one exists (entries and identity kept) and pinned when
 * not. libbpf only says "parameter mismatch" for an incompatible pin, so
 * before loading we compare each pinned map with the object's definition and
 * throw ERR_BPF_PIN_INCOMPATIBLE listing what differs — except for the maps
 * whose whole content the controller writes again at every start
 * (DERIVED_MAPS: the node config): an incompatible pin of one of those is
 * migrated, i.e. unpinned so that this build pins a fresh map, which the
 * dataplane fills before it swaps the programs (the old programs keep the
 * old map until then, so forwarding never sees an empty one). A rejected program
 * throws ERR_BPF_VERIFIER quoting libbpf's log (which holds the verifier
 * log). The loaded object stays open while the caller uses its fds. The
 * pin directory must be on a bpffs (ERR_INVALID_FLAG naming --bpf-pin-dir
 * otherwise) and is created one level at a time (bpf/pindir.ts).
 */
import { existsSync, unlinkSync } from "node:fs";
import { makePinDir, requireBpffs } from "./pindir.js";
import { join } from "node:path";
import { TwillError } from "../errors.js";
import { libbpf, openObject, takeLibbpfLog, closeFd, errnoName, type Ptr } from "./libbpf.js";
import { BpfMap } from "./map.js";
import { btfLayout } from "./btflayout.js";

export const MAP_NAMES = ["twill_peers", "twill_config", "twill_endpoints", "twill_stats", "twill_remotes", "twill_nat_flows"] as const;
export type MapName = (typeof MAP_NAMES)[number];
export const PROG_NAMES = ["twill_from_pod", "twill_to_overlay", "twill_from_overlay", "twill_from_underlay", "twill_to_pod"] as const;
export type ProgName = (typeof PROG_NAMES)[number];

export interface MapDef { type: number; keySize: number; valueSize: number; maxEntries: number; flags: number }

/** Maps whose every entry the controller rewrites at start: migrated, not refused, when their pin is incompatible. */
export const DERIVED_MAPS: ReadonlySet<string> = new Set(["twill_config"]);

/**
 * The default of --peer-capacity: entries of the peers trie (remote subnets,
 * plus our own subnet and the cluster network: 2 per family). 2^17 leaves
 * room above 100,000 peers and costs nothing until used: the trie and the
 * hashes are BPF_F_NO_PREALLOC, so their memory grows with their entries;
 * only the hashes' bucket arrays follow max_entries. 65536 gives exactly
 * the sizes of twill 0.x (so a rollback to it adopts the pins).
 */
export const DEFAULT_PEER_CAPACITY = 131072;
/** Counters per peer twill_stats has room for (above its floor, 2^18, the size of twill 0.x). */
export const STATS_PER_PEER = 4;

/** max_entries of each map sized by the peer capacity. */
export function sizedMaps(peerCapacity: number): Readonly<Record<string, number>> {
  return {
    twill_peers: peerCapacity,
    twill_remotes: peerCapacity, // one per underlay address: at most one per peer
    twill_stats: Math.max(262144, peerCapacity * STATS_PER_PEER),
  };
}
/** The maps sized by the peer capacity: resized (entries copied) when only their size changed. */
export const SIZED_MAPS: ReadonlySet<string> = new Set(Object.keys(sizedMaps(1)));

export interface LoadOptions {
  /** Entries of the peers trie (default DEFAULT_PEER_CAPACITY); sizes the maps of sizedMaps(). */
  readonly peerCapacity?: number;
}

export interface Loaded {
  readonly maps: Record<MapName, BpfMap>;
  /** Maps whose old pin was replaced (derived maps, resized maps), with what differed. */
  readonly migrated: readonly string[];
  readonly progs: Record<ProgName, number>;
  close(): void;
}

/** Reads type/sizes/flags of a map fd (struct bpf_map_info). */
export function mapInfo(fd: number): MapDef & { id: number; name: string; btfId: number; btfKeyTypeId: number; btfValueTypeId: number } {
  const info = Buffer.alloc(96);
  const len = new Uint32Array([info.length]);
  const r = libbpf().get_info(fd, info, len);
  if (r < 0) throw new TwillError("ERR_BPF_MAP", `bpf_obj_get_info_by_fd(map): ${errnoName(r)}`);
  return {
    type: info.readUInt32LE(0), id: info.readUInt32LE(4), keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12), maxEntries: info.readUInt32LE(16), flags: info.readUInt32LE(20),
    name: info.subarray(24, 40).toString("latin1").replace(/\0.*$/s, ""),
    btfId: info.readUInt32LE(64), btfKeyTypeId: info.readUInt32LE(68), btfValueTypeId: info.readUInt32LE(72),
  };
}

function objectMapDef(m: Ptr): MapDef {
  const a = libbpf();
  return { type: a.map_type(m), keySize: a.map_key_size(m), valueSize: a.map_value_size(m), maxEntries: a.map_max_entries(m), flags: a.map_flags(m) };
}

/** Words for every difference between the object's map and its pin, empty if compatible. */
export function diffMapDef(want: MapDef, have: MapDef): string[] {
  const out: string[] = [];
  const names: Record<keyof MapDef, string> = { type: "type", keySize: "key size", valueSize: "value size", maxEntries: "max_entries", flags: "flags" };
  for (const k of Object.keys(names) as Array<keyof MapDef>) {
    if (want[k] !== have[k]) out.push(`${names[k]} ${have[k]} pinned, ${want[k]} in this build`);
  }
  return out;
}

/** Differences in the BTF layout of key and value (same sizes, other fields). */
function diffLayout(obj: Ptr, m: Ptr, have: { btfId: number; btfKeyTypeId: number; btfValueTypeId: number }): string[] {
  const a = libbpf();
  const ours = a.obj_btf(obj);
  if (!ours || !have.btfId) return []; // a pin without BTF cannot be checked further
  const theirs = a.btf_load_by_id(have.btfId);
  if (!theirs) return [`cannot read the BTF (id ${have.btfId}) of the pinned map`];
  try {
    const out: string[] = [];
    for (const [what, want, got] of [
      ["key", a.map_btf_key_type_id(m), have.btfKeyTypeId],
      ["value", a.map_btf_value_type_id(m), have.btfValueTypeId],
    ] as const) {
      const w = btfLayout(ours, want);
      const g = btfLayout(theirs, got);
      if (w !== g) out.push(`${what} layout ${g} pinned, ${w} in this build`);
    }
    return out;
  } finally {
    a.btf_free(theirs);
  }
}

/** A pinned map replaced by a bigger or smaller one: its entries are copied after the load. */
interface Resize { readonly name: string; readonly path: string; readonly old: BpfMap; readonly what: string }

function checkPins(obj: Ptr): { migrated: string[]; resized: Resize[] } {
  const a = libbpf();
  const problems: string[] = [];
  const migrated: string[] = [];
  const unpin: string[] = [];
  const resized: Resize[] = [];
  try {
    for (let m = a.next_map(obj, null); m; m = a.next_map(obj, m)) {
      const path = a.map_pin_path(m);
      if (!path || !existsSync(path)) continue;
      const fd = a.obj_get(path);
      if (fd < 0) throw new TwillError("ERR_BPF_PIN_INCOMPATIBLE", `cannot open pinned map ${path}: ${errnoName(fd)}`);
      let keep = false;
      try {
        const have = mapInfo(fd);
        const want = objectMapDef(m);
        const d = diffMapDef(want, have);
        const sizeOnly = d.length === 1 && want.maxEntries !== have.maxEntries;
        if (!d.length || sizeOnly) d.push(...diffLayout(obj, m, have));
        const name = a.map_name(m);
        const what = `${name} (${path}): ${d.join(", ")}`;
        if (d.length === 1 && sizeOnly && SIZED_MAPS.has(name)) {
          const old = new BpfMap(name, fd, have.keySize, have.valueSize, have.maxEntries, have.type);
          keep = true;
          resized.push({ name, path, old, what });
          const used = old.count();
          if (used > want.maxEntries) {
            throw new TwillError("ERR_CAPACITY", `${name} holds ${used} entries, more than the ${want.maxEntries} this capacity allows ` +
              `(--peer-capacity): raise it, or remove the pins (twill teardown) to start fresh`);
          }
        } else if (d.length && DERIVED_MAPS.has(name)) {
          migrated.push(what);
          unpin.push(path);
        } else if (d.length) problems.push(what);
      } finally {
        if (!keep) closeFd(fd);
      }
    }
    if (problems.length) {
      throw new TwillError(
        "ERR_BPF_PIN_INCOMPATIBLE",
        `pinned maps do not match this build of twill: ${problems.join("; ")}. ` +
          `Migrate them or remove the pins (twill teardown) to start fresh.`,
      );
    }
  } catch (e) {
    for (const r of resized) r.old.close();
    throw e;
  }
  // Only once nothing is refused: a refused start leaves every pin as it was.
  for (const path of unpin) unlinkSync(path);
  for (const r of resized) unlinkSync(r.path);
  return { migrated, resized };
}

/** Copies every entry of each resized map's old pin into the new map (the old map is left as it was). */
function copyResized(resized: readonly Resize[], maps: Record<string, BpfMap>): string[] {
  const out: string[] = [];
  for (const r of resized) {
    const to = maps[r.name]!;
    let copied = 0;
    r.old.dump((keys, values, count) => {
      to.updateBatch(keys, values, count);
      copied += count;
    });
    out.push(`${r.what}: resized, ${copied} entries copied`);
  }
  return out;
}

/** After a failed load or copy: the old maps go back to their pins, so the next start finds them. */
function restorePins(resized: readonly Resize[]): void {
  for (const r of resized) {
    try {
      if (existsSync(r.path)) unlinkSync(r.path);
      libbpf().obj_pin(r.old.fd, r.path);
    } catch {
      // best effort: without the pin, the next start creates the map afresh
    }
  }
}

export function loadObject(objectPath: string, pinDir: string, opts: LoadOptions = {}): Loaded {
  const a = libbpf();
  const capacity = opts.peerCapacity ?? DEFAULT_PEER_CAPACITY;
  const mapsDir = join(pinDir, "maps");
  requireBpffs(pinDir);
  makePinDir(mapsDir);
  takeLibbpfLog();
  const obj = openObject(objectPath, mapsDir);
  let resized: Resize[] = [];
  try {
    for (const [name, size] of Object.entries(sizedMaps(capacity))) {
      const m = a.find_map(obj, name);
      if (!m) continue; // missing maps are reported once loaded
      const r = a.map_set_max_entries(m, size);
      if (r < 0) throw new TwillError("ERR_BPF_LOAD", `cannot size ${name} to ${size} entries: ${errnoName(r)}`);
    }
    const pins = checkPins(obj);
    resized = pins.resized;
    const r = a.obj_load(obj);
    if (r < 0) {
      const log = takeLibbpfLog();
      const verifier = log.some((l) => /BEGIN PROG LOAD LOG|verifier|R\d+ /.test(l));
      throw new TwillError(
        verifier ? "ERR_BPF_VERIFIER" : "ERR_BPF_LOAD",
        `loading ${objectPath} failed: ${errnoName(r)}\n${log.join("\n")}`,
      );
    }
    const maps = {} as Record<MapName, BpfMap>;
    for (const name of MAP_NAMES) {
      const m = a.find_map(obj, name);
      if (!m) throw new TwillError("ERR_BPF_LOAD", `object ${objectPath} has no map ${name}`);
      const d = objectMapDef(m);
      maps[name] = new BpfMap(name, a.map_fd(m), d.keySize, d.valueSize, d.maxEntries, d.type);
    }
    const migrated = [...pins.migrated, ...copyResized(resized, maps)];
    const progs = {} as Record<ProgName, number>;
    for (const name of PROG_NAMES) {
      const p = a.find_prog(obj, name);
      if (!p) throw new TwillError("ERR_BPF_LOAD", `object ${objectPath} has no program ${name}`);
      progs[name] = a.prog_fd(p);
    }
    for (const x of resized) x.old.close();
    return { maps, progs, migrated, close: () => a.obj_close(obj) };
  } catch (e) {
    restorePins(resized);
    for (const x of resized) x.old.close();
    a.obj_close(obj);
    throw e;
  }
}

/** Opens the pinned maps of a node without loading anything (for `twill maps`). */
export function openPinnedMaps(pinDir: string): Record<MapName, BpfMap> {
  const out = {} as Record<MapName, BpfMap>;
  for (const name of MAP_NAMES) {
    const path = join(pinDir, "maps", name);
    const fd = libbpf().obj_get(path);
    if (fd < 0) throw new TwillError("ERR_BPF_MAP", `no pinned map ${path}: ${errnoName(fd)} (is twill running with --bpf-pin-dir ${pinDir}?)`);
    const i = mapInfo(fd);
    out[name] = new BpfMap(name, fd, i.keySize, i.valueSize, i.maxEntries, i.type);
  }
  return out;
}
