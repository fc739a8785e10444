/**
 * Programs N peers into one dataplane, inside a network namespace, step by
 * step on command — the control-plane half of the benchmark:
 *
 *   nsenter --net=/run/netns/NS node dist/bench/cp-driver.js '<json>'
 *
 * How it works: the driver sets the dataplane up exactly as the daemon does
 * (KernelDataplane or BpfDataplane from src/, a vxlan device on the
 * namespace's eth0), prints {"phase":"ready","pid":…} and then waits for a
 * line "go" on stdin before each step, printing one JSON line after it:
 *   1. reconcile(all N peers) on the fresh node — what a daemon does when it
 *      starts in a cluster of N+1 nodes ("programmed", with its time);
 *   2. reconcile again with nothing to change — the steady-state cost of
 *      twill's periodic reconcile ("noop");
 *   3. if asked, upsert(all N peers) — the lease-event path, rewriting
 *      entries that exist already (the kernel's `replace` and a map batch
 *      update cost about the same either way) ("upsert");
 *   4. exit.
 * The pauses let controlplane.ts read memory and attach strace around
 * exactly step 1. Peers are 10.<i/256>.<i%256>.0/24 in 10.0.0.0/8 (past
 * 65,534 peers /26s, ours 10.255.255.192/26), each with
 * its own public IP (100.64.0.0/10) and VTEP MAC, all VXLAN. Our own subnet
 * is the last one, 10.255.255.0/24: never the network's first subnet, whose
 * .0 is the cluster route's onlink gateway (flannel does not hand it out
 * either: SubnetMin starts one subnet in).
 */
import { createInterface } from "node:readline";
import { KernelDataplane } from "../src/dataplane/kernel.js";
import { BpfDataplane } from "../src/dataplane/bpf.js";
import type { Dataplane, LocalNode, Peer } from "../src/dataplane/types.js";
import { parseIP, parsePrefix } from "../src/net/ip.js";
import { nullLogger } from "../src/log.js";

export interface DriverInput {
  readonly dataplane: "kernel" | "bpf";
  readonly peers: number;
  readonly pinDir: string;
  readonly objectPath: string;
  /** Run step 3 (upsert of all peers); without it step 3 only answers. */
  readonly upsert: boolean;
}

export const LOCAL = { subnet: "10.255.255.0/24", network: "10.0.0.0/8", publicIP: "192.168.50.11", iface: "eth0", device: "flannel.1" };
/** More peers than /24s fit: /26s, ours the last one. */
const WIDE_LOCAL_SUBNET = "10.255.255.192/26";
export const MAX_PEERS = 65534, MAX_WIDE_PEERS = 262142;

/** Peer i (from 1): its subnet (/24, or /26 when wide), public IP and VTEP MAC. */
export function peerAt(i: number, wide = false): { subnet: string; publicIP: string; vtepMAC: string } {
  const hex = (n: number): string => n.toString(16).padStart(2, "0");
  return {
    subnet: wide ? `10.${i >> 10}.${(i >> 2) & 255}.${(i & 3) * 64}/26` : `10.${i >> 8}.${i & 255}.0/24`,
    publicIP: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    vtepMAC: `0e:b0:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`,
  };
}

function emit(o: object): void {
  process.stdout.write(JSON.stringify(o) + "\n");
}

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2] ?? "{}") as DriverInput;
  if (input.peers > MAX_WIDE_PEERS) throw new Error(`Cannot program ${input.peers} peers: at most ${MAX_WIDE_PEERS} /26s fit in 10.0.0.0/8 besides ours`);
  const wide = input.peers > MAX_PEERS;
  // peerCapacity: the peers map's size, for dataplanes that take it (more than the object's 65,536 entries)
  const bpfOptions = { objectPath: input.objectPath, pinDir: input.pinDir, fastPath: false, encap: "bpf" as const, attach: "auto" as const, log: nullLogger, peerCapacity: input.peers + 1024 };
  const dp: Dataplane = input.dataplane === "kernel" ? new KernelDataplane({ log: () => {} }) : new BpfDataplane(bpfOptions);
  const local: LocalNode = {
    vni: 1, port: 8472, bridge: "cni0",
    v4: { subnet: parsePrefix(wide ? WIDE_LOCAL_SUBNET : LOCAL.subnet), network: parsePrefix(LOCAL.network), publicIP: parseIP(LOCAL.publicIP), iface: LOCAL.iface, device: LOCAL.device, mtu: 1450, vtepMAC: "0e:74:77:00:00:01" },
  };
  const peers: Peer[] = [];
  for (let i = 1; i <= input.peers; i++) {
    const p = peerAt(i, wide);
    // The MAC as a daemon holds it: a string read from a lease's JSON (one flat string), not the template's concatenation.
    const vtepMAC = (JSON.parse(`{"VtepMAC":"${p.vtepMAC}"}`) as { VtepMAC: string }).VtepMAC;
    peers.push({ subnet: parsePrefix(p.subnet), publicIP: parseIP(p.publicIP), vtepMAC, vni: 1, direct: false });
  }
  await dp.setup(local);
  await dp.reconcile([]);

  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const go = async (): Promise<boolean> => {
    const r = await lines.next();
    return !r.done && r.value.trim() === "go";
  };
  emit({ phase: "ready", pid: process.pid });
  if (!(await go())) return;
  let t0 = performance.now();
  const result = await dp.reconcile(peers);
  emit({ phase: "programmed", ms: performance.now() - t0, result });
  if (!(await go())) return;
  t0 = performance.now();
  const again = await dp.reconcile(peers);
  emit({ phase: "noop", ms: performance.now() - t0, result: again });
  if (!(await go())) return;
  if (input.upsert) {
    t0 = performance.now();
    await dp.upsert(peers);
    emit({ phase: "upsert", ms: performance.now() - t0 });
  } else emit({ phase: "upsert" });
  await go();
  await dp.close();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    emit({ phase: "error", message: e instanceof Error ? e.message : String(e) });
    process.exit(1);
  },
);
