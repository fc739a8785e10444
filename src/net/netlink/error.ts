/**
 * Netlink failures as TwillErrors (code ERR_NETLINK).
 *
 * How it works: a NetlinkError names the operation and object the way
 * iproute2 would write the command ("route replace 10.244.2.0/24 via
 * 10.244.2.0 dev flannel.1") and carries the kernel's answer: the errno
 * (`errno`, positive) and its text plus the kernel's extended ack when there
 * is one (`stderr`, kept under that name for callers written against the
 * iproute2 version). `isNotFound` asks the errno first (ENODEV, ENOENT,
 * ESRCH: no such device, entry or route), then the text. A BatchError is a
 * batch that stopped at `failedIndex` (0-based): ops before it were applied,
 * the failing one and those after it were not.
 */
import { TwillError } from "../../errors.js";
import { E } from "./libc.js";

const RETRYABLE = new Set<number>([E.EBUSY, E.EAGAIN, E.ENOBUFS, E.EINTR]);
const NOT_FOUND = new Set<number>([E.ENODEV, E.ENOENT, E.ESRCH]);

export class NetlinkError extends TwillError {
  /** The operation, iproute2-style: "fdb append 02:..:01 dev flannel.1 dst 192.0.2.1 self permanent". */
  readonly command: string;
  /** What went wrong, in words ("No such process"; plus the kernel's extended ack). */
  readonly stderr: string;
  /** The kernel's errno (positive), when the kernel answered. */
  readonly errno: number | undefined;
  constructor(command: string, stderr: string, cause?: unknown, errno?: number) {
    const text = stderr.trim().replace(/\s*\n\s*/g, "; ") || (cause instanceof Error ? cause.message : "failed");
    super("ERR_NETLINK", `${command}: ${text}`, {
      cause,
      retryable: (errno !== undefined && RETRYABLE.has(errno)) || /resource busy|temporarily unavailable|timed out|no buffer space/i.test(text),
    });
    this.name = "NetlinkError";
    this.command = command;
    this.stderr = stderr;
    this.errno = errno;
  }
}

/** True when a NetlinkError says the object (device, route, entry) does not exist. */
export function isNotFound(e: unknown): boolean {
  if (!(e instanceof NetlinkError)) return false;
  if (e.errno !== undefined) return NOT_FOUND.has(e.errno);
  return /does not exist|cannot find device|no such (device|file|process)/i.test(e.stderr);
}

export interface BatchFailure {
  /** 0-based index into the ops (or lines) given; -1 when unknown. */
  readonly index: number;
  /** The op, iproute2-style. */
  readonly line: string;
  readonly message: string;
}

export interface BatchResult {
  /** Failed ops (only ever non-empty with `force`). */
  readonly failures: readonly BatchFailure[];
}

/** A batch that stopped at a failing op; ops before `failedIndex` were applied. */
export class BatchError extends NetlinkError {
  /** 0-based index of the failing op, or undefined if unknown (assume any op may be applied). */
  readonly failedIndex: number | undefined;
  readonly failures: readonly BatchFailure[];
  constructor(command: string, stderr: string, failures: readonly BatchFailure[], failedIndex: number | undefined, errno?: number) {
    super(command, stderr, undefined, errno);
    this.name = "BatchError";
    this.failures = failures;
    this.failedIndex = failedIndex;
  }
}
