/**
 * flannel's iptables rules: --ip-masq masquerading and the FORWARD accepts.
 *
 * How it works: the rules are exactly flanneld's (same chain names
 * FLANNEL-POSTRTG / FLANNEL-FWD, same comments, same order), so a node that
 * moves from flannel to twill replaces flannel's chains instead of adding a
 * second set. Each chain is written whole with `iptables-restore --noflush`
 * (declaring a chain flushes it, so the update is one atomic transaction),
 * then the jump from POSTROUTING/FORWARD is appended if missing (flannel's
 * AppendUnique: after the rules other tools put there). IPv4 and IPv6
 * go through the same function with iptables or ip6tables. Arguments are
 * built from typed prefixes, never from text we did not format ourselves.
 * The pids of the iptables processes we run are remembered (`isOwnPid`), so
 * net/firewall-watch.ts can tell our own rule changes from everyone else's.
 * MASQUERADE gets `--random-fully` like flannel's (pkg/trafficmngr/iptables
 * masqRules): unless --ip-masq-fully-random-disable, and only when the
 * iptables binary supports it (go-iptables' HasRandomFully: v1.6.2 or
 * later, read once per binary from `iptables --version`).
 * Which iptables (legacy or nft) is chosen once at start as kube-proxy's and
 * flannel's images choose it (kubernetes-sigs/iptables-wrappers): the
 * backend that holds kube-proxy's KUBE-IPTABLES-HINT or the kubelet's
 * KUBE-KUBELET-CANARY chain, else the one with more rules, else nft; then
 * iptables-legacy* or iptables-nft* run (plain iptables where those do not
 * exist). A node whose kube-proxy writes legacy rules gets flannel's rules
 * beside them, not in a ruleset it cannot see.
 */
import { execFile } from "node:child_process";
import { TwillError } from "../errors.js";
import { formatPrefix, type Family, type Prefix } from "./ip.js";

const KUBE_PROXY_MARK = "0x4000/0x4000";
const COMMENT = ["-m", "comment", "--comment", '"flanneld masq"'];
const FWD_COMMENT = ["-m", "comment", "--comment", '"flanneld forward"'];

/** iptables-restore reads quoted comments; iptables takes argv words. */
const unquote = (a: string[]): string[] => a.map((x) => x.replace(/"/g, ""));
export type IptablesMode = "legacy" | "nft" | "default";
let mode: IptablesMode = "default";
/** The iptables binaries in use: iptables-<mode>[-restore] (plain iptables for "default"). */
const bin = (f: Family, tool: "" | "-restore" | "-save"): string => (f === 4 ? "iptables" : "ip6tables") + (mode === "default" ? "" : `-${mode}`) + tool;

/** Counts of what each backend holds, for choosing between them (iptables-wrappers' rule). */
export interface BackendCensus { readonly hint: boolean; readonly rules: number }

/** iptables-wrappers' decision: the hint chains first, then more rules, nft on a tie. */
export function pickIptablesMode(legacy: BackendCensus | undefined, nft: BackendCensus | undefined): "legacy" | "nft" {
  if (nft?.hint) return "nft";
  if (legacy?.hint) return "legacy";
  return (legacy?.rules ?? 0) > (nft?.rules ?? 0) ? "legacy" : "nft";
}

/** What `<tool>-save` (both families) shows: the hint chains, and the number of rules. */
export function census(saveOutput: string): BackendCensus {
  return {
    hint: /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) /m.test(saveOutput),
    rules: saveOutput.split("\n").filter((l) => l.startsWith("-")).length,
  };
}

function save(tool: string): Promise<string | undefined> {
  return new Promise((resolve) => execFile(tool, [], { timeout: 15000 }, (err, out) => resolve(err ? undefined : String(out))));
}

/**
 * Chooses the iptables backend once (see the header); returns it and why.
 * Runs the four *-save tools at start only; a host without the
 * iptables-legacy/-nft binaries keeps plain `iptables`.
 */
export async function chooseIptablesMode(): Promise<{ mode: IptablesMode; reason: string }> {
  const [l4, l6, n4, n6] = await Promise.all(["iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"].map(save));
  if (l4 === undefined && n4 === undefined) {
    mode = "default";
    return { mode, reason: "no iptables-legacy/iptables-nft binaries: plain iptables" };
  }
  const legacy = l4 === undefined ? undefined : census(l4 + (l6 ?? "")), nft = n4 === undefined ? undefined : census(n4 + (n6 ?? ""));
  mode = pickIptablesMode(legacy, nft);
  const why = (legacy?.hint || nft?.hint) ? "kube-proxy's hint chain is there" : `${legacy?.rules ?? 0} legacy rules, ${nft?.rules ?? 0} nft rules`;
  return { mode, reason: why };
}

/** The backend chosen (for the firewall watch: nft has events, legacy has none). */
export const iptablesMode = (): IptablesMode => mode;

/** The last few iptables processes we started (pids are reused, so the list is short). */
const ownPids: number[] = [];
const OWN_PIDS_KEPT = 64;

/** True when `pid` is one of the iptables processes twill started recently. */
export function isOwnPid(pid: number): boolean {
  return ownPids.includes(pid);
}

/** Runs a firewall tool (iptables, nft), remembering its pid (isOwnPid); never throws: the exit code says. */
export function execTracked(cmd: string, args: string[], input?: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile(cmd, args, { timeout: 15000 }, (err, _out, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stderr: String(stderr) }));
    if (c.pid !== undefined) {
      ownPids.push(c.pid);
      if (ownPids.length > OWN_PIDS_KEPT) ownPids.shift();
    }
    if (input !== undefined) c.stdin?.end(input);
  });
}

/** The rule lines of FLANNEL-POSTRTG for our subnet and the cluster network, flannel's order (masqRules, masqIP6Rules). */
export function masqRules(subnet: Prefix, network: Prefix, randomFully = true): string[][] {
  const pod = formatPrefix(subnet), cluster = formatPrefix(network);
  const mcast = subnet.ip.family === 4 ? "224.0.0.0/4" : "ff00::/8";
  const masq = randomFully ? ["MASQUERADE", "--random-fully"] : ["MASQUERADE"];
  return [
    ["-m", "mark", "--mark", KUBE_PROXY_MARK, ...COMMENT, "-j", "RETURN"],
    ["-s", pod, "-d", cluster, ...COMMENT, "-j", "RETURN"],
    ["-s", cluster, "-d", pod, ...COMMENT, "-j", "RETURN"],
    ["!", "-s", cluster, "-d", pod, ...COMMENT, "-j", "RETURN"],
    ["-s", cluster, "!", "-d", mcast, ...COMMENT, "-j", ...masq],
    ["!", "-s", cluster, "-d", cluster, ...COMMENT, "-j", ...masq],
  ];
}

/** True when `iptables --version` says v1.6.2 or later (go-iptables' HasRandomFully). */
export function versionHasRandomFully(versionLine: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionLine);
  if (!m) return false;
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
}

const randomFullyByBinary = new Map<string, Promise<boolean>>();

/** Whether this family's iptables takes --random-fully (asked once per binary). */
function hasRandomFully(f: Family): Promise<boolean> {
  const b = bin(f, "");
  let p = randomFullyByBinary.get(b);
  if (!p) {
    p = new Promise((resolve) => execFile(b, ["--version"], { timeout: 15000 }, (err, out) => resolve(!err && versionHasRandomFully(String(out)))));
    randomFullyByBinary.set(b, p);
  }
  return p;
}

export function forwardRules(network: Prefix): string[][] {
  const cluster = formatPrefix(network);
  return [
    ["-s", cluster, ...FWD_COMMENT, "-j", "ACCEPT"],
    ["-d", cluster, ...FWD_COMMENT, "-j", "ACCEPT"],
  ];
}

async function ensureChain(f: Family, table: string, chain: string, rules: string[][], from: string, jumpComment: string[]): Promise<void> {
  const text = [`*${table}`, `:${chain} - [0:0]`, ...rules.map((r) => `-A ${chain} ${r.join(" ")}`), "COMMIT", ""].join("\n");
  const r = await execTracked(bin(f, "-restore"), ["--noflush", "-w", "5"], text);
  if (r.code !== 0) throw new TwillError("ERR_NETLINK", `${bin(f, "-restore")} (${table}/${chain}): ${r.stderr.trim()}`);
  const jump = (op: string) => ["-w", "5", "-t", table, op, from, ...unquote(jumpComment), "-j", chain];
  if ((await execTracked(bin(f, ""), jump("-C"))).code !== 0) {
    const i = await execTracked(bin(f, ""), jump("-A"));
    if (i.code !== 0) throw new TwillError("ERR_NETLINK", `${bin(f, "")} -A ${from} -j ${chain}: ${i.stderr.trim()}`);
  }
}

export interface MasqOptions {
  /** --ip-masq-fully-random-disable: never add --random-fully. */
  readonly fullyRandomDisable?: boolean;
}

/** Installs (or refreshes) flannel's masquerade rules for one family. */
export async function ensureMasq(subnet: Prefix, network: Prefix, o: MasqOptions = {}): Promise<void> {
  const randomFully = !o.fullyRandomDisable && (await hasRandomFully(subnet.ip.family));
  await ensureChain(subnet.ip.family, "nat", "FLANNEL-POSTRTG", masqRules(subnet, network, randomFully), "POSTROUTING", COMMENT);
}

/** Installs (or refreshes) flannel's FORWARD accepts for the cluster network. */
export async function ensureForward(network: Prefix): Promise<void> {
  await ensureChain(network.ip.family, "filter", "FLANNEL-FWD", forwardRules(network), "FORWARD", FWD_COMMENT);
}

/** Removes the jumps and chains (best effort). */
export async function removeRules(f: Family): Promise<void> {
  for (const [table, from, chain, comment] of [["nat", "POSTROUTING", "FLANNEL-POSTRTG", COMMENT], ["filter", "FORWARD", "FLANNEL-FWD", FWD_COMMENT]] as const) {
    const jump = ["-w", "5", "-t", table, "-D", from, ...unquote(comment), "-j", chain];
    while ((await execTracked(bin(f, ""), jump)).code === 0) { /* remove every copy */ }
    await execTracked(bin(f, ""), ["-w", "5", "-t", table, "-F", chain]);
    await execTracked(bin(f, ""), ["-w", "5", "-t", table, "-X", chain]);
  }
}
