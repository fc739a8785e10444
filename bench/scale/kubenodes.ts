/**
 * A Kubernetes API for a benchmark cluster, as a real node meets it: the fake
 * API server (sim/kubeapi.ts, run by kubeapi-serve.ts in the cluster's router
 * namespace) over HTTPS, holding real-sized Node objects, and a kubeconfig
 * for the daemons (certificate-authority + tokenFile).
 *
 *   const kube = await startKube(tc, peers);   // tc.sourceArgs now point every node at it
 *   ...
 *   await kube.stop();
 *
 * How it works:
 *  - PKI: a throwaway CA and a server certificate for the router address,
 *    made by openssl (a Makefile dependency), and a token file; the server
 *    requires the token.
 *  - Nodes: peer i (1..peers) is named like a cloud node, has podCIDR
 *    leasePrefix(i), flannel's annotations with leasePublicIP(i) and
 *    leaseMAC(i) (the same leases as the directory and etcd sources), and
 *    what a real Node carries besides (realNode: labels, three
 *    managedFields entries, providerID, capacity/allocatable, five
 *    conditions, nodeInfo, 25 images, CSI/kubeadm/cluster-api
 *    annotations): ~12 KB of JSON each, as on a cloud cluster. The server
 *    process makes them itself from the count (a command-line argument is
 *    at most 128 KiB); the cluster's own hosts are passed as plain nodes
 *    with podCIDRs after the peers'.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnIn, spawnedOutput, stopProcess, waitFor } from "../lib/exec.js";
import type { TwillCluster } from "../lib/twill.js";
import { NET_CONFIG, leaseMAC, leasePrefix, leasePublicIP } from "./leases.js";

const A = "flannel.alpha.coreos.com";
const SERVE = fileURLToPath(new URL("./kubeapi-serve.js", import.meta.url));
/** The bearer token the fake API accepts (read by the daemons from a file, as a service account's). */
const TOKEN = "twill-bench";
const PORT = 6443;

/** What kubeapi-serve.ts makes a node from (sim/kubeapi.ts NodeInit). */
export interface NodeSpec {
  readonly name: string;
  readonly podCIDR: string;
  readonly internalIP: string;
  readonly annotations?: Record<string, string>;
  readonly more?: { metadata?: Record<string, unknown>; spec?: Record<string, unknown>; status?: Record<string, unknown> };
}

const hex16 = (i: number): string => (i * 104729).toString(16).padStart(16, "0");

/** One managedFields entry as a kubelet or controller writes it (FieldsV1). */
function managed(manager: string): Record<string, unknown> {
  const labels = ["beta.kubernetes.io/arch", "beta.kubernetes.io/os", "kubernetes.io/arch", "kubernetes.io/hostname", "kubernetes.io/os",
    "node.kubernetes.io/instance-type", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"];
  const conditions = ["DiskPressure", "MemoryPressure", "PIDPressure", "Ready"];
  return {
    manager, operation: "Update", apiVersion: "v1", time: "2024-05-01T10:00:00Z", fieldsType: "FieldsV1",
    fieldsV1: {
      "f:metadata": { "f:annotations": { ".": {}, "f:node.alpha.kubernetes.io/ttl": {}, "f:volumes.kubernetes.io/controller-managed-attach-detach": {} }, "f:labels": Object.fromEntries(labels.map((l) => [`f:${l}`, {}])) },
      "f:status": {
        "f:conditions": Object.fromEntries(conditions.map((t) => [`k:{"type":"${t}"}`, { "f:lastHeartbeatTime": {}, "f:lastTransitionTime": {}, "f:message": {}, "f:reason": {}, "f:status": {} }])),
        "f:images": {}, "f:nodeInfo": { "f:bootID": {}, "f:containerRuntimeVersion": {}, "f:kernelVersion": {}, "f:kubeProxyVersion": {}, "f:kubeletVersion": {}, "f:machineID": {}, "f:osImage": {}, "f:systemUUID": {} },
      },
    },
  };
}

/** Peer i as a real-sized Node: flannel's annotations for lease i, and what a cloud node carries besides. */
export function realNode(i: number): NodeSpec {
  const zone = `eu-west-1${"abc"[i % 3]}`;
  const res = { cpu: "8", "ephemeral-storage": "104845292Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0", memory: "32386544Ki", pods: "58" };
  return {
    name: `ip-${leasePublicIP(i).replace(/\./g, "-")}.eu-west-1.compute.internal`, podCIDR: leasePrefix(i), internalIP: leasePublicIP(i),
    annotations: {
      [`${A}/kube-subnet-manager`]: "true", [`${A}/backend-type`]: "vxlan", [`${A}/public-ip`]: leasePublicIP(i),
      [`${A}/backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: leaseMAC(i) }),
      "csi.volume.kubernetes.io/nodeid": JSON.stringify({ "ebs.csi.aws.com": `i-0${hex16(i)}`, "efs.csi.aws.com": `i-0${hex16(i)}` }),
      "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
      "alpha.kubernetes.io/provided-node-ip": leasePublicIP(i),
      "cluster.x-k8s.io/cluster-name": "prod-eu-west-1", "cluster.x-k8s.io/machine": `prod-md-0-${i}`,
      "cluster.x-k8s.io/owner-kind": "MachineSet", "cluster.x-k8s.io/owner-name": "prod-md-0-7d9f",
    },
    more: {
      metadata: {
        labels: {
          "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
          "kubernetes.io/hostname": `ip-${i}`, "node.kubernetes.io/instance-type": "m6i.2xlarge", "topology.kubernetes.io/region": "eu-west-1",
          "topology.kubernetes.io/zone": zone, "topology.ebs.csi.aws.com/zone": zone,
        },
        managedFields: [managed("kubelet"), managed("kube-controller-manager"), managed("flanneld")],
      },
      spec: { providerID: `aws:///${zone}/i-0${hex16(i)}` },
      status: {
        capacity: res, allocatable: { ...res, cpu: "7910m", memory: "31369712Ki" },
        conditions: ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready", "NetworkUnavailable"].map((t) => ({
          type: t, status: t === "Ready" ? "True" : "False", lastHeartbeatTime: "2024-05-01T10:00:00Z", lastTransitionTime: "2024-05-01T10:00:00Z",
          reason: `Kubelet${t}`, message: `kubelet condition ${t} is as expected on this node`,
        })),
        daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
        nodeInfo: {
          machineID: `ec2${hex16(i)}`.padEnd(32, "0"), systemUUID: `ec2${hex16(i)}`.padEnd(36, "a"), bootID: hex16(i).padEnd(36, "c"),
          kernelVersion: "6.1.0-18-cloud-amd64", osImage: "Debian GNU/Linux 12 (bookworm)", containerRuntimeVersion: "containerd://1.7.13",
          kubeletVersion: "v1.29.3", kubeProxyVersion: "v1.29.3", operatingSystem: "linux", architecture: "amd64",
        },
        images: Array.from({ length: 25 }, (_, k) => ({
          names: [`registry.example.com/team-${k % 5}/service-${k}@sha256:${(i * 7919 + k).toString(16).padStart(64, "0")}`, `registry.example.com/team-${k % 5}/service-${k}:v1.${k}.${i % 10}`],
          sizeBytes: 10_000_000 + k * 12_345,
        })),
      },
    },
  };
}

/** A throwaway CA, the API server's certificate for `ip` signed by it, and a token file. */
function kubePKI(dir: string, ip: string): { caFile: string; serverCert: string; serverKey: string; tokenFile: string } {
  const d = join(dir, "kube-pki");
  mkdirSync(d, { recursive: true });
  const f = (n: string) => join(d, n);
  const ssl = (...a: string[]) => execFileSync("openssl", a, { stdio: "pipe" });
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=twill-bench-ca", "-keyout", f("ca.key"), "-out", f("ca.crt"));
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver", "-keyout", f("server.key"), "-out", f("server.csr"));
  writeFileSync(f("server.ext"), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", f("server.ext"), "-out", f("server.crt"));
  writeFileSync(f("token"), TOKEN);
  return { caFile: f("ca.crt"), serverCert: readFileSync(f("server.crt"), "utf8"), serverKey: readFileSync(f("server.key"), "utf8"), tokenFile: f("token") };
}

/**
 * Starts the fake API in `tc`'s router namespace with `peers` real-sized
 * peer nodes and the cluster's own hosts (podCIDRs after the peers'), and
 * points tc.sourceArgs at it. Returns stop().
 */
export async function startKube(tc: TwillCluster, peers: number): Promise<{ stop: () => Promise<void> }> {
  const gw = tc.nodes[0]!.host.gateway;
  const pki = kubePKI(tc.cluster.dir, gw);
  const own: NodeSpec[] = tc.nodes.map((n, k) => ({ name: n.host.name, podCIDR: leasePrefix(peers + 1 + k), internalIP: n.host.underlayIP }));
  const serve = { host: gw, port: PORT, nodes: own, realNodes: peers, tls: { cert: pki.serverCert, key: pki.serverKey }, tokens: [TOKEN] };
  // 10,000 real-sized nodes are ~1 GB in the server (each kept, in its history, and in a paged list's snapshot): room above V8's default heap limit.
  const proc = spawnIn(tc.cluster.routerNetns, process.execPath, ["--max-old-space-size=8192", SERVE, JSON.stringify(serve)], { stdio: ["ignore", "pipe", "pipe"] });
  await waitFor(() => spawnedOutput(proc).includes("listening") || spawnedOutput(proc).includes("error") || proc.exitCode !== null,
    { what: "the fake Kubernetes API server", timeoutMs: 60_000 + peers * 20, intervalMs: 100 });
  const msg = JSON.parse(spawnedOutput(proc).split("\n")[0] ?? "{}") as { listening?: string; error?: string };
  if (!msg.listening) {
    await stopProcess(proc);
    throw new Error(msg.error ?? `the fake Kubernetes API server said: ${spawnedOutput(proc).slice(-300)}`);
  }
  const netConf = join(tc.cluster.dir, "net-conf.json");
  writeFileSync(netConf, JSON.stringify(NET_CONFIG));
  const kubeconfig = join(tc.cluster.dir, "kubeconfig");
  writeFileSync(kubeconfig, [
    "apiVersion: v1", "kind: Config", "current-context: bench",
    "clusters:", "- name: bench", "  cluster:", `    server: ${JSON.stringify(msg.listening)}`, `    certificate-authority: ${JSON.stringify(pki.caFile)}`,
    "users:", "- name: bench", "  user:", `    tokenFile: ${JSON.stringify(pki.tokenFile)}`,
    "contexts:", "- name: bench", "  context:", "    cluster: bench", "    user: bench", "",
  ].join("\n"));
  tc.sourceArgs = () => ["--kube-subnet-mgr", "--kubeconfig-file", kubeconfig, "--net-config-path", netConf];
  return { stop: () => stopProcess(proc) };
}
