/**
 * The Kubernetes API as a LeaseSource (--kube-subnet-mgr): flannel's kube
 * subnet manager, node for node.
 *
 * How it works:
 *  1) The network config is the --net-config-path file (readConfig).
 *  2) Our node is NODE_NAME (or --node-name); else the pod POD_NAME in
 *     POD_NAMESPACE, whose spec.nodeName names it, as flanneld does; else
 *     (twill only, with a warning) the hostname, which is the kubelet's
 *     default node name.
 *  3) acquire: the subnet is not chosen, it is the node's spec.podCIDR(s),
 *     assigned by the controller manager. Until it is there (or while the
 *     API is unreachable) acquire retries every retryMs, up to
 *     podCIDRTimeoutMs. The lease is built by kubenode.ownLease: public
 *     address from public-ip-overwrite when set; VTEP MAC restored from our
 *     backend-data annotation when it holds a valid one. The returned lease
 *     is authoritative: program the VTEP device with its
 *     backendData/backendV6Data MACs, which may differ from the ones offered
 *     in AcquireOptions. Then the annotations that differ are patched
 *     (strategic merge, nodes/<name>/status, as flannel; see kubeapi.ts).
 *     AcquireOptions.previous and .random are not used: nothing is chosen.
 *  4) list/watch: every node annotated kube-subnet-manager=true is a lease,
 *     keyed like flannel's etcd key for its podCIDR(s) (kubenode.ts); watch
 *     is a list + watch (kubewatch.ts) over our own small API client
 *     (kubeapi.ts). Once a watch has listed, list() reads its cache instead
 *     of fetching all nodes again.
 *  5) markReady() sets NetworkUnavailable=False (flannel's CompleteLease;
 *     flannel does it right after acquiring, twill's daemon should call it
 *     once the dataplane is programmed). Nothing needs renewing: a node
 *     annotation has no TTL.
 *  6) storedPublicIPs: our node's node-public-ip / node-public-ipv6
 *     annotations (flannel's GetStoredPublicIP, which main.go reads before it
 *     chooses the interface). It waits for our node like acquire (flannel
 *     reads it once its informer has synced, i.e. once the API answered);
 *     a bad value is an ERR_INVALID_IP naming the annotation and the value.
 *  7) Two nodes with one podCIDR: the node created first keeps it, the other
 *     is an ERR_LEASE_CONFLICT list error / event (kubeclaims.ts,
 *     kubewatch.ts 7); it becomes a lease once the holder is gone.
 *  8) Our own node after acquire, as flannel: its later changes and its
 *     deletion are ignored (logged), never events; list() returns the lease
 *     we acquired for it. flannel's LeaseWatcher drops every event for our
 *     subnet and the kube manager never renews or re-checks our lease, so
 *     flanneld neither rewrites its annotations nor exits; the daemon's
 *     own-lease checks (made for etcd, where a lease can be lost) thus never
 *     fire with this source.
 *  9) One list for a start: list() before the watch has listed fetches the
 *     nodes and keeps that list (`recent`) for REUSE_LIST_MS; another list()
 *     meanwhile, and the watch's first list, take it instead of fetching
 *     again (the watch then watches from its resourceVersion, so nothing
 *     changed since is missed; a version too old for the server is a 410
 *     and a re-list, as always). A starting daemon lists before acquire,
 *     starts the watch, and lists again for its first reconcile: on a
 *     cluster of real nodes each list is ~12 KB of JSON a node. The watch
 *     takes the kept list away: afterwards list() reads the watch's cache.
 */
import { readFile } from "node:fs/promises";
import { TwillError, isTwillError } from "../errors.js";
import type { Options } from "../config/flags.js";
import { parseNetConfig } from "../config/netconf.js";
import { nullLogger, type Logger } from "../log.js";
import { KubeClient, apiStatus, type V1Node, type V1NodeList } from "./kubeapi.js";
import {
  annotationChanges, annotationNames, leaseAnnotations, networkReadyCondition, nodeName, ownLease, podSubnets, storedPublicIPs,
  type AnnotationNames,
} from "./kubenode.js";
import { NodeWatch, resolveNodes, type OwnNode } from "./kubewatch.js";
import type { IP } from "../net/ip.js";
import type { AcquireOptions, LeaseSource, ListResult, WatchHandlers } from "./source.js";
import type { Lease, NetConfig } from "./types.js";

export interface KubeSourceOptions {
  /** --net-config-path: the network config file. */
  readonly netConfigPath: string;
  /** --kube-api-url */
  readonly kubeApiUrl?: string;
  /** --kubeconfig-file */
  readonly kubeconfigFile?: string;
  /** --allow-insecure-credentials: a kubeconfig's credentials may go to an http:// API server. */
  readonly allowInsecureCredentials?: boolean;
  /** --kube-annotation-prefix; default flannel.alpha.coreos.com. */
  readonly annotationPrefix?: string;
  /** Our node's name when known (--node-name, NODE_NAME), else the hostname. */
  readonly nodeName?: string;
  /** Where nodeName came from; "hostname" means: ask the pod first. Default "NODE_NAME". */
  readonly nodeNameSource?: Options["nodeNameSource"];
  /** POD_NAME and POD_NAMESPACE, to find our node through our pod. */
  readonly podName?: string;
  readonly podNamespace?: string;
  /** How long acquire waits for the podCIDR (and for the API); default 10 min. */
  readonly podCIDRTimeoutMs?: number;
  /** acquire's retry interval; default 1 s. */
  readonly retryMs?: number;
  /** Periodic onResync of a watch; default 5 min (flannel's informer resync); 0 = never. */
  readonly resyncMs?: number;
  /** Restart backoff after a watch error: first and longest wait; default 1 s and 30 s. */
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
  readonly log?: Logger;
  /** The clock for condition timestamps. */
  readonly now?: () => Date;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long a list fetched by list() stands in for the next one and for the watch's first (9). */
const REUSE_LIST_MS = 30_000;

export class KubeSource implements LeaseSource {
  readonly kind = "kube";
  private readonly names: AnnotationNames;
  private readonly log: Logger;
  private client?: Promise<KubeClient>;
  private config?: NetConfig;
  private name?: string;
  private readonly watches = new Set<NodeWatch>();
  private closed = false;
  /** Our node and its lease, once acquired (8). */
  private own?: OwnNode;
  /** The last list that list() fetched, and when (9). */
  private recent?: { at: number; list: V1NodeList };

  constructor(private readonly opts: KubeSourceOptions) {
    this.names = annotationNames(opts.annotationPrefix);
    this.log = opts.log ?? nullLogger;
  }

  /** The options from twill's flags (Options), plus overrides. */
  static fromOptions(o: Options, more: Partial<KubeSourceOptions> = {}): KubeSource {
    return new KubeSource({
      netConfigPath: o.netConfigPath,
      kubeApiUrl: o.kubeApiUrl,
      kubeconfigFile: o.kubeconfigFile,
      allowInsecureCredentials: o.allowInsecureCredentials,
      annotationPrefix: o.kubeAnnotationPrefix,
      nodeName: o.nodeName,
      nodeNameSource: o.nodeNameSource,
      podName: o.podName,
      podNamespace: o.podNamespace,
      ...more,
    });
  }

  private api(): Promise<KubeClient> {
    const o = this.opts;
    return (this.client ??= KubeClient.create({
      kubeApiUrl: o.kubeApiUrl, kubeconfigFile: o.kubeconfigFile, allowInsecureCredentials: o.allowInsecureCredentials, keepAnnotations: this.names.prefix,
    }).then((c) => {
      if (c.insecureWarning) this.log.warn(c.insecureWarning);
      return c;
    }, (e) => {
      this.client = undefined;
      throw e;
    }));
  }

  async readConfig(): Promise<NetConfig> {
    const path = this.opts.netConfigPath;
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (e) {
      throw new TwillError("ERR_INVALID_CONFIG", `Cannot read the network config ${path} (--net-config-path): ${(e as Error).message}`, { cause: e });
    }
    try {
      this.config = parseNetConfig(text);
    } catch (e) {
      throw isTwillError(e) ? new TwillError(e.code, `${e.message} (in ${path})`, { cause: e }) : e;
    }
    return this.config;
  }

  private netConfig(): Promise<NetConfig> {
    return this.config ? Promise.resolve(this.config) : this.readConfig();
  }

  /** Our node's name (see the note at the top); asks the API for our pod when needed. */
  async nodeName(): Promise<string> {
    if (this.name) return this.name;
    const o = this.opts;
    if (o.nodeName && o.nodeNameSource !== "hostname") return (this.name = o.nodeName);
    if (o.podName && o.podNamespace) {
      const n = await (await this.api()).podNodeName(o.podNamespace, o.podName);
      if (!n) throw new TwillError("ERR_STORE", `Kubernetes API: pod ${o.podNamespace}/${o.podName} has no spec.nodeName (not scheduled yet?)`, { retryable: true });
      this.log.info("node name from our pod", { pod: `${o.podNamespace}/${o.podName}`, node: n });
      return (this.name = n);
    }
    if (o.nodeName) {
      this.log.warn("neither NODE_NAME nor POD_NAME and POD_NAMESPACE are set: using the hostname as the node name", { node: o.nodeName });
      return (this.name = o.nodeName);
    }
    throw new TwillError("ERR_INVALID_FLAG", "the node name is unknown: set NODE_NAME, or POD_NAME and POD_NAMESPACE");
  }

  async list(): Promise<ListResult> {
    const config = await this.netConfig();
    const cached = [...this.watches].map((w) => w.snapshot()).find((s) => s !== undefined);
    const nodes = cached ?? (this.freshList() ?? (await this.fetchList())).items;
    return resolveNodes(nodes, this.names, config, this.own);
  }

  /** The list list() fetched less than REUSE_LIST_MS ago, if any (9). */
  private freshList(): V1NodeList | undefined {
    const r = this.recent;
    return r && performance.now() - r.at < REUSE_LIST_MS ? r.list : undefined;
  }

  private async fetchList(): Promise<V1NodeList> {
    const list = await (await this.api()).listNodes();
    this.recent = { at: performance.now(), list };
    return list;
  }

  /** 6): the addresses our node's node-public-ip(v6) annotations pin. */
  async storedPublicIPs(): Promise<{ v4?: IP; v6?: IP }> {
    const node = await this.ourNode(() => undefined);
    return storedPublicIPs(node, this.names);
  }

  /** Our node, once it has a podCIDR; retries as described at the top. */
  private nodeWithPodCIDR(): Promise<V1Node> {
    return this.ourNode((node, name) => {
      const s = podSubnets(node);
      return s.subnet || s.ipv6Subnet ? undefined : `node ${name} has no spec.podCIDR yet (it is assigned by the controller manager's --allocate-node-cidrs)`;
    });
  }

  /** Our node once `notYet` has no objection (says why not); retries as described at the top. */
  private async ourNode(notYet: (node: V1Node, name: string) => string | undefined): Promise<V1Node> {
    const timeout = this.opts.podCIDRTimeoutMs ?? 600_000;
    const retryMs = this.opts.retryMs ?? 1000;
    const t0 = Date.now();
    let lastLog = -Infinity;
    for (;;) {
      let why: string;
      let gettingNode = false;
      try {
        const name = await this.nodeName();
        gettingNode = true;
        const node = await (await this.api()).getNode(name);
        const wait = notYet(node, name);
        if (wait === undefined) return node;
        why = wait;
      } catch (e) {
        // Wait out what may pass: the API unreachable or overloaded, our node not
        // registered yet (404). Our own pod missing, or a 403, will not pass.
        if (!isTwillError(e, "ERR_STORE") || !(e.retryable || (gettingNode && apiStatus(e) === 404))) throw e;
        why = e.message;
      }
      if (this.closed) throw new TwillError("ERR_STORE", `stopped while waiting: ${why}`);
      const waited = Date.now() - t0;
      if (waited >= timeout) throw new TwillError("ERR_STORE", `gave up after ${Math.round(waited / 1000)} s: ${why}`, { retryable: true });
      if (Date.now() - lastLog >= 30_000) {
        this.log.info("waiting for our node", { why });
        lastLog = Date.now();
      }
      await sleep(Math.min(retryMs, timeout - waited));
    }
  }

  /**
   * Acquires our lease from our node (see the note at the top). The returned
   * lease is authoritative: its VTEP MACs may be restored from our node's
   * annotations rather than the ones in `opts`.
   */
  async acquire(opts: AcquireOptions): Promise<Lease> {
    const config = await this.netConfig();
    const node = await this.nodeWithPodCIDR();
    const name = nodeName(node);
    const { lease, notes } = ownLease(node, this.names, config, opts);
    for (const f of notes.restoredMAC) this.log.info(`restored the IPv${f} VTEP MAC from our node's annotation`, { node: name, mac: f === 4 ? lease.backendData?.vtepMAC : lease.backendV6Data?.vtepMAC });
    for (const f of notes.overwrittenIP) this.log.info(`public IPv${f} address from our node's overwrite annotation`, { node: name, annotation: f === 4 ? this.names.publicIPOverwrite : this.names.publicIPv6Overwrite });
    const changes = annotationChanges(node.metadata?.annotations, leaseAnnotations(lease, this.names));
    if (Object.keys(changes).length) await (await this.api()).patchNodeStatus(name, { metadata: { annotations: changes } });
    this.own = { name, lease };
    for (const w of this.watches) w.ownAcquired();
    return lease;
  }

  /** Writes our lease's annotations again, all of them. */
  async writeLease(lease: Lease): Promise<void> {
    const name = await this.nodeName();
    await (await this.api()).patchNodeStatus(name, { metadata: { annotations: annotationChanges(undefined, leaseAnnotations(lease, this.names)) } });
  }

  /** Sets our node's NetworkUnavailable condition to False (flannel's reason and message; see kubenode.ts). */
  async markReady(): Promise<void> {
    const name = await this.nodeName();
    const now = (this.opts.now ?? (() => new Date()))();
    await (await this.api()).patchNodeStatus(name, { status: { conditions: [networkReadyCondition(now)] } });
  }

  watch(handlers: WatchHandlers): () => void {
    let w: NodeWatch | undefined;
    let stopped = false;
    // The client and the config may need loading first; a failure there is
    // reported and retried like any other watch failure.
    const begin = async (delay: number): Promise<void> => {
      try {
        const [client, config] = await Promise.all([this.api(), this.netConfig()]);
        if (stopped) return;
        w = new NodeWatch({
          client, names: this.names, families: config, handlers,
          resyncMs: this.opts.resyncMs ?? 300_000,
          backoffMinMs: this.opts.backoffMinMs ?? 1000,
          backoffMaxMs: this.opts.backoffMaxMs ?? 30_000,
          log: this.log,
          own: () => this.own,
          // 9): the watch's first list is the one list() just fetched, if it is fresh; then list() reads the watch's cache.
          firstList: () => {
            const l = this.freshList();
            this.recent = undefined;
            return l;
          },
        });
        this.watches.add(w);
        w.start();
      } catch (e) {
        if (stopped) return;
        handlers.onError(isTwillError(e) ? e : new TwillError("ERR_STORE", String(e), { cause: e, retryable: true }));
        const max = this.opts.backoffMaxMs ?? 30_000;
        setTimeout(() => void begin(Math.min(delay * 2, max)), delay).unref();
      }
    };
    void begin(this.opts.backoffMinMs ?? 1000);
    return () => {
      stopped = true;
      if (w) {
        w.stop();
        this.watches.delete(w);
      }
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.watches) w.stop();
    this.watches.clear();
    (await this.client?.catch(() => undefined))?.close();
  }
}
