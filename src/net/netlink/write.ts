/**
 * Single typed writes for callers outside a batch: `routeReplace`,
 * `routeDel`, `neighReplace`, `neighDel`, `fdbAppend`, `fdbReplace`,
 * `fdbDel`, each one netlink request (through netlinkBatch, so checks,
 * device lookup and error texts are the batch's). A failure throws the
 * NetlinkError of that one op ("route replace 10.244.0.0/16 via 10.244.0.0
 * dev flannel.1 onlink: Network is unreachable").
 */
import { BatchError, NetlinkError } from "./error.js";
import { netlinkBatch } from "./batch.js";
import type { FdbOp, NeighOp, NlOp, RouteOp } from "./ops.js";
import type { IP, Prefix } from "../ip.js";

/** Applies one op; throws its NetlinkError. */
export function applyOp(op: NlOp): void {
  try {
    netlinkBatch([op]);
  } catch (e) {
    if (e instanceof BatchError) throw new NetlinkError(e.failures[0]?.line ?? e.command, e.stderr, undefined, e.errno);
    throw e;
  }
}

export interface RouteOptions {
  /** Gateway; its family must be the destination's. */
  readonly via?: IP;
  /** RTNH_F_ONLINK (`onlink`): use the gateway even without a route to it. */
  readonly onlink?: boolean;
}

const routeOp = (action: RouteOp["action"], dst: Prefix, dev: string, o: RouteOptions): RouteOp =>
  ({ kind: "route", action, dst, dev, ...(o.via ? { via: o.via } : {}), ...(o.onlink ? { onlink: true } : {}) });

/** `ip route replace DST [via GW] dev DEV [onlink]` (main table, proto boot). */
export async function routeReplace(dst: Prefix, dev: string, opts: RouteOptions = {}): Promise<void> {
  applyOp(routeOp("replace", dst, dev, opts));
}

/** `ip route del DST [via GW] dev DEV`. */
export async function routeDel(dst: Prefix, dev: string, opts: Omit<RouteOptions, "onlink"> = {}): Promise<void> {
  applyOp(routeOp("del", dst, dev, opts));
}

/** `ip neigh replace IP lladdr MAC dev DEV nud permanent`. */
export async function neighReplace(dst: IP, lladdr: string, dev: string): Promise<void> {
  applyOp({ kind: "neigh", action: "replace", dst, lladdr, dev } satisfies NeighOp);
}

/** `ip neigh del IP dev DEV`. */
export async function neighDel(dst: IP, dev: string): Promise<void> {
  applyOp({ kind: "neigh", action: "del", dst, dev } satisfies NeighOp);
}

/** `bridge fdb append|replace MAC dev DEV dst IP self permanent`. */
export async function fdbAdd(action: "append" | "replace", mac: string, dev: string, dst: IP): Promise<void> {
  applyOp({ kind: "fdb", action, mac, dev, dst, permanent: true } satisfies FdbOp);
}

/** `bridge fdb del MAC dev DEV [dst IP] self`. */
export async function fdbDel(mac: string, dev: string, dst?: IP): Promise<void> {
  applyOp({ kind: "fdb", action: "del", mac, dev, ...(dst ? { dst } : {}) } satisfies FdbOp);
}
