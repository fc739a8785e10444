/**
 * Who holds a podCIDR when two Kubernetes nodes claim the same one (or
 * overlapping ones): the pure half of the kube source's conflict handling.
 *
 * How it works:
 *  1) Every node that is a lease (annotated kube-subnet-manager=true, with a
 *     readable podCIDR of an enabled family) claims its pod subnets; nodes
 *     whose annotations are otherwise unreadable still claim them, so fixing
 *     an annotation never moves a subnet between nodes.
 *  2) "First" is an order every twill node computes alike and that survives
 *     restarts: metadata.creationTimestamp, oldest first (a node without one
 *     last), then the name. Not the order this process happened to see the
 *     nodes in: that differs between nodes and between runs. The one
 *     exception is our own node, first in our own view: we keep routing our
 *     subnet to ourselves whatever the others decide (flannel's LeaseWatcher
 *     ignores every lease with our subnet too).
 *  3) Claims are visited in that order; a claim is granted unless one of its
 *     subnets overlaps a subnet of a claim granted before it; then it is
 *     denied, naming the first granted claim it clashes with (the holder).
 *     A denied claim holds nothing, so it cannot deny a later one.
 *  4) Incremental: set(name, claim) re-decides only the claims connected to
 *     the changed one's old and new subnets by overlap (in a real cluster the
 *     few nodes that share one podCIDR) and returns their names, so one
 *     event costs a few index lookups even among 10,000 nodes. When the
 *     holder goes away, the next claim in order is granted.
 * The index answers "which claims overlap this prefix" with one map lookup
 * per distinct (family, length) no longer than the prefix.
 */
import { formatPrefix, makePrefix, prefixContains, prefixOverlaps, type Prefix } from "../net/ip.js";

export interface Claim {
  /** The node's name. */
  readonly name: string;
  /** metadata.creationTimestamp (RFC 3339, as the API writes it); "" when absent. */
  readonly created: string;
  /** The pod subnets of the enabled families. */
  readonly subnets: readonly Prefix[];
  /** Our own node: first in our view (see 2). */
  readonly own?: boolean;
}

/** Why a claim was denied. */
export interface Denial {
  /** The node that holds the subnet. */
  readonly holder: Claim;
  /** Our subnet that clashes, and the holder's. */
  readonly subnet: Prefix;
  readonly holderSubnet: Prefix;
}

/** 2): negative when `a` comes first. */
export function claimOrder(a: Claim, b: Claim): number {
  if (!!a.own !== !!b.own) return a.own ? -1 : 1;
  if (a.created !== b.created) {
    if (!a.created) return 1;
    if (!b.created) return -1;
    // RFC 3339 in UTC with whole seconds (the API's form) sorts as text; parse anything else.
    const ta = Date.parse(a.created), tb = Date.parse(b.created);
    if (!Number.isNaN(ta) && !Number.isNaN(tb) && ta !== tb) return ta - tb;
    return a.created < b.created ? -1 : 1;
  }
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Prefixes by (family, length), each with the names that claim it. */
class PrefixIndex {
  private readonly buckets = new Map<string, { family: number; len: number; byNet: Map<string, { prefix: Prefix; names: Set<string> }> }>();

  add(p: Prefix, name: string): void {
    const bk = `${p.ip.family}/${p.len}`;
    let b = this.buckets.get(bk);
    if (!b) this.buckets.set(bk, (b = { family: p.ip.family, len: p.len, byNet: new Map() }));
    const k = formatPrefix(p);
    let e = b.byNet.get(k);
    if (!e) b.byNet.set(k, (e = { prefix: p, names: new Set() }));
    e.names.add(name);
  }

  delete(p: Prefix, name: string): void {
    const bk = `${p.ip.family}/${p.len}`;
    const b = this.buckets.get(bk);
    const k = formatPrefix(p);
    const e = b?.byNet.get(k);
    if (!b || !e) return;
    e.names.delete(name);
    if (e.names.size === 0) b.byNet.delete(k);
    if (b.byNet.size === 0) this.buckets.delete(bk);
  }

  /** The names of every claim with a prefix overlapping `p`. */
  overlapping(p: Prefix): string[] {
    const out: string[] = [];
    for (const { family, len, byNet } of this.buckets.values()) {
      if (family !== p.ip.family) continue;
      if (len <= p.len) {
        const e = byNet.get(formatPrefix(makePrefix(p.ip, len)));
        if (e) out.push(...e.names);
      } else {
        for (const e of byNet.values()) if (prefixContains(p, e.prefix)) out.push(...e.names);
      }
    }
    return out;
  }
}

export class SubnetClaims {
  private readonly claims = new Map<string, Claim>();
  private readonly index = new PrefixIndex();
  private readonly denied = new Map<string, Denial>();

  /** Why `name`'s claim is denied; undefined when it is granted (or it claims nothing). */
  denial(name: string): Denial | undefined {
    return this.denied.get(name);
  }

  /** Sets every claim at once (a fresh list): one pass in order, no re-deciding. */
  setAll(claims: readonly Claim[]): void {
    for (const c of claims) {
      this.claims.set(c.name, c);
      for (const p of c.subnets) this.index.add(p, c.name);
    }
    this.decide([...claims]);
  }

  /**
   * Sets (or with undefined, drops) a node's claim and re-decides the claims
   * connected to it (4). Returns the names whose claims were re-decided,
   * `name` included.
   */
  set(name: string, claim: Claim | undefined): string[] {
    const old = this.claims.get(name);
    if (old) for (const p of old.subnets) this.index.delete(p, name);
    if (claim) {
      this.claims.set(name, claim);
      for (const p of claim.subnets) this.index.add(p, name);
    } else {
      this.claims.delete(name);
      this.denied.delete(name);
    }
    const component = this.connected([...(old?.subnets ?? []), ...(claim?.subnets ?? [])]);
    component.delete(name);
    const members = [...component].map((n) => this.claims.get(n)!);
    if (claim) members.push(claim);
    this.decide(members);
    return [name, ...component];
  }

  /** The names of the claims reachable from `start` through overlapping subnets. */
  private connected(start: readonly Prefix[]): Set<string> {
    const seen = new Set<string>();
    const todo = [...start];
    while (todo.length) {
      for (const n of this.index.overlapping(todo.pop()!)) {
        if (seen.has(n)) continue;
        seen.add(n);
        todo.push(...this.claims.get(n)!.subnets);
      }
    }
    return seen;
  }

  /** 3) over a set of claims closed under overlap. */
  private decide(members: Claim[]): void {
    members.sort(claimOrder);
    const granted = new PrefixIndex();
    const byName = new Map(members.map((c) => [c.name, c]));
    const rank = new Map(members.map((c, i) => [c.name, i]));
    for (const c of members) {
      let denial: Denial | undefined;
      for (const s of c.subnets) {
        for (const h of granted.overlapping(s)) {
          const holder = byName.get(h)!;
          if (denial && rank.get(holder.name)! >= rank.get(denial.holder.name)!) continue;
          denial = { holder, subnet: s, holderSubnet: holder.subnets.find((x) => prefixOverlaps(x, s))! };
        }
      }
      if (denial) this.denied.set(c.name, denial);
      else {
        this.denied.delete(c.name);
        for (const s of c.subnets) granted.add(s, c.name);
      }
    }
  }
}
