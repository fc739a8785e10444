/**
 * The few Kubernetes API calls the kube subnet manager makes, on
 * node:http(s), with failures turned into TwillErrors. (It replaces
 * @kubernetes/client-node, whose import alone cost ~80 MiB of RSS against
 * the daemon's 72 MiB idle budget.)
 *
 * How it works:
 *  1) The server and credentials come from kubeconfig.ts. TLS verifies the
 *     server with the configured CA (else the system's roots) unless the
 *     kubeconfig says insecure-skip-tls-verify; a client certificate is
 *     presented when configured; a token goes in "Authorization: Bearer".
 *     A 401 with a token read from a file (rotated by the kubelet) re-reads
 *     the file and retries once.
 *  2) Calls: get node, list nodes, get pod, patch nodes/<name>/status, and
 *     a watch of nodes (watchNodes): GET ...?watch=true&resourceVersion=N
 *     &allowWatchBookmarks=true&timeoutSeconds=T, a chunked stream of one
 *     JSON event per line. Its end, clean or not, is reported once.
 *  3) Every patch goes to nodes/<name>/status as a strategic merge patch, as
 *     flannel does: flannel's RBAC (kube-flannel.yml) grants patch on
 *     nodes/status only, the status subresource accepts metadata changes,
 *     and a strategic merge of status.conditions merges by "type" (a JSON
 *     merge patch would replace the whole list).
 *  4) Answers are checked once, here, into the fields twill reads (toNode):
 *     the name, resourceVersion, creationTimestamp, the annotations under
 *     the annotation prefix (`keepAnnotations`: flannel's; a real Node
 *     carries others, often JSON — CSI, kubeadm, cloud — that twill never
 *     reads) and podCIDR(s) of a node, so the watch cache holds small
 *     objects, not whole Nodes (a real one is 5-20 KB of JSON: managed
 *     fields, images, conditions).
 *  5) A list is read in pages of LIST_PAGE nodes (limit + continue, as
 *     client-go's pager), each reduced by toNode before the next is asked
 *     for, so listing a cluster of 10,000 nodes never holds more than one
 *     page of JSON (a single answer would be ~100 MB of text and several
 *     times that parsed). Every page of one list comes from the same
 *     snapshot (the API server guarantees it), so the list's
 *     resourceVersion is the one to watch from. A continue token that
 *     expired (410: the snapshot was compacted away, a list slower than
 *     etcd's compaction) starts the list again; after LIST_RESTARTS such
 *     restarts the whole list is asked for at once.
 * Errors: ERR_STORE "Kubernetes API: <call>: HTTP <status>: <message>",
 * retryable for network failures, 429 and 5xx; a KubeHttpError (with the
 * status) is the cause, which apiStatus() reads.
 */
import * as http from "node:http";
import * as https from "node:https";
import { readFile } from "node:fs/promises";
import { onLines, onText, readAnswer, sendRequest } from "./http.js";
import { TwillError, isTwillError } from "../errors.js";
import { redactURL } from "./credentials.js";
import { loadConnection, type KubeConfigOptions, type KubeConnection } from "./kubeconfig.js";
import type { NodeLike } from "./kubenode.js";

/** A Node as twill keeps it: what kubenode.ts reads, plus its resourceVersion. */
export interface V1Node extends NodeLike {
  readonly metadata: {
    readonly name: string;
    readonly resourceVersion?: string;
    /** Decides which of two nodes with one podCIDR keeps it (kubeclaims.ts). */
    readonly creationTimestamp?: string;
    readonly annotations?: Readonly<Record<string, string>>;
  };
}

export interface V1NodeList {
  readonly resourceVersion: string;
  readonly items: V1Node[];
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";

export interface NodeWatchHandlers {
  /** ADDED, MODIFIED, DELETED: the node; BOOKMARK: only its resourceVersion counts. */
  event(type: WatchEventType, node: V1Node): void;
  /** An ERROR event: a v1 Status (code 410: the version is gone, re-list). */
  status(code: number, message: string): void;
  /** The stream is over: cleanly (undefined) or not. Called once, not after cancel(). */
  end(error?: Error): void;
}

export interface KubeClientOptions extends KubeConfigOptions {
  /**
   * Keep only the annotations whose key starts with this (the kube
   * annotation prefix: the only ones twill reads); default: all of them.
   */
  readonly keepAnnotations?: string;
}

/** An HTTP error answer; `message` is the v1 Status message when there is one. */
export class KubeHttpError extends Error {
  override readonly name = "KubeHttpError";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The HTTP status of a failed API call (undefined for network failures). */
export function apiStatus(e: unknown): number | undefined {
  const c = isTwillError(e) ? e.cause : e;
  return c instanceof KubeHttpError ? c.status : undefined;
}

/** Any failure → ERR_STORE naming the call. */
export function apiError(what: string, e: unknown): TwillError {
  if (isTwillError(e)) return e;
  const status = apiStatus(e);
  let detail: string;
  if (status !== undefined) {
    const msg = (e as KubeHttpError).message;
    detail = `HTTP ${status}${msg ? `: ${msg}` : status === 401 ? ": Unauthorized" : ""}`;
  } else {
    const err = e as { message?: string; code?: string };
    detail = [err?.message ?? String(e), err?.code && !err.message?.includes(err.code) ? err.code : undefined].filter(Boolean).join(": ");
  }
  const retryable = status === undefined || status === 429 || status >= 500;
  return new TwillError("ERR_STORE", `Kubernetes API: ${what}: ${detail}`, { cause: e, retryable });
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function bad(what: string, v: unknown): Error {
  return new Error(`unexpected answer (${what}): ${JSON.stringify(v)?.slice(0, 200)}`);
}

/** The string annotations of `a` whose key starts with `keep` (all when undefined). */
function pickAnnotations(a: Obj, keep: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(a)) {
    const v = a[k];
    if (typeof v === "string" && (keep === undefined || k.startsWith(keep))) out[k] = v;
  }
  return out;
}

/**
 * The fields of a Node that twill reads; throws on a malformed one.
 * `keepAnnotations`: only the annotations under this prefix are kept.
 */
export function toNode(v: unknown, keepAnnotations?: string): V1Node {
  if (!isObj(v) || !isObj(v.metadata) || typeof v.metadata.name !== "string") throw bad("not a Node", v);
  const m = v.metadata;
  const spec = isObj(v.spec) ? v.spec : {};
  const annotations = isObj(m.annotations) ? pickAnnotations(m.annotations, keepAnnotations) : undefined;
  return {
    metadata: {
      name: m.name as string,
      ...(typeof m.resourceVersion === "string" && { resourceVersion: m.resourceVersion }),
      ...(typeof m.creationTimestamp === "string" && { creationTimestamp: m.creationTimestamp }),
      ...(annotations && { annotations }),
    },
    spec: {
      ...(typeof spec.podCIDR === "string" && { podCIDR: spec.podCIDR }),
      ...(Array.isArray(spec.podCIDRs) && { podCIDRs: spec.podCIDRs.filter((c): c is string => typeof c === "string") }),
    },
  };
}

/** A v1 Status body's message, else the text. */
function statusMessage(text: string): string {
  try {
    const s: unknown = JSON.parse(text);
    if (isObj(s) && typeof s.message === "string") return s.message;
  } catch {
    /* not JSON */
  }
  return text.slice(0, 200);
}

const REQUEST_TIMEOUT_MS = 30_000;
/** Nodes per list request (client-go's pager asks for 500 at a time). */
export const LIST_PAGE = 500;
/** Paged lists started again after a continue token expired, before one list of everything. */
const LIST_RESTARTS = 2;

/** A page after the first answered 410: the list's snapshot is gone (compacted), the list must start again. */
class ContinueExpired extends Error {}

export class KubeClient {
  private readonly agent: http.Agent;
  private token: { value: string; readAt: number } | undefined;
  private readonly streams = new Set<http.ClientRequest>();

  private constructor(private readonly c: KubeConnection, private readonly keep?: string) {
    const tls: https.AgentOptions = {
      keepAlive: true,
      rejectUnauthorized: !c.insecureSkipTLSVerify,
      ...(c.ca && { ca: c.ca }),
      ...(c.cert && { cert: c.cert }),
      ...(c.key && { key: c.key }),
      ...(c.tlsServerName && { servername: c.tlsServerName }),
    };
    this.agent = c.server.startsWith("https:") ? new https.Agent(tls) : new http.Agent({ keepAlive: true });
  }

  static async create(o: KubeClientOptions): Promise<KubeClient> {
    return new KubeClient(await loadConnection(o), o.keepAnnotations);
  }

  /** The API server URL in use, without userinfo (for messages). */
  get server(): string {
    return redactURL(this.c.server);
  }

  /** Set when credentials go over plain http by --allow-insecure-credentials: the warning to log once. */
  get insecureWarning(): string | undefined {
    return this.c.insecureWarning;
  }

  async getNode(name: string): Promise<V1Node> {
    return this.call(`get node ${name}`, async () => toNode(await this.json("GET", `/api/v1/nodes/${encodeURIComponent(name)}`), this.keep));
  }

  /** Every node, read in pages (see 5). */
  async listNodes(): Promise<V1NodeList> {
    return this.call("list nodes", async () => {
      for (let expired = 0; ; expired++) {
        try {
          return await this.listPages(expired < LIST_RESTARTS ? LIST_PAGE : 0);
        } catch (e) {
          if (!(e instanceof ContinueExpired)) throw e;
        }
      }
    });
  }

  /** One list, `limit` nodes per request (0: all in one); ContinueExpired when a page after the first gets 410. */
  private async listPages(limit: number): Promise<V1NodeList> {
    const items: V1Node[] = [];
    let token = "", resourceVersion = "";
    do {
      const q = new URLSearchParams(limit > 0 ? { limit: String(limit), ...(token && { continue: token }) } : {}).toString();
      let r: unknown;
      try {
        r = await this.json("GET", `/api/v1/nodes${q ? `?${q}` : ""}`);
      } catch (e) {
        if (token && e instanceof KubeHttpError && e.status === 410) throw new ContinueExpired();
        throw e;
      }
      if (!isObj(r) || !Array.isArray(r.items) || !isObj(r.metadata) || typeof r.metadata.resourceVersion !== "string") throw bad("not a NodeList", r);
      // Each page is reduced to what twill reads before the next is asked for: only one page's JSON is alive at a time.
      for (const item of r.items) items.push(toNode(item, this.keep));
      resourceVersion = r.metadata.resourceVersion;
      token = typeof r.metadata.continue === "string" ? r.metadata.continue : "";
    } while (token && limit > 0);
    return { resourceVersion, items };
  }

  /** The spec.nodeName of a pod ("" when unscheduled). */
  async podNodeName(namespace: string, name: string): Promise<string> {
    return this.call(`get pod ${namespace}/${name}`, async () => {
      const p = await this.json("GET", `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`);
      const spec = isObj(p) && isObj(p.spec) ? p.spec : {};
      return typeof spec.nodeName === "string" ? spec.nodeName : "";
    });
  }

  /** A strategic merge patch of nodes/<name>/status (see 3). */
  async patchNodeStatus(name: string, body: object): Promise<V1Node> {
    return this.call(`patch node ${name} status`, async () =>
      toNode(await this.json("PATCH", `/api/v1/nodes/${encodeURIComponent(name)}/status`, JSON.stringify(body), "application/strategic-merge-patch+json"), this.keep));
  }

  /** Watches all nodes from `resourceVersion` (see 2); returns cancel(). */
  watchNodes(resourceVersion: string, timeoutSeconds: number, h: NodeWatchHandlers): () => void {
    const q = new URLSearchParams({ watch: "true", resourceVersion, allowWatchBookmarks: "true", timeoutSeconds: String(timeoutSeconds) });
    let done = false;
    let req: http.ClientRequest | undefined;
    // A connection that went silent (no bookmark, no end) past the server's own timeout is dead.
    const idle = setTimeout(() => finish(new Error(`no end of the watch ${timeoutSeconds + 60} s after it started`)), (timeoutSeconds + 60) * 1000);
    idle.unref();
    const finish = (e?: Error, report = true) => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      if (req) {
        this.streams.delete(req);
        req.destroy();
      }
      if (report) h.end(e);
    };
    const open = (retried: boolean) => {
      void this.headers(retried).then((headers) => {
        if (done) return;
        req = this.send("GET", `/api/v1/nodes?${q}`, headers);
        this.streams.add(req);
        req.on("error", (e) => finish(e));
        req.on("response", (res) => {
          if (res.statusCode !== 200) {
            return onText(res, (text) => {
              if (res.statusCode === 401 && this.c.token?.file && !retried) {
                this.streams.delete(req!);
                return open(true);
              }
              finish(new KubeHttpError(res.statusCode!, statusMessage(text)));
            });
          }
          const rest = onLines(res, () => !done, (line) => this.watchLine(line, h, finish));
          res.on("end", () => {
            if (rest() && !done) this.watchLine(rest(), h, finish);
            finish();
          });
          res.on("aborted", () => finish(new Error("the watch connection was reset")));
          res.on("error", (e) => finish(e));
        });
      }, (e: Error) => finish(e));
    };
    open(false);
    return () => finish(undefined, false);
  }

  /** Ends every watch and idle connection. */
  close(): void {
    for (const r of this.streams) r.destroy();
    this.streams.clear();
    this.agent.destroy();
  }

  // ---- internals ---------------------------------------------------------

  private watchLine(line: string, h: NodeWatchHandlers, finish: (e?: Error, report?: boolean) => void): void {
    try {
      const ev: unknown = JSON.parse(line);
      if (!isObj(ev) || typeof ev.type !== "string") throw bad("watch event", ev);
      if (ev.type === "ERROR") {
        const s = isObj(ev.object) ? ev.object : {};
        h.status(typeof s.code === "number" ? s.code : 0, typeof s.message === "string" ? s.message : JSON.stringify(s));
        return finish(undefined, false);
      }
      if (ev.type === "BOOKMARK") {
        const o = ev.object;
        const rv = isObj(o) && isObj(o.metadata) ? o.metadata.resourceVersion : undefined;
        if (typeof rv !== "string") throw bad("bookmark", ev);
        return h.event("BOOKMARK", { metadata: { name: "", resourceVersion: rv } });
      }
      if (ev.type !== "ADDED" && ev.type !== "MODIFIED" && ev.type !== "DELETED") throw bad("watch event type", ev.type);
      h.event(ev.type, toNode(ev.object, this.keep));
    } catch (e) {
      finish(e as Error);
    }
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw apiError(what, e);
    }
  }

  /** The Authorization header (see 1); `fresh` re-reads a token file. */
  private async headers(fresh = false): Promise<Record<string, string>> {
    const t = this.c.token;
    if (t?.value) return { authorization: `Bearer ${t.value}` };
    if (t?.file) {
      if (fresh || !this.token || Date.now() - this.token.readAt > 60_000) {
        this.token = { value: (await readFile(t.file, "utf8")).trim(), readAt: Date.now() };
      }
      return { authorization: `Bearer ${this.token.value}` };
    }
    if (this.c.basic) return { authorization: `Basic ${Buffer.from(`${this.c.basic.username}:${this.c.basic.password}`).toString("base64")}` };
    return {};
  }

  private send(method: string, path: string, headers: Record<string, string>, body?: string, contentType?: string): http.ClientRequest {
    return sendRequest(this.c.server + path, {
      method, agent: this.agent,
      headers: {
        accept: "application/json", "user-agent": "twill",
        ...(body !== undefined && { "content-type": contentType ?? "application/json", "content-length": Buffer.byteLength(body) }),
        ...headers,
      },
    }, body);
  }

  /** One request and its JSON answer; a 401 with a token file re-reads it and retries once. */
  private async json(method: string, path: string, body?: string, contentType?: string, retried = false): Promise<unknown> {
    const headers = await this.headers(retried);
    const req = this.send(method, path, headers, body, contentType);
    const { status, text } = await readAnswer(req, REQUEST_TIMEOUT_MS, `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`);
    if (status === 401 && this.c.token?.file && !retried) return this.json(method, path, body, contentType, true);
    if (status < 200 || status > 299) throw new KubeHttpError(status, statusMessage(text));
    try {
      return JSON.parse(text);
    } catch {
      throw bad(`${method} ${path}`, text);
    }
  }
}
