/**
 * The scale scenario from the command line:
 *
 *   node dist/bench/scale/main.js [--peers N] [--events N] [--churn-seconds S] [--rate R]
 *                                 [--modes bpf,kernel] [--sample-every K] [--out FILE] [--markdown]
 *   node dist/bench/scale/main.js --render bench/results/scale-<timestamp>.json [--markdown]
 *
 * Prints the table (or, with --markdown, the report section) on stdout,
 * progress on stderr, and writes the full result with every sample to
 * bench/results/scale-<timestamp>.json (or --out). Needs root. Exit codes:
 * 0 every mode ran, 1 a mode failed or the dataplane ended up different
 * from etcd, 2 bad usage.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { ROOT } from "../../test/lib/twill.js";
import { parseScaleArgs, SCALE_USAGE, type ScaleCli } from "./args.js";
import { renderMarkdown, renderTable } from "./render.js";
import { checkScaleOptions, runScale } from "./scale.js";
import type { ScaleResult } from "./types.js";

const TOOLS = ["ip", "bridge", "nsenter", "curl", "bpftool", "etcd", "etcdctl"];

async function main(): Promise<number> {
  let cli: ScaleCli | "help";
  try {
    cli = parseScaleArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`scale: ${(e as Error).message}\n`);
    return 2;
  }
  if (cli === "help") {
    process.stdout.write(SCALE_USAGE);
    return 0;
  }
  if (cli.render !== undefined) {
    const saved = JSON.parse(readFileSync(cli.render, "utf8")) as ScaleResult;
    process.stdout.write(cli.markdown ? renderMarkdown(saved) : renderTable(saved));
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write("scale: needs root (network namespaces, BPF)\n");
    return 2;
  }
  const missing = TOOLS.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`], { stdio: "ignore" }).status !== 0);
  if (missing.length) {
    process.stderr.write(`scale: missing tools: ${missing.join(", ")} (make deps installs them)\n`);
    return 2;
  }
  try {
    checkScaleOptions(cli.options);
  } catch (e) {
    process.stderr.write(`scale: ${(e as Error).message}\n`);
    return 2;
  }
  const result = await runScale(cli.options);
  const file = cli.out ?? join(ROOT, "bench", "results", `scale-${result.startedAt.replace(/:/g, "-").replace(/\.\d+Z$/, "Z")}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(result, null, 1) + "\n");
  process.stdout.write(cli.markdown ? renderMarkdown(result) : renderTable(result));
  process.stderr.write(`scale: results in ${file}\n`);
  return result.modes.some((m) => m.error || m.finalMatchesEtcd === false) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`scale: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  },
);
