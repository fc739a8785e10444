/**
 * The soak's cluster: four namespaced hosts, one pod each (the real CNI
 * bridge plugin), leases in a real etcd in the router namespace.
 *
 *   router netns <p>rt: etcd http://192.168.50.1:2379 (data in /tmp/<p>e…/data)
 *        │ underlay 192.168.50.0/24
 *   h1 .11  twill --dataplane bpf --fast-path   ─┐
 *   h2 .12  twill --dataplane bpf               ─┼─ --etcd-endpoints http://192.168.50.1:2379
 *   h3 .13  twill --dataplane kernel            ─┘
 *   h4 .14  "stock flannel": flannel's kernel state, made by a twill kernel
 *           dataplane fed from a private lease directory; its lease is put
 *           into etcd by the harness with etcdctl, attached to a 24 h etcd
 *           lease, as flanneld writes it; it learns h1–h3 from etcd through
 *           the harness's mirror (every 2 s), never the fake leases
 *   each host: pod p1 on cni0, subnet 10.244.<i>.0/24
 *
 * How it works: a TwillCluster (bench/lib/twill.ts) with the daemons not
 * started; etcd started in the router namespace; flannel's config put
 * into etcd and into h4's directory; each host's subnet file written
 * first with 10.244.<i>.1/24, so each node acquires that subnet (flannel's
 * "previous subnet" rule) and the plan's slots (leases.ts) stay apart.
 * The reconcile period is the daemon's default (10 s). destroy() stops
 * the mirror, the daemons and etcd and sweeps the prefix.
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { writeSubnetFile, type Pod } from "../lib/cluster.js";
import { EtcdServer } from "../lib/etcd.js";
import { TwillCluster, type TwillNode } from "../lib/twill.js";
import { ETCD_PREFIX, NET_CONFIG, REAL_SLOTS, etcdKey, keySlot, slotKey } from "./leases.js";

export const RECONCILE_SECONDS = 10;
const MIRROR_MS = 2000;

export type NodeRole = "bpf-fast" | "bpf" | "kernel" | "stock-flannel";

export interface SoakNode {
  readonly n: TwillNode;
  readonly name: string;
  readonly role: NodeRole;
  readonly slot: number;
  /** A twill node under test (h1–h3); h4 is the stock-flannel stand-in. */
  readonly twill: boolean;
  readonly dataplane: "bpf" | "kernel";
  pod?: Pod;
  /** 1 for the first process, +1 per restart. */
  incarnation: number;
}

const ROLES: readonly NodeRole[] = ["bpf-fast", "bpf", "kernel", "stock-flannel"];

export class SoakCluster {
  private mirrorTimer: NodeJS.Timeout | undefined;
  private mirroring = false;
  mirrorErrors = 0;

  private constructor(readonly tc: TwillCluster, readonly etcd: EtcdServer, readonly nodes: readonly SoakNode[], readonly flannelDir: string) {}

  static async create(prefix: string, log: (l: string) => void): Promise<SoakCluster> {
    const tc = await TwillCluster.create({
      prefix, hosts: 4, startNodes: false, reconcileSeconds: RECONCILE_SECONDS, netConfig: NET_CONFIG,
      nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf" }, { dataplane: "kernel" }, { dataplane: "kernel" }],
    });
    let etcd: EtcdServer | undefined;
    try {
      etcd = await EtcdServer.start({ netns: tc.cluster.routerNetns, host: tc.cluster.hosts[0]!.gateway, prefix: `${prefix}e` });
      const nodes: SoakNode[] = tc.nodes.map((n, i) => ({
        n, name: n.host.name, role: ROLES[i]!, slot: REAL_SLOTS[i]!, twill: i < 3, dataplane: i === 0 || i === 1 ? "bpf" : "kernel", incarnation: 1,
      }));
      const flannelDir = join(tc.cluster.dir, "h4-leases");
      const c = new SoakCluster(tc, etcd, nodes, flannelDir);
      await c.build(log);
      return c;
    } catch (e) {
      await tc.destroy().catch(() => {});
      await etcd?.destroy().catch(() => {});
      throw e;
    }
  }

  private async build(log: (l: string) => void): Promise<void> {
    const { tc, etcd } = this;
    await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, JSON.stringify(NET_CONFIG)]);
    mkdirSync(join(this.flannelDir, "subnets"), { recursive: true });
    mkdirSync(join(this.flannelDir, "tmp"), { recursive: true });
    writeFileSync(join(this.flannelDir, "config"), JSON.stringify(NET_CONFIG));
    for (const s of this.nodes) {
      writeSubnetFile(s.n.subnetFile, { network: NET_CONFIG.Network, subnet: `10.244.${s.slot}.1/24`, mtu: 1450, ipMasq: true });
    }
    tc.sourceArgs = (n) => n.host.name === "h4" ? ["--lease-dir", this.flannelDir] : ["--etcd-endpoints", etcd.endpoint];
    await Promise.all(this.nodes.map((s) => tc.start(s.n)));
    // h4 plays a stock flanneld: its lease goes into etcd with etcdctl, on a 24 h etcd lease as flanneld grants.
    const h4 = this.nodes[3]!;
    const ownFile = join(this.flannelDir, "subnets", slotKey(h4.slot));
    if (!existsSync(ownFile)) {
      throw new Error(`h4 did not acquire ${slotKey(h4.slot)} (its lease directory has ${readdirSync(join(this.flannelDir, "subnets")).join(", ") || "nothing"})`);
    }
    const grant = (await etcd.etcdctl(["lease", "grant", "86400"])).stdout;
    const id = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
    if (!id) throw new Error(`etcdctl lease grant printed no lease id: ${grant}`);
    await etcd.etcdctl(["put", "--lease", id, etcdKey(h4.slot), readFileSync(ownFile, "utf8")]);
    for (const s of this.nodes.slice(0, 3)) {
      const got = (await etcd.etcdctl(["get", "--print-value-only", etcdKey(s.slot)])).stdout.trim();
      if (!got) throw new Error(`${s.name} has no lease ${slotKey(s.slot)} in etcd (did it acquire another subnet? its log:\n${tc.log(s.n).slice(-2000)})`);
    }
    await this.mirror();
    this.mirrorTimer = setInterval(() => void this.mirror(), MIRROR_MS);
    for (const s of this.nodes) s.pod = await tc.addPod(s.n, "p1");
    log(`cluster ${tc.cluster.prefix}: ${this.nodes.map((s) => `${s.name} ${s.role} ${s.n.host.underlayIP} pod ${s.pod!.ip}`).join("; ")}; etcd ${etcd.endpoint}`);
  }

  /** Copies the twill nodes' leases from etcd into h4's lease directory when they differ (atomically). */
  private async mirror(): Promise<void> {
    if (this.mirroring || !this.etcd.running) return;
    this.mirroring = true;
    try {
      const kv = await this.etcd.etcdctlJson<{ kvs?: { key: string; value: string }[] }>(["get", "--prefix", `${ETCD_PREFIX}/subnets/10.244.`, "--limit=0"]);
      for (const { key, value } of kv.kvs ?? []) {
        const slot = keySlot(Buffer.from(key, "base64").toString());
        if (slot === undefined || slot === this.nodes[3]!.slot || !this.nodes.some((s) => s.slot === slot)) continue;
        const file = join(this.flannelDir, "subnets", slotKey(slot));
        const text = Buffer.from(value, "base64").toString();
        if (existsSync(file) && readFileSync(file, "utf8") === text) continue;
        const tmp = join(this.flannelDir, "tmp", slotKey(slot));
        writeFileSync(tmp, text);
        renameSync(tmp, file);
      }
    } catch {
      this.mirrorErrors++; // etcd restarting: the next round copies
    } finally {
      this.mirroring = false;
    }
  }

  get twillNodes(): SoakNode[] {
    return this.nodes.filter((s) => s.twill);
  }

  node(name: string): SoakNode {
    const s = this.nodes.find((x) => x.name === name);
    if (!s) throw new Error(`The soak cluster has no node ${name}`);
    return s;
  }

  async destroy(): Promise<void> {
    if (this.mirrorTimer) clearInterval(this.mirrorTimer);
    await this.tc.destroy().catch(() => {});
    await this.etcd.destroy().catch(() => {});
  }
}
