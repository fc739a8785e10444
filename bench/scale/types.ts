/**
 * The typed result of the scale scenario (bench/scale/scale.ts), as written
 * to bench/results/scale-<timestamp>.json and rendered by render.ts.
 * Times are milliseconds, memory is bytes; a phase that did not run (or
 * failed) is absent, and the mode's `error` says why.
 */
import type { KernelMemoryDelta } from "./memory.js";
import type { Sample } from "./driver.js";
import type { Percentiles } from "../stats.js";

export type ScaleMode = "bpf" | "kernel";
export const SCALE_MODES: readonly ScaleMode[] = ["bpf", "kernel"];

export interface ScaleOptions {
  /** Leases in etcd when the node starts (default 10,000). */
  readonly peers: number;
  /** New leases timed one after the other (default 1,000). */
  readonly events: number;
  /** Length of the churn phase (default 20 s) … */
  readonly churnSeconds: number;
  /** … at this many lease events per second (default 200), half puts, half deletes. */
  readonly rate: number;
  /** Default both, bpf first. */
  readonly modes?: readonly ScaleMode[];
  /** Time one churn event in this many (default 10). */
  readonly sampleEvery?: number;
  /** bpf: churn this long instead (the soak: 200 events/s for minutes; RSS sampled, maps compared with etcd at the end). */
  readonly soakSeconds?: number;
  /** Scrapes of /metrics in the scrape phase (0 or absent: no scrape phase). */
  readonly scrapes?: number;
  /** The daemon's --reconcile-period (default 10, the daemon's own default). */
  readonly reconcileSeconds?: number;
  /** Progress lines (default: stderr). */
  readonly log?: (line: string) => void;
}

export interface LatencyResult extends Percentiles {
  /** Median time until etcd acknowledged the write (part of every latency). */
  readonly etcdAckP50Ms: number;
  /** From the moment the driver's own etcd watch received the event (etcd committed it) to the dataplane: the node's part. */
  readonly fromEvent?: Percentiles;
}

export interface StartResult {
  /** Daemon spawned → /readyz answered "ready" (asked every 10 ms by readyprobe.ts). */
  readonly readyMs: number;
  /** Daemon spawned → its "ready" log line (ms resolution). */
  readonly readyLogMs?: number;
  /** Peers found programmed right after ready: bpf map entries of kind vxlan; kernel routes/neighbours/FDB on flannel.1. */
  readonly programmed: { readonly entries: number; readonly routes?: number; readonly neighbours?: number; readonly fdb?: number };
  /** Every count equals `peers`. */
  readonly complete: boolean;
}

export interface ChurnResult {
  readonly targetRate: number;
  readonly seconds: number;
  readonly sent: number;
  /** Events sent per second over the phase (the driver is open loop). */
  readonly achievedRate: number;
  /** Worst lateness of a send against its schedule. */
  readonly maxSendLagMs: number;
  readonly latency: LatencyResult;
  readonly puts?: Percentiles;
  readonly deletes?: Percentiles;
  /** Last event sent → every churned key in its final state in the dataplane. */
  readonly convergenceLagMs: number;
  /** Every criterion below holds. */
  readonly keepsUp: boolean;
  readonly criteria: {
    /** ≥ 95 % of the target rate was sent. */
    readonly rateSent: boolean;
    /** Convergence lag < 1 s. */
    readonly converged: boolean;
    /** The typical event waits in no queue: churn p50 ≤ 2 × the one-at-a-time p50 + 10 ms (when the events phase ran). */
    readonly noBacklog: boolean;
    /** p99 does not grow: p99 of the second half of the run ≤ 2 × p99 of the first half + 100 ms. */
    readonly p99Bounded: boolean;
    readonly firstHalfP99Ms: number;
    readonly secondHalfP99Ms: number;
  };
}

/** The /metrics scrape against the daemon's event loop (driver.ts scrapePhase). */
export interface ScrapeResult {
  /** /healthz round trips alone, and while /metrics was being scraped (ms). */
  readonly baseline: Percentiles;
  readonly during: Percentiles;
  /** Time of one scrape (ms), and its size (bytes). */
  readonly scrapes: Percentiles;
  readonly bytes: number;
  /** Peers the daemon held. */
  readonly peers: number;
  /** Longest /healthz round trip during the scrapes minus the median alone: how long the loop was blocked, at most. */
  readonly blockMs: number;
}

/** Read from the daemon's /metrics after churn. */
export interface DaemonStats {
  /** Full reconciles so far (the first one at start included) and their mean duration. */
  readonly reconciles: number;
  readonly reconcileMeanMs: number;
  readonly leaseEvents: number;
  readonly heapUsedBytes: number;
}

export interface MemoryResult {
  /**
   * Kernel memory per peer on the running node: Δ(slab active objects × object size) while
   * `addedPeers` new leases are added in bulk at the end, divided by them (VmallocUsed and
   * Percpu deltas are in addDelta: per-peer state is slab memory in both dataplanes, and
   * vmalloc moves by megabytes whenever anyone on the machine loads a BPF program).
   */
  readonly perPeerBytes?: number;
  readonly addedPeers?: number;
  readonly addDelta?: KernelMemoryDelta;
  /** Δ(Slab + VmallocUsed) of /proc/meminfo from before the daemon started to ready, per initial peer (includes the node's fixed cost). */
  readonly startPerPeerBytes: number;
  readonly startDelta: KernelMemoryDelta;
  /** bpf: bytes_memlock of twill_peers right after ready, its entries (peers + own subnet + cluster route), the quotient; and after the bulk add. */
  readonly peersMap?: {
    readonly bytesMemlock: number; readonly entries: number; readonly perEntryBytes: number; readonly maxEntries: number;
    readonly afterAdd?: { readonly bytesMemlock: number; readonly entries: number };
  };
}

export interface ModeResult {
  readonly mode: ScaleMode;
  readonly peers: number;
  readonly start?: StartResult;
  readonly events?: LatencyResult;
  readonly churn?: ChurnResult;
  /** The dataplane equals etcd (every subnet, VTEP MAC and public IP) after the last phase that ran. */
  readonly finalMatchesEtcd?: boolean;
  readonly finalMismatch?: readonly string[];
  readonly rss: {
    readonly afterProgrammedBytes?: number; readonly afterEventsBytes?: number; readonly afterChurnBytes?: number; readonly afterBulkAddBytes?: number;
    /** Every 5 s during churn (seconds since it began). */
    readonly churnSeries?: readonly { readonly atS: number; readonly bytes: number }[];
    /** The soak's reference: RSS 1 minute into churn (half-way for churns under 2 minutes). */
    readonly soakReferenceS?: number;
    readonly soakReferenceBytes?: number;
  };
  /** /metrics scraped at this mode's peer count, /healthz probed meanwhile. */
  readonly scrape?: ScrapeResult;
  readonly memory?: MemoryResult;
  readonly daemon?: DaemonStats;
  readonly loadavg: { readonly start: readonly number[]; readonly end: readonly number[] };
  readonly error?: string;
  readonly samples: { readonly events: readonly Sample[]; readonly churn: readonly Sample[] };
}

export interface ScaleResult {
  readonly schema: "twill-scale/1";
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly options: Omit<ScaleOptions, "log">;
  readonly machine: { readonly cpus: number; readonly kernel: string; readonly node: string };
  readonly modes: readonly ModeResult[];
  /** How each number was measured. */
  readonly method: readonly string[];
}
