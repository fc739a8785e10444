/**
 * Memory readings for the scale scenario: the controller's resident set,
 * the kernel's memory (machine-wide), and a pinned map's own accounting.
 *
 * How it works: RSS is VmRSS from /proc/<pid>/status of the daemon. The
 * daemon is started as `nsenter --net=… bin/twill`; nsenter with only
 * --net execs bin/twill in place, and its #! line (env -S node …) execs
 * node in place too (same pid), which `daemonPid` checks through
 * /proc/<pid>/comm (after /readyz, so the execs are done), falling back to a
 * `node` child if it ever forked.
 * Kernel memory is /proc/meminfo's Slab, VmallocUsed and Percpu, plus
 * /proc/slabinfo's active objects × object size per cache (less blurred by
 * partially used slab pages than Slab). All of these are machine-wide: other
 * work on the machine is noise, which is why the scenario divides deltas
 * over thousands of peers. bytes_memlock of a pinned map (bpftool) is the
 * map's own memory as the kernel accounts it (map_mem_usage on 6.x).
 */
import { readFileSync } from "node:fs";
import { run } from "../lib/exec.js";

export interface KernelMemory {
  readonly slabBytes: number;
  readonly vmallocBytes: number;
  readonly percpuBytes: number;
  /** Active objects × object size per slab cache. */
  readonly slabActive: ReadonlyMap<string, number>;
}

export function kernelMemory(): KernelMemory {
  const text = readFileSync("/proc/meminfo", "utf8");
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) * 1024;
  const slabActive = new Map<string, number>();
  try {
    for (const line of readFileSync("/proc/slabinfo", "utf8").split("\n").slice(2)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3) slabActive.set(f[0]!, Number(f[1]) * Number(f[3]));
    }
  } catch {
    /* not readable: no per-cache numbers */
  }
  return { slabBytes: kb("Slab"), vmallocBytes: kb("VmallocUsed"), percpuBytes: kb("Percpu"), slabActive };
}

export interface KernelMemoryDelta {
  readonly slabBytes: number;
  readonly vmallocBytes: number;
  readonly percpuBytes: number;
  readonly slabActiveBytes: number;
  /** The caches that grew most (active bytes). */
  readonly topCaches: readonly { readonly cache: string; readonly bytes: number }[];
}

export function kernelMemoryDelta(a: KernelMemory, b: KernelMemory): KernelMemoryDelta {
  const caches: { cache: string; bytes: number }[] = [];
  let active = 0;
  for (const [cache, bytes] of b.slabActive) {
    const d = bytes - (a.slabActive.get(cache) ?? 0);
    active += d;
    if (d !== 0) caches.push({ cache, bytes: d });
  }
  for (const [cache, bytes] of a.slabActive) if (!b.slabActive.has(cache)) active -= bytes;
  caches.sort((x, y) => y.bytes - x.bytes);
  return {
    slabBytes: b.slabBytes - a.slabBytes,
    vmallocBytes: b.vmallocBytes - a.vmallocBytes,
    percpuBytes: b.percpuBytes - a.percpuBytes,
    slabActiveBytes: active,
    topCaches: caches.slice(0, 6),
  };
}

/** The pid of the `node` process of a daemon started through nsenter. */
export function daemonPid(spawnedPid: number): number {
  const comm = (pid: number): string => readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  if (comm(spawnedPid) === "node") return spawnedPid;
  const children = readFileSync(`/proc/${spawnedPid}/task/${spawnedPid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  const node = children.find((c) => comm(c) === "node");
  if (node === undefined) throw new Error(`Cannot find the daemon's node process: pid ${spawnedPid} is ${comm(spawnedPid)} with children [${children}]`);
  return node;
}

/** VmRSS of a process, in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`Cannot read VmRSS of pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** bytes_memlock and max_entries of a pinned map, from `bpftool -j map show pinned`. */
export async function pinnedMapInfo(path: string): Promise<{ bytesMemlock: number; maxEntries: number }> {
  const r = await run("bpftool", ["-j", "map", "show", "pinned", path]);
  const j = JSON.parse(r.stdout) as { bytes_memlock?: number | string; max_entries?: number };
  return { bytesMemlock: Number(j.bytes_memlock ?? NaN), maxEntries: Number(j.max_entries ?? NaN) };
}
