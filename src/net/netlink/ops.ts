/**
 * Typed write operations on routes, neighbours and FDB entries: what the
 * dataplanes batch, with the iproute2 text each one stands for.
 *
 * How it works: an NlOp is a plain value (typed IP/Prefix, a device name, a
 * MAC). `describe(op)` writes it as the iproute2 command it replaces
 * ("route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"), for
 * messages and logs. `checkOp` validates names and MACs once, before
 * anything is sent. `encodeOp` turns it into one netlink request with
 * NLM_F_ACK, given the device's ifindex:
 *   route replace|add|del  → RTM_NEWROUTE (CREATE|REPLACE or CREATE|EXCL) / RTM_DELROUTE
 *   neigh replace|add|del  → RTM_NEWNEIGH nud permanent / RTM_DELNEIGH
 *   fdb append|replace|add|del → RTM_NEWNEIGH AF_BRIDGE NTF_SELF (CREATE|APPEND, CREATE|REPLACE, CREATE|EXCL) / RTM_DELNEIGH
 */
import { TwillError } from "../../errors.js";
import { macToBytes, parseMAC } from "../../lease/mac.js";
import { formatIP, formatPrefix, type IP, type Prefix } from "../ip.js";
import { checkIfName } from "./ifname.js";
import {
  NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
  RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE,
} from "./consts.js";
import { encodeMessage } from "./message.js";
import { fdbRequest, neighRequest } from "./neigh-codec.js";
import { routeRequest } from "./route-codec.js";

export interface RouteOp {
  readonly kind: "route";
  readonly action: "replace" | "add" | "del";
  readonly dst: Prefix;
  readonly via?: IP;
  readonly dev: string;
  /** RTNH_F_ONLINK: the gateway is on the link even without an address there. */
  readonly onlink?: boolean;
}

export interface NeighOp {
  readonly kind: "neigh";
  /** replace/add are `nud permanent` with `lladdr`. */
  readonly action: "replace" | "add" | "del";
  readonly dst: IP;
  readonly lladdr?: string;
  readonly dev: string;
}

export interface FdbOp {
  readonly kind: "fdb";
  /** Always `self` (the vxlan device's own table). */
  readonly action: "append" | "replace" | "add" | "del";
  readonly mac: string;
  readonly dev: string;
  readonly dst?: IP;
  /** NUD_PERMANENT; otherwise "static" as `bridge fdb` makes it. */
  readonly permanent?: boolean;
}

export type NlOp = RouteOp | NeighOp | FdbOp;

/** The iproute2 command `op` stands for. */
export function describe(op: NlOp): string {
  switch (op.kind) {
    case "route":
      return `route ${op.action} ${formatPrefix(op.dst)}${op.via ? ` via ${formatIP(op.via)}` : ""} dev ${op.dev}${op.onlink ? " onlink" : ""}`;
    case "neigh":
      return `neigh ${op.action} ${formatIP(op.dst)}${op.lladdr && op.action !== "del" ? ` lladdr ${op.lladdr} ` : " "}dev ${op.dev}${op.action !== "del" ? " nud permanent" : ""}`;
    case "fdb":
      return `fdb ${op.action} ${op.mac} dev ${op.dev}${op.dst ? ` dst ${formatIP(op.dst)}` : ""} self${op.permanent && op.action !== "del" ? " permanent" : ""}`;
  }
}

/** Throws ERR_NETLINK (not a NetlinkError: nothing was sent) when `op` is malformed. */
export function checkOp(op: NlOp): void {
  const bad = (why: string) => new TwillError("ERR_NETLINK", `bad netlink op ${describeSafe(op)}: ${why}`);
  checkIfName(op.dev, `${op.kind} device`);
  if (op.kind === "route") {
    if (op.via && op.via.family !== op.dst.ip.family) throw bad("gateway and destination families differ");
  } else if (op.kind === "neigh") {
    if (op.action !== "del") {
      if (op.lladdr === undefined) throw bad("lladdr is required");
      parseMAC(op.lladdr, "neigh lladdr");
    }
  } else {
    macToBytes(op.mac); // any well-formed MAC: an FDB may hold 00:00:00:00:00:00 (the default entry)
  }
}

function describeSafe(op: NlOp): string {
  try {
    return describe(op);
  } catch {
    return JSON.stringify(op.kind);
  }
}

const NEW_FLAGS = { replace: NLM_F_CREATE | NLM_F_REPLACE, add: NLM_F_CREATE | NLM_F_EXCL, append: NLM_F_CREATE | NLM_F_APPEND } as const;

/** One request with NLM_F_ACK for `op` on the device with `ifindex`. */
export function encodeOp(op: NlOp, ifindex: number, seq: number): Buffer {
  const base = NLM_F_REQUEST | NLM_F_ACK;
  const del = op.action === "del";
  const flags = del ? base : base | NEW_FLAGS[op.action];
  switch (op.kind) {
    case "route": {
      const r = routeRequest({ dst: op.dst, oif: ifindex, ...(op.via ? { via: op.via } : {}), ...(op.onlink ? { onlink: true } : {}) }, del);
      return encodeMessage(del ? RTM_DELROUTE : RTM_NEWROUTE, flags, seq, r.header, r.attrs);
    }
    case "neigh": {
      const r = neighRequest(op.dst, ifindex, del ? undefined : op.lladdr!.toLowerCase());
      return encodeMessage(del ? RTM_DELNEIGH : RTM_NEWNEIGH, flags, seq, r.header, r.attrs);
    }
    case "fdb": {
      const r = fdbRequest(op.mac.toLowerCase(), ifindex, op.dst, !del && op.permanent === true);
      return encodeMessage(del ? RTM_DELNEIGH : RTM_NEWNEIGH, flags, seq, r.header, r.attrs);
    }
  }
}
