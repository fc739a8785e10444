/**
 * kube-proxy's iptables-mode rules for N Services, as `iptables-restore`
 * input: what every Kubernetes node with kube-proxy (1.29+, iptables mode)
 * carries, so the benchmark's hosts pay what real nodes pay.
 *
 * How it works:
 * 1) N Services get ClusterIPs 10.96.0.10, 10.96.0.11, … (the default
 *    service CIDR 10.96.0.0/16). Most are TCP port 80 with 1–3 endpoints;
 *    every 20th is UDP 53 ("dns"), every 10th is also a NodePort
 *    (30000 + i, with its KUBE-EXT chain), every 25th has no endpoints
 *    (a REJECT in filter KUBE-SERVICES, as kube-proxy writes it).
 * 2) Endpoints are pod IPs 10.244.10.2, 10.244.10.3, … — in the cluster
 *    network but in subnets no benchmark host owns (hosts have 10.244.1.0/24
 *    and 10.244.2.0/24), so no endpoint is ever a benchmark pod. The
 *    benchmark's traffic goes pod IP to pod IP and never to 10.96.0.0/16:
 *    no DNAT rule can match it, but every new flow walks KUBE-SERVICES to
 *    its end (KUBE-NODEPORTS, addrtype LOCAL) and conntrack sees every packet.
 * 3) Chain names are kube-proxy's: KUBE-SVC-/KUBE-SEP-/KUBE-EXT- + the
 *    first 16 base32 characters of sha256("ns/svc:port" + protocol [+ endpoint]).
 *    Rule shapes are proxier.go's (kubernetes/kubernetes
 *    pkg/proxy/iptables, as its tests dump them): nat PREROUTING/OUTPUT →
 *    KUBE-SERVICES ("kubernetes service portals"), per service KUBE-SVC →
 *    KUBE-SEP (KUBE-MARK-MASQ for the hairpin source, DNAT to the endpoint),
 *    KUBE-NODEPORTS last in KUBE-SERVICES, KUBE-POSTROUTING (masquerade on
 *    mark 0x4000); filter KUBE-PROXY-FIREWALL, KUBE-FORWARD (INVALID drop,
 *    mark 0x4000 accept, RELATED,ESTABLISHED accept), KUBE-SERVICES,
 *    KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS, KUBE-FIREWALL.
 * 4) The jumps from the built-in chains are inserted at the top (`-I CHAIN
 *    n`), as kube-proxy prepends them: KUBE-FORWARD comes before anything
 *    flannel appends to FORWARD. The lines are for `iptables-restore
 *    --noflush` (restoreText): they declare (and so empty) only KUBE-* chains.
 */
import { createHash } from "node:crypto";

export const CLUSTER_CIDR = "10.244.0.0/16";
export const SERVICE_CIDR = "10.96.0.0/16";

export type Table = "mangle" | "filter" | "nat";

/** One table's part of an iptables-restore input: chain declarations and rule lines. */
export interface TableLines {
  readonly chains: readonly string[];
  readonly rules: readonly string[];
}

export interface KubeRules {
  readonly tables: Readonly<Record<Table, TableLines>>;
  readonly services: number;
  readonly endpoints: number;
}

/** iptables-restore input for tables given in order; each block declares its chains (which empties them). */
export function restoreText(blocks: readonly (readonly [Table, TableLines])[]): string {
  return blocks.flatMap(([t, l]) => [`*${t}`, ...l.chains.map((c) => `:${c} - [0:0]`), ...l.rules, "COMMIT"]).join("\n") + "\n";
}

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** RFC 4648 base32 (no padding) of the first bytes of a buffer, as many characters as asked. */
function base32(buf: Buffer, chars: number): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= chars) break;
    value &= (1 << bits) - 1;
  }
  return out;
}

/** kube-proxy's chain-name hash: base32(sha256(text))[:16]. */
function hash16(text: string): string {
  return base32(createHash("sha256").update(text).digest(), 16);
}

const q = (s: string): string => `"${s}"`;

interface Service {
  readonly name: string; // "ns/svc:port"
  readonly ip: string;
  readonly proto: "tcp" | "udp";
  readonly port: number;
  readonly targetPort: number;
  readonly nodePort?: number;
  readonly endpoints: readonly string[];
}

function services(n: number): Service[] {
  const out: Service[] = [];
  let ep = 0;
  for (let i = 0; i < n; i++) {
    const k = i + 10;
    const udp = i % 20 === 3;
    const count = i % 25 === 7 ? 0 : 1 + (i % 3);
    const endpoints = Array.from({ length: count }, () => {
      const e = ep++;
      return `10.244.${10 + Math.floor(e / 250)}.${2 + (e % 250)}`;
    });
    out.push({
      name: `ns-${String(i % 40).padStart(2, "0")}/svc-${String(i).padStart(3, "0")}:${udp ? "dns" : "http"}`,
      ip: `10.96.${k >> 8}.${k & 255}`, proto: udp ? "udp" : "tcp", port: udp ? 53 : 80, targetPort: udp ? 53 : 8080,
      ...(i % 10 === 0 && count > 0 ? { nodePort: 30000 + i } : {}),
      endpoints,
    });
  }
  return out;
}

/** The rules kube-proxy writes for `n` Services (see the top of this file). */
export function kubeProxyRules(n: number): KubeRules {
  const svcs = services(n);
  const filterChains = ["KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-KUBELET-CANARY", "KUBE-NODEPORTS", "KUBE-PROXY-CANARY", "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"];
  const natChains = ["KUBE-KUBELET-CANARY", "KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-PROXY-CANARY", "KUBE-SERVICES"];
  const filter: string[] = [];
  const nat: string[] = [];
  const natTail: string[] = [];
  const svcRules: string[] = [];
  const sepRules: string[] = [];

  // filter: the jumps, top of INPUT/FORWARD/OUTPUT in kube-proxy's order
  const ins = (chain: string, rules: string[]): string[] => rules.map((r, i) => `-I ${chain} ${i + 1} ${r}`);
  const NEW = "-m conntrack --ctstate NEW";
  filter.push(...ins("INPUT", [
    `${NEW} -m comment --comment ${q("kubernetes load balancer firewall")} -j KUBE-PROXY-FIREWALL`,
    `-m comment --comment ${q("kubernetes health check service ports")} -j KUBE-NODEPORTS`,
    `${NEW} -m comment --comment ${q("kubernetes externally-visible service portals")} -j KUBE-EXTERNAL-SERVICES`,
    "-j KUBE-FIREWALL",
  ]));
  filter.push(...ins("FORWARD", [
    `${NEW} -m comment --comment ${q("kubernetes load balancer firewall")} -j KUBE-PROXY-FIREWALL`,
    `-m comment --comment ${q("kubernetes forwarding rules")} -j KUBE-FORWARD`,
    `${NEW} -m comment --comment ${q("kubernetes service portals")} -j KUBE-SERVICES`,
    `${NEW} -m comment --comment ${q("kubernetes externally-visible service portals")} -j KUBE-EXTERNAL-SERVICES`,
  ]));
  filter.push(...ins("OUTPUT", [
    `${NEW} -m comment --comment ${q("kubernetes load balancer firewall")} -j KUBE-PROXY-FIREWALL`,
    `${NEW} -m comment --comment ${q("kubernetes service portals")} -j KUBE-SERVICES`,
    "-j KUBE-FIREWALL",
  ]));
  filter.push(
    `-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment ${q("block incoming localnet connections")} -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    `-A KUBE-FORWARD -m comment --comment ${q("kubernetes forwarding rules")} -m mark --mark 0x4000/0x4000 -j ACCEPT`,
    `-A KUBE-FORWARD -m comment --comment ${q("kubernetes forwarding conntrack rule")} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );

  // nat: the jumps, the masquerade machinery
  nat.push(...ins("PREROUTING", [`-m comment --comment ${q("kubernetes service portals")} -j KUBE-SERVICES`]));
  nat.push(...ins("OUTPUT", [`-m comment --comment ${q("kubernetes service portals")} -j KUBE-SERVICES`]));
  nat.push(...ins("POSTROUTING", [`-m comment --comment ${q("kubernetes postrouting rules")} -j KUBE-POSTROUTING`]));
  nat.push(
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
    `-A KUBE-POSTROUTING -m comment --comment ${q("kubernetes service traffic requiring SNAT")} -j MASQUERADE --random-fully`,
  );

  let endpoints = 0;
  for (const s of svcs) {
    const p = `-p ${s.proto}`;
    const match = `-m ${s.proto} --dport ${s.port}`;
    if (s.endpoints.length === 0) {
      filter.push(`-A KUBE-SERVICES -d ${s.ip}/32 ${p} -m comment --comment ${q(`${s.name} has no endpoints`)} ${match} -j REJECT --reject-with icmp-port-unreachable`);
      continue;
    }
    const svc = `KUBE-SVC-${hash16(s.name + s.proto)}`;
    natChains.push(svc);
    nat.push(`-A KUBE-SERVICES -d ${s.ip}/32 ${p} -m comment --comment ${q(`${s.name} cluster IP`)} ${match} -j ${svc}`);
    svcRules.push(`-A ${svc} ! -s ${CLUSTER_CIDR} -d ${s.ip}/32 ${p} -m comment --comment ${q(`${s.name} cluster IP`)} ${match} -j KUBE-MARK-MASQ`);
    if (s.nodePort !== undefined) {
      const ext = `KUBE-EXT-${hash16(s.name + s.proto)}`;
      natChains.push(ext);
      natTail.push(`-A KUBE-NODEPORTS ${p} -m comment --comment ${q(s.name)} -m ${s.proto} --dport ${s.nodePort} -j ${ext}`);
      svcRules.push(
        `-A ${ext} -m comment --comment ${q(`masquerade traffic for ${s.name} external destinations`)} -j KUBE-MARK-MASQ`,
        `-A ${ext} -j ${svc}`,
      );
    }
    s.endpoints.forEach((ip, j) => {
      const dest = `${ip}:${s.targetPort}`;
      const sep = `KUBE-SEP-${hash16(s.name + s.proto + dest)}`;
      natChains.push(sep);
      const left = s.endpoints.length - j;
      const pick = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(10)}` : "";
      svcRules.push(`-A ${svc} -m comment --comment ${q(`${s.name} -> ${dest}`)}${pick} -j ${sep}`);
      sepRules.push(
        `-A ${sep} -s ${ip}/32 -m comment --comment ${q(s.name)} -j KUBE-MARK-MASQ`,
        `-A ${sep} ${p} -m comment --comment ${q(s.name)} -m ${s.proto} -j DNAT --to-destination ${dest}`,
      );
      endpoints++;
    });
  }
  // "this must be the last rule in this chain"
  nat.push(`-A KUBE-SERVICES -m comment --comment ${q("kubernetes service nodeports; NOTE: this must be the last rule in this chain")} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`);
  nat.push(...natTail, ...svcRules, ...sepRules);

  return {
    tables: {
      mangle: { chains: ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"], rules: [] },
      filter: { chains: filterChains, rules: filter },
      nat: { chains: natChains, rules: nat },
    },
    services: svcs.length, endpoints,
  };
}
