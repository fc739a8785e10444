/**
 * What one soak run records (bench/results/<timestamp>/results.json with
 * "schema": "soak-1"): everything the report is rendered from, so
 * `--report DIR` can render it again. Derived figures (loss attribution,
 * summaries, verdicts) are computed from these by analysis.ts, never stored
 * twice.
 */
import type { MachineInfo, Versions } from "../machine.js";
import type { ChurnOutput } from "./churn-driver.js";
import type { NodeRole } from "./cluster.js";
import type { FaultRecord } from "./faults.js";
import type { FinalCheck } from "./final.js";
import type { PairResult } from "./pings.js";
import type { RssSample } from "./rss.js";

export interface SoakOptions {
  readonly seconds: number;
  readonly seed: number;
  /** Lease events per second. */
  readonly rate: number;
  readonly pingIntervalMs: number;
}

export interface SoakNodeFacts {
  readonly name: string;
  readonly role: NodeRole;
  readonly dataplane: "bpf" | "kernel";
  readonly underlayIP: string;
  readonly subnet: string;
  readonly podIP: string;
  readonly pinnedLinks: readonly string[];
}

export interface SoakResults {
  readonly schema: "soak-1";
  readonly commandLine: string;
  readonly startedAt: string;
  finishedAt?: string;
  durationS?: number;
  readonly prefix: string;
  readonly options: SoakOptions;
  readonly machine: MachineInfo;
  readonly versions: Versions;
  readonly loadavg: { before: string; after?: string };
  readonly reconcileSeconds: number;
  nodes: SoakNodeFacts[];
  /** Epoch ms when pings, churn and faults started (time 0 of the RSS series). */
  soakStartedAt?: number;
  soakEndedAt?: number;
  churn?: ChurnOutput;
  faults: FaultRecord[];
  pings: PairResult[];
  rss: RssSample[];
  final?: FinalCheck;
  /** Daemons that exited when no fault asked them to (restarted by the harness). */
  crashes: { node: string; atS: number; exit: string; logTail: string }[];
  readonly notes: string[];
  error?: string;
}
