/**
 * Counting packets on a wire with tcpdump, to prove which path traffic took.
 *
 * How it works: tcpdump runs in the host's namespace with a capture filter
 * while `fn` makes traffic; it is stopped with SIGINT and its per-packet
 * lines are counted (-l for line buffering, -n for no DNS: nothing leaves
 * the namespace).
 */
import { spawnIn, spawnedOutput, stopProcess, sleep } from "./exec.js";

/** Runs tcpdump (`args` after -i IFACE -n -l -p) in `netns` while `fn` runs; returns its text output. */
export async function tcpdumpWhile(netns: string, iface: string, args: readonly string[], fn: () => Promise<unknown>): Promise<string> {
  const p = spawnIn(netns, "tcpdump", ["-i", iface, "-n", "-l", "-p", ...args]);
  // tcpdump says "listening on <iface>" once its capture is open (on a loaded machine that can take over a second).
  const t0 = Date.now();
  while (!/listening on/.test(spawnedOutput(p)) && p.exitCode === null && Date.now() - t0 < 10_000) await sleep(50);
  await sleep(100);
  try {
    await fn();
    await sleep(300);
  } finally {
    await stopProcess(p, { signal: "SIGINT", graceMs: 2000 });
  }
  return spawnedOutput(p);
}

export async function countPackets(netns: string, iface: string, filter: string, fn: () => Promise<unknown>): Promise<number> {
  const out = await tcpdumpWhile(netns, iface, ["-q", filter], fn);
  return out.split("\n").filter((l) => /^\d\d:\d\d:\d\d\.\d+ /.test(l)).length;
}
