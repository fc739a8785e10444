/**
 * The scale scenario of `make bench`: one twill node facing N peers in
 * etcd, bpf dataplane and then kernel dataplane (flannel's), each on a
 * fresh cluster and a fresh etcd so nothing leaks from one to the other.
 *
 *   runScale({ peers: 10000, events: 1000, churnSeconds: 20, rate: 200 })
 *
 * Measures per mode (run-mode.ts): start → all peers programmed; the
 * latency of one new lease to the dataplane (p50/p99/max over `events`
 * events, one at a time); churn at `rate` events/s for `churnSeconds`
 * (sampled latency, convergence lag after the last event, keeps up or
 * not); the controller's RSS; kernel memory and map memory per peer.
 * `method` in the result says exactly how each number is measured.
 * Everything runs under per-run prefixes ("sc" + 4 hex) and is removed at
 * the end, on failure and on Ctrl-C (bench/lib's cleanup handlers).
 */
import { cpus, release } from "node:os";
import { makePlan, OWN_GAP } from "./leases.js";
import { KEEPS_UP, runMode } from "./run-mode.js";
import { SCALE_MODES, type ModeResult, type ScaleOptions, type ScaleResult } from "./types.js";
import { POLL_MS } from "./probe.js";

export const DEFAULT_SCALE: ScaleOptions = { peers: 10_000, events: 1_000, churnSeconds: 20, rate: 200 };

export function methodNotes(o: ScaleOptions): string[] {
  const every = o.sampleEvery ?? 10;
  return [
    `Leases: flannel's etcd keys and JSON (Network 10.0.0.0/8, SubnetLen 24), written with the etcd3 client; a real etcd in the router namespace, ` +
      `the node in its own namespace reaching it over the underlay. ${OWN_GAP} free subnets are left after the initial peers for the node's own lease.`,
    `Start → programmed: daemon spawned (nsenter … bin/twill --etcd-endpoints …, node's flags from its #! line) until /readyz says ready (asked every 10 ms by one probe process in the node's namespace, readyprobe.ts; ` +
      `the daemon is ready after its first full sync); then the programmed entries are counted (bpf: twill_peers entries of kind vxlan; ` +
      `kernel: routes, permanent neighbours and FDB entries on flannel.1) and must equal the peers.`,
    `Lease → dataplane: a driver inside the node's namespace puts one new lease (etcd3 client) and times it from just before the put until ` +
      `the dataplane shows it — bpf: lookup of the exact LPM key in the pinned map from a worker thread, sleeping ${POLL_MS} ms between rounds (one round every ~0.2 ms here), ` +
      `counted when the entry found is kind vxlan with the lease's public IP; kernel: the route's line from \`ip -o monitor route\` ` +
      `(event-driven; flannel adds the route last). ${o.events} events, each after the previous one is in the dataplane.`,
    `Churn: open loop, one event every ${(1000 / o.rate).toFixed(1)} ms for ${o.churnSeconds} s${o.soakSeconds !== undefined ? ` (bpf: ${o.soakSeconds} s, the soak)` : ""} ` +
      `(puts of leases that are not there alternating with deletes of ones that are, round a ring of keys, so the peer count stays put); one event in ${every} timed as above, alternately a put and a delete. Convergence lag: last event sent → every churned ` +
      `key in its final state. Keeps up: ≥ ${KEEPS_UP.minRateFraction * 100} % of the target rate sent, convergence lag < ` +
      `${KEEPS_UP.maxConvergenceLagMs} ms, no backlog (churn p50 ≤ ${KEEPS_UP.p50Factor} × the one-at-a-time p50 + ${KEEPS_UP.p50SlackMs} ms) and a ` +
      `bounded p99 (second half's p99 ≤ ${KEEPS_UP.p99Factor} × the first half's + ${KEEPS_UP.p99SlackMs} ms). Afterwards the whole dataplane is compared with etcd (subnet, VTEP MAC, public IP of every peer).`,
    `RSS: VmRSS of the daemon's node process (/proc/<pid>/status) right after ready, after the events, after churn, after the bulk add. ` +
      `From the daemon's /metrics after churn: full reconciles (every ${o.reconcileSeconds ?? 10} s, the daemon's default period) and their mean ` +
      `duration — lease events wait behind a running reconcile — and the V8 heap in use.`,
    `Kernel memory per peer: at the end, min(peers, 10,000) new leases are added in bulk (one etcd transaction per 5,000) to the running node; ` +
      `Δ(active objects × object size over all caches of /proc/slabinfo), read with the node idle for 2 s before and after they are all ` +
      `programmed (waiting without starting node processes), divided by them. Per-peer state is slab memory in both dataplanes (LPM trie ` +
      `nodes; fib entries, neighbours, FDB entries); VmallocUsed and Percpu deltas are reported beside it, not added, because they move by ` +
      `megabytes whenever anything on the machine loads a BPF program. Machine-wide, so other activity is noise. The JSON also has ` +
      `Δ(Slab + VmallocUsed) from just before the daemon started to ready per initial peer, which includes the node's fixed cost ` +
      `(device, programs, preallocated maps). Map B/entry (bpf): bytes_memlock of the pinned twill_peers map (bpftool; the kernel's own ` +
      `accounting of the map) divided by its entries (peers + own subnet + cluster route), right after ready.`,
  ];
}

/** The options with defaults filled in; throws a sentence naming the value when they cannot be run. */
export function checkScaleOptions(opts: Partial<ScaleOptions> = {}): ScaleOptions {
  const o: ScaleOptions = { ...DEFAULT_SCALE, ...opts };
  if (!(o.rate > 0) || !(o.churnSeconds >= 0) || !(o.events >= 0)) {
    throw new Error(`Cannot run scale with rate ${o.rate}, churnSeconds ${o.churnSeconds}, events ${o.events}: want rate > 0, the others ≥ 0`);
  }
  makePlan({ peers: o.peers, events: o.events, churnEvents: Math.round(o.rate * o.churnSeconds) }); // throws on numbers that do not fit
  return o;
}

/** Runs every mode, one after the other; a failed mode is recorded and the next still runs. */
export async function runScale(opts: Partial<ScaleOptions> = {}): Promise<ScaleResult> {
  const o = checkScaleOptions(opts);
  const log = o.log ?? ((l: string) => process.stderr.write(l + "\n"));
  const startedAt = new Date().toISOString();
  const modes: ModeResult[] = [];
  for (const mode of o.modes ?? SCALE_MODES) modes.push(await runMode(mode, o, log));
  const { log: _drop, ...options } = o;
  return {
    schema: "twill-scale/1", startedAt, finishedAt: new Date().toISOString(), options,
    machine: { cpus: cpus().length, kernel: release(), node: process.version },
    modes, method: methodNotes(o),
  };
}
