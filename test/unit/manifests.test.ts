/**
 * deploy/kubernetes/*.yaml: valid Kubernetes objects, and a DaemonSet that
 * runs the daemon the way the daemon actually works.
 *
 * How it works:
 *  1) Every file is parsed as YAML 1.1 (what kubectl's parser implements), each
 *     document checked against the Kubernetes API's JSON Schema with
 *     kubernetes-models (types, enums, required fields; Kubernetes 1.33), and
 *     walked against the API's field lists from @kubernetes/client-node's
 *     models (Kubernetes 1.34), so an unknown or misplaced field fails as it
 *     does under `kubectl apply` (strict field validation).
 *  2) The daemon container's args and env are resolved as the kubelet does
 *     (downward API, then $(VAR) in args) and parsed with the daemon's own
 *     parseFlags: every flag and variable must be one the daemon reads, and
 *     the resulting Options drive every other check — probe and scrape ports
 *     against healthzPort, host mounts against subnetFile, bpfPinDir and
 *     netConfigPath, the CNI config against the subnet file the CNI plugin
 *     reads. Nothing here repeats a value the manifests or FLAGS hold.
 *  3) The probe and scrape paths are requested from the daemon's real health
 *     server.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { FLAGS, parseFlags } from "../../src/config/flags.js";
import { parseNetConfig } from "../../src/config/netconf.js";
import { startHealthServer } from "../../src/health.js";
import { createMetrics } from "../../src/metrics.js";

type Obj = Record<string, any>;

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const dir = path.join(root, "deploy/kubernetes");

/** Where container runtimes (containerd, CRI-O) look for CNI configs and plugins by default. */
const RUNTIME_CNI = { confDir: "/etc/cni/net.d", binDir: "/opt/cni/bin" };
/** Values the kubelet would give the downward API fields, for one made-up pod. */
const downward = (ns: string): Record<string, string> => ({
  "spec.nodeName": "node-a.example", "metadata.name": "twill-x7k2p", "metadata.namespace": ns,
  "status.hostIP": "192.0.2.10", "status.podIP": "192.0.2.10",
});

interface Doc { file: string; obj: Obj }

function loadDocs(): Doc[] {
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort();
  assert.ok(files.length > 0, `no manifests in ${dir}`);
  const docs: Doc[] = [];
  for (const file of files) {
    for (const d of parseAllDocuments(readFileSync(path.join(dir, file), "utf8"), { version: "1.1" })) {
      const where = `${file}: ${[...d.errors, ...d.warnings].map((e) => e.message).join("; ")}`;
      assert.equal(d.errors.length + d.warnings.length, 0, where);
      const obj = d.toJS() as unknown;
      if (obj === null) continue; // an empty document (a trailing ---)
      assert.ok(obj && typeof obj === "object" && !Array.isArray(obj), `${file}: a document is not a mapping`);
      docs.push({ file, obj: obj as Obj });
    }
  }
  return docs;
}

const docs = loadDocs();
const label = (d: Doc) => `${d.file}: ${d.obj.kind} ${d.obj.metadata?.namespace ? d.obj.metadata.namespace + "/" : ""}${d.obj.metadata?.name}`;
const ofKind = (kind: string) => docs.filter((d) => d.obj.kind === kind).map((d) => d.obj);
const one = (kind: string): Obj => {
  const all = ofKind(kind);
  assert.equal(all.length, 1, `expected one ${kind}, found ${all.length}`);
  return all[0]!;
};

// ---- 1) the API schema ------------------------------------------------------------------

test("every manifest validates against the Kubernetes API schema", async () => {
  for (const d of docs) {
    const { apiVersion, kind } = d.obj;
    assert.equal(typeof apiVersion, "string", `${d.file}: apiVersion`);
    assert.equal(typeof kind, "string", `${d.file}: kind`);
    const mod = await import(`kubernetes-models/${apiVersion}`).catch(() => ({}));
    const Model = (mod as Obj)[kind];
    assert.ok(Model, `${label(d)}: ${apiVersion} ${kind} is not a kind of the Kubernetes API`);
    assert.doesNotThrow(() => new Model(d.obj).validate(), (e: unknown) => `${label(d)}: ${(e as Error).message}`);
  }
});

test("no manifest has a field the API does not know (kubectl's strict field validation)", async () => {
  const k8s = (await import("@kubernetes/client-node")) as unknown as Obj;
  const unknown: string[] = [];
  const walk = (v: unknown, type: string, at: string): void => {
    if (v === null || v === undefined) return;
    const arr = /^Array<(.+)>$/.exec(type);
    if (arr) return void (Array.isArray(v) ? v.forEach((x, i) => walk(x, arr[1]!, `${at}[${i}]`)) : unknown.push(`${at}: not a list`));
    const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
    if (map) return void Object.entries(v as Obj).forEach(([k, x]) => walk(x, map[1]!, `${at}.${k}`));
    const model = k8s[type];
    if (typeof model?.getAttributeTypeMap !== "function") return; // a scalar, IntOrString, Quantity, any
    if (typeof v !== "object" || Array.isArray(v)) return void unknown.push(`${at}: not an object`);
    const fields = new Map<string, string>(model.getAttributeTypeMap().map((a: Obj) => [a.baseName, a.type]));
    for (const [k, x] of Object.entries(v as Obj)) {
      const t = fields.get(k);
      if (t === undefined) unknown.push(`${at}.${k} (${type} has no such field)`);
      else walk(x, t, `${at}.${k}`);
    }
  };
  for (const d of docs) {
    const version = String(d.obj.apiVersion).split("/").pop()!;
    const type = `${version[0]!.toUpperCase()}${version.slice(1)}${d.obj.kind}`;
    assert.equal(typeof k8s[type]?.getAttributeTypeMap, "function", `${label(d)}: no API model ${type}`);
    walk(d.obj, type, label(d));
  }
  assert.deepEqual(unknown, []);
});

test("namespaced objects live in the set's Namespace, which admits privileged host-network pods", () => {
  const ns = one("Namespace");
  assert.equal(ns.metadata.labels?.["pod-security.kubernetes.io/enforce"], "privileged");
  for (const d of docs) {
    if (["Namespace", "ClusterRole", "ClusterRoleBinding"].includes(d.obj.kind)) assert.equal(d.obj.metadata.namespace, undefined, label(d));
    else assert.equal(d.obj.metadata.namespace, ns.metadata.name, label(d));
  }
});

// ---- 2) the DaemonSet and the daemon ----------------------------------------------------

/** The DaemonSet, its pod spec and its one container (the daemon); computed on first use, so a bad manifest fails a test, not the file. */
const lazy = <T>(f: () => T) => { let v: T | undefined; return () => (v ??= f()); };
const theDS = lazy(() => {
  const ds = one("DaemonSet");
  const pod = ds.spec.template.spec as Obj;
  assert.equal(pod.containers.length, 1, "the DaemonSet runs one container, the daemon");
  return { ds, pod, daemon: pod.containers[0] as Obj };
});

/** The container's environment as the kubelet resolves it. */
function resolveEnv(c: Obj): Record<string, string> {
  const { ds } = theDS();
  const values = downward(ds.metadata.namespace);
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = expand(String(e.value), env);
    else {
      const field = e.valueFrom?.fieldRef?.fieldPath;
      assert.ok(field && values[field] !== undefined, `env ${e.name}: only downward API fields the test knows (${Object.keys(values).join(", ")})`);
      env[e.name] = values[field];
    }
  }
  return env;
}

/** The kubelet's $(VAR) expansion: defined variables are replaced, $$ is a literal $, the rest stays. */
function expand(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => (name === undefined ? "$" : env[name] ?? m));
}

/** The daemon's resolved env and args, and the Options it would run with. */
const theDaemon = lazy(() => {
  const { daemon } = theDS();
  const env = resolveEnv(daemon);
  const args: string[] = (daemon.args ?? []).map((a: string) => expand(a, env));
  const noHostname = () => { throw new Error("the node name must come from the manifest, not the hostname"); };
  return { env, args, opts: parseFlags(args, env, noHostname) };
});

const isUnder = (p: string, dirPath: string) => { const r = path.posix.relative(dirPath, p); return r === "" || (!r.startsWith("..") && !path.posix.isAbsolute(r)); };

/** The mount of `c` that holds `p` (the deepest), with its volume. */
function mountFor(c: Obj, p: string): { mount: Obj; volume: Obj } {
  const { pod } = theDS();
  const mounts = (c.volumeMounts ?? []).filter((m: Obj) => isUnder(p, m.mountPath)).sort((a: Obj, b: Obj) => b.mountPath.length - a.mountPath.length);
  assert.ok(mounts.length > 0, `${c.name}: nothing is mounted at ${p}`);
  const volume = pod.volumes.find((v: Obj) => v.name === mounts[0].name);
  assert.ok(volume, `${c.name}: mount ${mounts[0].name} has no volume`);
  return { mount: mounts[0], volume };
}

/** The host path `p` (in container c) is, asserting it is on a hostPath volume. */
function hostPathOf(c: Obj, p: string): string {
  const { mount, volume } = mountFor(c, p);
  assert.ok(volume.hostPath, `${c.name}: ${p} is on volume ${volume.name}, not on the host`);
  return path.posix.join(volume.hostPath.path, path.posix.relative(mount.mountPath, p));
}

test("the daemon's args and env are flags and variables the daemon reads", () => {
  const { ds, daemon } = theDS();
  const env = resolveEnv(daemon);
  const args: string[] = (daemon.args ?? []).map((a: string) => expand(a, env));
  assert.equal(daemon.command, undefined, "the daemon runs the image's ENTRYPOINT (twill)");
  const names = new Set(FLAGS.map((f) => f.name));
  const seen = new Set<string>();
  for (const a of args) {
    assert.match(a, /^--[a-z0-9-]+(=|$)/, `arg ${JSON.stringify(a)}: use --flag or --flag=value`);
    const name = a.slice(2).split("=")[0]!;
    assert.ok(names.has(name), `arg ${a}: twill has no flag --${name}`);
    assert.ok(!seen.has(name), `--${name} given twice`);
    seen.add(name);
    assert.ok(!a.includes("$("), `arg ${a}: $(...) names no variable of the container`);
  }
  const { opts } = theDaemon();
  for (const name of Object.keys(env)) {
    const flag = FLAGS.find((f) => f.env === name);
    if (flag) assert.ok(!seen.has(flag.name), `${name} is also given as --${flag.name} (the flag wins)`);
    const { [name]: _, ...without } = env;
    const changed = JSON.stringify(parseFlags(args, without, () => "hostname")) !== JSON.stringify(opts);
    const usedInArgs = (daemon.args ?? []).some((a: string) => a.includes(`$(${name})`));
    assert.ok(flag || changed || usedInArgs, `env ${name} is read by neither the daemon nor the args`);
  }
  assert.equal(opts.command, undefined, "no command word: the container runs the daemon");
  assert.equal(opts.kubeSubnetMgr, true, "leases from the Kubernetes API");
  assert.equal(opts.nodeNameSource, "NODE_NAME");
  assert.equal(opts.nodeName, downward(ds.metadata.namespace)["spec.nodeName"], "NODE_NAME is the node the pod runs on");
  assert.ok(opts.healthzPort > 0, "the health server is on (probes need it)");
});

test("probes and the Prometheus annotations point at --healthz-port, on an address they reach", () => {
  const { ds, pod, daemon } = theDS();
  const { opts } = theDaemon();
  const portOf = (p: number | string) => {
    if (typeof p === "number") return p;
    const named = (daemon.ports ?? []).find((x: Obj) => x.name === p);
    assert.ok(named, `probe port ${p} is not a named port of the container`);
    return named.containerPort as number;
  };
  for (const probe of ["livenessProbe", "readinessProbe"]) {
    assert.ok(daemon[probe]?.httpGet, `${probe}: an HTTP probe`);
    assert.equal(portOf(daemon[probe].httpGet.port), opts.healthzPort, `${probe} port`);
  }
  for (const p of daemon.ports ?? []) assert.equal(p.containerPort, opts.healthzPort, `port ${p.name} is the health server's`);
  const a = ds.spec.template.metadata.annotations ?? {};
  assert.equal(a["prometheus.io/scrape"], "true");
  assert.equal(Number(a["prometheus.io/port"]), opts.healthzPort, "prometheus.io/port");
  assert.ok(a["prometheus.io/path"], "prometheus.io/path");
  // The kubelet probes the pod IP, the node's own address with hostNetwork.
  assert.equal(pod.hostNetwork, true, "the daemon programs the host's network namespace");
  const wildcard = opts.healthzIP === "0.0.0.0" || opts.healthzIP === "::";
  assert.ok(wildcard || opts.healthzIP === downward(ds.metadata.namespace)["status.hostIP"], `--healthz-ip ${opts.healthzIP}: probes to the node IP would not reach it`);
});

test("the health server answers the probe and scrape paths", async () => {
  const { ds, daemon } = theDS();
  const { opts } = theDaemon();
  let ready = false;
  const server = await startHealthServer("127.0.0.1", 0, { ready: () => ready }, createMetrics("test", opts.dataplane));
  const get = (p: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
    request({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, path: p }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject).end();
  });
  try {
    assert.equal((await get(daemon.livenessProbe.httpGet.path)).status, 200, "liveness path");
    assert.equal((await get(daemon.readinessProbe.httpGet.path)).status, 503, "readiness path before the dataplane is programmed");
    ready = true;
    assert.equal((await get(daemon.readinessProbe.httpGet.path)).status, 200, "readiness path once ready");
    const metrics = await get(ds.spec.template.metadata.annotations["prometheus.io/path"]);
    assert.equal(metrics.status, 200, "prometheus.io/path");
    assert.match(metrics.body, /^twill_build_info\{/m);
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test("the subnet file, the pins and the network config are where the host and the daemon expect them", () => {
  const { pod, daemon } = theDS();
  const { opts } = theDaemon();
  // The subnet file is read by the CNI plugin on the host: same path there.
  const subnetDir = path.posix.dirname(opts.subnetFile);
  assert.equal(hostPathOf(daemon, subnetDir), subnetDir, "--subnet-file's directory is the host's");
  assert.notEqual(mountFor(daemon, subnetDir).mount.readOnly, true, "the subnet file is written");
  // Pins live on the host's bpffs, so the dataplane outlives the pod.
  const pins = mountFor(daemon, opts.bpfPinDir);
  assert.equal(hostPathOf(daemon, opts.bpfPinDir), opts.bpfPinDir, "--bpf-pin-dir is on the host's /sys/fs/bpf");
  assert.ok(isUnder(opts.bpfPinDir, pins.mount.mountPath) && opts.bpfPinDir !== pins.mount.mountPath, "the pins are in a directory of their own");
  assert.ok(opts.bpfPinDir.includes(opts.nodeName), "--bpf-pin-dir is per node");
  assert.ok(["HostToContainer", "Bidirectional"].includes(pins.mount.mountPropagation), "the daemon sees a bpffs mounted on the host after the pod started");
  // Whatever mounts the bpffs must propagate it to the host (a privileged init container).
  const bpffsMounters = (pod.initContainers ?? []).filter((c: Obj) => (c.volumeMounts ?? []).some((m: Obj) => m.name === pins.volume.name && m.mountPropagation === "Bidirectional"));
  assert.equal(bpffsMounters.length, 1, "one init container mounts the bpffs for the host");
  // The network config comes from the ConfigMap and parses as the daemon parses it.
  const cfg = mountFor(daemon, opts.netConfigPath);
  assert.ok(cfg.volume.configMap, "--net-config-path is on a ConfigMap volume");
  const cm = ofKind("ConfigMap").find((c) => c.metadata.name === cfg.volume.configMap.name);
  assert.ok(cm, `ConfigMap ${cfg.volume.configMap.name} is not in the set`);
  const text = cm.data?.[path.posix.relative(cfg.mount.mountPath, opts.netConfigPath)];
  assert.ok(text, `ConfigMap ${cm.metadata.name} has no ${path.posix.basename(opts.netConfigPath)}`);
  assert.doesNotThrow(() => parseNetConfig(text));
});

test("the daemon runs unprivileged, with a named capability list, each capability justified in a comment", () => {
  const { daemon } = theDS();
  const sc = daemon.securityContext ?? {};
  assert.notEqual(sc.privileged, true, "the daemon container is not privileged");
  const add: string[] = sc.capabilities?.add ?? [];
  // What --dataplane bpf needs (src/dataplane/choose.ts) and kube-flannel's NET_RAW for iptables.
  assert.deepEqual([...add].sort(), ["BPF", "NET_ADMIN", "NET_RAW", "PERFMON"]);
  // In the file, every `- CAP` of the list comes right after a comment saying what it is for.
  const lines = readFileSync(path.join(dir, "30-daemonset.yaml"), "utf8").split("\n");
  for (const cap of add) {
    const i = lines.findIndex((l) => new RegExp(`^\\s+- ${cap}\\s*$`).test(l));
    assert.ok(i > 0, `- ${cap} on a line of its own`);
    assert.match(lines[i - 1]!, /^\s+#/, `${cap}: a comment above it says why`);
  }
});

test("the privileged init containers are the sysctls and the bpffs mount, nothing else", () => {
  const { pod } = theDS();
  const privileged = (pod.initContainers ?? []).filter((c: Obj) => c.securityContext?.privileged === true).map((c: Obj) => c.name);
  assert.deepEqual(privileged.sort(), ["mount-bpffs", "sysctls"]);
  const sysctls = pod.initContainers.find((c: Obj) => c.name === "sysctls");
  assert.match(sysctls.args.join(" "), /\/proc\/sys\/net\/ipv4\/ip_forward/);
});

test("Bidirectional mount propagation only in privileged containers (the API server rejects it otherwise)", () => {
  const { pod } = theDS();
  for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
    for (const m of c.volumeMounts ?? []) {
      if (m.mountPropagation === "Bidirectional") assert.equal(c.securityContext?.privileged, true, `${c.name}: ${m.mountPath}`);
    }
  }
});

test("init containers install the CNI config and the flannel plugin that reads our subnet file", () => {
  const { pod } = theDS();
  const { opts } = theDaemon();
  const inits: Obj[] = pod.initContainers ?? [];
  // `cp -f SRC DST`, or the image's `/opt/bin/install-conf SRC DST` (kube-flannel's atomic copy, bin/install-conf).
  const copies = inits.filter((c) => ["cp", "/opt/bin/install-conf"].includes(c.command?.[0])).map((c) => ({ c, src: c.args.at(-2) as string, dst: c.args.at(-1) as string }));
  // The CNI config: from the ConfigMap to the runtime's config dir.
  const conf = copies.find((x) => path.posix.dirname(hostPathOrUndefined(x.c, x.dst) ?? "") === RUNTIME_CNI.confDir);
  assert.ok(conf, `no init container copies a CNI config into ${RUNTIME_CNI.confDir}`);
  const src = mountFor(conf.c, conf.src);
  assert.ok(src.volume.configMap, "the CNI config comes from the ConfigMap");
  const cm = ofKind("ConfigMap").find((c) => c.metadata.name === src.volume.configMap.name)!;
  const list = JSON.parse(cm.data[path.posix.relative(src.mount.mountPath, conf.src)]);
  assert.ok(Array.isArray(list.plugins) && conf.dst.endsWith(".conflist"), "a plugin list, installed as .conflist");
  const flannel = list.plugins[0];
  assert.equal(flannel.type, "flannel", "the first plugin is flannel's (it reads the subnet file)");
  // The flannel plugin reads flanneld's default subnet file unless told otherwise.
  const flanneldDefault = FLAGS.find((f) => f.key === "subnetFile")!.default;
  assert.equal(flannel.subnetFile ?? flanneldDefault, opts.subnetFile, "the CNI plugin reads the subnet file the daemon writes");
  // The plugin binary, named as the config's type, into the runtime's plugin dir.
  const bin = copies.find((x) => hostPathOrUndefined(x.c, x.dst) === path.posix.join(RUNTIME_CNI.binDir, flannel.type));
  assert.ok(bin, `no init container installs ${RUNTIME_CNI.binDir}/${flannel.type}`);
});

function hostPathOrUndefined(c: Obj, p: string): string | undefined {
  try { return hostPathOf(c, p); } catch { return undefined; }
}

test("RBAC: the pod's ServiceAccount may make the daemon's API calls, and no more", () => {
  const { pod } = theDS();
  const { opts } = theDaemon();
  const sa = one("ServiceAccount");
  assert.equal(pod.serviceAccountName, sa.metadata.name);
  const binding = ofKind("ClusterRoleBinding").find((b) => b.subjects?.some((s: Obj) => s.kind === "ServiceAccount" && s.name === sa.metadata.name && s.namespace === sa.metadata.namespace));
  assert.ok(binding, "the ServiceAccount is bound");
  const role = ofKind("ClusterRole").find((r) => r.metadata.name === binding.roleRef.name);
  assert.ok(role && binding.roleRef.kind === "ClusterRole");
  const granted = new Set<string>();
  for (const r of role.rules) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) granted.add(`${g}/${res}:${v}`);
  // What src/lease/kubeapi.ts calls: readNode, listNode + watch (informer), patchNodeStatus.
  // readNamespacedPod only without NODE_NAME, which the DaemonSet sets.
  const needed = ["/nodes:get", "/nodes:list", "/nodes:watch", "/nodes/status:patch", ...(opts.nodeNameSource === "NODE_NAME" ? [] : ["/pods:get"])];
  assert.deepEqual([...granted].sort(), needed.sort());
});
