/**
 * Drift: one difference between what the leases want and what a dataplane
 * has programmed. It is the one vocabulary of the periodic repair and of
 * `twill status`.
 *
 * How it works: each dataplane has a pure `diff(desired, observed)`
 * (bpfdiff.ts, kerneldiff.ts) that returns the drift and the repair of it.
 * The daemon's reconcile observes, diffs and applies the repair; `twill
 * status` observes and diffs the same way and prints the drift. Because
 * both call the same function on the same kind of observation, the two
 * cannot disagree on what is wrong. A drift's subject is a subnet
 * ("10.244.2.0/24") when it concerns one, so a person can match it with a
 * lease; details say in words what differs.
 */

export type DriftKind = "missing" | "stale" | "changed";

export interface Drift {
  /** missing: the lease has no entry; stale: an entry no lease backs; changed: the entry differs. */
  readonly kind: DriftKind;
  /** A subnet, or what else drifted (a device, the own lease, a link). */
  readonly subject: string;
  readonly detail: string;
}

/** Counts by kind, for metrics and logs: missing = added, changed = updated, stale = removed. */
export function driftCounts(drift: readonly Drift[]): { added: number; updated: number; removed: number } {
  let added = 0, updated = 0, removed = 0;
  for (const d of drift) {
    if (d.kind === "missing") added++;
    else if (d.kind === "changed") updated++;
    else removed++;
  }
  return { added, updated, removed };
}

/** "kind subject" of each drift, sorted: for comparing two observations of the same node. */
export const driftKeys = (drift: readonly Drift[]): string[] => drift.map((d) => `${d.kind} ${d.subject}`).sort();

/** Merges drifts of one subject and kind into one, details joined; order of first appearance. */
export function mergeDrift(drift: readonly Drift[]): Drift[] {
  const by = new Map<string, { kind: Drift["kind"]; subject: string; details: string[] }>();
  for (const d of drift) {
    const k = `${d.kind}\0${d.subject}`;
    const cur = by.get(k);
    if (cur) {
      if (!cur.details.includes(d.detail)) cur.details.push(d.detail);
    } else by.set(k, { kind: d.kind, subject: d.subject, details: [d.detail] });
  }
  return [...by.values()].map((d) => ({ kind: d.kind, subject: d.subject, detail: d.details.join("; ") }));
}

/**
 * The vxlan device's drift: missing, or carrying another MAC than the VTEP
 * MAC our lease announces (peers would send to the wrong MAC). The
 * reconcile checks it before it re-creates or fixes the device; status
 * checks it the same way.
 */
export function deviceDrift(name: string, have: { readonly mac: string } | undefined, wantMAC: string | undefined): Drift[] {
  if (!have) return [{ kind: "missing", subject: name, detail: `the vxlan device ${name} does not exist` }];
  if (wantMAC && have.mac.toLowerCase() !== wantMAC.toLowerCase()) {
    return [{ kind: "changed", subject: name, detail: `${name} has MAC ${have.mac}, our lease announces VtepMAC ${wantMAC}: peers send to the wrong MAC` }];
  }
  return [];
}
