/**
 * `twill bench --profile soak`: runs the chaos soak (run.ts), writes
 * bench/results/<timestamp>/{results.json, report.md, soak-rss.svg}, points
 * bench/results/latest at it, and with publish copies the report to
 * bench/LATEST-soak.md and its chart to bench/latest-soak-*.svg (only
 * those: the full benchmark's bench/LATEST.md and charts are left alone).
 * `renderSoakDir` re-renders a soak results directory (--report DIR).
 *
 * How it works: the results are written even when the soak failed (with
 * its `error`); only a soak that ran to its end into the default results
 * directory is published. Prints the PASS/MISSED lines and returns the
 * exit code: 0 when the soak ran to its end (whatever the verdicts say),
 * 1 when it failed.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pointLatest, timestampDir } from "../results.js";
import { renderSoak } from "./report.js";
import { runSoak } from "./run.js";
import type { SoakOptions, SoakResults } from "./types.js";

export type { SoakOptions, SoakResults } from "./types.js";

function writeDir(dir: string, r: SoakResults): ReturnType<typeof renderSoak> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "results.json"), JSON.stringify(r) + "\n");
  const rep = renderSoak(r);
  writeFileSync(join(dir, "report.md"), rep.markdown);
  for (const c of rep.charts) writeFileSync(join(dir, c.file), c.svg);
  return rep;
}

/** bench/LATEST-soak.md and bench/latest-soak-*.svg from one soak's report. */
function publishSoak(benchDir: string, rep: ReturnType<typeof renderSoak>): void {
  for (const f of readdirSync(benchDir)) if (/^latest-soak-.*\.svg$/.test(f)) rmSync(join(benchDir, f));
  let text = rep.markdown;
  for (const c of rep.charts) {
    writeFileSync(join(benchDir, `latest-${c.file}`), c.svg);
    text = text.split(`](${c.file})`).join(`](latest-${c.file})`);
  }
  writeFileSync(join(benchDir, "LATEST-soak.md"), text);
}

/** Whether DIR/results.json is a soak's. */
export function isSoakDir(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(join(dir, "results.json"), "utf8")) as { schema?: unknown }).schema === "soak-1";
  } catch {
    return false;
  }
}

export function renderSoakDir(dir: string): string {
  const r = JSON.parse(readFileSync(join(dir, "results.json"), "utf8")) as SoakResults;
  writeDir(dir, r);
  return join(dir, "report.md");
}

export async function runSoakProfile(o: SoakOptions, p: { root: string; out?: string; publish: boolean; commandLine: string }, log: (l: string) => void): Promise<number> {
  const resultsRoot = p.out ?? join(p.root, "bench", "results");
  const dir = timestampDir(resultsRoot, new Date());
  const r = await runSoak(o, p.commandLine, dir, log);
  const rep = writeDir(dir, r);
  pointLatest(resultsRoot, dir);
  const complete = !r.error && p.out === undefined;
  if (p.publish && complete) {
    publishSoak(join(p.root, "bench"), rep);
    log("published to bench/LATEST-soak.md");
  } else if (p.publish) log(`not published: ${r.error ? "the soak failed" : "--out was given"}`);
  process.stdout.write(`\ntwill chaos soak — ${Math.round(r.durationS ?? 0)} s — seed ${o.seed} — ${join(dir, "report.md")}\n\n`);
  for (const v of rep.verdicts) process.stdout.write(`  ${(v.ok ? "PASS" : "MISSED").padEnd(8)} ${v.what.padEnd(80)} ${v.measured}  (target ${v.target})\n`);
  if (r.error) process.stdout.write(`\n  FAILED: ${r.error.split("\n")[0]}\n`);
  return r.error ? 1 : 0;
}
