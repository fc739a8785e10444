/**
 * Another git revision of twill (e.g. the released one), built in a
 * directory of the test, so a daemon of that version can run in a cluster.
 *
 * How it works:
 * 1) `git archive <rev>` of this repository is unpacked into `dir` (nothing
 *    in the work tree or the index is touched), and this tree's
 *    node_modules is symlinked into it.
 * 2) TypeScript: tsc compiles the revision's src/ with the revision's own
 *    tsconfig.json (a small tsconfig in `dir` extends it and narrows
 *    `include` to src/: the daemon needs nothing else, and the CPU is
 *    shared), into `dir`/dist, where the revision's bin/twill imports it.
 * 3) BPF: each bpf/*.c is compiled exactly as the revision's Makefile does,
 *    with the BPF_CFLAGS read from that Makefile (clang ... -c, then
 *    `bpftool gen object`), against this tree's build/bpf/vmlinux.h (the
 *    running kernel's, as the Makefile makes it; made if missing), into
 *    `dir`/build/bpf/twill.o — where the revision's cli.ts looks for its
 *    object when TWILL_BPF_OBJECT is unset.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./exec.js";
import { ROOT } from "./twill.js";

export interface RevisionBuild {
  rev: string;
  /** The unpacked tree. */
  dir: string;
  /** Its bin/twill: pass as NodeOptions.entry. */
  entry: string;
  /** Its BPF object (the default of its cli.ts). */
  object: string;
}

/** Why `rev` cannot be built here (no git, not a git checkout, commit absent), or undefined when it can. */
export async function revisionUnavailable(rev: string): Promise<string | undefined> {
  const git = await run("git", ["--version"], { allowFail: true }).catch(() => undefined);
  if (!git || git.code !== 0) return "git is not installed";
  const inside = await run("git", ["-C", ROOT, "rev-parse", "--git-dir"], { allowFail: true });
  if (inside.code !== 0) return `${ROOT} is not a git checkout (${inside.stderr.trim()})`;
  const has = await run("git", ["-C", ROOT, "cat-file", "-e", `${rev}^{commit}`], { allowFail: true });
  if (has.code !== 0) return `commit ${rev} is not in this clone (shallow clone?)`;
  return undefined;
}

/** The BPF_CFLAGS line of a Makefile, split into arguments. */
export function makefileBpfCflags(makefile: string): string[] {
  const m = /^BPF_CFLAGS\s*:?=\s*(.+)$/m.exec(makefile);
  if (!m) throw new Error("Cannot build the revision's BPF object: its Makefile has no BPF_CFLAGS line");
  return m[1]!.trim().split(/\s+/);
}

/** Unpacks and builds revision `rev` into `dir` (which must not exist or be empty). */
export async function buildRevision(rev: string, dir: string): Promise<RevisionBuild> {
  mkdirSync(dir, { recursive: true });
  const tar = `${dir}.tar`; // beside dir, named after it (so a sweep of its prefix takes it too)
  await run("git", ["-C", ROOT, "archive", "--format=tar", "-o", tar, rev]);
  try {
    await run("tar", ["-x", "-f", tar, "-C", dir]);
  } finally {
    rmSync(tar, { force: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");

  const tsconfig = join(dir, "tsconfig.twill-test.json");
  writeFileSync(tsconfig, JSON.stringify({ extends: "./tsconfig.json", include: ["src/**/*.ts"] }, null, 2));
  const tsc = await run(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", tsconfig],
    { allowFail: true, timeoutMs: 300_000 });
  const cli = join(dir, "dist", "src", "cli.js");
  if (!existsSync(cli)) throw new Error(`Cannot build revision ${rev}: tsc exited ${tsc.code} without ${cli}:\n${tsc.stdout}${tsc.stderr}`);

  const cflags = makefileBpfCflags(readFileSync(join(dir, "Makefile"), "utf8"));
  const out = join(dir, "build", "bpf");
  mkdirSync(out, { recursive: true });
  const vmlinux = join(ROOT, "build", "bpf", "vmlinux.h");
  if (existsSync(vmlinux)) copyFileSync(vmlinux, join(out, "vmlinux.h"));
  else {
    const btf = await run("bpftool", ["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"], { timeoutMs: 120_000 });
    writeFileSync(join(out, "vmlinux.h"), btf.stdout);
  }
  for (const c of readdirSync(join(dir, "bpf")).filter((f) => f.endsWith(".c"))) {
    const base = c.slice(0, -2);
    // the Makefile's recipe, run where it runs (its -I paths are relative)
    const tmp = join("build", "bpf", `${base}.tmp.o`);
    await runIn(dir, "clang", [...cflags, "-c", join("bpf", c), "-o", tmp]);
    await runIn(dir, "bpftool", ["gen", "object", join("build", "bpf", `${base}.o`), tmp]);
  }
  const object = join(out, "twill.o");
  if (!existsSync(object)) throw new Error(`Cannot build revision ${rev}: no ${object}`);
  return { rev, dir, entry: join(dir, "bin", "twill"), object };
}

/** `run` with a working directory (exec.run has none): through `env -C`. */
function runIn(cwd: string, cmd: string, args: string[]): Promise<unknown> {
  return run("env", ["-C", cwd, cmd, ...args], { timeoutMs: 180_000 });
}
