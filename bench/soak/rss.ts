/**
 * RSS of every twill daemon every 5 s for the whole soak, and what it says.
 *
 * How it works: as bench/scale/run-mode.ts, VmRSS from /proc/<pid>/status of
 * the daemon's node process (started through nsenter, which execs in place:
 * bench/scale/memory.ts daemonPid). Each sample carries the node's
 * incarnation (1, then +1 per SIGKILL restart), so a restart is visible
 * and never read as a drop or a leak. `rssVerdict` compares, per node,
 * the sample 1 minute into an incarnation with that incarnation's last
 * sample — on the longest-lived incarnation, which for a node never
 * restarted is "1 minute into the run" vs "the end" (the controller
 * scenario's rule: within 10 %, either way). `minuteMarks` gives the table.
 */
import { daemonPid, rssBytes } from "../scale/memory.js";
import type { SoakNode } from "./cluster.js";

export const RSS_PERIOD_MS = 5000;
export const RSS_BOUND = 0.1;

export interface RssSample { readonly node: string; readonly atS: number; readonly bytes: number; readonly incarnation: number }

export interface RssVerdict {
  readonly node: string;
  readonly incarnation: number;
  readonly refS: number;
  readonly refBytes: number;
  readonly endS: number;
  readonly endBytes: number;
  /** end / ref */
  readonly growth: number;
  readonly restarts: number;
  readonly ok: boolean;
}

export function sampleRss(nodes: readonly SoakNode[], t0: number): { samples: RssSample[]; stop(): void } {
  const samples: RssSample[] = [];
  const tick = (): void => {
    const atS = Math.round((Date.now() - t0) / 1000);
    for (const s of nodes) {
      const pid = s.n.proc?.pid;
      if (pid === undefined || s.n.proc?.exitCode !== null) continue;
      try {
        samples.push({ node: s.name, atS, bytes: rssBytes(daemonPid(pid)), incarnation: s.incarnation });
      } catch {
        /* restarting right now: the next tick has it */
      }
    }
  };
  tick();
  const timer = setInterval(tick, RSS_PERIOD_MS);
  return { samples, stop: () => { clearInterval(timer); tick(); } };
}

/** Per node: 1 minute into its longest incarnation vs that incarnation's last sample. */
export function rssVerdicts(samples: readonly RssSample[], nodes: readonly string[]): RssVerdict[] {
  const out: RssVerdict[] = [];
  for (const node of nodes) {
    const mine = samples.filter((x) => x.node === node);
    const incs = [...new Set(mine.map((x) => x.incarnation))];
    let best: RssSample[] = [];
    for (const i of incs) {
      const run = mine.filter((x) => x.incarnation === i);
      if (run.length && (best.length === 0 || run[run.length - 1]!.atS - run[0]!.atS > best[best.length - 1]!.atS - best[0]!.atS)) best = run;
    }
    if (best.length === 0) continue;
    const first = best[0]!, last = best[best.length - 1]!;
    const span = last.atS - first.atS;
    const ref = best.find((x) => x.atS - first.atS >= (span >= 120 ? 60 : span / 2)) ?? last;
    const growth = last.bytes / ref.bytes;
    out.push({
      node, incarnation: first.incarnation, refS: ref.atS, refBytes: ref.bytes, endS: last.atS, endBytes: last.bytes,
      growth, restarts: incs.length - 1, ok: Math.abs(growth - 1) <= RSS_BOUND,
    });
  }
  return out;
}

/** The sample nearest each whole minute (and the last), per node: rows for the report. */
export function minuteMarks(samples: readonly RssSample[], nodes: readonly string[]): { atS: number; bytes: (RssSample | undefined)[] }[] {
  const end = Math.max(0, ...samples.map((x) => x.atS));
  const marks: number[] = [];
  for (let m = 0; m * 60 <= end; m++) marks.push(m * 60);
  if (marks[marks.length - 1] !== end) marks.push(end);
  return marks.map((atS) => ({
    atS,
    bytes: nodes.map((node) => {
      let best: RssSample | undefined;
      for (const x of samples) if (x.node === node && (!best || Math.abs(x.atS - atS) < Math.abs(best.atS - atS))) best = x;
      return best;
    }),
  }));
}
