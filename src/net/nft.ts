/**
 * flannel's nftables rules ("EnableNFTables": true in the network config):
 * the same tables, chains and rules flannel's pkg/trafficmngr/nftables
 * writes, so a node moves between flannel and twill (and between iptables
 * and nftables) without leftovers.
 *
 * How it works:
 *  - Tables `ip flannel-ipv4` and `ip6 flannel-ipv6` (both always exist in
 *    nftables mode, as flannel's Init makes them), each with up to two base
 *    chains: `forward` (filter hook forward, priority filter: accept from
 *    and to the cluster network) and `postrtg` (nat hook postrouting,
 *    priority srcnat: flannel's six masquerade rules). Each chain is
 *    declared, flushed and refilled in one `nft -f -` transaction, so an
 *    update is atomic and a repeated one changes nothing.
 *  - `masquerade fully-random` unless --ip-masq-fully-random-disable or the
 *    kernel refuses it (checked once with `nft --check`, as flannel's
 *    checkRandomfully does).
 *  - removeNftables deletes both tables (flannel's CleanUp): run when the
 *    node uses iptables, so a switch back leaves nothing behind; the
 *    iptables side is masq.ts removeRules.
 *  - `nft` runs only when rules must change (at start and when someone
 *    changed the firewall: firewall-watch.ts, whose events name these
 *    tables); its pid is tracked like iptables' (masq.ts isOwnPid).
 * IPv4 and IPv6 go through one function; text is built from typed prefixes.
 */
import { TwillError } from "../errors.js";
import { formatPrefix, type Family, type Prefix } from "./ip.js";
import { execTracked } from "./masq.js";

export const NFT_TABLES = { 4: "flannel-ipv4", 6: "flannel-ipv6" } as const;
export const NFT_CHAINS = ["forward", "postrtg"] as const;

const fam = (f: Family): "ip" | "ip6" => (f === 4 ? "ip" : "ip6");

export interface NftFamily {
  readonly subnet: Prefix;
  readonly network: Prefix;
}

export interface NftOptions {
  /** --iptables-forward-rules (default true). */
  readonly forward: boolean;
  /** --ip-masq. */
  readonly masq: boolean;
  /** --ip-masq-fully-random-disable. */
  readonly fullyRandomDisable?: boolean;
}

/** flannel's postrtg rules for one family, in its order (nftables.go addMasqRules). */
export function nftMasqRules(subnet: Prefix, network: Prefix, randomFully: boolean): string[] {
  const f = fam(subnet.ip.family), pod = formatPrefix(subnet), cluster = formatPrefix(network);
  const mcast = subnet.ip.family === 4 ? "224.0.0.0/4" : "ff00::/8";
  const masq = randomFully ? "masquerade fully-random" : "masquerade";
  return [
    "meta mark 0x4000 return",
    `${f} saddr ${pod} ${f} daddr ${cluster} return`,
    `${f} saddr ${cluster} ${f} daddr ${pod} return`,
    `${f} saddr != ${pod} ${f} daddr ${cluster} return`,
    `${f} saddr ${cluster} ${f} daddr != ${mcast} ${masq}`,
    `${f} saddr != ${cluster} ${f} daddr ${cluster} ${masq}`,
  ];
}

/** flannel's forward rules for one family (SetupAndEnsureForwardRules). */
export function nftForwardRules(network: Prefix): string[] {
  const f = fam(network.ip.family), cluster = formatPrefix(network);
  return [`${f} saddr ${cluster} accept`, `${f} daddr ${cluster} accept`];
}

/** The `nft -f` transaction that makes one family's table what flannel's would be. */
export function nftScript(family: Family, v: NftFamily | undefined, o: NftOptions, randomFully: boolean): string {
  const t = `${fam(family)} ${NFT_TABLES[family]}`;
  const out = [`add table ${t} { comment "rules for ${NFT_TABLES[family]}" ; }`];
  const chain = (name: string, spec: string, comment: string, rules: string[]) => {
    out.push(`add chain ${t} ${name} { ${spec} ; comment "${comment}" ; }`, `flush chain ${t} ${name}`);
    for (const r of rules) out.push(`add rule ${t} ${name} ${r}`);
  };
  if (v && o.forward) chain("forward", "type filter hook forward priority filter", "chain to accept flannel traffic", nftForwardRules(v.network));
  if (v && o.masq) chain("postrtg", "type nat hook postrouting priority srcnat", "chain to manage traffic masquerading by flannel", nftMasqRules(v.subnet, v.network, randomFully));
  return out.join("\n") + "\n";
}

async function nft(script: string, check = false): Promise<{ code: number; stderr: string }> {
  return execTracked("nft", [...(check ? ["--check"] : []), "-f", "-"], script);
}

let randomFullyOk: Promise<boolean> | undefined;
/** Whether the kernel takes `masquerade fully-random` (asked once, without changing anything). */
function kernelHasRandomFully(): Promise<boolean> {
  randomFullyOk ??= nft([
    `add table ip ${NFT_TABLES[4]}`,
    `add chain ip ${NFT_TABLES[4]} masqueradeTest { type nat hook postrouting priority srcnat ; }`,
    `add rule ip ${NFT_TABLES[4]} masqueradeTest ip saddr != 127.0.0.1 masquerade fully-random`,
  ].join("\n") + "\n", true).then((r) => r.code === 0);
  return randomFullyOk;
}

/** Writes flannel's nftables tables for the families given (both tables exist either way). */
export async function ensureNftables(families: { 4?: NftFamily; 6?: NftFamily }, o: NftOptions): Promise<void> {
  const randomFully = o.masq && !o.fullyRandomDisable && (await kernelHasRandomFully());
  for (const f of [4, 6] as const) {
    const r = await nft(nftScript(f, families[f], o, randomFully));
    if (r.code !== 0) throw new TwillError("ERR_NETLINK", `nft (table ${fam(f)} ${NFT_TABLES[f]}): ${r.stderr.trim() || `exit ${r.code}`}`);
  }
}

/** Deletes flannel's nftables tables (best effort: absent tables, or no nft binary, are fine). */
export async function removeNftables(): Promise<void> {
  for (const f of [4, 6] as const) {
    const t = `${fam(f)} ${NFT_TABLES[f]}`;
    // "add" first: deleting a table that is not there is an error, adding one that is, is not.
    await nft(`add table ${t}\ndelete table ${t}\n`).catch(() => undefined);
  }
}
