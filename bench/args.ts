/**
 * The benchmark's command line:
 *
 *   node dist/bench/main.js [--profile quick|full] [--hosts real|bare|both] [--modes a,b,...]
 *       [--reps N] [--seconds S] [--workloads tcp1,tcp4,latency,udp64] [--perf-profile|--no-perf-profile]
 *       [--peers 1000,10000] [--cp-reps N]
 *       [--no-dataplane] [--no-control-plane] [--publish|--no-publish] [--out DIR]
 *   node dist/bench/main.js --profile soak [--soak-minutes M] [--seed N] [--publish|--no-publish] [--out DIR]
 *   node dist/bench/main.js --report DIR     (re-render DIR/report.md and charts from DIR/results.json)
 *
 * How it works: argv is checked once here and turned into typed Options;
 * a bad flag or value throws an Error naming it (main prints it, exits 2).
 */
import type { HostProfileId } from "./hosts.js";
import { MODE_IDS, parseModes, type ModeId } from "./modes.js";
import { PROFILES, type Profile, type ProfileName } from "./profiles.js";
import { WORKLOAD_IDS, type WorkloadId } from "./workloads.js";

export interface Options {
  readonly profile: Profile;
  readonly modes: readonly ModeId[];
  readonly workloads: readonly WorkloadId[];
  readonly dataplane: boolean;
  readonly controlPlane: boolean;
  /** The controller part: idle node, start-up cells, the one-node etcd scenario and its soak. */
  readonly controller: boolean;
  /** Results root; a timestamped directory is made inside. */
  readonly out?: string;
  /** Only re-render the report of this results directory. */
  readonly report?: string;
  /** The soak profile's PRNG seed (faults and lease events); random when not given. */
  readonly seed?: number;
}

export const USAGE = `usage: node dist/bench/main.js [options]
  --profile quick|full|soak
                           quick: a first look (~4 min); full: the real run (~30 min). Default full.
                           soak: the chaos soak alone (bench/soak/): 4 nodes (bpf --fast-path, bpf, kernel,
                           a stock-flannel-style node) with leases in etcd under 200 lease events/s (bad
                           leases mixed in), pods pinging every pair every 10 ms, while controllers are
                           SIGKILLed and restarted, etcd restarted, flannel.1 and the tcx links deleted by
                           hand; reports pings lost, repair times, RSS over time, maps vs leases.
                           30 min by default (+ ~1 min set-up); not part of make test.
  --hosts real|bare|both   what the hosts carry: real = a Kubernetes node's iptables (flannel's rules and
                           kube-proxy's for 500 Services; the targets are measured here), bare = nothing
                           but the daemons' own rules, both = real then bare. Default: full both, quick real.
  --perf-profile / --no-perf-profile
                           perf record -a -g over one TCP sample of kernel-vxlan, twill-vxlan and
                           twill-vxlan-fast (top kernel symbols in the report). Default: full yes, quick no.
  --modes LIST             comma-separated, from: ${MODE_IDS.join(", ")} (default all; kernel-vxlan is always run)
  --reps N                 repetitions per workload and mode (>= 1; results want >= 5)
  --seconds S              seconds per sample (whole seconds)
  --workloads LIST         from: ${WORKLOAD_IDS.join(", ")} (default all)
  --peers LIST             control-plane peer counts, e.g. 1000,10000,50000 (at most 65534)
  --cp-reps N              timed control-plane runs per dataplane and peer count
  --no-dataplane           skip the traffic workloads
  --no-control-plane       skip programming peers
  --soak-minutes M         bpf's soak at 200 lease events/s on 10,000 peers (full 30, quick 1);
                           with --profile soak: the chaos soak's length (default 30)
  --seed N                 --profile soak: the seed of its fault schedule and lease events (default random,
                           printed and in the report; the same seed replays the same run)
  --idle-seconds S         each idle-node window: CPU/RSS, then processes under strace (full 60, quick 10)
  --no-controller          skip the controller part (idle node, start-up, scale, soak, /metrics scrape)
  --publish / --no-publish copy the report to bench/LATEST.md and bench/latest-*.svg after a complete run
                           into the default results directory (default: full yes, quick no); the soak
                           profile publishes to bench/LATEST-soak.md (default: yes when it runs >= 30 min)
  --out DIR                results root (default bench/results)
  --report DIR             only re-render DIR/report.md and its charts from DIR/results.json
`;

function intArg(flag: string, text: string | undefined, min: number, max: number): number {
  const n = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || n < min || n > max) {
    throw new Error(`Cannot use ${flag} ${text ?? "(missing)"}: want a whole number from ${min} to ${max}`);
  }
  return n;
}

export function parseArgs(argv: readonly string[]): Options | "help" {
  let profileName: ProfileName = "full";
  let modes: ModeId[] = [...MODE_IDS];
  let workloads: WorkloadId[] = [...WORKLOAD_IDS];
  const over: { reps?: number; seconds?: number; peers?: number[]; cpReps?: number; publish?: boolean; hosts?: HostProfileId[]; perfProfile?: boolean; soakSeconds?: number; idleSeconds?: number } = {};
  let dataplane = true;
  let controlPlane = true;
  let controller = true;
  let out: string | undefined;
  let report: string | undefined;
  let seed: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`Cannot use ${flag}: it needs a value`);
      return v;
    };
    switch (flag) {
      case "-h": case "--help": return "help";
      case "--profile": {
        const p = value();
        if (p !== "quick" && p !== "full" && p !== "soak") throw new Error(`Cannot use --profile ${p}: want quick, full or soak`);
        profileName = p;
        break;
      }
      case "--hosts": {
        const h = value();
        if (h !== "real" && h !== "bare" && h !== "both") throw new Error(`Cannot use --hosts ${h}: want real, bare or both`);
        over.hosts = h === "both" ? ["real", "bare"] : [h];
        break;
      }
      case "--perf-profile": over.perfProfile = true; break;
      case "--no-perf-profile": over.perfProfile = false; break;
      case "--modes": modes = parseModes(value()); break;
      case "--workloads": {
        const text = value();
        const ids = text.split(",").map((s) => s.trim()).filter(Boolean);
        const bad = ids.filter((w) => !(WORKLOAD_IDS as readonly string[]).includes(w));
        if (bad.length || ids.length === 0) throw new Error(`Cannot use --workloads ${text}: unknown ${bad.join(", ") || "(empty)"} (known: ${WORKLOAD_IDS.join(", ")})`);
        workloads = WORKLOAD_IDS.filter((w) => ids.includes(w));
        break;
      }
      case "--reps": over.reps = intArg(flag, value(), 1, 100); break;
      case "--seconds": over.seconds = intArg(flag, value(), 1, 60); break;
      case "--peers": {
        const text = value();
        over.peers = text.split(",").map((s) => intArg("--peers", s.trim(), 1, 65534));
        break;
      }
      case "--cp-reps": over.cpReps = intArg(flag, value(), 1, 100); break;
      case "--no-dataplane": dataplane = false; break;
      case "--no-control-plane": controlPlane = false; break;
      case "--no-controller": controller = false; break;
      case "--soak-minutes": over.soakSeconds = intArg(flag, value(), 1, 24 * 60) * 60; break;
      case "--seed": seed = intArg(flag, value(), 0, 2 ** 32 - 1); break;
      case "--idle-seconds": over.idleSeconds = intArg(flag, value(), 1, 3600); break;
      case "--publish": over.publish = true; break;
      case "--no-publish": over.publish = false; break;
      case "--out": out = value(); break;
      case "--report": report = value(); break;
      default: throw new Error(`Cannot use ${a}: unknown option (see --help)`);
    }
  }
  const base = PROFILES[profileName];
  const profile: Profile = {
    ...base,
    ...(over.reps !== undefined ? { reps: over.reps } : {}),
    ...(over.seconds !== undefined ? { seconds: over.seconds } : {}),
    ...(over.peers !== undefined ? { peers: over.peers } : {}),
    ...(over.cpReps !== undefined ? { cpReps: over.cpReps } : {}),
    ...(over.soakSeconds !== undefined ? { soakSeconds: over.soakSeconds } : {}),
    ...(over.idleSeconds !== undefined ? { idleSeconds: over.idleSeconds } : {}),
    ...(over.publish !== undefined ? { publish: over.publish } : profileName === "soak" ? { publish: (over.soakSeconds ?? base.soakSeconds) >= 1800 } : {}),
    ...(over.hosts !== undefined ? { hosts: over.hosts } : {}),
    ...(over.perfProfile !== undefined ? { perfProfile: over.perfProfile } : {}),
  };
  if (seed !== undefined && profileName !== "soak") throw new Error("Cannot use --seed: only the soak profile takes a seed");
  return {
    profile, modes, workloads, dataplane, controlPlane, controller,
    ...(out !== undefined ? { out } : {}), ...(report !== undefined ? { report } : {}), ...(seed !== undefined ? { seed } : {}),
  };
}
