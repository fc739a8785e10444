/**
 * Runs twill daemons on the hosts of a namespaced test cluster: the
 * benchmark's TwillCluster (bench/lib/twill.ts, one copy for both) plus the
 * tests' all-pairs checks, ICMP and TCP, from every pod to every pod on
 * another host.
 */
import type { Cluster } from "../../bench/lib/cluster.js";
import { TwillCluster as SharedTwillCluster, type TwillClusterOptions } from "../../bench/lib/twill.js";
import { ping, startEchoServer, tcpRequest } from "./traffic.js";

export * from "../../bench/lib/twill.js";

export class TwillCluster extends SharedTwillCluster {
  static override create(o: TwillClusterOptions): Promise<TwillCluster> {
    return TwillCluster.build(o, (cluster: Cluster) => new TwillCluster(cluster, o));
  }

  /** Pings every pod from every pod on another host; returns failures as text. */
  async allPairs(opts: { count?: number; v6?: boolean } = {}): Promise<string[]> {
    const failures: string[] = [];
    const pods = this.pods();
    const jobs: Promise<void>[] = [];
    for (const a of pods) for (const b of pods) {
      if (a.host === b.host) continue;
      const to = opts.v6 ? b.ipv6! : b.ip;
      jobs.push(ping(a.netns, to, { count: opts.count ?? 2, intervalMs: 50, timeoutMs: 3000 }).then((r) => {
        if (r.received === 0) failures.push(`${a.name}@${a.host.name} -> ${b.name}@${b.host.name} (${to})`);
      }));
    }
    await Promise.all(jobs);
    return failures;
  }

  /** Opens a TCP connection from every pod to every pod on another host (echo); returns failures. */
  async allPairsTcp(opts: { port?: number; v6?: boolean } = {}): Promise<string[]> {
    const port = opts.port ?? 7001;
    const pods = this.pods();
    const servers = await Promise.all(pods.map((p) => startEchoServer(p.netns, port)));
    const failures: string[] = [];
    try {
      for (const a of pods) {
        await Promise.all(pods.filter((b) => b.host !== a.host).map(async (b) => {
          const to = opts.v6 ? b.ipv6! : b.ip;
          const msg = `hello ${a.name}@${a.host.name} -> ${b.name}@${b.host.name}`;
          const reply = await tcpRequest(a.netns, to, port, msg, { timeoutMs: 3000 }).catch((e) => String(e));
          if (reply !== msg) failures.push(`tcp ${a.name}@${a.host.name} -> ${b.name}@${b.host.name} (${to}): ${reply.slice(0, 200)}`);
        }));
      }
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
    return failures;
  }
}
