/**
 * What a dataplane is: the one interface the controller programs, with two
 * implementations — `bpf` (maps read by tc programs, no per-peer kernel
 * state) and `kernel` (flannel's vxlan backend: neigh + FDB + route per peer).
 *
 * How it works: the controller turns leases into Peers (one per remote
 * subnet and family) and calls `upsert`/`remove` for events and `reconcile`
 * with the full desired set after every re-list (mark and sweep). Every call
 * is idempotent. Adds are applied in order and rolled back on failure;
 * removes are best effort.
 */
import { TwillError, type ErrorCode } from "../errors.js";
import type { IP, Prefix } from "../net/ip.js";
import type { DataplaneStats } from "../peerstats.js";
import type { Drift } from "./drift.js";
import type { Backend } from "../lease/types.js";

/** One remote subnet and how to reach it. */
export interface Peer {
  readonly subnet: Prefix;
  /** The peer's underlay (public) address, same family as its tunnel. */
  readonly publicIP: IP;
  /** The peer's VTEP MAC, lower-case "aa:bb:cc:dd:ee:ff". */
  readonly vtepMAC: string;
  readonly vni: number;
  /** Reach it without encapsulation (DirectRouting and same L2 segment). */
  readonly direct: boolean;
}

/** What the node itself is, per family. */
export interface LocalFamily {
  /** Our lease's subnet, e.g. 10.244.1.0/24. */
  readonly subnet: Prefix;
  /** The whole cluster network, e.g. 10.244.0.0/16. */
  readonly network: Prefix;
  /** Our underlay address. */
  readonly publicIP: IP;
  /** The underlay interface. */
  readonly iface: string;
  /** The vxlan device name: flannel.<VNI> (v4) or flannel-v6.<VNI> (v6). */
  readonly device: string;
  /** Device MTU (underlay MTU - overhead, or the configured MTU). */
  readonly mtu: number;
  /** The VTEP MAC to keep (restored from our existing lease), if any. */
  readonly vtepMAC?: string;
}

/**
 * host-gw on the bpf dataplane: the one device twill adds (a veth pair,
 * twill_host ⇄ twill_net, as Cilium's cilium_host): the cluster route points
 * at it and its tc egress program sends each packet to its peer.
 */
export const HOSTGW_DEVICE = "twill_host";
export const HOSTGW_PEER_DEVICE = "twill_net";

/** The device names of a backend: flannel's flannel.<VNI> / flannel-v6.<VNI>, or host-gw's hook device. */
export const deviceNames = (be: Backend): { v4: string; v6: string } =>
  be.type === "host-gw" ? { v4: HOSTGW_DEVICE, v6: HOSTGW_DEVICE } : { v4: `flannel.${be.vni}`, v6: `flannel-v6.${be.vni}` };

export interface LocalNode {
  /** flannel's backend: "vxlan" (the default) or "host-gw" (every peer direct, no VXLAN device). */
  readonly backend?: "vxlan" | "host-gw";
  /** Backend.Learning (kernel dataplane only): the vxlan device learns. */
  readonly learning?: boolean;
  readonly vni: number;
  readonly port: number;
  readonly v4?: LocalFamily;
  readonly v6?: LocalFamily;
  /** The bridge pods hang off (flannel's CNI: cni0). */
  readonly bridge: string;
  /** DirectRouting: peers on our L2 segment are reached without encapsulation. */
  readonly directRouting?: boolean;
}

export interface SyncResult {
  readonly added: number;
  readonly updated: number;
  readonly removed: number;
  /** What was found wrong and repaired (the same drift `twill status` shows). */
  readonly drift: readonly Drift[];
}

export interface DeviceInfo {
  readonly name: string;
  readonly ifindex: number;
  readonly mac: string;
}

export interface Dataplane {
  readonly kind: "bpf" | "kernel";
  /** Creates or adopts the devices (and programs); returns the VTEP of each family. */
  setup(local: LocalNode): Promise<{ v4?: DeviceInfo; v6?: DeviceInfo }>;
  /**
   * Adds or changes peers. A peer it could not program is named in a
   * PeerProgramError's `peers` (the daemon keeps it pending and retries it);
   * the kernel dataplane rolls back only that peer's entries, the rest stay.
   */
  upsert(peers: readonly Peer[]): Promise<void>;
  remove(peers: readonly Peer[]): Promise<void>;
  /**
   * Observes what is programmed, diffs it with `desired` (the same diff
   * `twill status` uses) and repairs it: adds missing, fixes changed, sweeps
   * stale. Peers it could not program are in a PeerProgramError's `peers`.
   */
  reconcile(desired: readonly Peer[], opts?: ReconcileOptions): Promise<SyncResult>;
  /** The drift a reconcile would repair now; writes nothing. */
  check(desired: readonly Peer[]): Promise<readonly Drift[]>;
  /** Stops background work; the dataplane stays programmed and forwarding. */
  close(): Promise<void>;
  /** Removes everything this dataplane created on the node. */
  teardown(): Promise<void>;
  /**
   * Per-peer counters and map occupancy, read now (for /metrics); absent
   * when the dataplane keeps no counters (kernel); undefined before setup().
   */
  stats?(): DataplaneStats | undefined | Promise<DataplaneStats | undefined>;
}

export interface ReconcileOptions {
  /**
   * Read everything back, even what the dataplane can tell is unchanged
   * since its last reconcile (the re-list every RELIST_EVERY periods and
   * SIGHUP ask for this): the one check that finds a value rewritten in
   * place by hand.
   */
  readonly full?: boolean;
}

/**
 * A failure to program some peers: `peers` are the ones that are not
 * programmed (the controller retries them at the next event or reconcile).
 */
export class PeerProgramError extends TwillError {
  constructor(code: ErrorCode, message: string, readonly peers: readonly Peer[], cause?: unknown) {
    super(code, message, { cause, retryable: true });
    this.name = "PeerProgramError";
  }
}
