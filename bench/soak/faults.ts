/**
 * The soak's faults: each one made by hand, the way an operator or a crash
 * would, then timed until the node is whole again and pings cross it.
 *
 *   sigkill       SIGKILL one twill controller (h1, h2 or h3), restart it
 *                 at once with the same flags (TwillCluster.start, which
 *                 returns once /readyz says ready)
 *   etcd-restart  stop etcd (SIGTERM), leave it down ETCD_DOWN_MS, start it
 *                 on the same data directory; then put a probe lease, which
 *                 every twill node must program (its watch works again)
 *   vxlan-delete  `ip link del flannel.1` on one twill node
 *   tc-detach     remove every pinned tcx link of one bpf node (h1 or h2) —
 *                 the pins are the links' only holders, so the programs come
 *                 off their devices at once (as test/integration/drift.test.ts
 *                 does)
 *
 * How it works: `inject` makes the fault and returns its record; `awaitRepair`
 * polls every POLL_MS until the node (every twill node for etcd) is whole
 * (nodestate.ts `problems` is empty; for etcd also the probe lease is
 * programmed everywhere) — that moment is `stateBackAt` — and then waits
 * for the first reply stamped after it on every pair of pods the fault
 * touches (the target's pairs; all pairs for etcd). `repairedAt` is the
 * later of the two; the repair time is repairedAt − injectedAt. A fault not
 * repaired within REPAIR_LIMIT_MS is recorded with the problems still seen.
 * Only vxlan-delete and tc-detach cut paths by nature (the target's pairs
 * lose pings until the next reconcile repairs them); a SIGKILL leaves the
 * dataplane forwarding and an etcd restart leaves every node as it was, so
 * those must cost no ping.
 */
import { rmSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { run, sleep } from "../lib/exec.js";
import { pinnedPeers, programmedPeers } from "../scale/state.js";
import type { SoakCluster, SoakNode } from "./cluster.js";
import { PROBE_SLOT, etcdKey, expectedPeer, probeLease, slotPrefix } from "./leases.js";
import { problems, type NodeBaseline } from "./nodestate.js";
import type { PingPair } from "./pings.js";
import { pick, type Rand } from "../lib/prng.js";

export const FAULT_KINDS = ["sigkill", "etcd-restart", "vxlan-delete", "tc-detach"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Whether a fault kind cuts the target's paths by nature (its pings may be lost until the repair). */
export const CUTS_PATHS: Readonly<Record<FaultKind, boolean>> = { sigkill: false, "etcd-restart": false, "vxlan-delete": true, "tc-detach": true };

export const FAULT_TITLES: Readonly<Record<FaultKind, string>> = {
  sigkill: "SIGKILL a twill controller, restart it",
  "etcd-restart": "restart etcd (same data dir)",
  "vxlan-delete": "ip link del flannel.1 on a twill node",
  "tc-detach": "remove twill's tcx links on a bpf node",
};

const POLL_MS = 200;
const ETCD_DOWN_MS = 5000;
export const REPAIR_LIMIT_MS = 120_000;

export interface FaultRecord {
  readonly k: number;
  readonly kind: FaultKind;
  /** A node name, or "etcd". */
  readonly target: string;
  readonly injectedAt: number;
  /** What was done, in words (e.g. the links removed). */
  detail: string;
  stateBackAt?: number;
  repairedAt?: number;
  repairMs?: number;
  /** When the checker stopped waiting on it (repaired, or given up). */
  endedAt?: number;
  /** The last problems seen before the state was back: what took longest. */
  lastProblems?: string[];
  /** Set when the fault was not repaired in time, or the harness could not make or undo it. */
  error?: string;
}

export interface FaultContext {
  readonly c: SoakCluster;
  readonly pairs: readonly PingPair[];
  readonly baselines: ReadonlyMap<string, NodeBaseline>;
  readonly real: ReadonlyMap<string, { prefix: string; signature: string }>;
  readonly log: (line: string) => void;
}

let probes = 0;

/** The node a fault of this kind hits: any twill node, or a bpf one for tc-detach; none for etcd. */
export function chooseTarget(rand: Rand, c: SoakCluster, kind: FaultKind): SoakNode | undefined {
  if (kind === "etcd-restart") return undefined;
  const pool = kind === "tc-detach" ? c.twillNodes.filter((s) => s.dataplane === "bpf") : c.twillNodes;
  return pick(rand, pool);
}

/** Makes the fault; returns once it is made (a SIGKILLed daemon is restarted and ready). */
export async function inject(x: FaultContext, k: number, kind: FaultKind, target: SoakNode | undefined): Promise<FaultRecord> {
  const rec: FaultRecord = { k, kind, target: target?.name ?? "etcd", injectedAt: Date.now(), detail: "" };
  try {
    switch (kind) {
      case "sigkill": {
        const s = target!;
        const pid = s.n.proc?.pid;
        await x.c.tc.stop(s.n, "SIGKILL");
        s.incarnation++;
        const t = Date.now();
        await x.c.tc.start(s.n);
        rec.detail = `pid ${pid} killed; restarted (pid ${s.n.proc?.pid}), ready after ${Date.now() - t} ms`;
        break;
      }
      case "etcd-restart": {
        await x.c.etcd.stop();
        await sleep(ETCD_DOWN_MS);
        const t = Date.now();
        await x.c.etcd.start();
        const k2 = ++probes;
        await x.c.etcd.etcdctl(["put", etcdKey(PROBE_SLOT), probeLease(k2)]);
        rec.detail = `down ${ETCD_DOWN_MS / 1000} s, healthy ${Date.now() - t} ms after start; probe lease #${k2} put`;
        break;
      }
      case "vxlan-delete": {
        await run("ip", ["link", "del", "flannel.1"], { netns: target!.n.host.netns });
        rec.detail = "flannel.1 deleted";
        break;
      }
      case "tc-detach": {
        const dir = join(target!.n.pinDir, "links");
        const names = readdirSync(dir);
        for (const name of names) rmSync(join(dir, name), { force: true });
        rec.detail = `unpinned ${names.join(", ")}`;
        break;
      }
    }
  } catch (e) {
    rec.error = `could not make the fault: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`;
  }
  return rec;
}

/** Whether every twill node has the probe lease programmed as etcd holds it. */
async function probeEverywhere(x: FaultContext): Promise<string[]> {
  const value = (await x.c.etcd.etcdctl(["get", "--print-value-only", etcdKey(PROBE_SLOT)])).stdout.trim();
  const want = expectedPeer(etcdKey(PROBE_SLOT), value, -1);
  if (!want) return ["the probe lease is not in etcd"];
  const out: string[] = [];
  for (const s of x.c.twillNodes) {
    const have = s.dataplane === "bpf" ? pinnedPeers(s.n.pinDir) : await programmedPeers(x.c.tc, s.n, "kernel");
    if (have.get(slotPrefix(PROBE_SLOT)) !== want.signature) out.push(`${s.name} has not programmed the probe lease`);
  }
  return out;
}

/** The pairs of pods a fault touches: the target's, or all for etcd. */
export function touchedPairs(pairs: readonly PingPair[], target: string): PingPair[] {
  return target === "etcd" ? [...pairs] : pairs.filter((p) => p.from.host.name === target || p.to.host.name === target);
}

/** Waits until the fault is repaired (see the file comment); fills stateBackAt, repairedAt, repairMs or error. */
export async function awaitRepair(x: FaultContext, rec: FaultRecord): Promise<void> {
  try {
    await waitRepair(x, rec);
  } finally {
    rec.endedAt = Date.now();
  }
}

async function waitRepair(x: FaultContext, rec: FaultRecord): Promise<void> {
  if (rec.error) return;
  const nodes = rec.target === "etcd" ? x.c.twillNodes : [x.c.node(rec.target)];
  let last: string[] = [];
  for (;;) {
    const seen: string[] = [];
    for (const s of nodes) {
      const p = await problems(x.c, s, x.baselines.get(s.name)!, x.real).catch((e: Error) => [`cannot check: ${e.message}`]);
      seen.push(...p.map((m) => `${s.name}: ${m}`));
    }
    if (seen.length === 0 && rec.kind === "etcd-restart") seen.push(...await probeEverywhere(x).catch((e: Error) => [`cannot check the probe: ${e.message}`]));
    if (seen.length === 0) break;
    last = seen;
    rec.lastProblems = seen.slice(0, 6);
    if (Date.now() - rec.injectedAt > REPAIR_LIMIT_MS) {
      rec.error = `not repaired within ${REPAIR_LIMIT_MS / 1000} s: ${last.slice(0, 6).join("; ")}`;
      return;
    }
    await sleep(POLL_MS);
  }
  rec.stateBackAt = Date.now();
  const pairs = touchedPairs(x.pairs, rec.target);
  const limit = sleep(Math.max(5000, REPAIR_LIMIT_MS - (Date.now() - rec.injectedAt))).then(() => undefined);
  const replies = await Promise.race([Promise.all(pairs.map((p) => p.replyAfter(rec.stateBackAt!))), limit]);
  if (!replies) {
    const silent = pairs.filter((p) => p.lastReplyAt <= rec.stateBackAt!).map((p) => p.name);
    rec.error = `state back after ${rec.stateBackAt - rec.injectedAt} ms, but no ping reply since on ${silent.join(", ")}`;
    return;
  }
  rec.repairedAt = Math.max(rec.stateBackAt, ...replies);
  rec.repairMs = rec.repairedAt - rec.injectedAt;
  if (rec.kind === "etcd-restart") await x.c.etcd.etcdctl(["del", etcdKey(PROBE_SLOT)]).catch(() => {});
}
