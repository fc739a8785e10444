/**
 * The control-plane benchmark: time, syscalls, kernel entries and memory to
 * program N peers, kernel dataplane vs bpf dataplane, without a cluster.
 *
 * How it works: each run gets a fresh network namespace holding only a
 * veth pair, `eth0` (192.168.50.11/24) and its peer, and runs cp-driver.js
 * in it, which sets the dataplane up and then, on our "go", programs all N
 * peers at once (reconcile, as a starting daemon does). Around that step:
 *  - time: measured inside the driver (performance.now); `cpReps` runs per
 *    dataplane and peer count, interleaved, for the first reconcile (a
 *    daemon starting), a no-op reconcile (the periodic one) and, up to
 *    10,000 peers, an upsert of all peers (the lease-event path). A group
 *    (dataplane, N) starts no further run once it has used its time budget
 *    (the kernel takes minutes for 50,000 routes), so it may have fewer runs;
 *    the report shows how many;
 *  - syscalls: `perf stat -e raw_syscalls:sys_enter -p <driver pid>`,
 *    attached after set-up and stopped right after the step, counts every
 *    syscall of that step in every timed run, child processes (`ip -batch`,
 *    `bridge -batch`) included, at the cost of a counter increment per
 *    syscall; one extra run per dataplane and N up to 10,000 under
 *    `strace -c -f -p` gives the breakdown by syscall (its time is not used);
 *  - kernel entries: routes, neighbours and FDB entries on flannel.1
 *    before and after the step (lib/traffic.ts kernelStateCounts);
 *  - memory: bpf — bytes_memlock of each pinned map (bpftool), before and
 *    after, which on this kernel is the map's actual memory use; both — the
 *    machine's slab memory (/proc/meminfo SReclaimable + SUnreclaim) before
 *    and after, plus the slab caches that grew most (/proc/slabinfo). Slab
 *    is global: other activity on the machine shows up as noise, which is
 *    why it is reported per peer over thousands of peers.
 * Namespaces are named <run prefix>c<k> and removed after each run (and by
 * the sweep on exit or Ctrl-C).
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { ChildProcess } from "node:child_process";
import { run, spawnIn, spawnedOutput, stopProcess, waitFor } from "./lib/exec.js";
import { kernelStateCounts } from "./lib/traffic.js";
import type { Progress } from "./dataplane.js";
import { mapMemlock, parsePerfCount, parseStraceSummary, perfAttached, slabBytes, slabCaches, type SyscallCount } from "./cpmeasure.js";

export type DataplaneKind = "kernel" | "bpf";

export interface CpSample {
  readonly dataplane: DataplaneKind;
  readonly peers: number;
  readonly rep: number;
  /** Run under strace: its time is not used. */
  readonly traced: boolean;
  readonly programMs?: number;
  readonly noopMs?: number;
  readonly upsertMs?: number;
  /** Entries on flannel.1 before and after the programming step. */
  readonly kernelEntriesBefore?: { routes: number; neighbours: number; fdb: number };
  readonly kernelEntries?: { routes: number; neighbours: number; fdb: number };
  readonly slabDeltaBytes?: number;
  readonly slabTop?: { cache: string; deltaBytes: number }[];
  readonly mapMemlockBefore?: Record<string, number>;
  readonly mapMemlockAfter?: Record<string, number>;
  /** strace -c breakdown (traced runs). */
  readonly syscalls?: SyscallCount;
  /** perf stat count of the programming step (timed runs). */
  readonly syscallCount?: number;
  readonly command: string;
  readonly error?: string;
}

export interface CpConfig {
  readonly prefix: string;
  readonly driver: string;
  readonly objectPath: string;
  readonly workDir: string;
  readonly peers: readonly number[];
  /** Peer counts programmed into the bpf dataplane only (the kernel would take many minutes). */
  readonly bpfOnlyPeers: readonly number[];
  readonly reps: number;
  readonly strace: boolean;
  /** perf stat with the raw_syscalls tracepoint works here. */
  readonly perf: boolean;
  /** Seconds a (dataplane, N) group may take before it starts no further run. */
  readonly groupBudgetS: number;
}

/** Peer counts up to this get an upsert step and a strace run. */
export const DETAIL_MAX_PEERS = 10000;

/** Reads JSON lines from a child's stdout; next() resolves with the next line of a phase. */
function phases(child: ChildProcess): (want: string, timeoutMs: number) => Promise<Record<string, unknown>> {
  const seen: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    try {
      seen.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      return;
    }
    waiters.splice(0).forEach((w) => w());
  });
  child.on("exit", () => waiters.splice(0).forEach((w) => w()));
  return async (want, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = seen.find((o) => o.phase === want || o.phase === "error");
      if (hit?.phase === "error") throw new Error(`cp-driver: ${String(hit.message)}`);
      if (hit) {
        seen.splice(seen.indexOf(hit), 1);
        return hit;
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`cp-driver exited (${child.exitCode ?? child.signalCode}) before "${want}": ${spawnedOutput(child).slice(-500)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`cp-driver: no "${want}" within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 1000));
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
}

async function makeNamespace(ns: string): Promise<void> {
  await run("ip", ["netns", "add", ns]);
  await run("ip", ["-batch", "-"], {
    netns: ns,
    // a veth pair, not a dummy: this kernel may be built without the dummy driver
    input: ["link set lo up", "link add eth0 type veth peer name eth1", "addr add 192.168.50.11/24 dev eth0", "link set eth1 up", "link set eth0 up"].join("\n") + "\n",
  });
}

async function oneRun(c: CpConfig, k: number, dataplane: DataplaneKind, peers: number, rep: number, traced: boolean): Promise<CpSample> {
  const ns = `${c.prefix}${k}`;
  const pinDir = `/sys/fs/bpf/${c.prefix}/${k}`;
  const input = JSON.stringify({ dataplane, peers, pinDir, objectPath: c.objectPath, upsert: peers <= DETAIL_MAX_PEERS });
  const command = `nsenter --net=/run/netns/${ns} node ${c.driver} '${input}'`;
  const base = { dataplane, peers, rep, traced, command };
  let driver: ChildProcess | undefined;
  let tracer: ChildProcess | undefined;
  try {
    await makeNamespace(ns);
    driver = spawnIn(ns, process.execPath, [c.driver, input], { stdio: ["pipe", "pipe", "pipe"] });
    const next = phases(driver);
    const ready = await next("ready", 60_000);
    const pid = String(ready.pid);
    const out = join(c.workDir, `${traced ? "strace" : "perf"}-${dataplane}-${peers}-${rep}.txt`);
    if (traced) {
      tracer = spawnIn(undefined, "strace", ["-c", "-f", "-o", out, "-p", pid]);
      const t = tracer;
      await waitFor(() => spawnedOutput(t).includes("attached"), { timeoutMs: 10_000, intervalMs: 50, what: "strace to attach to cp-driver" });
      await new Promise((r) => setTimeout(r, 300)); // all threads
    } else if (c.perf) {
      tracer = spawnIn(undefined, "perf", ["stat", "-x,", "-o", out, "-e", "raw_syscalls:sys_enter", "-p", pid]);
      const t = tracer;
      await waitFor(() => perfAttached(t.pid ?? -1), { timeoutMs: 10_000, intervalMs: 20, what: "perf stat to attach to cp-driver" });
      await new Promise((r) => setTimeout(r, 100));
    }
    const counts0 = await kernelStateCounts(ns, "flannel.1");
    const slab0 = slabBytes(), caches0 = slabCaches(), mem0 = dataplane === "bpf" ? await mapMemlock(pinDir) : undefined;
    driver.stdin!.write("go\n");
    const programmed = await next("programmed", 900_000);
    if (tracer) await stopProcess(tracer, { signal: "SIGINT", graceMs: 30_000 });
    const slab1 = slabBytes(), caches1 = slabCaches(), mem1 = dataplane === "bpf" ? await mapMemlock(pinDir) : undefined;
    const text = tracer && existsSync(out) ? readFileSync(out, "utf8") : "";
    let syscalls: SyscallCount | undefined;
    let syscallCount: number | undefined;
    if (traced) {
      syscalls = parseStraceSummary(text);
      if (syscalls.total === 0) throw new Error(`strace counted nothing: ${tracer ? spawnedOutput(tracer).slice(-300) : ""}`);
    } else if (tracer) {
      syscallCount = parsePerfCount(text);
      if (syscallCount === undefined) throw new Error(`perf stat counted nothing: ${text.slice(-300)}`);
    }
    const counts = await kernelStateCounts(ns, "flannel.1");
    driver.stdin!.write("go\n");
    const noop = await next("noop", 900_000);
    driver.stdin!.write("go\n");
    const upsert = await next("upsert", 900_000);
    driver.stdin!.write("go\n");
    const slabTop = [...caches1]
      .map(([cache, b]) => ({ cache, deltaBytes: b - (caches0.get(cache) ?? 0) }))
      .sort((a, b) => b.deltaBytes - a.deltaBytes)
      .slice(0, 5);
    return {
      ...base,
      programMs: Number(programmed.ms), noopMs: Number(noop.ms),
      ...(upsert.ms !== undefined ? { upsertMs: Number(upsert.ms) } : {}),
      kernelEntriesBefore: { routes: counts0.routes, neighbours: counts0.neighbours, fdb: counts0.fdb },
      kernelEntries: { routes: counts.routes, neighbours: counts.neighbours, fdb: counts.fdb },
      slabDeltaBytes: slab1 - slab0, slabTop,
      ...(mem0 ? { mapMemlockBefore: mem0 } : {}), ...(mem1 ? { mapMemlockAfter: mem1 } : {}),
      ...(syscalls ? { syscalls } : {}), ...(syscallCount !== undefined ? { syscallCount } : {}),
    };
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message : String(e) };
  } finally {
    if (tracer) await stopProcess(tracer, { signal: "SIGINT", graceMs: 5000 });
    if (driver) await stopProcess(driver, { graceMs: 5000 });
    // deleting the device first takes its entries with it now, not in a background netns cleanup
    await run("ip", ["link", "del", "flannel.1"], { netns: ns, allowFail: true });
    await run("ip", ["netns", "del", ns], { allowFail: true });
    rmSync(pinDir, { recursive: true, force: true });
  }
}

export async function runControlPlane(c: CpConfig, progress: Progress): Promise<CpSample[]> {
  mkdirSync(c.workDir, { recursive: true });
  const samples: CpSample[] = [];
  const spent = new Map<string, number>(); // "<dp> <n>" → seconds used
  let k = 0;
  const plan: { dp: DataplaneKind; n: number; rep: number; traced: boolean }[] = [];
  for (let rep = 1; rep <= c.reps; rep++) {
    for (const n of c.peers) for (const dp of ["kernel", "bpf"] as const) plan.push({ dp, n, rep, traced: false });
    for (const n of c.bpfOnlyPeers) plan.push({ dp: "bpf", n, rep, traced: false });
  }
  if (c.strace) {
    for (const n of c.peers.filter((x) => x <= DETAIL_MAX_PEERS)) for (const dp of ["kernel", "bpf"] as const) plan.push({ dp, n, rep: 0, traced: true });
  }
  for (const p of plan) {
    const group = `${p.dp} ${p.n}`;
    const used = spent.get(group) ?? 0;
    if (!p.traced && used > c.groupBudgetS) {
      progress(`control plane rep ${p.rep}/${c.reps} ${p.dp} ${p.n} peers: skipped (this group used ${used.toFixed(0)} s of its ${c.groupBudgetS} s budget)`);
      continue;
    }
    const t0 = performance.now();
    const s = await oneRun(c, k++, p.dp, p.n, p.rep, p.traced);
    if (!p.traced) spent.set(group, used + (performance.now() - t0) / 1000);
    samples.push(s);
    const what = `${p.traced ? "strace" : `rep ${p.rep}/${c.reps}`} ${p.dp.padEnd(6)} ${String(p.n).padStart(6)} peers`;
    if (s.error) progress(`control plane ${what}: FAILED: ${s.error.slice(0, 300)}`);
    else if (p.traced) progress(`control plane ${what}: ${s.syscalls?.total} syscalls`);
    else progress(`control plane ${what}: ${s.programMs?.toFixed(1)} ms${s.syscallCount !== undefined ? `, ${s.syscallCount} syscalls` : ""}, flannel.1 entries ${JSON.stringify(s.kernelEntries)}`);
  }
  return samples;
}
