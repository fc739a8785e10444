/**
 * The two benchmark profiles: how many repetitions, how long each sample,
 * which peer counts the control-plane part programs.
 *
 * How it works: the wall time is dominated by
 *   modes × workloads × reps × (seconds + ~0.1 s of process start-up)
 * (a latency sample costs seconds + ~2.2 s: sockperf's own start-up),
 * plus ~10 s of testbed set-up and the control-plane runs — where the
 * kernel needs minutes for 50,000 peers (its route inserts grow
 * quadratically), so a (dataplane, N) group stops starting runs once it
 * has used cpGroupBudgetS. `quick` (make bench-quick) is a first look in
 * under 3 minutes; `full` (make bench) is what results should be quoted
 * from, in under 15 minutes on a 2-core machine. `--reps`, `--seconds`,
 * `--peers` and `--cp-reps` override a profile.
 */

export type ProfileName = "quick" | "full";

export interface Profile {
  readonly name: ProfileName;
  /** Repetitions of every workload on every mode, interleaved. */
  readonly reps: number;
  /** Length of one throughput, packet-rate or latency sample, in whole seconds (iperf3 and sockperf take integers). */
  readonly seconds: number;
  /** Peer counts programmed by the control-plane part. */
  readonly peers: readonly number[];
  /** Timed repetitions per dataplane and peer count (plus one run under strace up to 10,000 peers). */
  readonly cpReps: number;
  /** Seconds one (dataplane, peer count) group may use before it starts no further run. */
  readonly cpGroupBudgetS: number;
  /** One extra run per dataplane and peer count under strace, for the per-syscall breakdown. */
  readonly straceBreakdown: boolean;
  /** Copy the report to bench/LATEST.md and bench/latest-*.svg (the committed copy). */
  readonly publish: boolean;
}

export const PROFILES: Readonly<Record<ProfileName, Profile>> = {
  quick: { name: "quick", reps: 3, seconds: 1, peers: [1000, 10000], cpReps: 2, cpGroupBudgetS: 30, straceBreakdown: false, publish: false },
  full: { name: "full", reps: 7, seconds: 2, peers: [1000, 10000, 50000], cpReps: 5, cpGroupBudgetS: 60, straceBreakdown: true, publish: true },
};
