/**
 * A simulated Kubernetes API server, for the kube subnet manager's tests and
 * the benchmark: a local HTTP(S) server (127.0.0.1, random port) speaking
 * the v1 API's JSON for what twill uses.
 *
 *   GET   /api/v1/nodes                          NodeList {metadata.resourceVersion, items}
 *   GET   /api/v1/nodes?limit=N[&continue=T]     one page of a list, by name, as the real API pages
 *                                                one: metadata.continue (an opaque token) and
 *                                                remainingItemCount while more remain; every page
 *                                                of a list is of the same snapshot (its first page's
 *                                                resourceVersion); a token whose snapshot was
 *                                                compacted away gets a 410 Expired
 *   GET   /api/v1/nodes?watch=true&resourceVersion=N
 *                                                a chunked stream, one JSON watch event per
 *                                                line: {"type":"ADDED|MODIFIED|DELETED","object":Node};
 *                                                events after N are replayed from history; N older
 *                                                than the compaction point gets an ERROR event with
 *                                                a 410 Status (as the real API) and the stream ends;
 *                                                no N (or "0"): synthetic ADDED for every node first;
 *                                                with allowWatchBookmarks=true, bookmark() sends
 *                                                {"type":"BOOKMARK","object":{"kind":"Node","metadata":{"resourceVersion"}}}
 *   GET   /api/v1/nodes/{name}                   Node
 *   PATCH /api/v1/nodes/{name}[/status]          merge patch or strategic merge patch
 *   GET   /api/v1/namespaces/{ns}/pods/{name}    Pod (metadata, spec.nodeName)
 *
 * How it works: objects are plain JSON, as on the wire. Every change bumps
 * one global resourceVersion, is kept in a history for resuming watches, and
 * is sent to every open watch. Patches behave like the real API's: a patch
 * of the node keeps its status, a patch of nodes/{name}/status keeps its
 * spec; a strategic merge patch merges status.conditions and
 * status.addresses by "type" (a JSON merge patch replaces lists); null
 * deletes a key; a patch that changes nothing does not bump the version;
 * application/json-patch+json with an object body is refused (400), as the
 * real server does. Every request is recorded with its Content-Type and
 * parsed body, for assertions. Errors are v1 Status objects. Tests can add,
 * change and delete nodes, drop watches (cleanly or abruptly), compact the
 * history, expire open watches (410), and make the next requests fail.
 *
 * Auth and TLS, off by default: `tokens` lists the bearer tokens accepted
 * (setTokens() rotates them; anything else gets a 401 Status); `tls` serves
 * HTTPS with the given certificate and, with `clientCA`, requires a client
 * certificate signed by it (a missing or unknown one gets a 401, as the real
 * API server answers an anonymous request with anonymous auth off).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTLSServer } from "node:https";
import type { TLSSocket } from "node:tls";
import type { AddressInfo, Socket } from "node:net";
import { writeFileSync } from "node:fs";

export type Json = Record<string, any>;

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly contentType?: string;
  readonly body?: unknown;
}

export interface NodeInit {
  readonly name: string;
  readonly podCIDR?: string;
  /** Defaults to [podCIDR] when podCIDR is given. */
  readonly podCIDRs?: readonly string[];
  readonly annotations?: Readonly<Record<string, string>>;
  readonly internalIP?: string;
  /** metadata.creationTimestamp; default 2024-05-01T10:00:00Z (the same for every node, so the name decides). */
  readonly creationTimestamp?: string;
  /** More fields for each part of the node (labels, managedFields, providerID, images, ...), set over the defaults: a real-sized Node. */
  readonly more?: { readonly metadata?: Json; readonly spec?: Json; readonly status?: Json };
}

export interface FailRule {
  readonly method?: string;
  readonly path?: RegExp;
  /** Only watch requests (true) or only non-watch requests (false). */
  readonly watch?: boolean;
  /** Only requests with this query parameter (e.g. "continue": the pages of a list after the first). */
  readonly query?: string;
  readonly status: number;
  /** How many matching requests fail; default 1. */
  count?: number;
}

export interface FakeKubeOptions {
  readonly host?: string;
  readonly port?: number;
  /** Accepted bearer tokens; undefined: no auth. */
  readonly tokens?: readonly string[];
  /** Serve HTTPS (PEM); with clientCA, require a client certificate it signed. */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer; readonly clientCA?: string | Buffer };
}

export interface KubeconfigOptions {
  readonly insecureSkipTLSVerify?: boolean;
  /** certificate-authority (a file). */
  readonly caFile?: string;
  /** client-certificate-data / client-key-data (PEM, written base64). */
  readonly clientCert?: string | Buffer;
  readonly clientKey?: string | Buffer;
  readonly token?: string;
  readonly tokenFile?: string;
  /** Write it as JSON instead of YAML. */
  readonly json?: boolean;
}

interface HistoryEvent { readonly rv: number; readonly type: "ADDED" | "MODIFIED" | "DELETED"; readonly object: Json }

const clone = <T>(v: T): T => structuredClone(v);
const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Json = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** The list fields of a Node that a strategic merge patch merges, and their merge keys. */
const MERGE_KEYS: Readonly<Record<string, string>> = { "status.conditions": "type", "status.addresses": "type" };

/** A strategic merge patch, for the fields of a Node that twill touches. */
export function strategicMergePatch(target: unknown, patch: unknown, path = ""): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Json = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith("$")) continue; // directives ($patch, $setElementOrder, ...) are not used by twill
    const at = path ? `${path}.${k}` : k;
    const key = MERGE_KEYS[at];
    if (v === null) delete out[k];
    else if (Array.isArray(v) && key) {
      const list: Json[] = Array.isArray(out[k]) ? [...out[k]] : [];
      for (const item of v) {
        const i = list.findIndex((x) => isObj(x) && isObj(item) && x[key] === item[key]);
        if (i >= 0) list[i] = strategicMergePatch(list[i], item, at) as Json;
        else list.push(clone(item));
      }
      out[k] = list;
    } else out[k] = strategicMergePatch(out[k], v, at);
  }
  return out;
}

function status(code: number, reason: string, message: string, details?: Json): Json {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, ...(details && { details }), code };
}

const REASONS: Record<number, string> = {
  400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Expired",
  415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
};

export class FakeKube {
  readonly requests: RecordedRequest[] = [];
  private readonly nodes = new Map<string, Json>();
  private readonly pods = new Map<string, Json>();
  private readonly history: HistoryEvent[] = [];
  /** Open watches and the resourceVersion each started from. */
  private readonly watchers = new Map<ServerResponse, number>();
  /** The open watches that asked for bookmarks. */
  private readonly bookmarkers = new Set<ServerResponse>();
  private tokens: readonly string[] | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly failRules: FailRule[] = [];
  private rv = 100;
  private compactedRv = 0;
  private uid = 0;

  private clientCA = false;
  /** Called with every request as it arrives, before it is answered (a test's hook: change things between two pages). */
  onRequest?: (r: RecordedRequest) => void;
  /** The snapshots of paged lists still being read, by id (a continue token names one and where to go on). */
  private readonly lists = new Map<number, { rv: number; items: Json[] }>();
  private listId = 0;

  private constructor(private readonly server: Server, readonly url: string) {}

  /** Accepts these bearer tokens from now on (a rotation); undefined turns auth off. */
  setTokens(tokens: readonly string[] | undefined): void {
    this.tokens = tokens;
  }

  static async start(opts: FakeKubeOptions = {}): Promise<FakeKube> {
    let fake!: FakeKube;
    const handler = (req: IncomingMessage, res: ServerResponse) => void fake.handle(req, res);
    const t = opts.tls;
    const server: Server = t
      ? createTLSServer({ cert: t.cert, key: t.key, ...(t.clientCA && { ca: t.clientCA, requestCert: true, rejectUnauthorized: false }) }, handler)
      : createServer(handler);
    server.on("connection", (s) => {
      fake.sockets.add(s);
      s.on("close", () => fake.sockets.delete(s));
    });
    const host = opts.host ?? "127.0.0.1";
    await new Promise<void>((r) => server.listen(opts.port ?? 0, host, r));
    fake = new FakeKube(server, `${t ? "https" : "http"}://${host}:${(server.address() as AddressInfo).port}`);
    fake.tokens = opts.tokens;
    fake.clientCA = !!t?.clientCA;
    return fake;
  }

  async close(): Promise<void> {
    for (const w of this.watchers.keys()) w.destroy();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** The PATCH requests, in order. */
  get patches(): RecordedRequest[] {
    return this.requests.filter((r) => r.method === "PATCH");
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  /** Writes a kubeconfig (YAML, or JSON) for this server: one cluster, the given credentials. */
  writeKubeconfig(path: string, opts: KubeconfigOptions = {}): void {
    const b64 = (v: string | Buffer) => Buffer.from(v).toString("base64");
    const user: Json = {
      ...(opts.clientCert && { "client-certificate-data": b64(opts.clientCert) }),
      ...(opts.clientKey && { "client-key-data": b64(opts.clientKey) }),
      ...(opts.token && { token: opts.token }),
      ...(opts.tokenFile && { tokenFile: opts.tokenFile }),
    };
    const cluster: Json = {
      server: this.url,
      ...(opts.insecureSkipTLSVerify && { "insecure-skip-tls-verify": true }),
      ...(opts.caFile && { "certificate-authority": opts.caFile }),
    };
    if (opts.json) {
      writeFileSync(path, JSON.stringify({
        apiVersion: "v1", kind: "Config", "current-context": "fake",
        clusters: [{ name: "fake", cluster }], contexts: [{ name: "fake", context: { cluster: "fake", user: "fake" } }], users: [{ name: "fake", user }],
      }, null, 2));
      return;
    }
    const block = (o: Json, indent: string) => Object.entries(o).map(([k, v]) => `${indent}${k}: ${typeof v === "string" ? JSON.stringify(v) : v}`);
    writeFileSync(path, [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: fake",
      "  cluster:",
      ...block(cluster, "    "),
      "contexts:",
      "- name: fake",
      "  context:",
      "    cluster: fake",
      "    user: fake",
      "current-context: fake",
      "users:",
      "- name: fake",
      ...(Object.keys(user).length ? ["  user:", ...block(user, "    ")] : ["  user: {}"]),
      "",
    ].join("\n"));
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that asked for bookmarks; returns how many. */
  bookmark(): number {
    const open = [...this.bookmarkers].filter((w) => this.watchers.has(w));
    for (const w of open) w.write(JSON.stringify({ type: "BOOKMARK", object: { kind: "Node", apiVersion: "v1", metadata: { resourceVersion: String(this.rv) } } }) + "\n");
    return open.length;
  }

  // ---- objects -----------------------------------------------------------

  node(name: string): Json | undefined {
    const n = this.nodes.get(name);
    return n && clone(n);
  }

  addNode(init: NodeInit): Json {
    if (this.nodes.has(init.name)) throw new Error(`fake: node ${init.name} exists`);
    const t = "2024-05-01T10:00:00Z";
    const podCIDRs = init.podCIDRs ?? (init.podCIDR ? [init.podCIDR] : undefined);
    const node: Json = {
      kind: "Node",
      apiVersion: "v1",
      metadata: {
        name: init.name,
        uid: `00000000-0000-4000-8000-${String(++this.uid).padStart(12, "0")}`,
        resourceVersion: "",
        creationTimestamp: init.creationTimestamp ?? t,
        labels: { "kubernetes.io/hostname": init.name, "kubernetes.io/os": "linux" },
        annotations: { "node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true", ...init.annotations },
      },
      spec: { ...(init.podCIDR ?? podCIDRs?.[0] ? { podCIDR: init.podCIDR ?? podCIDRs![0] } : {}), ...(podCIDRs && { podCIDRs: [...podCIDRs] }) },
      status: {
        conditions: [
          { type: "MemoryPressure", status: "False", lastHeartbeatTime: t, lastTransitionTime: t, reason: "KubeletHasSufficientMemory", message: "kubelet has sufficient memory available" },
          { type: "Ready", status: "True", lastHeartbeatTime: t, lastTransitionTime: t, reason: "KubeletReady", message: "kubelet is posting ready status" },
        ],
        addresses: [{ type: "InternalIP", address: init.internalIP ?? "192.168.0.1" }, { type: "Hostname", address: init.name }],
      },
    };
    if (init.more) for (const part of ["metadata", "spec", "status"] as const) Object.assign(node[part], clone(init.more[part] ?? {}));
    this.commit("ADDED", node);
    return clone(node);
  }

  /** Changes a node (the callback edits a copy); a change bumps the version and is watched. */
  updateNode(name: string, edit: (n: Json) => void): Json {
    const old = this.nodes.get(name);
    if (!old) throw new Error(`fake: no node ${name}`);
    const n = clone(old);
    edit(n);
    this.commitIfChanged(old, n);
    return clone(this.nodes.get(name)!);
  }

  /** Sets (string) or removes (undefined) annotations of a node. */
  annotate(name: string, annotations: Readonly<Record<string, string | undefined>>): Json {
    return this.updateNode(name, (n) => {
      n.metadata.annotations ??= {};
      for (const [k, v] of Object.entries(annotations)) {
        if (v === undefined) delete n.metadata.annotations[k];
        else n.metadata.annotations[k] = v;
      }
    });
  }

  deleteNode(name: string): void {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`fake: no node ${name}`);
    this.nodes.delete(name);
    const gone = clone(n);
    gone.metadata.resourceVersion = String(++this.rv);
    this.record("DELETED", gone);
  }

  addPod(namespace: string, name: string, nodeName: string): void {
    this.pods.set(`${namespace}/${name}`, {
      kind: "Pod", apiVersion: "v1",
      metadata: { name, namespace, uid: `pod-${++this.uid}`, resourceVersion: String(++this.rv) },
      spec: { nodeName, containers: [{ name: "kube-flannel", image: "twill" }] },
      status: { phase: "Running" },
    });
  }

  // ---- faults ------------------------------------------------------------

  /** Ends every open watch: cleanly (end of stream, as on a server timeout) or abruptly (reset). */
  dropWatches(how: "clean" | "abrupt" = "clean"): number {
    const n = this.watchers.size;
    for (const w of [...this.watchers.keys()]) {
      this.watchers.delete(w);
      if (how === "clean") w.end();
      else w.socket?.destroy();
    }
    return n;
  }

  /** Forgets the history: resuming a watch from an older version gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history.length = 0;
  }

  /** compact(), and every open watch gets the 410 ERROR event and ends (the client must re-list). */
  expireWatches(): number {
    this.compact();
    const n = this.watchers.size;
    for (const [w, from] of [...this.watchers]) {
      this.watchers.delete(w);
      w.end(JSON.stringify({ type: "ERROR", object: this.goneStatus(from) }) + "\n");
    }
    return n;
  }

  /** Makes the next matching request(s) fail with `status`. */
  failNext(rule: FailRule): void {
    this.failRules.push({ count: 1, ...rule });
  }

  /** Resolves when at least `n` watches are open. */
  async waitForWatches(n = 1, timeoutMs = 5000): Promise<void> {
    const t0 = Date.now();
    while (this.watchers.size < n) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`fake: ${this.watchers.size} watches open after ${timeoutMs} ms, want ${n}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  // ---- internals ---------------------------------------------------------

  private goneStatus(asked: number): Json {
    return status(410, "Expired", `too old resource version: ${asked} (${this.compactedRv})`);
  }

  private commit(type: "ADDED" | "MODIFIED", n: Json): void {
    n.metadata.resourceVersion = String(++this.rv);
    this.nodes.set(n.metadata.name, n);
    this.record(type, clone(n));
  }

  private commitIfChanged(old: Json, n: Json): boolean {
    n.metadata.resourceVersion = old.metadata.resourceVersion;
    if (JSON.stringify(n) === JSON.stringify(old)) return false;
    this.commit("MODIFIED", n);
    return true;
  }

  private record(type: HistoryEvent["type"], object: Json): void {
    const ev = { rv: this.rv, type, object };
    this.history.push(ev);
    for (const w of this.watchers.keys()) w.write(JSON.stringify({ type, object }) + "\n");
  }

  private send(res: ServerResponse, code: number, body: Json): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  }

  private fail(res: ServerResponse, code: number, message: string, details?: Json): void {
    this.send(res, code, status(code, REASONS[code] ?? "Unknown", message, details));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const query = Object.fromEntries(url.searchParams);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const contentType = req.headers["content-type"]?.split(";")[0]?.trim();
    let body: unknown;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    const method = req.method ?? "GET";
    const watch = query.watch === "true" || query.watch === "1";
    const recorded: RecordedRequest = { method, path: url.pathname, query, ...(contentType && { contentType }), ...(body !== undefined && { body }) };
    this.requests.push(recorded);
    this.onRequest?.(recorded);
    if (this.clientCA && !(req.socket as TLSSocket).authorized) return this.fail(res, 401, "Unauthorized");
    if (this.tokens && !this.tokens.some((t) => req.headers.authorization === `Bearer ${t}`)) return this.fail(res, 401, "Unauthorized");

    const rule = this.failRules.find((r) => (!r.method || r.method === method) && (!r.path || r.path.test(url.pathname)) && (r.watch === undefined || r.watch === watch) &&
      (r.query === undefined || url.searchParams.has(r.query)));
    if (rule) {
      if (--rule.count! <= 0) this.failRules.splice(this.failRules.indexOf(rule), 1);
      return this.fail(res, rule.status, `injected failure ${rule.status}`);
    }

    let m: RegExpExecArray | null;
    if (method === "GET" && url.pathname === "/api/v1/nodes") return watch ? this.watchNodes(res, query) : this.listNodes(res, query);
    if ((m = /^\/api\/v1\/nodes\/([^/]+)(\/status)?$/.exec(url.pathname))) {
      const name = decodeURIComponent(m[1]!);
      const n = this.nodes.get(name);
      if (!n) return this.fail(res, 404, `nodes "${name}" not found`, { name, kind: "nodes" });
      if (method === "GET") return this.send(res, 200, n);
      if (method === "PATCH") return this.patchNode(res, n, m[2] !== undefined, contentType, body, text);
      return this.fail(res, 405, `method ${method} is not supported by the fake`);
    }
    if (method === "GET" && (m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname))) {
      const p = this.pods.get(`${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`);
      if (!p) return this.fail(res, 404, `pods "${decodeURIComponent(m[2]!)}" not found`, { name: m[2], kind: "pods" });
      return this.send(res, 200, p);
    }
    return this.fail(res, 404, `the server could not find the requested resource (${method} ${url.pathname})`);
  }

  private listNodes(res: ServerResponse, query: Record<string, string>): void {
    const limit = query.limit === undefined ? 0 : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 0) return this.fail(res, 400, `invalid limit: ${JSON.stringify(query.limit)}`);
    let list: { rv: number; items: Json[] }, id: number, start = 0;
    if (query.continue) {
      let t: { id?: unknown; start?: unknown };
      try {
        t = JSON.parse(Buffer.from(query.continue, "base64url").toString("utf8"));
      } catch {
        return this.fail(res, 400, "continue key is not valid: not a token of this server");
      }
      if (typeof t.id !== "number" || typeof t.start !== "number") return this.fail(res, 400, "continue key is not valid: incorrect encoded start resourceVersion");
      const kept = this.lists.get(t.id);
      if (!kept || kept.rv < this.compactedRv) {
        this.lists.delete(t.id);
        return this.fail(res, 410, "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.");
      }
      list = kept;
      id = t.id;
      start = t.start;
    } else {
      // Stored nodes are never changed in place (a change stores a new object), so a snapshot holds them as they are.
      const items = [...this.nodes.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1)).map((n) => {
        const { kind: _k, apiVersion: _a, ...rest } = n; // items of a typed list carry no kind/apiVersion
        return rest;
      });
      list = { rv: this.rv, items };
      id = ++this.listId;
    }
    const end = limit > 0 ? Math.min(start + limit, list.items.length) : list.items.length;
    const more = end < list.items.length;
    if (more) this.lists.set(id, list);
    else this.lists.delete(id);
    const metadata: Json = { resourceVersion: String(list.rv) };
    if (more) {
      metadata.continue = Buffer.from(JSON.stringify({ id, start: end })).toString("base64url");
      metadata.remainingItemCount = list.items.length - end;
    }
    this.send(res, 200, { kind: "NodeList", apiVersion: "v1", metadata, items: list.items.slice(start, end) });
  }

  private watchNodes(res: ServerResponse, query: Record<string, string>): void {
    const asked = query.resourceVersion;
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
    const line = (type: string, object: Json) => res.write(JSON.stringify({ type, object }) + "\n");
    const n = asked && asked !== "0" ? Number(asked) : this.rv;
    if (asked && asked !== "0") {
      if (!Number.isInteger(n) || n < this.compactedRv) {
        res.end(JSON.stringify({ type: "ERROR", object: this.goneStatus(n) }) + "\n");
        return;
      }
      for (const ev of this.history) if (ev.rv > n) line(ev.type, ev.object);
    } else {
      for (const node of this.nodes.values()) line("ADDED", node);
    }
    this.watchers.set(res, n);
    if (query.allowWatchBookmarks === "true") this.bookmarkers.add(res);
    res.on("close", () => {
      this.watchers.delete(res);
      this.bookmarkers.delete(res);
    });
    if (query.timeoutSeconds) {
      const t = setTimeout(() => {
        if (this.watchers.delete(res)) res.end();
      }, Number(query.timeoutSeconds) * 1000);
      res.on("close", () => clearTimeout(t));
    }
  }

  private patchNode(res: ServerResponse, old: Json, statusSub: boolean, contentType: string | undefined, body: unknown, text: string): void {
    let n: Json;
    switch (contentType) {
      case "application/merge-patch+json":
      case "application/strategic-merge-patch+json":
        if (!isObj(body)) return this.fail(res, 400, `error decoding patch: ${JSON.stringify(text.slice(0, 80))} is not a JSON object`);
        n = (contentType === "application/merge-patch+json" ? mergePatch(old, body) : strategicMergePatch(old, body)) as Json;
        break;
      case "application/json-patch+json":
        if (!Array.isArray(body)) return this.fail(res, 400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch");
        return this.fail(res, 415, "the fake API server does not implement application/json-patch+json");
      default:
        return this.fail(res, 415, `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got ${contentType})`);
    }
    // What each endpoint may change (the real registry's PrepareForUpdate).
    if (statusSub) n.spec = clone(old.spec);
    else n.status = clone(old.status);
    n.kind = old.kind;
    n.apiVersion = old.apiVersion;
    for (const k of ["name", "uid", "creationTimestamp"]) n.metadata[k] = old.metadata[k];
    this.commitIfChanged(old, n);
    this.send(res, 200, this.nodes.get(old.metadata.name)!);
  }
}
