/**
 * A probe tells when a peer's lease change has reached the dataplane.
 *
 * How it works: the caller registers what it expects for one prefix
 * (`expect`) BEFORE it writes the lease, then writes it; the probe resolves
 * with the moment the dataplane first showed it. Times are absolute
 * milliseconds (performance.timeOrigin + performance.now()), comparable
 * across threads of one process. Two implementations, chosen by dataplane:
 * bpfprobe.ts (polls the pinned peers map from a worker thread) and
 * routeprobe.ts (reads `ip -o monitor route`, event-driven).
 */

/** What the dataplane should show for one prefix: a VXLAN peer at `remote`, or nothing. */
export type Want = { readonly present: true; readonly remote: string } | { readonly present: false };

export interface Probe {
  /** The moment the dataplane first showed `want` for `prefix` (registered before the change is made). */
  expect(prefix: string, want: Want, timeoutMs?: number): Promise<number>;
  /**
   * Resolves once every prefix shows its want, with the moment the last of
   * them got there. Each prefix must change during the run (route probe: a
   * prefix counts once a matching change was seen).
   */
  converge(wants: ReadonlyMap<string, Want>, timeoutMs?: number): Promise<number>;
  close(): Promise<void>;
}

/** Absolute milliseconds with sub-millisecond resolution, the same clock in every thread. */
export const now = (): number => performance.timeOrigin + performance.now();

export const DEFAULT_TIMEOUT_MS = 30_000;
/** How often the bpf probe looks the map up while something is awaited. */
export const POLL_MS = 0.1;

export class ProbeTimeoutError extends Error {
  readonly code = "ERR_SCALE_PROBE_TIMEOUT";
  constructor(what: string, timeoutMs: number) {
    super(`Timed out after ${timeoutMs} ms waiting for ${what} to reach the dataplane`);
    this.name = "ProbeTimeoutError";
  }
}

export function describeWant(prefix: string, want: Want): string {
  return want.present ? `${prefix} → ${want.remote}` : `${prefix} removed`;
}
