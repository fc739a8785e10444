/**
 * Counting packets on a wire with tcpdump, to prove which path traffic took.
 *
 * How it works: tcpdump runs in the host's namespace with a capture filter
 * while `fn` makes traffic; it is stopped with SIGINT and its per-packet
 * lines are counted (-l for line buffering, -n for no DNS: nothing leaves
 * the namespace).
 */
import { spawnIn, spawnedOutput, stopProcess, sleep } from "./exec.js";

export async function countPackets(netns: string, iface: string, filter: string, fn: () => Promise<unknown>): Promise<number> {
  const p = spawnIn(netns, "tcpdump", ["-i", iface, "-n", "-l", "-p", "-q", filter]);
  await sleep(400); // tcpdump needs a moment before it captures
  try {
    await fn();
    await sleep(200);
  } finally {
    await stopProcess(p, { signal: "SIGINT", graceMs: 2000 });
  }
  return spawnedOutput(p).split("\n").filter((l) => /^\d\d:\d\d:\d\d\.\d+ /.test(l)).length;
}
