/**
 * The two benchmark profiles: how many repetitions, how long each sample,
 * which host profiles the modes run on (hosts.ts), whether perf profiles
 * are taken, which peer counts the control-plane part programs.
 *
 * How it works: the wall time is dominated by
 *   modes × workloads × reps × (seconds + ~0.1 s of process start-up)
 * (a latency sample costs seconds + ~2.2 s: sockperf's own start-up),
 * plus ~10 s of testbed set-up and the control-plane runs — where the
 * kernel needs minutes for 50,000 peers (its route inserts grow
 * quadratically), so a (dataplane, N) group stops starting runs once it
 * has used cpGroupBudgetS; every extra host profile repeats the whole
 * dataplane part. `quick` (make bench-quick) is a first look on real-node
 * hosts in about 4 minutes; `full` (make bench) is what results should be
 * quoted from: real and bare hosts, perf profiles, in about 30 minutes on a
 * 2-core machine. `--reps`, `--seconds`, `--hosts`, `--perf-profile`,
 * `--peers` and `--cp-reps` override a profile.
 */
import type { HostProfileId } from "./hosts.js";

export type ProfileName = "quick" | "full";

export interface Profile {
  readonly name: ProfileName;
  /** Repetitions of every workload on every mode, interleaved. */
  readonly reps: number;
  /** Length of one throughput, packet-rate or latency sample, in whole seconds (iperf3 and sockperf take integers). */
  readonly seconds: number;
  /** Host profiles every mode runs on, in this order. */
  readonly hosts: readonly HostProfileId[];
  /** perf record over one TCP sample of the VXLAN modes (perfprofile.ts). */
  readonly perfProfile: boolean;
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
  quick: { name: "quick", reps: 3, seconds: 1, hosts: ["real"], perfProfile: false, peers: [1000, 10000], cpReps: 2, cpGroupBudgetS: 30, straceBreakdown: false, publish: false },
  full: { name: "full", reps: 7, seconds: 2, hosts: ["real", "bare"], perfProfile: true, peers: [1000, 10000, 50000], cpReps: 5, cpGroupBudgetS: 60, straceBreakdown: true, publish: true },
};
