/**
 * Picks the lease source from the flags, as flanneld does: Kubernetes with
 * --kube-subnet-mgr; etcd when --etcd-endpoints (or FLANNELD_ETCD_ENDPOINTS)
 * is given; otherwise twill's embedded directory store (--lease-dir,
 * default /var/lib/twill/leases) — flanneld would dial etcd on
 * 127.0.0.1:2379 instead; twill needs no etcd for a single-machine start.
 *
 * How it works: only the chosen source's module is loaded (a dynamic
 * import), so a node pays in memory for one client only; the daemon's idle
 * RSS budget (72 MiB) leaves no room for the others.
 */
import type { Options } from "../config/flags.js";
import type { Logger } from "../log.js";
import type { LeaseSource } from "./source.js";

export const DEFAULT_LEASE_DIR = "/var/lib/twill/leases";

export function etcdRequested(argv: readonly string[], env: Record<string, string | undefined>): boolean {
  return argv.some((a) => a === "--etcd-endpoints" || a.startsWith("--etcd-endpoints=")) || !!env.FLANNELD_ETCD_ENDPOINTS;
}

export async function openSource(o: Options, log: Logger, argv: readonly string[] = process.argv, env = process.env): Promise<LeaseSource & { markReady?(): Promise<void> }> {
  if (o.kubeSubnetMgr) {
    const { KubeSource } = await import("./kubesource.js");
    return KubeSource.fromOptions(o, { log });
  }
  if (!o.leaseDir && etcdRequested(argv, env)) {
    const { EtcdSource } = await import("./etcdsource.js");
    return new EtcdSource({
      endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, cafile: o.etcdCafile, certfile: o.etcdCertfile, keyfile: o.etcdKeyfile,
      username: o.etcdUsername, password: o.etcdPassword, allowInsecureCredentials: o.allowInsecureCredentials, renewMarginMinutes: o.subnetLeaseRenewMargin,
      onLog: (level, msg, fields) => log[level](msg, fields),
    });
  }
  const { DirSource } = await import("./dirsource.js");
  return new DirSource(o.leaseDir ?? DEFAULT_LEASE_DIR);
}
