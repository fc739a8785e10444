/**
 * Host profiles: what the benchmark's hosts carry besides the dataplane.
 *
 *   real  what a Kubernetes node carries (the default): flannel's FORWARD
 *         accepts (FLANNEL-FWD) and masquerade (FLANNEL-POSTRTG, the
 *         daemons run with --ip-masq), and kube-proxy's iptables-mode rules
 *         for 500 Services (kubeproxy.ts) with KUBE-FORWARD first in FORWARD.
 *         Conntrack sees every packet that crosses a host's netfilter hooks.
 *   bare  the namespaces as they are: only what the daemons write themselves
 *         (flannel's FORWARD accepts and, with --ip-masq, its masquerade
 *         chain); the underlay reference has no rules at all.
 *
 * How it works:
 * 1) For `real`, every host of every testbed — kernel-vxlan, the twill
 *    modes and the underlay reference alike — gets one `iptables-restore
 *    --noflush` before its daemon starts: kube-proxy's tables, then
 *    flannel's two chains and jumps exactly as twill writes them
 *    (src/net/masq.ts, for the host's lease subnet). A starting daemon
 *    rewrites its own chains with the same rules and finds its jumps.
 * 2) Before any measurement, checkHosts counts the rules of each table
 *    in both hosts (iptables-save) and refuses a testbed whose hosts differ
 *    or, for `real`, miss any of the expected rules; the counts go in the
 *    report's testbed section.
 */
import { run } from "./lib/exec.js";
import { parsePrefix } from "../src/net/ip.js";
import { forwardRules, masqRules } from "../src/net/masq.js";
import { CLUSTER_CIDR, kubeProxyRules, restoreText, type Table, type TableLines } from "./kubeproxy.js";

export const HOST_PROFILE_IDS = ["real", "bare"] as const;
export type HostProfileId = (typeof HOST_PROFILE_IDS)[number];

/** Services whose kube-proxy rules a real host carries. */
export const KUBE_SERVICES = 500;

export interface HostProfile {
  readonly id: HostProfileId;
  readonly title: string;
  /** One paragraph for the report. */
  readonly what: string;
}

export const HOST_PROFILES: Readonly<Record<HostProfileId, HostProfile>> = {
  real: {
    id: "real", title: "Real nodes",
    what: `Every host (both sides, every mode, the underlay reference too) carries what a Kubernetes node carries: flannel's FORWARD accepts (FLANNEL-FWD) and masquerade rules (FLANNEL-POSTRTG; daemons run with \`--ip-masq\`), and kube-proxy's iptables-mode rules for ${KUBE_SERVICES} Services (KUBE-SERVICES from nat PREROUTING/OUTPUT, KUBE-SVC → KUBE-SEP with DNAT to endpoints in the cluster network that are never the benchmark's pods, KUBE-NODEPORTS, KUBE-POSTROUTING, and KUBE-PROXY-FIREWALL/KUBE-FORWARD/KUBE-SERVICES/KUBE-EXTERNAL-SERVICES inserted first in FORWARD, KUBE-FIREWALL in INPUT/OUTPUT). No rule matches the benchmark's pod-to-pod traffic, but conntrack tracks every packet that crosses a host's netfilter hooks and every new flow walks KUBE-SERVICES.`,
  },
  bare: {
    id: "bare", title: "Bare hosts",
    what: "The namespaces as they are: only what the daemons write themselves (flannel's FORWARD accepts and, with `--ip-masq`, its masquerade chain — which already switches conntrack on); the underlay reference has no rules at all.",
  },
};

/** The cluster's lease subnets, host by host (testbed.ts writes the same leases). */
export const HOST_SUBNETS = ["10.244.1.0/24", "10.244.2.0/24"] as const;

const FLANNEL_FWD_JUMP = '-m comment --comment "flanneld forward" -j FLANNEL-FWD';
const FLANNEL_MASQ_JUMP = '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG';

/** flannel's chains and jumps for one host, as twill's daemon writes them with --ip-masq. */
function flannelRules(subnet: string): Record<"filter" | "nat", TableLines> {
  const network = parsePrefix(CLUSTER_CIDR);
  return {
    filter: { chains: ["FLANNEL-FWD"], rules: [...forwardRules(network).map((r) => `-A FLANNEL-FWD ${r.join(" ")}`), `-A FORWARD ${FLANNEL_FWD_JUMP}`] },
    nat: { chains: ["FLANNEL-POSTRTG"], rules: [...masqRules(parsePrefix(subnet), network).map((r) => `-A FLANNEL-POSTRTG ${r.join(" ")}`), `-A POSTROUTING ${FLANNEL_MASQ_JUMP}`] },
  };
}

export type RuleCounts = Readonly<Record<Table, number>> & { readonly total: number; readonly kubeServices: number };

/** The restore input of one real host, and the rule counts a host must show afterwards. */
export function realHostRules(subnet: string): { text: string; expected: RuleCounts } {
  const kube = kubeProxyRules(KUBE_SERVICES);
  const fl = flannelRules(subnet);
  const blocks: [Table, TableLines][] = [["mangle", kube.tables.mangle], ["filter", kube.tables.filter], ["nat", kube.tables.nat], ["filter", fl.filter], ["nat", fl.nat]];
  const count = (t: Table): number => blocks.filter(([x]) => x === t).reduce((n, [, l]) => n + l.rules.length, 0);
  const kubeServices = kube.tables.nat.rules.filter((r) => r.startsWith("-A KUBE-SERVICES ")).length;
  const expected = { mangle: count("mangle"), filter: count("filter"), nat: count("nat"), total: 0, kubeServices };
  return { text: restoreText(blocks), expected: { ...expected, total: expected.mangle + expected.filter + expected.nat } };
}

/** Gives one host what its profile says, before its daemon starts. Host index from 0. */
export async function prepareHost(profile: HostProfileId, netns: string, index: number): Promise<void> {
  if (profile === "bare") return;
  const { text } = realHostRules(HOST_SUBNETS[index]!);
  await run("iptables-restore", ["--noflush", "-w", "5"], { netns, input: text, timeoutMs: 60000 });
}

/** Rules per table in a namespace (iptables-save), and how many of nat's are in KUBE-SERVICES. */
export async function ruleCounts(netns: string): Promise<RuleCounts> {
  const r = await run("iptables-save", [], { netns, timeoutMs: 30000 });
  const counts: Record<Table, number> = { mangle: 0, filter: 0, nat: 0 };
  let table = "";
  let kubeServices = 0;
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("*")) table = line.slice(1);
    else if (line.startsWith("-A ")) {
      if (table in counts) counts[table as Table]++;
      if (table === "nat" && line.startsWith("-A KUBE-SERVICES ")) kubeServices++;
    }
  }
  return { ...counts, total: counts.mangle + counts.filter + counts.nat, kubeServices };
}

export interface HostCheck {
  readonly profile: HostProfileId;
  /** Per host, in order h1, h2. */
  readonly rules: readonly RuleCounts[];
  /** What each real host must show. */
  readonly expected?: RuleCounts;
}

/** Counts both hosts' rules; throws when the hosts differ or (real) miss expected rules. */
export async function checkHosts(profile: HostProfileId, netns: readonly string[], what: string): Promise<HostCheck> {
  const rules = await Promise.all(netns.map((n) => ruleCounts(n)));
  const show = (c: RuleCounts): string => `filter ${c.filter}, nat ${c.nat} (KUBE-SERVICES ${c.kubeServices}), mangle ${c.mangle}`;
  const differ = rules.some((c) => show(c) !== show(rules[0]!));
  if (differ) throw new Error(`${what}: the hosts' iptables rules differ: ${rules.map((c, i) => `h${i + 1} ${show(c)}`).join("; ")}`);
  if (profile === "bare") return { profile, rules };
  const expected = realHostRules(HOST_SUBNETS[0]).expected;
  const short = rules.findIndex((c) => c.filter < expected.filter || c.nat < expected.nat || c.kubeServices !== expected.kubeServices);
  if (short >= 0) throw new Error(`${what}: h${short + 1} lacks the real-node rules: has ${show(rules[short]!)}, want ${show(expected)}`);
  return { profile, rules, expected };
}
