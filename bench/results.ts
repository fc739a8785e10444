/**
 * What one benchmark run records, and where it goes.
 *
 * How it works: everything measured is kept in one RunResults object and
 * written as bench/results/<timestamp>/results.json — every raw sample with
 * its exact command, the machine, the versions, the testbeds' facts — next
 * to report.md and the SVG charts. bench/results/latest (ignored by git,
 * like the results directories) names the newest directory. A run with
 * `publish` (the full profile) also copies the report and charts to
 * bench/LATEST.md and bench/latest-*.svg, which are committed, so the
 * repository always shows the last full run. Schema 2 runs each mode on
 * one or two host profiles (hosts.ts): samples, testbeds and conntrack
 * snapshots say which; readResults turns a schema-1 file (bare hosts
 * only, before profiles existed) into schema 2 so old runs re-render.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ConntrackCounts } from "./conntrack.js";
import type { CpSample } from "./controlplane.js";
import type { Sample } from "./dataplane.js";
import type { HostProfileId } from "./hosts.js";
import type { MachineInfo, Versions } from "./machine.js";
import type { Mode, ModeId } from "./modes.js";
import type { PerfProfile } from "./perfprofile.js";
import type { Profile } from "./profiles.js";
import type { TestbedFacts } from "./testbed.js";
import type { WorkloadId } from "./workloads.js";

import type { ScaleResult } from "./scale/index.js";
import type { ControllerResults } from "./controller.js";

/** Conntrack entries on both hosts of one testbed, right after its last sample. */
export interface ConntrackSnapshot {
  readonly hosts: HostProfileId;
  readonly mode: ModeId;
  readonly takenAt: string;
  /** h1 (the client's host), then h2. */
  readonly perHost: readonly ConntrackCounts[];
}

export interface RunResults {
  readonly schema: 2;
  readonly commandLine: string;
  readonly startedAt: string;
  finishedAt?: string;
  durationS?: number;
  readonly profile: Profile;
  readonly modes: readonly ModeId[];
  /** The host profiles the modes ran on, in the order they ran. */
  readonly hostProfiles: readonly HostProfileId[];
  readonly workloads: readonly WorkloadId[];
  readonly machine: MachineInfo;
  readonly versions: Versions;
  readonly loadavg: { before: string; after?: string };
  /** The CPU both ends of the latency test were pinned to. */
  readonly latencyCpu: number;
  readonly modeDefinitions: Partial<Record<ModeId, Mode>>;
  readonly testbeds: Partial<Record<HostProfileId, Partial<Record<ModeId, TestbedFacts>>>>;
  samples: Sample[];
  conntrack: ConntrackSnapshot[];
  /** `perf record` over one TCP sample per profiled mode (perfprofile.ts), or why not. */
  perf: { profiles: PerfProfile[]; skipped?: string };
  controlPlane: { samples: CpSample[]; strace: boolean; perf: boolean; skipped?: string };
  /** The etcd scale scenario (bench/scale/) of runs before the controller part; newer runs have it in controller.scale. */
  scale?: ScaleResult;
  /** The controller part (controller.ts): idle node, start-up cells, the scale scenario with its soak. */
  controller?: ControllerResults;
  readonly notes: string[];
}

/** Reads DIR/results.json; a schema-1 run (before host profiles) reads as bare hosts only. */
export function readResults(dir: string): RunResults {
  const raw = JSON.parse(readFileSync(join(dir, "results.json"), "utf8")) as Record<string, unknown>;
  if (raw.schema === 2) return raw as unknown as RunResults;
  if (raw.schema !== 1) throw new Error(`Cannot read ${join(dir, "results.json")}: schema ${String(raw.schema)} is not 1 or 2`);
  return {
    ...(raw as unknown as RunResults), schema: 2, hostProfiles: ["bare"],
    testbeds: { bare: raw.testbeds as Partial<Record<ModeId, TestbedFacts>> },
    conntrack: [], perf: { profiles: [], skipped: "not in this (schema 1) run" },
  };
}

export function timestampDir(root: string, d = new Date()): string {
  const stamp = d.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
  return join(root, stamp);
}

export function writeJson(dir: string, r: RunResults): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "results.json"), JSON.stringify(r, null, 1) + "\n");
}

/** bench/results/latest: one line naming the newest results directory. */
export function pointLatest(resultsRoot: string, dir: string): void {
  writeFileSync(join(resultsRoot, "latest"), `${dir}\n`);
}

/**
 * Copies report.md and the charts of `dir` to bench/LATEST.md and
 * bench/latest-<chart>.svg (chart links rewritten), replacing older copies
 * — but not the charts another published report links (LATEST-soak.md's
 * latest-soak-*.svg): those are that report's.
 */
export function publish(benchDir: string, dir: string, report: string, charts: readonly string[]): void {
  const others = new Set<string>();
  for (const f of readdirSync(benchDir)) {
    if (!/^LATEST-.+\.md$/.test(f)) continue;
    for (const m of readFileSync(join(benchDir, f), "utf8").matchAll(/\]\((latest-[^)\s]+\.svg)\)/g)) others.add(m[1]!);
  }
  for (const f of readdirSync(benchDir)) if (/^latest-.*\.svg$/.test(f) && !others.has(f)) rmSync(join(benchDir, f));
  let text = report;
  for (const c of charts) {
    if (!existsSync(join(dir, c))) continue;
    copyFileSync(join(dir, c), join(benchDir, `latest-${c}`));
    text = text.split(`](${c})`).join(`](latest-${c})`);
  }
  writeFileSync(join(benchDir, "LATEST.md"), text);
}
