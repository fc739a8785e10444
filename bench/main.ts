/**
 * twill's benchmark: kernel VXLAN (flannel) vs twill's eBPF dataplane, side
 * by side on this machine, with the underlay as the reference.
 *
 *   node dist/bench/main.js [--profile quick|full] [--hosts real|bare|both] [--modes ...] [--reps N] ...
 *   (make bench = full, make bench-quick = quick; see args.ts for all options)
 *
 * How it works:
 * 1) For each host profile (hosts.ts: real nodes, then bare hosts), build
 *    one testbed per mode (testbed.ts): namespaced 2-host clusters with
 *    real daemons on identical leases, plus the underlay reference, every
 *    host carrying the profile's iptables rules (checked before measuring).
 * 2) Run the traffic workloads interleaved across modes (dataplane.ts);
 *    right after each mode's last sample, count conntrack entries on both
 *    hosts (conntrack.ts). With --perf-profile, on the first host profile,
 *    perf-record one TCP sample of the VXLAN modes (perfprofile.ts). Tear
 *    that profile's testbeds down before the next profile's are built.
 * 3) Program 1,000 … 50,000 peers into each dataplane in bare namespaces
 *    (controlplane.ts; 100,000 into bpf only).
 * 4) The controller's targets (controller.ts): an idle node per lease
 *    source, start-to-ready by peer count and source, then one node facing
 *    10,000 peers in etcd (scale/): lease events, the soak, a /metrics scrape.
 * 5) Write bench/results/<timestamp>/{results.json, report.md, *.svg},
 *    point bench/results/latest at it, and after a complete full-profile
 *    run (every mode, both parts, default results directory) copy the
 *    report to bench/LATEST.md and bench/latest-*.svg (results.ts, report.ts).
 * Everything is created under one random per-run prefix ("bq" + 4 hex;
 * testbeds add a host-profile letter and a mode letter) and removed at the end, on failure and on Ctrl-C (test/lib's cleanup
 * handlers sweep every namespace, process, pin and directory it made).
 * `--profile soak` runs only the chaos soak (bench/soak/index.ts), with
 * its own results directory, report and bench/LATEST-soak.md.
 * Exit codes: 0 done (whatever the targets say), 1 the run failed, 2 bad
 * usage or missing tools.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomPrefix, sweepPrefix, sweepPrefixSync } from "./lib/cluster.js";
import { onCleanup } from "./lib/exec.js";
import { parseArgs, USAGE, type Options } from "./args.js";
import { runControlPlane } from "./controlplane.js";
import { perfCountsSyscalls } from "./cpmeasure.js";
import { conntrackCounts } from "./conntrack.js";
import { runDataplane } from "./dataplane.js";
import { cpuCount, loadAverage } from "./cpu.js";
import { machineInfo, versions } from "./machine.js";
import { HOST_PROFILES, type HostProfileId } from "./hosts.js";
import { MODES, type ModeId } from "./modes.js";
import { runPerfProfiles } from "./perfprofile.js";
import { writeReport as writeBaseReport } from "./report.js";
import { renderMarkdown as renderScale, renderTable as scaleTable } from "./scale/index.js";
import { controllerTargets, renderController, runController } from "./controller.js";
import { pointLatest, publish, readResults, timestampDir, writeJson, type RunResults } from "./results.js";
import { evaluateTargets } from "./targets.js";
import { buildTestbed, type Testbed, type TestbedFacts } from "./testbed.js";
import { isSoakDir, renderSoakDir, runSoakProfile } from "./soak/index.js";
import { randomSeed } from "./lib/prng.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MODE_LETTERS = "klmnopqrs";
const HOST_LETTERS: Readonly<Record<HostProfileId, string>> = { real: "r", bare: "b" };
/** Seconds of the TCP sample perf records (a 1-second sample is too few samples). */
const PERF_SECONDS = 4;

function has(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function usageError(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

function preflight(o: Options): { strace: boolean; perf: boolean } {
  if (process.getuid?.() !== 0) usageError("needs root (network namespaces, BPF)");
  const need = ["ip", "nsenter", "taskset", "ss", "bpftool", ...(o.controller ? ["curl", "etcd", "etcdctl", "strace"] : []), ...(o.dataplane ? ["iperf3", "sockperf", "ethtool", "iptables-restore", "iptables-save"] : [])];
  const missing = need.filter((t) => !has(t));
  if (missing.length) usageError(`missing tools: ${missing.join(", ")} (make deps installs them)`);
  return { strace: has("strace"), perf: has("perf") && perfCountsSyscalls() };
}

/** The report: the A/B workloads and control plane, then the controller's targets and scenarios. */
function writeReport(r: RunResults): ReturnType<typeof writeBaseReport> {
  const base = writeBaseReport(r);
  const scale = r.controller?.scale ?? r.scale;
  const parts = [base.markdown, renderController(r), scale ? renderScale(scale, "###") : ""];
  return { ...base, markdown: parts.filter(Boolean).join("\n") + "\n" };
}

/** The chaos soak alone (--profile soak). */
async function soak(opts: Options): Promise<number> {
  if (process.getuid?.() !== 0) usageError("needs root (network namespaces, BPF)");
  const missing = ["ip", "nsenter", "bpftool", "curl", "etcd", "etcdctl", "ping", "bridge"].filter((t) => !has(t));
  if (missing.length) usageError(`missing tools: ${missing.join(", ")} (make deps installs them)`);
  const t0 = performance.now();
  const log = (line: string): void => {
    process.stderr.write(`[soak ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${line}\n`);
  };
  const seed = opts.seed ?? randomSeed();
  return runSoakProfile({ seconds: opts.profile.soakSeconds, seed, rate: 200, pingIntervalMs: 10 }, {
    root: ROOT, publish: opts.profile.publish, commandLine: ["node", "dist/bench/main.js", ...process.argv.slice(2)].join(" "),
    ...(opts.out !== undefined ? { out: opts.out } : {}),
  }, log);
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    const parsed = parseArgs(process.argv.slice(2));
    if (parsed === "help") {
      process.stdout.write(USAGE);
      return 0;
    }
    opts = parsed;
  } catch (e) {
    usageError((e as Error).message);
  }
  if (opts.report !== undefined && isSoakDir(opts.report)) {
    process.stdout.write(`${renderSoakDir(opts.report)}\n`);
    return 0;
  }
  if (opts.report !== undefined) {
    const r = readResults(opts.report);
    const { markdown, charts } = writeReport(r);
    writeFileSync(join(opts.report, "report.md"), markdown);
    for (const c of charts) writeFileSync(join(opts.report, c.file), c.svg);
    process.stdout.write(`${join(opts.report, "report.md")}\n`);
    return 0;
  }
  if (opts.profile.name === "soak") return soak(opts);
  const { strace, perf } = preflight(opts);
  const started = new Date();
  const t0 = performance.now();
  const log = (line: string): void => {
    process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${line}\n`);
  };
  const runPrefix = randomPrefix("bq");
  const cpPrefix = `${runPrefix}c`;
  onCleanup(() => sweepPrefixSync(cpPrefix));
  const resultsRoot = opts.out ?? join(ROOT, "bench", "results");
  const dir = timestampDir(resultsRoot, started);
  const latencyCpu = cpuCount() - 1;
  const modes: ModeId[] = [...opts.modes];
  const results: RunResults = {
    schema: 2,
    commandLine: ["node", "dist/bench/main.js", ...process.argv.slice(2)].join(" "),
    startedAt: started.toISOString(),
    profile: opts.profile,
    modes,
    hostProfiles: opts.dataplane ? [...opts.profile.hosts] : [],
    workloads: opts.dataplane ? opts.workloads : [],
    machine: machineInfo(),
    versions: versions(ROOT),
    loadavg: { before: loadAverage() },
    latencyCpu,
    modeDefinitions: Object.fromEntries(modes.map((m) => [m, MODES[m]])),
    testbeds: {},
    samples: [],
    conntrack: [],
    perf: { profiles: [] },
    controlPlane: { samples: [], strace, perf },
    notes: [],
  };
  if (!strace) results.notes.push("strace is not installed: no per-syscall breakdown (apt-get install strace).");
  if (!perf) results.notes.push("perf cannot count the raw_syscalls tracepoint here: syscall totals come from the strace runs only (up to 10,000 peers).");
  const perfProfile = opts.dataplane && opts.profile.perfProfile;
  if (!opts.dataplane) results.perf.skipped = "--no-dataplane";
  else if (!opts.profile.perfProfile) results.perf.skipped = "not asked for (--perf-profile; on by default in the full profile)";
  else if (!has("perf")) results.perf.skipped = "perf is not installed (linux-perf)";
  const what = opts.dataplane
    ? `${opts.profile.reps} reps × ${opts.profile.seconds} s of ${opts.workloads.join(", ")} on ${modes.join(", ")}; hosts ${opts.profile.hosts.join(" then ")}${opts.profile.perfProfile ? "; perf profiles" : ""}`
    : "no traffic workloads";
  const cp = opts.controlPlane ? `control plane ${opts.profile.peers.join("/")} peers` : "no control plane";
  log(`run ${runPrefix}: profile ${opts.profile.name}, ${what}; ${cp}; results in ${dir}`);

  const testbeds: Testbed[] = [];
  let failed = false;
  let incomplete = false;
  try {
    if (opts.dataplane) {
      const failedIn = new Map<ModeId, HostProfileId[]>();
      for (const [k, hosts] of opts.profile.hosts.entries()) {
        const title = HOST_PROFILES[hosts].title.toLowerCase();
        const beds: Partial<Record<ModeId, TestbedFacts>> = {};
        results.testbeds[hosts] = beds;
        for (const [i, id] of opts.modes.entries()) {
          const t = performance.now();
          try {
            const tb = await buildTestbed(MODES[id], hosts, `${runPrefix}${HOST_LETTERS[hosts]}${MODE_LETTERS[i]}`, latencyCpu);
            testbeds.push(tb);
            beds[id] = tb.facts;
            const rules = tb.facts.hosts.rules[0];
            log(`testbed ${id} (${title}) ready in ${((performance.now() - t) / 1000).toFixed(1)} s: ${tb.facts.path.route}${tb.facts.path.peerKind ? ` (BPF peer: ${tb.facts.path.peerKind})` : ""}; iptables rules per host: filter ${rules?.filter}, nat ${rules?.nat}`);
            for (const w of tb.facts.path.warnings) log(`testbed ${id}: WARNING ${w}`);
          } catch (e) {
            const msg = e instanceof Error ? e.message : String(e);
            if (id === "kernel-vxlan") throw new Error(`cannot build the baseline testbed kernel-vxlan (${title}): ${msg}`);
            results.notes.push(`Mode ${id} could not be set up on ${title} and was not measured there: ${msg.split("\n")[0]}`);
            failedIn.set(id, [...(failedIn.get(id) ?? []), hosts]);
            log(`testbed ${id} (${title}) FAILED: ${msg}`);
          }
        }
        const snapshot = async (tb: Testbed): Promise<void> => {
          const perHost = await Promise.all(tb.hostNetns.map((n) => conntrackCounts(n)));
          results.conntrack.push({ hosts, mode: tb.mode.id, takenAt: new Date().toISOString(), perHost });
        };
        results.samples.push(...await runDataplane(testbeds, opts.workloads, opts.profile.reps, opts.profile.seconds, log, snapshot));
        if (perfProfile && k === 0 && !results.perf.skipped) {
          results.perf.profiles = await runPerfProfiles(testbeds, hosts, PERF_SECONDS, join(dir, "perf"), log);
        }
        log(`tearing the ${title} testbeds down`);
        for (const tb of testbeds.splice(0)) await tb.destroy();
      }
      // a mode that could be built on no host profile is not in the run
      for (const [id, where] of failedIn) if (where.length === opts.profile.hosts.length) modes.splice(modes.indexOf(id), 1);
      incomplete = failedIn.size > 0;
    }
    if (opts.controlPlane) {
      results.controlPlane.samples = await runControlPlane({
        prefix: cpPrefix,
        driver: join(ROOT, "dist", "bench", "cp-driver.js"),
        objectPath: process.env.TWILL_BPF_OBJECT ?? join(ROOT, "build", "bpf", "twill.o"),
        workDir: join(dir, "syscalls"),
        peers: opts.profile.peers,
        bpfOnlyPeers: opts.profile.cpBpfOnlyPeers,
        reps: opts.profile.cpReps,
        strace: strace && (opts.profile.straceBreakdown || !perf),
        perf,
        groupBudgetS: opts.profile.cpGroupBudgetS,
      }, log);
    } else results.controlPlane.skipped = "--no-control-plane";
    if (opts.controller) {
      results.controller = await runController(opts.profile, join(dir, "controller"), log);
      if (results.controller.scale) process.stdout.write(scaleTable(results.controller.scale) + "\n");
    } else results.notes.push("The controller part did not run (--no-controller).");
  } catch (e) {
    failed = true;
    const msg = e instanceof Error ? e.message : String(e);
    results.notes.push(`The run failed and is incomplete: ${msg.split("\n")[0]}`);
    log(`FAILED: ${msg}`);
  } finally {
    for (const tb of testbeds.splice(0)) await tb.destroy().catch(() => {});
    await sweepPrefix(cpPrefix).catch(() => {});
  }

  results.loadavg.after = loadAverage();
  results.finishedAt = new Date().toISOString();
  results.durationS = (performance.now() - t0) / 1000;
  mkdirSync(dir, { recursive: true });
  writeJson(dir, results);
  const { markdown, charts } = writeReport(results);
  writeFileSync(join(dir, "report.md"), markdown);
  for (const c of charts) writeFileSync(join(dir, c.file), c.svg);
  pointLatest(resultsRoot, dir);
  // Only a complete run into the default results directory replaces the committed copy.
  const complete = !failed && !incomplete && opts.dataplane && opts.controlPlane && opts.controller && opts.out === undefined && modes.length === opts.modes.length;
  if (opts.profile.publish && complete) {
    publish(join(ROOT, "bench"), dir, markdown, charts.map((c) => c.file));
    log("published to bench/LATEST.md");
  }

  const targets = evaluateTargets(results);
  process.stdout.write(`\ntwill benchmark (${opts.profile.name}) — ${Math.round(results.durationS)} s — ${join(dir, "report.md")}\n\n`);
  for (const t of targets) {
    const m = t.measured === undefined ? "–" : t.op === "==" ? t.measured.toFixed(3) : `${t.measured.toFixed(2)}×`;
    const want = `${t.op === "<=" ? "≤" : t.op === ">=" ? "≥" : "="} ${t.bound}${t.op === "==" ? "" : "×"}`;
    const reps = t.perRep && t.op !== "==" ? `  per rep ${t.perRep.min.toFixed(2)}/${t.perRep.median.toFixed(2)}/${t.perRep.max.toFixed(2)}` : "";
    process.stdout.write(`  ${t.verdict.padEnd(12)} ${t.target.padEnd(72)} ${m.padStart(8)}  (target ${want})${reps}${t.withinNoise ? "  within noise" : ""}\n`);
  }
  for (const t of controllerTargets(results)) {
    if (t.bound === "reported") continue;
    process.stdout.write(`  ${t.verdict.padEnd(12)} ${t.target.padEnd(72)} ${t.measured.padStart(8)}  (target ${t.bound})\n`);
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
