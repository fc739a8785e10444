/**
 * twill's errors: one class, a stable `code` per failure, an optional `cause`.
 *
 * How it works: every error twill raises on purpose is a TwillError whose
 * `code` is one of ErrorCode; raw errors (libbpf errno, child process exits,
 * JSON.parse) are wrapped at the boundary where they happen. Retryable
 * failures (the store, a transient netlink error) carry `retryable = true`.
 * Logs and the errors-by-code metric use the code, never the message.
 */

export type ErrorCode =
  | "ERR_INVALID_IP"
  | "ERR_INVALID_PREFIX"
  | "ERR_INVALID_MAC"
  | "ERR_INVALID_LEASE"
  /** A file in the lease directory that is not read: not a regular file (a FIFO, symlink, device, …), or too big. */
  | "ERR_LEASE_FILE"
  | "ERR_INVALID_CONFIG"
  | "ERR_INVALID_FLAG"
  | "ERR_LEASE_CONFLICT"
  /** A lease's PublicIP(v6) is no address a peer can have (loopback, multicast, broadcast, unspecified, link-local, ours, inside the cluster network). */
  | "ERR_INVALID_PUBLIC_IP"
  /** A lease names a public IP another (earlier) lease already holds. */
  | "ERR_PUBLIC_IP_CONFLICT"
  | "ERR_SUBNET_EXHAUSTED"
  | "ERR_LEASE_LOST"
  | "ERR_STORE"
  | "ERR_SUBNET_FILE"
  | "ERR_IFACE"
  | "ERR_NETLINK"
  | "ERR_SYSCTL"
  | "ERR_DEVICE_INCOMPATIBLE"
  | "ERR_BPF_OPEN"
  | "ERR_BPF_LOAD"
  | "ERR_BPF_VERIFIER"
  | "ERR_BPF_PIN_INCOMPATIBLE"
  | "ERR_BPF_MAP"
  | "ERR_CAPACITY"
  | "ERR_BPF_ATTACH"
  | "ERR_BPF_LAYOUT"
  | "ERR_BPF_TEST_RUN"
  | "ERR_DATAPLANE"
  /** host-gw: a peer's PublicIP is not on a network of our underlay interface (flannel's host-gw cannot route to it either). */
  | "ERR_PEER_UNREACHABLE";

export class TwillError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "TwillError";
    this.code = code;
    this.retryable = opts.retryable ?? false;
  }
}

export function isTwillError(e: unknown, code?: ErrorCode): e is TwillError {
  return e instanceof TwillError && (code === undefined || e.code === code);
}

/** The stable code of any error, for logs and metrics. */
export function errorCode(e: unknown): string {
  if (e instanceof TwillError) return e.code;
  if (e && typeof e === "object" && "code" in e && typeof (e as { code: unknown }).code === "string") {
    return (e as { code: string }).code;
  }
  return "ERR_UNKNOWN";
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A value as error messages show it: JSON, cut to `max` characters. Never
 * throws: a value too deep for JSON.stringify (a 100,000-level array from
 * untrusted JSON) or with a cycle is shown by its kind.
 */
export function showValue(v: unknown, max = 200): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = Array.isArray(v) ? "[…]" : typeof v === "object" && v !== null ? "{…}" : String(v);
  }
  return s.length > max ? `${s.slice(0, max)}… (${s.length} characters)` : s;
}
