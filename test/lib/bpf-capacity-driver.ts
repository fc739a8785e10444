/**
 * Runs the bpf dataplane inside a network namespace for capacity.test.ts:
 *
 *   nsenter --net=/run/netns/NS node dist/test/lib/bpf-capacity-driver.js '<json>'
 *
 * How it works: sets the dataplane up on the namespace's eth0 as the daemon
 * does, with a peers map of `capacity` entries, then reconciles each list of
 * `rounds` (peer i = 10.<i/256>.<i%256>.0/24 via 100.64.x.y), printing one
 * JSON line per round: the outcome (ok, or the error's code, message and
 * the subnets it names) and what the pinned maps hold afterwards.
 */
import { BpfDataplane, dumpBpfState } from "../../src/dataplane/bpf.js";
import { PeerProgramError, type LocalNode, type Peer } from "../../src/dataplane/types.js";
import { errorCode, errorMessage } from "../../src/errors.js";
import { formatPrefix, parseIP, parsePrefix } from "../../src/net/ip.js";
import { nullLogger } from "../../src/log.js";
import { openPinnedMaps } from "../../src/bpf/loader.js";

interface Input { pinDir: string; objectPath: string; capacity: number; rounds: number[][] }

const hex = (n: number) => n.toString(16).padStart(2, "0");
const peer = (i: number): Peer => ({
  subnet: parsePrefix(`10.${i >> 8}.${i & 255}.0/24`), publicIP: parseIP(`100.64.${i >> 8}.${i & 255}`),
  vtepMAC: `0e:b0:00:00:${hex(i >> 8)}:${hex(i & 255)}`, vni: 1, direct: false,
});

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2]!) as Input;
  const dp = new BpfDataplane({ objectPath: input.objectPath, pinDir: input.pinDir, fastPath: false, encap: "bpf", attach: "auto", log: nullLogger, peerCapacity: input.capacity });
  const local: LocalNode = {
    vni: 1, port: 8472, bridge: "cni0",
    v4: { subnet: parsePrefix("10.255.255.0/24"), network: parsePrefix("10.0.0.0/8"), publicIP: parseIP("192.168.50.11"), iface: "eth0", device: "flannel.1", mtu: 1450, vtepMAC: "0e:74:77:00:00:01" },
  };
  await dp.setup(local);
  for (const round of input.rounds) {
    let outcome: object = { ok: true };
    try {
      await dp.reconcile(round.map(peer));
    } catch (e) {
      outcome = { ok: false, code: errorCode(e), message: errorMessage(e), named: e instanceof PeerProgramError ? e.peers.map((p) => formatPrefix(p.subnet)) : [] };
    }
    const vxlan = dumpBpfState(input.pinDir).peers.filter((e) => e.kind === "vxlan").map((e) => e.prefix);
    const maps = openPinnedMaps(input.pinDir);
    const remotes = maps.twill_remotes.count();
    for (const m of Object.values(maps)) m.close();
    process.stdout.write(JSON.stringify({ ...outcome, vxlan, remotes }) + "\n");
  }
  await dp.close();
}

main().then(() => process.exit(0), (e: unknown) => {
  process.stdout.write(JSON.stringify({ fatal: errorMessage(e) }) + "\n");
  process.exit(1);
});
