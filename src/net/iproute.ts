/**
 * The one place that runs iproute2 (`ip`, `bridge`).
 *
 * How it works:
 * 1) `ip(args)` / `bridge(args)` run one command with `-j` through execFile
 *    (never a shell) and return its JSON output parsed, or undefined when the
 *    command printed nothing (add/del/set). The JSON is `unknown`: callers
 *    (net/link.ts) check it once and hand typed values to the core.
 * 2) `ipBatch(lines)` / `bridgeBatch(lines)` feed many commands to ONE
 *    process (`ip -batch -`) through stdin: 10,000 peers cost one fork per
 *    table, not 10,000. Without `force` the tool stops at the first failing
 *    line; we throw a BatchError saying which line (0-based `failedIndex`),
 *    so the caller knows exactly which earlier lines were applied and can
 *    roll them back. With `force` every line is tried and the failures are
 *    returned, not thrown. Failing lines are found from the tool's
 *    "Command failed -:N" markers on stderr.
 * 3) Every interface name we are handed is checked against the kernel's
 *    rules (IFNAMSIZ, no slash or blank) with ERR_IFACE, and batch lines are
 *    restricted to the characters our own commands use, so no data can add
 *    a command, a comment or a quote to a batch.
 * Everything runs in the caller's current network namespace. Failures are
 * TwillError("ERR_NETLINK") (class NetlinkError) naming the command and
 * carrying the tool's stderr.
 */
import { execFile } from "node:child_process";
import { TwillError } from "../errors.js";

const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;
/** What our batch lines may contain: names, addresses, prefixes, MACs, keywords. */
const BATCH_LINE = /^[A-Za-z0-9_.:@/ -]+$/;
/** Keywords after which iproute2 expects an interface name. */
const NAME_KEYWORDS = new Set(["dev", "master", "name", "link"]);

const DEFAULT_TIMEOUT_MS = 30_000;
const BATCH_TIMEOUT_MS = 300_000;
const MAX_OUTPUT = 512 * 1024 * 1024;

/** Returns `name` if it is a valid interface name, else throws ERR_IFACE. */
export function checkIfName(name: string, what = "interface name"): string {
  if (typeof name !== "string" || !IFNAME.test(name) || name === "." || name === "..") {
    throw new TwillError("ERR_IFACE", `${what} ${JSON.stringify(name)} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . : @ -)`);
  }
  return name;
}

/** Checks the names that follow dev/master/name/link keywords in an argument list. */
function checkArgs(args: readonly string[]): void {
  args.forEach((a, i) => {
    if (typeof a !== "string" || a.includes("\0")) throw new TwillError("ERR_NETLINK", `bad iproute2 argument ${JSON.stringify(a)}`);
    // `ip link ...`: "link" as the object (first word, or after options) is not a keyword.
    const isObject = a === "link" && args.slice(0, i).every((x) => x.startsWith("-"));
    if (NAME_KEYWORDS.has(a) && !isObject && i + 1 < args.length) checkIfName(args[i + 1]!, `${a} name`);
  });
}

export interface RunOptions {
  /** Milliseconds before the command is killed (default 30 s). */
  readonly timeoutMs?: number;
}

/** An iproute2 failure: the command line and what the tool printed. */
export class NetlinkError extends TwillError {
  readonly command: string;
  readonly stderr: string;
  constructor(command: string, stderr: string, cause?: unknown) {
    const text = stderr.trim().replace(/\s*\n\s*/g, "; ") || (cause instanceof Error ? cause.message : "failed");
    super("ERR_NETLINK", `${command}: ${text}`, {
      cause,
      retryable: /resource busy|temporarily unavailable|timed out|no buffer space/i.test(text),
    });
    this.name = "NetlinkError";
    this.command = command;
    this.stderr = stderr;
  }
}

/** True when a NetlinkError says the object (device, route, entry) does not exist. */
export function isNotFound(e: unknown): boolean {
  return e instanceof NetlinkError && /does not exist|cannot find device|no such (device|file|process)/i.test(e.stderr);
}

interface Output {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

/** Runs `bin args` with optional stdin; resolves with the exit code unless it could not run. */
function run(bin: string, args: readonly string[], input: string | undefined, timeoutMs: number): Promise<Output> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      bin,
      args,
      { timeout: timeoutMs, maxBuffer: MAX_OUTPUT, env: { ...process.env, LC_ALL: "C" }, encoding: "utf8" },
      (err, stdout, stderr) => {
        const code = err && typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : err ? -1 : 0;
        if (err && code === -1) reject(new NetlinkError(`${bin} ${args.join(" ")}`, String(stderr ?? ""), err));
        else resolve({ stdout: String(stdout), stderr: String(stderr), exitCode: code });
      },
    );
    child.stdin?.on("error", () => undefined); // the tool may exit before reading all of stdin
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

async function runJSON(bin: "ip" | "bridge", args: readonly string[], opts: RunOptions): Promise<unknown> {
  checkArgs(args);
  const full = ["-j", ...args];
  const out = await run(bin, full, undefined, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const command = `${bin} ${full.join(" ")}`;
  if (out.exitCode !== 0) throw new NetlinkError(command, out.stderr);
  const text = out.stdout.trim();
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new TwillError("ERR_NETLINK", `${command}: output is not JSON: ${text.slice(0, 200)}`, { cause: e });
  }
}

/** Runs `ip -j ARGS`; returns the parsed JSON output, or undefined when there was none. */
export function ip(args: readonly string[], opts: RunOptions = {}): Promise<unknown> {
  return runJSON("ip", args, opts);
}

/** Runs `bridge -j ARGS`; returns the parsed JSON output, or undefined when there was none. */
export function bridge(args: readonly string[], opts: RunOptions = {}): Promise<unknown> {
  return runJSON("bridge", args, opts);
}

export interface BatchOptions extends RunOptions {
  /** Try every line and return the failures instead of stopping at the first. */
  readonly force?: boolean;
}

export interface BatchFailure {
  /** 0-based index into the lines given; -1 when the tool did not say which. */
  readonly index: number;
  readonly line: string;
  readonly message: string;
}

export interface BatchResult {
  /** Failed lines (only ever non-empty with `force`). */
  readonly failures: readonly BatchFailure[];
}

/** A batch that stopped at a failing line; lines before `failedIndex` were applied. */
export class BatchError extends NetlinkError {
  /** 0-based index of the failing line, or undefined if unknown (assume any line may be applied). */
  readonly failedIndex: number | undefined;
  readonly failures: readonly BatchFailure[];
  constructor(command: string, stderr: string, failures: readonly BatchFailure[], failedIndex: number | undefined) {
    super(command, stderr);
    this.name = "BatchError";
    this.failures = failures;
    this.failedIndex = failedIndex;
  }
}

function checkBatchLine(line: string): void {
  if (typeof line !== "string" || !BATCH_LINE.test(line)) {
    throw new TwillError("ERR_NETLINK", `bad batch line ${JSON.stringify(line)}`);
  }
  checkArgs(line.split(" ").filter((w) => w !== ""));
}

/**
 * Turns the tool's stderr into per-line failures. Each failure prints its
 * message(s) and then "Command failed -:N" (N 1-based).
 */
export function parseBatchFailures(stderr: string, lines: readonly string[]): BatchFailure[] {
  const out: BatchFailure[] = [];
  let pending: string[] = [];
  for (const raw of stderr.split("\n")) {
    const m = /^Command failed -:(\d+)\s*$/.exec(raw.trim());
    if (!m) {
      if (raw.trim() !== "") pending.push(raw.trim());
      continue;
    }
    const index = Number(m[1]) - 1;
    out.push({ index, line: lines[index] ?? "", message: pending.join("; ") || "failed" });
    pending = [];
  }
  if (pending.length > 0 && out.length === 0) out.push({ index: -1, line: "", message: pending.join("; ") });
  return out;
}

async function runBatch(bin: "ip" | "bridge", lines: readonly string[], opts: BatchOptions): Promise<BatchResult> {
  if (lines.length === 0) return { failures: [] };
  lines.forEach(checkBatchLine);
  const args = opts.force ? ["-force", "-batch", "-"] : ["-batch", "-"];
  const out = await run(bin, args, lines.join("\n") + "\n", opts.timeoutMs ?? BATCH_TIMEOUT_MS);
  if (out.exitCode === 0) return { failures: [] };
  const failures = parseBatchFailures(out.stderr, lines);
  const known = failures.filter((f) => f.index >= 0);
  const command = `${bin} ${args.join(" ")} (${lines.length} lines)`;
  if (opts.force && known.length > 0) return { failures: known };
  const first = known[0];
  const where = first ? ` at line ${first.index + 1} "${first.line}"` : "";
  throw new BatchError(command + where, out.stderr, failures, first?.index);
}

/** Runs `ip -batch -` with `lines` on stdin (see the module comment for failures). */
export function ipBatch(lines: readonly string[], opts: BatchOptions = {}): Promise<BatchResult> {
  return runBatch("ip", lines, opts);
}

/** Runs `bridge -batch -` with `lines` on stdin. */
export function bridgeBatch(lines: readonly string[], opts: BatchOptions = {}): Promise<BatchResult> {
  return runBatch("bridge", lines, opts);
}
