/**
 * Runs the traffic workloads on every testbed, interleaved.
 *
 * How it works: for each repetition, for each workload, every mode runs
 * once, back to back (A B C …, then the next workload), so whatever the
 * machine does meanwhile — a noisy neighbour, thermal drift — hits all
 * modes alike. The order of the modes rotates by one each repetition
 * (rep 1: A B C, rep 2: B C A, …) so no mode always runs first or right
 * after the same neighbour. Before each sample only the measured mode's
 * daemons are running (testbed.ts pauses the others), resumed 200 ms
 * earlier so the work their timers owe is done before traffic starts. A failed sample is
 * recorded with its error and left out of the statistics (the report
 * counts it), and that testbed's servers are restarted before its next one.
 * One call runs the testbeds of one host profile; every sample says which.
 * Right after a testbed's last sample, `afterLast` runs for it (the
 * conntrack snapshot), so every mode is looked at the same time after
 * the same sequence of samples.
 */
import { WORKLOADS, type WorkloadId } from "./workloads.js";
import type { HostProfileId } from "./hosts.js";
import type { ModeId } from "./modes.js";
import type { Testbed } from "./testbed.js";

export interface Sample {
  readonly workload: WorkloadId;
  readonly mode: ModeId;
  /** The host profile the testbed had (absent in schema-1 results: bare). */
  readonly hosts?: HostProfileId;
  /** Repetition, from 1. */
  readonly rep: number;
  /** Position of the mode within this repetition's order, from 1. */
  readonly slot: number;
  readonly startedAt: string;
  readonly ms: number;
  readonly metrics: Record<string, number>;
  readonly extra: Record<string, number | string>;
  readonly command: string;
  readonly error?: string;
}

export type Progress = (line: string) => void;

const SETTLE_MS = 200;

function rotate<T>(xs: readonly T[], by: number): T[] {
  const k = xs.length ? by % xs.length : 0;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

function brief(metrics: Record<string, number>): string {
  return Object.entries(metrics).map(([k, v]) => `${k.split(".")[1]}=${v >= 100 ? v.toFixed(0) : v.toPrecision(3)}`).join(" ");
}

export async function runDataplane(
  testbeds: readonly Testbed[], workloads: readonly WorkloadId[], reps: number, seconds: number, progress: Progress,
  afterLast?: (tb: Testbed) => Promise<void>,
): Promise<Sample[]> {
  const samples: Sample[] = [];
  let active: Testbed | undefined;
  for (const tb of testbeds) tb.pause();
  try {
    for (let rep = 1; rep <= reps; rep++) {
      const order = rotate(testbeds, rep - 1);
      for (const w of workloads) {
        for (const [i, tb] of order.entries()) {
          if (active !== tb) {
            active?.pause();
            tb.resume();
            active = tb;
            // a resumed daemon runs its overdue timers (reconcile) at once: let that pass first
            await new Promise((r) => setTimeout(r, SETTLE_MS));
          }
          const startedAt = new Date().toISOString();
          const t0 = performance.now();
          const base = { workload: w, mode: tb.mode.id, hosts: tb.hosts, rep, slot: i + 1, startedAt };
          try {
            const m = await WORKLOADS[w].run(tb.endpoints, seconds);
            samples.push({ ...base, ms: performance.now() - t0, ...m });
            progress(`${tb.hosts} rep ${rep}/${reps} ${w.padEnd(7)} ${tb.mode.id.padEnd(23)} ${brief(m.metrics)}`);
          } catch (e) {
            const error = e instanceof Error ? e.message : String(e);
            samples.push({ ...base, ms: performance.now() - t0, metrics: {}, extra: {}, command: "", error });
            progress(`${tb.hosts} rep ${rep}/${reps} ${w.padEnd(7)} ${tb.mode.id.padEnd(23)} FAILED: ${error.slice(0, 200)}`);
            await tb.recover().catch((r: unknown) => progress(`${tb.mode.id}: cannot restart its servers: ${String(r)}`));
          }
          if (afterLast && rep === reps && w === workloads[workloads.length - 1]) {
            await afterLast(tb).catch((e: unknown) => progress(`${tb.mode.id}: after its last sample: ${String(e)}`));
          }
        }
      }
    }
  } finally {
    for (const tb of testbeds) tb.resume();
  }
  return samples;
}
