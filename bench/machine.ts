/**
 * The machine and software a run measured: CPU model, cores, memory,
 * kernel, tool versions, twill's git commit. Recorded in results.json and
 * printed at the top of the report, because numbers mean nothing without it.
 *
 * How it works: each fact is read with one command or file; a tool that is
 * missing or fails reads as "unknown" instead of failing the run.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, totalmem, release, hostname } from "node:os";

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly os: string;
  readonly hostname: string;
  readonly virtualization: string;
}

export interface Versions {
  readonly node: string;
  readonly clang: string;
  readonly iperf3: string;
  readonly sockperf: string;
  readonly iproute2: string;
  readonly bpftool: string;
  readonly strace: string;
  readonly twillCommit: string;
  /** True when the working tree had uncommitted changes. */
  readonly twillDirty: boolean;
}

function firstLine(cmd: string, args: string[], cwd?: string): string {
  try {
    const out = execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], cwd, timeout: 10000 });
    return out.trim().split("\n")[0]?.trim() || "unknown";
  } catch (e) {
    const out = String((e as { stdout?: string }).stdout ?? "") + String((e as { stderr?: string }).stderr ?? "");
    return out.trim().split("\n")[0]?.trim() || "unknown";
  }
}

function osName(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"));
    return m?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
}

export function machineInfo(): MachineInfo {
  const c = cpus();
  return {
    cpuModel: c[0]?.model.trim() ?? "unknown",
    cores: c.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    os: osName(),
    hostname: hostname(),
    virtualization: firstLine("systemd-detect-virt", []),
  };
}

export function versions(root: string): Versions {
  const status = firstLine("git", ["status", "--porcelain", "--untracked-files=no"], root);
  return {
    node: process.version,
    clang: firstLine("clang", ["--version"]),
    iperf3: firstLine("iperf3", ["--version"]),
    sockperf: firstLine("sockperf", ["--version"]),
    iproute2: firstLine("ip", ["-V"]),
    bpftool: firstLine("bpftool", ["version"]),
    strace: firstLine("strace", ["-V"]),
    twillCommit: firstLine("git", ["rev-parse", "HEAD"], root),
    twillDirty: status !== "unknown" && status !== "",
  };
}
