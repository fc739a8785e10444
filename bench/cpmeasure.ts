/**
 * Measuring what one control-plane step cost: syscalls (perf stat's count
 * of the raw_syscalls tracepoint, strace -c's breakdown), the machine's slab
 * memory, and the memory of twill's pinned BPF maps.
 *
 * How it works: perf and strace attach to a running process (`-p`) and
 * follow its children; controlplane.ts starts them before the step and
 * stops them (SIGINT, which makes both print their summary) right after.
 * These helpers parse their output and read /proc and bpftool. /proc/meminfo
 * and /proc/slabinfo are machine-wide, so they carry other activity as noise.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { run } from "./lib/exec.js";

export interface SyscallCount {
  readonly total: number;
  readonly errors: number;
  /** The syscalls with the most calls, most first. */
  readonly top: { name: string; calls: number }[];
}

/** True when `perf stat` can count syscalls through the raw_syscalls tracepoint. */
export function perfCountsSyscalls(): boolean {
  const r = spawnSync("perf", ["stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"], { encoding: "utf8", timeout: 10000 });
  return r.status === 0 && (parsePerfCount(r.stderr ?? "") ?? 0) > 0;
}

/** Parses `perf stat -x,` output: the count of raw_syscalls:sys_enter. */
export function parsePerfCount(text: string): number | undefined {
  for (const line of text.split("\n")) {
    const f = line.split(",");
    if (f.length > 2 && f[2]?.startsWith("raw_syscalls:sys_enter") && /^\d+$/.test(f[0] ?? "")) return Number(f[0]);
  }
  return undefined;
}

/** Waits until process `pid` holds a perf_event file descriptor (the counters are open). */
export async function perfAttached(pid: number): Promise<boolean> {
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).includes("perf_event")) return true;
      } catch {
        /* closed meanwhile */
      }
    }
  } catch {
    /* not started yet, or gone */
  }
  return false;
}

/** Parses `strace -c` output: the per-syscall rows and the total row. */
export function parseStraceSummary(text: string): SyscallCount {
  const rows: { name: string; calls: number }[] = [];
  let total = 0, errors = 0;
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^[\d.]+$/.test(f[0]!)) continue;
    const name = f[f.length - 1]!;
    const nums = f.slice(0, -1).map(Number);
    // % time, seconds, [usecs/call], calls, [errors]: calls is the 4th column when usecs/call is present
    const calls = nums.length >= 4 ? nums[3]! : nums[2]!;
    const errs = nums.length >= 5 ? nums[4]! : 0;
    if (name === "total") {
      total = calls;
      errors = errs;
    } else rows.push({ name, calls });
  }
  rows.sort((a, b) => b.calls - a.calls);
  return { total, errors, top: rows.slice(0, 6) };
}

export function slabBytes(): number {
  const text = readFileSync("/proc/meminfo", "utf8");
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
  return (kb("SReclaimable") + kb("SUnreclaim")) * 1024;
}

export function slabCaches(): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const line of readFileSync("/proc/slabinfo", "utf8").split("\n").slice(2)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3) out.set(f[0]!, Number(f[1]) * Number(f[3])); // active objects × object size
    }
  } catch {
    /* not readable: no per-cache detail */
  }
  return out;
}

export async function mapMemlock(pinDir: string): Promise<Record<string, number>> {
  const dir = join(pinDir, "maps");
  const out: Record<string, number> = {};
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const r = await run("bpftool", ["-j", "map", "show", "pinned", join(dir, name)], { allowFail: true });
    try {
      out[name] = Number((JSON.parse(r.stdout) as { bytes_memlock?: number | string }).bytes_memlock ?? NaN);
    } catch {
      out[name] = NaN;
    }
  }
  return out;
}

