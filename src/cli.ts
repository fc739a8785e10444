/**
 * twill's command line.
 *
 *   twill [flags]            run the node daemon (flanneld's flags + twill's)
 *   twill teardown [flags]   remove everything twill created on this node
 *   twill maps [flags]       dump the node's BPF maps (peers, endpoints, counters); --json for JSON
 *   twill status [flags]     the node's lease, its peers with their counters, and drift
 *                            between the leases and the maps/kernel; --json for JSON
 *
 * How it works: flags (and FLANNELD_* variables) are parsed once by
 * config/flags.ts into typed Options; this file only maps them to the
 * daemon's options and handles signals and exit codes. Exit codes: 0 on a
 * clean stop, 1 on a runtime failure (lease lost, dataplane setup failed),
 * 2 on bad flags. `twill status` exits like diff(1): 0 when the dataplane
 * matches the leases, 1 when it found drift, 2 when it cannot tell (bad
 * flags, no dataplane on this node, unreadable leases).
 */
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { readFileSync } from "node:fs";
import { parseFlags, usage, type Options } from "./config/flags.js";
import { createLogger } from "./log.js";
import { Daemon, describeError } from "./daemon.js";
import { onLibbpfLog } from "./bpf/libbpf.js";
import { dumpBpfState, teardownBpf } from "./dataplane/bpf.js";
import { deleteLink, listLinks } from "./net/link.js";
import { isTwillError } from "./errors.js";
import { removeRules } from "./net/masq.js";
import { removeNftables } from "./net/nft.js";
import { HOSTGW_DEVICE } from "./dataplane/types.js";
import { openSource } from "./lease/open.js";
import { formatMaps, formatStatus, nodeStatus } from "./status.js";
import { bpfUnavailable, chooseDataplane, type DataplaneChoice } from "./dataplane/choose.js";
import { isOnBpffs } from "./bpf/pindir.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const OBJECT_PATH = process.env.TWILL_BPF_OBJECT ?? join(root, "build", "bpf", "twill.o");
export const VERSION: string = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;

/** The flags given, as `--name` words: what openSource looks for, whatever syntax was typed (-etcd-endpoints=..., --etcd-endpoints x). */
const givenArgv = (o: Options): string[] => o.flagsGiven.map((n) => `--${n}`);

function fail(e: unknown, code: number): never {
  process.stderr.write(`twill: ${describeError(e)}\n`);
  process.exit(code);
}

async function run(o: Options): Promise<void> {
  const log = createLogger(o.logLevel, { node: o.nodeName });
  onLibbpfLog((level, line) => (level === 0 ? log.warn(line, { source: "libbpf" }) : log.debug(line, { source: "libbpf" })));
  for (const w of o.warnings) log.warn(w);
  let choice: DataplaneChoice;
  try {
    choice = chooseDataplane(o.dataplane, o.bpfPinDir);
  } catch (e) {
    log.error("start failed", { err: e });
    fail(e, 1);
  }
  if (choice.reason) log.warn("running the kernel dataplane (flannel's routes, neighbours and FDB entries)", { dataplane: "kernel", reason: choice.reason });
  const daemon = new Daemon({
    source: await openSource(o, log, givenArgv(o)),
    markReady: o.setNodeNetworkUnavailable,
    dataplane: choice.kind,
    dataplaneReason: choice.reason,
    objectPath: OBJECT_PATH,
    pinDir: o.bpfPinDir,
    fastPath: o.fastPath,
    encap: o.encap,
    bpfAttach: o.bpfAttach,
    peerCapacity: o.peerCapacity,
    iface: o.iface,
    ifaceRegex: o.ifaceRegex,
    ...(o.ifaceCanReach ? { ifaceCanReach: o.ifaceCanReach } : {}),
    publicIP: o.publicIP,
    publicIPv6: o.publicIPv6,
    subnetFile: o.subnetFile,
    ipMasq: o.ipMasq,
    ipMasqFullyRandomDisable: o.ipMasqFullyRandomDisable,
    iptablesForwardRules: o.iptablesForwardRules,
    ipBlackholeRoute: o.ipBlackholeRoute,
    iptablesResyncSeconds: o.iptablesResync,
    healthzIP: o.healthzIP,
    healthzPort: o.healthzPort,
    reconcileSeconds: o.reconcilePeriod,
    bridge: o.bridge,
    teardownOnExit: o.teardown,
    version: VERSION,
    allowLinkLocalPublicIP: o.allowLinkLocalPublicIP,
  }, log);
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => void daemon.shutdown(sig));
  // SIGHUP: re-list the leases and reconcile now (what the periodic safety net does).
  process.on("SIGHUP", () => void daemon.resyncNow());
  // A signal during start: shutdown() stops the daemon (done resolves) whether or not the start has returned.
  const failed = await Promise.race([
    daemon.start().then(() => undefined, (e: unknown) => e ?? new Error("start failed")),
    daemon.done.then(() => undefined),
  ]);
  // What failed on the way out after a signal is not a failed start.
  if (failed !== undefined && !daemon.stopRequested) {
    log.error("start failed", { err: failed });
    await daemon.stop().catch(() => {});
    fail(failed, 1);
  }
  const lost = await daemon.done;
  if (lost) fail(lost, 1);
  process.exit(0);
}

/**
 * Removes what twill created — its pins, tcx links and tc filters (only
 * twill's: bpf/teardown.ts), devices and chains; the subnet file and the
 * lease stay (as with flannel). --bpf-pin-dir must be on a bpffs, else
 * nothing is removed and the error names the flag; `--dataplane kernel`
 * skips the BPF part (a node that never ran bpf has no pins).
 */
async function teardown(o: Options): Promise<void> {
  const log = createLogger(o.logLevel, { node: o.nodeName });
  // --dataplane auto with no bpffs under the pin dir: there can be no pins there to remove (and nothing under it is touched).
  if (o.dataplane === "bpf" || (o.dataplane === "auto" && isOnBpffs(o.bpfPinDir))) await teardownBpf(o.bpfPinDir, undefined, log);
  else if (o.dataplane === "auto") log.info("--bpf-pin-dir is not on a bpffs: no BPF pins or links to remove", { pinDir: o.bpfPinDir });
  // The devices are flannel's names for vxlan devices: flannel.<VNI>, flannel-v6.<VNI>.
  // (and host-gw's hook veth on bpf, twill_host: its peer twill_net goes with it)
  const names = (await listLinks()).filter((l) => (l.kind === "vxlan" && /^flannel(-v6)?\.\d+$/.test(l.name)) || (l.kind === "veth" && l.name === HOSTGW_DEVICE)).map((l) => l.name);
  for (const n of names) await deleteLink(n);
  for (const f of [4, 6] as const) await removeRules(f);
  await removeNftables();
  log.info("teardown done", { removed: names, pinDir: o.bpfPinDir });
}

const COMMANDS = `
Commands:
  (none)      run the node daemon
  teardown    remove the devices, BPF links, tc filters and pins twill created and flannel's
              iptables chains of this node (another tool's pins and filters stay); the BPF part
              needs --bpf-pin-dir on a bpffs (--dataplane bpf: an error without one; auto: skipped)
  maps        the node's BPF maps as tables (--json: as JSON); needs --bpf-pin-dir
  status      this node's lease, each peer (subnet, public IP, VTEP MAC, path, packets and bytes)
              and any drift between the leases and the maps (bpf) or kernel tables (kernel);
              --json for JSON. Give it the daemon's flags (--lease-dir, --subnet-file,
              --bpf-pin-dir, --iface) and run it in the node's network namespace.
              Exit status: 0 no drift, 1 drift found, 2 cannot tell (see the message).
`;

/** `twill status`: exits 0 (no drift), 1 (drift) or 2 (cannot tell). */
async function status(o: Options): Promise<never> {
  let s;
  try {
    s = await nodeStatus({
      source: await openSource(o, createLogger("error"), givenArgv(o)),
      subnetFile: o.subnetFile,
      pinDir: o.bpfPinDir,
      underlay: { iface: o.iface, ifaceRegex: o.ifaceRegex, ...(o.ifaceCanReach ? { canReach: o.ifaceCanReach } : {}), publicIP: o.publicIP, publicIPv6: o.publicIPv6 },
      dataplane: o.dataplane,
      dataplaneReason: o.dataplane === "kernel" ? "" : bpfUnavailable(o.bpfPinDir),
      allowLinkLocalPublicIP: o.allowLinkLocalPublicIP,
    });
  } catch (e) {
    fail(e, 2);
  }
  process.stdout.write(o.json ? JSON.stringify(s, null, 2) + "\n" : formatStatus(s));
  process.exit(s.drift.length ? 1 : 0);
}

export async function main(argv: string[]): Promise<void> {
  if (argv[0] === "bench") {
    // The A/B benchmark (bench/main.ts) takes its own flags: twill bench [--profile quick|full] [--modes ...] [--reps N]
    const { spawnSync } = await import("node:child_process");
    const r = spawnSync(process.execPath, [join(root, "dist", "bench", "main.js"), ...argv.slice(1)], { stdio: "inherit" });
    process.exit(r.status ?? 1);
  }
  let o: Options;
  try {
    o = parseFlags(argv, process.env);
  } catch (e) {
    if (isTwillError(e)) fail(e, 2);
    throw e;
  }
  if (o.help) {
    process.stdout.write(usage() + COMMANDS);
    return;
  }
  if (o.version) {
    process.stdout.write(`twill ${VERSION}\n`);
    return;
  }
  try {
    switch (o.command ?? "run") {
      case "run":
        return await run(o);
      case "teardown":
        return await teardown(o);
      case "maps": {
        const m = dumpBpfState(o.bpfPinDir);
        process.stdout.write(o.json ? JSON.stringify(m, null, 2) + "\n" : formatMaps(m));
        return;
      }
      case "status":
        return await status(o);
      default:
        fail(new Error(`unknown command ${JSON.stringify(o.command)} (run, teardown, maps, status)`), 2);
    }
  } catch (e) {
    fail(e, 1);
  }
}
