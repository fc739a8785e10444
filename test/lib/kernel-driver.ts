/**
 * Drives the kernel dataplane (and the link helpers) from a JSON script, for
 * tests that run it inside a network namespace:
 *
 *   nsenter --net=/run/netns/NS node dist/test/lib/kernel-driver.js '<json>'
 *
 * (or "-" and the JSON on stdin, for inputs beyond the 128 KiB argv limit).
 *
 * How it works: the dataplane runs `ip` in its own network namespace, so the
 * test enters the namespace with nsenter and hands this script the steps as
 * JSON ({local, steps: [{op: "setup"}, {op: "upsert", peers}, ...]}). Text
 * addresses are parsed here with the same helpers the daemon uses. Each step's
 * outcome ({op, ok, value} or {op, ok: false, code, message}) and every line
 * the dataplane logged are printed as one JSON object; a failing step does not
 * stop the script, so a test can inspect the state after a failure.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { KernelDataplane } from "../../src/dataplane/kernel.js";
import { PeerProgramError, type LocalFamily, type LocalNode, type Peer } from "../../src/dataplane/types.js";
import { errorCode, errorMessage } from "../../src/errors.js";
import { formatIP, formatPrefix, parseIP, parsePrefix, type IP } from "../../src/net/ip.js";
import { bridgePorts, ensureAddress, ensureVxlan, findUnderlay, getLink, readSysctl, sysctl } from "../../src/net/link.js";

export interface PeerJSON {
  subnet: string;
  publicIP: string;
  vtepMAC: string;
  vni?: number;
  direct?: boolean;
}

export interface FamilyJSON {
  subnet: string;
  network: string;
  publicIP: string;
  iface: string;
  device: string;
  mtu: number;
  vtepMAC?: string;
}

export interface LocalJSON {
  vni: number;
  port: number;
  bridge: string;
  v4?: FamilyJSON;
  v6?: FamilyJSON;
}

export type Step =
  | { op: "setup" | "teardown" | "close" }
  | { op: "upsert" | "remove" | "reconcile"; peers: PeerJSON[] }
  | { op: "findUnderlay"; iface?: string[]; ifaceRegex?: string[]; canReach?: string; publicIP?: string }
  | { op: "ensureAddress"; dev: string; prefix: string }
  | { op: "sysctl"; key: string; value: string }
  | { op: "readSysctl"; key: string }
  | { op: "bridgePorts"; bridge: string }
  | { op: "getLink"; name: string }
  | { op: "ensureVxlan"; name: string; vni: number; port: number; external: boolean; localIP?: string; dev: string;
      mtu: number; mac?: string; arpOff: boolean; family: 4 | 6 }
  /** Runs a command (no shell) between steps, e.g. to break something by hand. */
  | { op: "exec"; argv: string[] };

export interface DriverInput {
  local?: LocalJSON;
  steps: Step[];
}

export interface StepResult {
  op: string;
  ok: boolean;
  ms: number;
  value?: unknown;
  code?: string;
  message?: string;
  /** A PeerProgramError's peers (their subnets): the ones that failed and were rolled back. */
  failedPeers?: string[];
}

export interface DriverOutput {
  logs: string[];
  results: StepResult[];
}

function family(f: FamilyJSON): LocalFamily {
  return {
    subnet: parsePrefix(f.subnet), network: parsePrefix(f.network), publicIP: parseIP(f.publicIP),
    iface: f.iface, device: f.device, mtu: f.mtu, ...(f.vtepMAC ? { vtepMAC: f.vtepMAC } : {}),
  };
}

function localNode(l: LocalJSON): LocalNode {
  return { vni: l.vni, port: l.port, bridge: l.bridge, ...(l.v4 ? { v4: family(l.v4) } : {}), ...(l.v6 ? { v6: family(l.v6) } : {}) };
}

function peer(p: PeerJSON, vni: number): Peer {
  return { subnet: parsePrefix(p.subnet), publicIP: parseIP(p.publicIP), vtepMAC: p.vtepMAC, vni: p.vni ?? vni, direct: p.direct ?? false };
}

/** JSON with IP values written as text. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v ?? null, (_k, x: unknown) => {
    if (x && typeof x === "object" && "family" in x && "bytes" in x) return formatIP(x as IP);
    return x;
  }));
}

async function main(): Promise<void> {
  const arg = process.argv[2] ?? "-";
  const input = JSON.parse(arg === "-" ? readFileSync(0, "utf8") : arg) as DriverInput;
  const logs: string[] = [];
  const dp = new KernelDataplane({ log: (m) => logs.push(m) });
  const vni = input.local?.vni ?? 1;
  const results: StepResult[] = [];
  for (const s of input.steps) {
    const t0 = performance.now();
    try {
      const value = await runStep(dp, input, s, vni, logs);
      results.push({ op: s.op, ok: true, ms: performance.now() - t0, value: plain(value) });
    } catch (e) {
      const failedPeers = e instanceof PeerProgramError ? e.peers.map((p) => formatPrefix(p.subnet)) : undefined;
      results.push({ op: s.op, ok: false, ms: performance.now() - t0, code: errorCode(e), message: errorMessage(e), ...(failedPeers && { failedPeers }) });
    }
  }
  process.stdout.write(JSON.stringify({ logs, results } satisfies DriverOutput) + "\n");
}

async function runStep(dp: KernelDataplane, input: DriverInput, s: Step, vni: number, logs: string[]): Promise<unknown> {
  switch (s.op) {
    case "setup":
      if (!input.local) throw new Error("setup needs `local`");
      return dp.setup(localNode(input.local));
    case "upsert":
      return dp.upsert(s.peers.map((p) => peer(p, vni)));
    case "remove":
      return dp.remove(s.peers.map((p) => peer(p, vni)));
    case "reconcile": {
      // The counts; the drift itself is checked where it matters (status.test.ts, drift.test.ts).
      const { added, updated, removed } = await dp.reconcile(s.peers.map((p) => peer(p, vni)));
      return { added, updated, removed };
    }
    case "close":
      return dp.close();
    case "teardown":
      return dp.teardown();
    case "findUnderlay":
      return findUnderlay({
        ...(s.iface ? { iface: s.iface } : {}),
        ...(s.ifaceRegex ? { ifaceRegex: s.ifaceRegex } : {}),
        ...(s.canReach ? { canReach: parseIP(s.canReach) } : {}),
        ...(s.publicIP ? { publicIP: parseIP(s.publicIP) } : {}),
      });
    case "ensureAddress":
      return ensureAddress(s.dev, s.prefix);
    case "sysctl":
      return sysctl(s.key, s.value);
    case "readSysctl":
      return readSysctl(s.key);
    case "bridgePorts":
      return bridgePorts(s.bridge);
    case "getLink":
      return getLink(s.name);
    case "ensureVxlan": {
      const { op: _op, localIP, ...rest } = s;
      return ensureVxlan({ ...rest, learning: false, ...(localIP ? { localIP: parseIP(localIP) } : {}) }, (m) => logs.push(m));
    }
    case "exec":
      return execFileSync(s.argv[0]!, s.argv.slice(1), { encoding: "utf8" });
  }
}

await main();
