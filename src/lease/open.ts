/**
 * Picks the lease source from the flags, as flanneld does: Kubernetes with
 * --kube-subnet-mgr; etcd when --etcd-endpoints (or FLANNELD_ETCD_ENDPOINTS)
 * is given; otherwise twill's embedded directory store (--lease-dir,
 * default /var/lib/twill/leases) — flanneld would dial etcd on
 * 127.0.0.1:2379 instead; twill needs no etcd for a single-machine start.
 */
import type { Options } from "../config/flags.js";
import type { Logger } from "../log.js";
import { DirSource } from "./dirsource.js";
import { EtcdSource } from "./etcdsource.js";
import { KubeSource } from "./kubesource.js";
import type { LeaseSource } from "./source.js";

export const DEFAULT_LEASE_DIR = "/var/lib/twill/leases";

export function etcdRequested(argv: readonly string[], env: Record<string, string | undefined>): boolean {
  return argv.some((a) => a === "--etcd-endpoints" || a.startsWith("--etcd-endpoints=")) || !!env.FLANNELD_ETCD_ENDPOINTS;
}

export function openSource(o: Options, log: Logger, argv: readonly string[] = process.argv, env = process.env): LeaseSource & { markReady?(): Promise<void> } {
  if (o.kubeSubnetMgr) return KubeSource.fromOptions(o, { log });
  if (!o.leaseDir && etcdRequested(argv, env)) {
    return new EtcdSource({
      endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, cafile: o.etcdCafile, certfile: o.etcdCertfile, keyfile: o.etcdKeyfile,
      username: o.etcdUsername, password: o.etcdPassword, renewMarginMinutes: o.subnetLeaseRenewMargin,
      onLog: (level, msg, fields) => log[level](msg, fields),
    });
  }
  return new DirSource(o.leaseDir ?? DEFAULT_LEASE_DIR);
}
