/**
 * CPU time spent by the whole machine, from /proc/stat.
 *
 * How it works: both simulated hosts, the pods and the traffic tools run on
 * this one machine, so the CPU a dataplane costs is the machine's busy time
 * while traffic flows: user + nice + system + irq + softirq jiffies of the
 * aggregate "cpu" line (guest time is already inside user; idle, iowait and
 * steal are not ours). Anything else running meanwhile is counted too, so
 * the benchmark should run on a quiet machine; /proc/loadavg is recorded
 * before and after the run so a reader can tell.
 */
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";

export interface CpuTimes {
  /** Busy jiffies (user+nice+system+irq+softirq). */
  readonly busy: number;
  /** All jiffies, idle included. */
  readonly total: number;
}

let hz: number | undefined;

/** Jiffies per second (getconf CLK_TCK; 100 on Linux/x86). */
export function clockTicks(): number {
  if (hz === undefined) {
    try {
      hz = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      hz = 100;
    }
  }
  return hz;
}

export function readCpu(): CpuTimes {
  const line = readFileSync("/proc/stat", "utf8").split("\n").find((l) => l.startsWith("cpu "));
  if (!line) throw new Error("Cannot read /proc/stat: no aggregate cpu line");
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  const busy = user + nice + system + irq + softirq;
  return { busy, total: busy + idle + iowait + steal };
}

/** Busy CPU seconds between two readings. */
export function busySeconds(a: CpuTimes, b: CpuTimes): number {
  return (b.busy - a.busy) / clockTicks();
}

/** Share of all CPUs that was busy between two readings, in percent. */
export function busyPercent(a: CpuTimes, b: CpuTimes): number {
  const total = b.total - a.total;
  return total > 0 ? (100 * (b.busy - a.busy)) / total : NaN;
}

export function cpuCount(): number {
  return cpus().length;
}

export function loadAverage(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").trim();
  } catch {
    return "unknown";
  }
}
