/**
 * Running commands for the namespaced clusters of the tests and the
 * benchmark, never through a shell.
 *
 * How it works:
 * 1) `run` executes one program to completion and returns its exit code and
 *    output; with `netns` it runs under `nsenter --net=/run/netns/NAME`, which
 *    changes only the network namespace. (`ip netns exec` would also remount
 *    /sys and hide /sys/fs/bpf; see shared/reference/ebpf-notes.md.)
 * 2) `spawnIn` starts a long-running program in a namespace and records it in
 *    a registry, so a cluster's destroy (or the exit safety net) kills it.
 *    Each child leads its own process group, and is killed as a group.
 *    Piped output is always drained into a bounded buffer (`spawnedOutput`),
 *    so a chatty daemon nobody reads never blocks on a full pipe.
 * 3) `waitFor` polls a condition and fails with a sentence naming what it
 *    waited for.
 * 4) `onCleanup` registers synchronous last-resort cleanups, run on process
 *    exit and on SIGINT/SIGTERM/SIGHUP (which then exit 128+signal).
 */

import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { constants } from "node:os";

/** The result of a finished command. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Network namespace name (a file in /run/netns) to run in. */
  netns?: string;
  /** Written to the program's standard input, which is then closed. */
  input?: string;
  /** Kill the program (SIGKILL) after this long; default 60 s. */
  timeoutMs?: number;
  /** Return a non-zero exit instead of throwing. */
  allowFail?: boolean;
  /** Extra environment variables (merged over process.env). */
  env?: Record<string, string>;
}

/** A command that exited non-zero, timed out, or could not start. */
export class CommandError extends Error {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  constructor(message: string, result: RunResult, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "CommandError";
    this.code = result.code;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
  }
}

/** The argv that runs `cmd args` inside `netns` (or as is without one). */
export function nsArgv(netns: string | undefined, cmd: string, args: string[]): [string, string[]] {
  if (!netns) return [cmd, args];
  return ["nsenter", [`--net=/run/netns/${netns}`, "--", cmd, ...args]];
}

function describe(netns: string | undefined, cmd: string, args: string[]): string {
  const line = [cmd, ...args].join(" ");
  return netns ? `[${netns}] ${line}` : line;
}

/** Runs a program to completion. Throws CommandError on a non-zero exit unless allowFail. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, argv] = nsArgv(opts.netns, cmd, args);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const what = describe(opts.netns, cmd, args);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      stdio: ["pipe", "pipe", "pipe"],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => {}); // the program may exit without reading its input
    child.stdin.end(opts.input ?? "");
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new CommandError(`Cannot run ${what}: ${e.message}`, { code: -1, stdout: "", stderr: "" }, e));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        code: code ?? 128 + (signal ? constants.signals[signal] : 0),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      };
      if (timedOut) {
        reject(new CommandError(`${what} timed out after ${timeoutMs} ms`, result));
      } else if (result.code !== 0 && !opts.allowFail) {
        const detail = (result.stderr.trim() || result.stdout.trim()).slice(0, 2000);
        reject(new CommandError(`${what} exited ${result.code}: ${detail}`, result));
      } else {
        resolve(result);
      }
    });
  });
}

/** `run` for programs that print JSON (ip -j, bridge -j); empty output parses as []. */
export async function runJson<T = unknown>(cmd: string, args: string[], opts: RunOptions = {}): Promise<T> {
  const r = await run(cmd, args, opts);
  const text = r.stdout.trim();
  if (text === "") return [] as T;
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new CommandError(`Cannot parse the JSON printed by ${describe(opts.netns, cmd, args)}`, r, e);
  }
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Append stdout and stderr to this file (instead of pipes). */
  logFile?: string;
  /** Standard streams when no logFile; default ["ignore", "pipe", "pipe"]. */
  stdio?: StdioOptions;
}

interface Tracked {
  child: ChildProcess;
  netns: string | undefined;
  what: string;
  output: Buffer[];
  outputBytes: number;
}

const registry = new Set<Tracked>();
const outputs = new WeakMap<ChildProcess, Tracked>();
const OUTPUT_KEEP = 256 * 1024;
let killerRegistered = false;

const cleanups: (() => void)[] = [];
let handlersInstalled = false;

/**
 * Registers a synchronous cleanup run once on process exit, or on
 * SIGINT/SIGTERM/SIGHUP (after which the process exits with 128+signal).
 */
export function onCleanup(fn: () => void): void {
  cleanups.push(fn);
  if (handlersInstalled) return;
  handlersInstalled = true;
  const runAll = (): void => {
    for (const f of cleanups.splice(0)) {
      try {
        f();
      } catch {
        /* best effort: keep going */
      }
    }
  };
  process.on("exit", runAll);
  for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
    process.on(sig, () => {
      runAll();
      process.exit(code);
    });
  }
}

/**
 * Starts a long-running program in `netns` (undefined: the current one).
 * It leads its own process group; it is killed by `killSpawned` (and so by
 * Cluster.destroy and the exit safety net). The caller may stop it earlier
 * with `stopProcess`.
 */
export function spawnIn(netns: string | undefined, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const [file, argv] = nsArgv(netns, cmd, args);
  let stdio: StdioOptions = opts.stdio ?? ["ignore", "pipe", "pipe"];
  let logFd: number | undefined;
  if (opts.logFile) {
    logFd = openSync(opts.logFile, "a");
    stdio = ["ignore", logFd, logFd];
  }
  const child = spawn(file, argv, {
    stdio,
    detached: true, // own process group: killed as a group, and not by a terminal's ^C before we clean up
    cwd: opts.cwd,
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
  });
  if (logFd !== undefined) closeSync(logFd);
  const entry: Tracked = { child, netns, what: describe(netns, cmd, args), output: [], outputBytes: 0 };
  const keep = (b: Buffer): void => {
    entry.output.push(b);
    entry.outputBytes += b.length;
    while (entry.outputBytes > OUTPUT_KEEP && entry.output.length > 1) entry.outputBytes -= entry.output.shift()!.length;
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  if (!killerRegistered) {
    killerRegistered = true;
    onCleanup(() => killSpawnedSync());
  }
  registry.add(entry);
  outputs.set(child, entry);
  child.on("exit", () => registry.delete(entry));
  child.on("error", () => registry.delete(entry));
  return child;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/** Sends `signal` (default SIGTERM), then SIGKILL after graceMs; resolves when the process has exited. */
export function stopProcess(child: ChildProcess, opts: { signal?: NodeJS.Signals; graceMs?: number } = {}): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => signalGroup(child, "SIGKILL"), opts.graceMs ?? 3000);
    child.once("exit", () => {
      clearTimeout(timer);
      // the group may have other members (e.g. a shell's children)
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          /* no such group: all gone */
        }
      }
      resolve();
    });
    signalGroup(child, opts.signal ?? "SIGTERM");
  });
}

/** Kills the spawned processes whose namespace starts with `netnsPrefix` (all when undefined). */
export async function killSpawned(netnsPrefix?: string): Promise<void> {
  const victims = [...registry].filter(
    (t) => netnsPrefix === undefined || (t.netns !== undefined && t.netns.startsWith(netnsPrefix)),
  );
  await Promise.all(victims.map((t) => stopProcess(t.child, { graceMs: 2000 })));
}

/** Synchronous SIGKILL of spawned processes, for 'exit' handlers. */
export function killSpawnedSync(netnsPrefix?: string): void {
  for (const t of registry) {
    if (netnsPrefix === undefined || (t.netns !== undefined && t.netns.startsWith(netnsPrefix))) {
      signalGroup(t.child, "SIGKILL");
    }
  }
}

/** The last 256 KB of a spawned process's piped stdout+stderr (interleaved as received). */
export function spawnedOutput(child: ChildProcess): string {
  const t = outputs.get(child);
  return t ? Buffer.concat(t.output).toString("utf8") : "";
}

/** The processes started by spawnIn that are still running, for failure output. */
export function listSpawned(): string[] {
  return [...registry].map((t) => `pid ${t.child.pid}: ${t.what}`);
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** What is awaited, for the error: "twill on h1 to program 2 peers". */
  what: string;
}

/** Error raised by waitFor on timeout. */
export class WaitTimeoutError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "WaitTimeoutError";
  }
}

/**
 * Polls `fn` until it returns true. A throwing `fn` counts as false; the last
 * error is attached as the cause when time runs out.
 */
export async function waitFor(fn: () => Promise<boolean> | boolean, opts: WaitOptions): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 100;
  const start = Date.now();
  let lastError: unknown;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() - start >= timeoutMs) break;
    await sleep(intervalMs);
  }
  const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
  throw new WaitTimeoutError(`Timed out after ${timeoutMs} ms waiting for ${opts.what}${why}`, lastError);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
