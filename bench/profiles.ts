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
 * `--peers`, `--cp-reps`, `--soak-minutes` and `--idle-seconds` override a
 * profile. The controller part (idle node, start-up cells, the one-node etcd
 * scenario with its soak) adds ~3 min to quick and ~45 min to full, 30 of
 * them the soak.
 * `soak` is not a size of the above but a scenario of its own: the chaos
 * soak of bench/soak/ (a 4-node cluster under lease churn and faults,
 * 30 minutes by default, `--soak-minutes` and `--seed` override); of this
 * table it uses only soakSeconds and publish (published by default only
 * when it runs for 30 minutes or more).
 */
import type { HostProfileId } from "./hosts.js";

export type ProfileName = "quick" | "full" | "soak";

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
  /** Peer counts programmed into the bpf dataplane only (control plane). */
  readonly cpBpfOnlyPeers: readonly number[];
  /** Controller targets: the idle node's windows (seconds each) and its peers. */
  readonly idleSeconds: number;
  readonly idlePeers: number;
  /** The one-node etcd scenario (scale/): peers, one-at-a-time events, the kernel's churn seconds, /metrics scrapes. */
  readonly scalePeers: number;
  readonly scaleEvents: number;
  readonly churnSeconds: number;
  readonly scrapes: number;
  /** bpf's churn in that scenario: the soak at 200 lease events/s. */
  readonly soakSeconds: number;
  /** Start-to-ready cells: peer counts, where lease events are timed during reconciles, how many, the kernel's largest cell. */
  readonly startupPeers: readonly number[];
  readonly startupEventsAt: number;
  readonly startupEvents: number;
  readonly kernelMaxPeers: number;
  /** The largest Kubernetes cell (real-sized nodes in the fake API). */
  readonly kubeMaxPeers: number;
  /** Copy the report to bench/LATEST.md and bench/latest-*.svg (the committed copy). */
  readonly publish: boolean;
}

export const PROFILES: Readonly<Record<ProfileName, Profile>> = {
  quick: {
    name: "quick", reps: 3, seconds: 1, hosts: ["real"], perfProfile: false, peers: [1000, 10000], cpReps: 2, cpGroupBudgetS: 30, straceBreakdown: false, publish: false,
    cpBpfOnlyPeers: [20000], idleSeconds: 10, idlePeers: 100, scalePeers: 2000, scaleEvents: 200, churnSeconds: 5, scrapes: 5, soakSeconds: 60,
    startupPeers: [0, 2000], startupEventsAt: 2000, startupEvents: 100, kernelMaxPeers: 2000, kubeMaxPeers: 2000,
  },
  full: {
    name: "full", reps: 7, seconds: 2, hosts: ["real", "bare"], perfProfile: true, peers: [1000, 10000, 50000], cpReps: 5, cpGroupBudgetS: 60, straceBreakdown: true, publish: true,
    cpBpfOnlyPeers: [100000], idleSeconds: 60, idlePeers: 100, scalePeers: 10000, scaleEvents: 1000, churnSeconds: 20, scrapes: 20, soakSeconds: 1800,
    startupPeers: [0, 10000, 100000], startupEventsAt: 10000, startupEvents: 1000, kernelMaxPeers: 10000, kubeMaxPeers: 10000,
  },
  soak: {
    name: "soak", reps: 0, seconds: 0, hosts: [], perfProfile: false, peers: [], cpReps: 0, cpGroupBudgetS: 0, straceBreakdown: false, publish: true,
    cpBpfOnlyPeers: [], idleSeconds: 0, idlePeers: 0, scalePeers: 0, scaleEvents: 0, churnSeconds: 0, scrapes: 0, soakSeconds: 1800,
    startupPeers: [], startupEventsAt: 0, startupEvents: 0, kernelMaxPeers: 0, kubeMaxPeers: 0,
  },
};
