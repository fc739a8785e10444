/**
 * The few Kubernetes API calls the kube subnet manager makes, through
 * @kubernetes/client-node, with its errors turned into TwillErrors.
 *
 * How it works:
 *  1) The client config is chosen as flannel's clientcmd.BuildConfigFromFlags
 *     does: --kubeconfig-file (its current context; --kube-api-url, when also
 *     given, replaces its server), else --kube-api-url alone (no auth), else
 *     the in-cluster service account. The library refuses a plain http://
 *     server unless TLS verification is "skipped"; there is no TLS to verify
 *     on http, so we set that for http servers (client-go talks http fine).
 *  2) The library is imported on first use, not when this module loads, so
 *     the daemon runs in dir/etcd mode even where the library cannot load;
 *     a load failure becomes an error that says why.
 *  3) Every patch goes to nodes/<name>/status as a strategic merge patch, as
 *     flannel does: flannel's RBAC (kube-flannel.yml) grants patch on
 *     nodes/status only, the status subresource accepts metadata changes,
 *     and a strategic merge of status.conditions merges by "type" (a JSON
 *     merge patch would replace the whole list). The library's default
 *     patch Content-Type is application/json-patch+json, so it is set
 *     explicitly.
 * Errors: ERR_STORE "Kubernetes API: <call>: <status> <message>", retryable
 * for network failures, 429 and 5xx; the library's error is the cause
 * (apiStatus() reads its HTTP status).
 */
import type * as K8s from "@kubernetes/client-node";
import * as zlib from "node:zlib";
import { TwillError, isTwillError } from "../errors.js";

type Lib = typeof K8s;
export type V1Node = K8s.V1Node;
export type V1NodeList = K8s.V1NodeList;
export type NodeInformer = K8s.ListWatch<K8s.V1Node>;

export interface KubeClientOptions {
  /** --kube-api-url */
  readonly kubeApiUrl?: string;
  /** --kubeconfig-file */
  readonly kubeconfigFile?: string;
}

let lib: Promise<Lib> | undefined;

async function loadLib(): Promise<Lib> {
  try {
    return await (lib ??= import("@kubernetes/client-node"));
  } catch (e) {
    lib = undefined;
    // undici 8 calls zlib.createZstdDecompress when it loads; Node 20 has no zstd.
    const hint = !("createZstdDecompress" in zlib)
      ? ` (@kubernetes/client-node 2 pulls in undici 8, which needs Node >= 22.19; this is Node ${process.versions.node}: pin undici 7 for it with an npm override, or use a newer Node)`
      : "";
    throw new TwillError("ERR_STORE", `Kubernetes API: cannot load @kubernetes/client-node: ${(e as Error)?.message ?? e}${hint}`, { cause: e });
  }
}

/** The HTTP status of a failed API call (undefined for network failures). */
export function apiStatus(e: unknown): number | undefined {
  const c = isTwillError(e) ? e.cause : e;
  const code = (c as { code?: unknown; statusCode?: unknown } | undefined)?.code ?? (c as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof code === "number" ? code : undefined;
}

/** Any error from the library or the network → ERR_STORE naming the call. */
export function apiError(what: string, e: unknown): TwillError {
  if (isTwillError(e)) return e;
  const status = apiStatus(e);
  let detail: string;
  if (status !== undefined) {
    // ApiException carries the response body: a v1 Status with a message.
    const body = (e as { body?: unknown }).body;
    let msg = "";
    try {
      const s: unknown = typeof body === "string" ? JSON.parse(body) : body;
      if (s && typeof s === "object" && typeof (s as { message?: unknown }).message === "string") msg = (s as { message: string }).message;
    } catch {
      msg = typeof body === "string" ? body.slice(0, 200) : "";
    }
    detail = `HTTP ${status}${msg ? `: ${msg}` : status === 401 ? ": Unauthorized" : ""}`;
  } else {
    const err = e as { message?: string; cause?: { code?: string; message?: string } };
    detail = [err?.message ?? String(e), err?.cause?.code ?? err?.cause?.message].filter(Boolean).join(": ");
  }
  const retryable = status === undefined || status === 429 || status >= 500;
  return new TwillError("ERR_STORE", `Kubernetes API: ${what}: ${detail}`, { cause: e, retryable });
}

export class KubeClient {
  private constructor(
    private readonly k8s: Lib,
    private readonly kc: K8s.KubeConfig,
    private readonly core: K8s.CoreV1Api,
    /** The API server URL in use. */
    readonly server: string,
  ) {}

  static async create(o: KubeClientOptions): Promise<KubeClient> {
    const k8s = await loadLib();
    const kc = new k8s.KubeConfig();
    try {
      if (o.kubeconfigFile) kc.loadFromFile(o.kubeconfigFile);
      else if (o.kubeApiUrl) {
        kc.loadFromOptions({
          clusters: [{ name: "kube-api-url", server: o.kubeApiUrl.replace(/\/$/, ""), skipTLSVerify: false }],
          users: [{ name: "anonymous" }],
          contexts: [{ name: "kube-api-url", cluster: "kube-api-url", user: "anonymous" }],
          currentContext: "kube-api-url",
        });
      } else {
        if (!process.env.KUBERNETES_SERVICE_HOST) {
          throw new Error("not in a pod (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig-file nor --kube-api-url is given");
        }
        kc.loadFromCluster();
      }
    } catch (e) {
      const where = o.kubeconfigFile ? `kubeconfig ${o.kubeconfigFile}` : "the in-cluster config";
      throw new TwillError("ERR_INVALID_CONFIG", `Cannot load ${where}: ${(e as Error).message}`, { cause: e });
    }
    const cur = kc.getCurrentCluster();
    if (!cur) throw new TwillError("ERR_INVALID_CONFIG", `Cannot load kubeconfig ${o.kubeconfigFile}: its current context ${JSON.stringify(kc.getCurrentContext())} names no cluster`);
    const server = (o.kubeconfigFile && o.kubeApiUrl ? o.kubeApiUrl : cur.server).replace(/\/$/, "");
    if (!/^https?:\/\//.test(server)) throw new TwillError("ERR_INVALID_CONFIG", `the Kubernetes API server ${JSON.stringify(server)} is not an http:// or https:// URL`);
    kc.clusters = kc.clusters.map((c) => (c.name === cur.name ? { ...c, server, skipTLSVerify: c.skipTLSVerify || server.startsWith("http:") } : c));
    return new KubeClient(k8s, kc, kc.makeApiClient(k8s.CoreV1Api), server);
  }

  async getNode(name: string): Promise<V1Node> {
    try {
      return await this.core.readNode({ name });
    } catch (e) {
      throw apiError(`get node ${name}`, e);
    }
  }

  async listNodes(): Promise<V1NodeList> {
    try {
      return await this.core.listNode();
    } catch (e) {
      throw apiError("list nodes", e);
    }
  }

  /** The spec.nodeName of a pod ("" when unscheduled). */
  async podNodeName(namespace: string, name: string): Promise<string> {
    try {
      return (await this.core.readNamespacedPod({ namespace, name })).spec?.nodeName ?? "";
    } catch (e) {
      throw apiError(`get pod ${namespace}/${name}`, e);
    }
  }

  /** A strategic merge patch of nodes/<name>/status (see the note at the top). */
  async patchNodeStatus(name: string, body: object): Promise<V1Node> {
    try {
      return await this.core.patchNodeStatus({ name, body }, this.k8s.setHeaderOptions("Content-Type", this.k8s.PatchStrategy.StrategicMergePatch));
    } catch (e) {
      throw apiError(`patch node ${name} status`, e);
    }
  }

  /**
   * A list+watch informer over all nodes (makeInformer's ListWatch); `list`
   * is called for every (re-)list. Once `stopped()` is true it opens no new
   * list or watch: the library's stop() does not cancel a reconnect that is
   * waiting out its delay, which would then open a watch nobody stops.
   */
  nodeInformer(list: () => Promise<V1NodeList>, stopped: () => boolean): NodeInformer {
    class GuardedWatch extends this.k8s.Watch {
      override watch(...args: Parameters<K8s.Watch["watch"]>): Promise<AbortController> {
        return stopped() ? Promise.resolve(new AbortController()) : super.watch(...args);
      }
    }
    const guardedList = () => (stopped() ? Promise.reject(new Error("the node watch is stopped")) : list());
    return new this.k8s.ListWatch<V1Node>("/api/v1/nodes", new GuardedWatch(this.kc), guardedList, false);
  }
}
