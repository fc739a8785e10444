/**
 * A small etcd v3 client over etcd's JSON gateway (/v3/..., served on the
 * client port by every etcd since 3.3; Debian 12's etcd is 3.4), on
 * node:http(s): exactly the calls etcdsource.ts makes. It replaces the
 * etcd3 package, whose gRPC stack (@grpc/grpc-js, protobufjs) costs the
 * daemon ~14 MiB of its 72 MiB idle budget.
 *
 * How it works:
 *  1) Each call is one POST of JSON to /v3/<service>/<method>, the gRPC
 *     messages in proto3's JSON mapping: bytes as base64, int64 as decimal
 *     strings, false/0/empty fields left out. Answers are checked once, here
 *     (parse* below), into typed results; etcd's error answers
 *     ({"error","code","message"}) become EtcdCallError with the gRPC code.
 *  2) Endpoints: a call goes to the endpoint that last answered; when it
 *     cannot be reached (connection error, deadline) or answers
 *     "unavailable" (no leader, 503), the next one is tried, each at most
 *     once per call. Any other answer, even an error, ends the call.
 *  3) Auth (--etcd-username/--etcd-password): /v3/auth/authenticate gives a
 *     token, sent as the Authorization header. Simple tokens belong to one
 *     member and expire (etcd's --auth-token-ttl, 5 min), so tokens are kept
 *     per endpoint and a 401 "invalid auth token" authenticates again and
 *     retries once.
 *  4) TLS: https:// endpoints (or none given with TLS files, as clientv3)
 *     verify the server with --etcd-cafile (else the system's roots) and
 *     present --etcd-certfile/--etcd-keyfile.
 *  5) watch: POST /v3/watch with one create_request; the answer is a chunked
 *     stream of newline-separated {"result": WatchResponse} or {"error": ...}
 *     objects. The gateway is not full duplex (etcd 3.4 is built with Go
 *     1.19), so there is no progress_request to ping the stream; instead a
 *     count-only range to the watch's endpoint every `pingMs` (deadline
 *     `pingTimeoutMs`) finds a silently dead peer (gRPC's keepalive did that
 *     for etcd3), and the stream is then ended as lost.
 */
import * as http from "node:http";
import * as https from "node:https";
import { onLines, onText, readAnswer, sendRequest } from "./http.js";

/** An error answer from etcd: its gRPC code (5 not found, 7 permission denied, 14 unavailable, 16 unauthenticated). */
export class EtcdCallError extends Error {
  override readonly name = "EtcdCallError";
  constructor(message: string, readonly grpcCode: number | undefined, readonly httpStatus: number) {
    super(message);
  }
}

/** "etcdserver: requested lease not found": a put with an expired etcd lease. */
export const isLeaseNotFound = (e: unknown): boolean => e instanceof EtcdCallError && e.grpcCode === 5 && /lease not found/.test(e.message);

export interface KeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly modRevision: string;
  /** The etcd lease ID, "0" for none. */
  readonly lease: string;
}

export interface RangeResult {
  readonly revision: bigint;
  readonly kvs: KeyValue[];
}

export interface Compare {
  readonly key: Buffer;
  readonly rangeEnd?: Buffer;
  readonly target: "CREATE" | "MOD" | "VERSION";
  readonly result: "EQUAL" | "LESS" | "GREATER";
  /** The create_revision, mod_revision or version compared with. */
  readonly value: string;
}

export interface WatchEvent {
  readonly type: "put" | "delete";
  readonly kv: KeyValue;
}

export interface WatchResponse {
  readonly created: boolean;
  readonly canceled: boolean;
  readonly cancelReason: string;
  /** 0n unless the start revision was compacted away. */
  readonly compactRevision: bigint;
  readonly events: WatchEvent[];
}

export interface WatchHandlers {
  data(res: WatchResponse): void;
  /** The stream failed or ended; called once, not after cancel(). */
  lost(e: Error): void;
}

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  /** Use TLS for endpoints given without a scheme. */
  readonly tls: boolean;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly username?: string;
  readonly password?: string;
  /** Deadline of each call (not the watch stream); default 15000. */
  readonly callTimeoutMs?: number;
  /** Watch liveness probe interval and deadline; default 30000 and 10000. */
  readonly pingMs?: number;
  readonly pingTimeoutMs?: number;
}

type Json = Record<string, unknown>;
const b64 = (b: Buffer) => b.toString("base64");
const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

// ---- answers, checked once -------------------------------------------------

function bad(what: string, v: unknown): Error {
  return new Error(`etcd gateway: unexpected answer (${what}): ${JSON.stringify(v)?.slice(0, 200)}`);
}

function int64(v: unknown, what: string): string {
  if (v === undefined) return "0";
  if ((typeof v === "string" && /^-?\d+$/.test(v)) || (typeof v === "number" && Number.isInteger(v))) return String(v);
  throw bad(what, v);
}

function bytes(v: unknown, what: string): Buffer {
  if (v === undefined) return Buffer.alloc(0);
  if (typeof v !== "string") throw bad(what, v);
  return Buffer.from(v, "base64");
}

function revisionOf(r: Json): bigint {
  if (!isObj(r.header)) throw bad("no header", r);
  return BigInt(int64(r.header.revision, "header.revision"));
}

function parseKV(v: unknown): KeyValue {
  if (!isObj(v)) throw bad("kv", v);
  return { key: bytes(v.key, "kv.key"), value: bytes(v.value, "kv.value"), modRevision: int64(v.mod_revision, "kv.mod_revision"), lease: int64(v.lease, "kv.lease") };
}

function parseWatchResponse(v: unknown): WatchResponse {
  if (!isObj(v)) throw bad("watch result", v);
  const events = v.events === undefined ? [] : Array.isArray(v.events) ? v.events : [];
  return {
    created: v.created === true,
    canceled: v.canceled === true,
    cancelReason: typeof v.cancel_reason === "string" ? v.cancel_reason : "",
    compactRevision: BigInt(int64(v.compact_revision, "compact_revision")),
    events: events.map((e: unknown) => {
      if (!isObj(e)) throw bad("event", e);
      return { type: e.type === "DELETE" ? "delete" : "put", kv: parseKV(e.kv) };
    }),
  };
}

/** etcd's error answer: {"error","code","message"} (calls) or {"grpc_code","http_code","message"} (streams). */
function callError(status: number, body: unknown): EtcdCallError {
  const e = isObj(body) ? body : {};
  const msg = typeof e.message === "string" ? e.message : typeof e.error === "string" ? e.error : `HTTP ${status}${typeof body === "string" && body ? `: ${body.slice(0, 200)}` : ""}`;
  const code = typeof e.code === "number" ? e.code : typeof e.grpc_code === "number" ? e.grpc_code : undefined;
  return new EtcdCallError(msg, code, status);
}

const unavailable = (e: unknown) => !(e instanceof EtcdCallError) || e.grpcCode === 14 || e.httpStatus === 503;

// ---- the client --------------------------------------------------------------

export class EtcdClient {
  private readonly urls: string[];
  private readonly agent: http.Agent;
  private readonly callTimeoutMs: number;
  private current = 0;
  /** Auth tokens by endpoint (see 3). */
  private readonly tokens = new Map<string, Promise<string>>();
  private readonly streams = new Set<http.ClientRequest>();

  constructor(private readonly o: EtcdClientOptions) {
    this.urls = o.endpoints.map((e) => new URL(/^[a-z]+:\/\//i.test(e) ? e : `${o.tls ? "https" : "http"}://${e}`).origin);
    this.callTimeoutMs = o.callTimeoutMs ?? 15_000;
    const https_ = this.urls.some((u) => u.startsWith("https:"));
    this.agent = https_
      ? new https.Agent({ keepAlive: true, ...(o.ca && { ca: o.ca }), ...(o.cert && { cert: o.cert }), ...(o.key && { key: o.key }) })
      : new http.Agent({ keepAlive: true });
  }

  /** The endpoints, as given. */
  get endpoints(): string {
    return this.o.endpoints.join(",");
  }

  // ---- kv and lease ------------------------------------------------------

  async range(key: Buffer, rangeEnd?: Buffer, opts: { countOnly?: boolean } = {}): Promise<RangeResult> {
    const r = await this.call("/v3/kv/range", { key: b64(key), ...(rangeEnd && { range_end: b64(rangeEnd) }), ...(opts.countOnly && { count_only: true }) });
    const kvs = r.kvs === undefined ? [] : Array.isArray(r.kvs) ? r.kvs.map(parseKV) : [];
    return { revision: revisionOf(r), kvs };
  }

  async put(key: Buffer, value: Buffer, lease?: string): Promise<void> {
    await this.call("/v3/kv/put", { key: b64(key), value: b64(value), ...(lease && { lease }) });
  }

  async deleteRange(key: Buffer): Promise<void> {
    await this.call("/v3/kv/deleterange", { key: b64(key) });
  }

  /** A transaction putting one key if every compare holds; true when it did. */
  async putIf(compare: readonly Compare[], key: Buffer, value: Buffer, lease: string): Promise<boolean> {
    const field = { CREATE: "create_revision", MOD: "mod_revision", VERSION: "version" } as const;
    const r = await this.call("/v3/kv/txn", {
      compare: compare.map((c) => ({ key: b64(c.key), ...(c.rangeEnd && { range_end: b64(c.rangeEnd) }), target: c.target, result: c.result, [field[c.target]]: c.value })),
      success: [{ request_put: { key: b64(key), value: b64(value), lease } }],
    });
    return r.succeeded === true;
  }

  async leaseGrant(ttlSeconds: number): Promise<{ id: string; ttlSeconds: number }> {
    const r = await this.call("/v3/lease/grant", { TTL: String(ttlSeconds) });
    if (typeof r.error === "string" && r.error) throw new EtcdCallError(r.error, undefined, 200);
    return { id: int64(r.ID, "ID"), ttlSeconds: Number(int64(r.TTL, "TTL")) };
  }

  async leaseRevoke(id: string): Promise<void> {
    await this.call("/v3/lease/revoke", { ID: id });
  }

  // ---- watch ---------------------------------------------------------------

  /** One watch stream (see 5); returns cancel(), after which no handler is called. */
  watch(create: { key: Buffer; rangeEnd: Buffer; startRevision: bigint }, h: WatchHandlers): () => void {
    const url = this.urls[this.current]!;
    let done = false;
    let req: http.ClientRequest | undefined;
    let ping: NodeJS.Timeout | undefined;
    const finish = (e?: Error) => {
      if (done) return;
      done = true;
      clearInterval(ping);
      if (req) {
        this.streams.delete(req);
        req.destroy();
      }
      if (e) h.lost(e);
    };
    const pingMs = this.o.pingMs ?? 30_000;
    const pingTimeoutMs = this.o.pingTimeoutMs ?? 10_000;
    ping = setInterval(() => {
      this.post(url, "/v3/kv/range", { key: b64(create.key), count_only: true }, pingTimeoutMs)
        .catch((e: Error) => { if (unavailable(e)) finish(new Error(`${url} did not answer a probe of the watch: ${e.message}`)); });
    }, pingMs);
    ping.unref();
    const body = JSON.stringify({ create_request: { key: b64(create.key), range_end: b64(create.rangeEnd), start_revision: create.startRevision.toString() } });
    void this.headers(url).then((headers) => {
      if (done) return;
      req = this.request(url, "/v3/watch", headers, body);
      this.streams.add(req);
      req.on("error", (e) => finish(e));
      req.on("response", (res) => {
        if (res.statusCode !== 200) return onText(res, (text) => finish(callError(res.statusCode!, tryJson(text))));
        onLines(res, () => !done, (line) => {
          try {
            const m = JSON.parse(line) as unknown;
            if (isObj(m) && m.error !== undefined) throw callError(200, m.error);
            if (!isObj(m) || !isObj(m.result)) throw bad("watch", m);
            if (m.result.canceled === true && /invalid auth token/.test(String(m.result.cancel_reason))) this.tokens.delete(url);
            h.data(parseWatchResponse(m.result));
          } catch (e) {
            finish(e as Error);
          }
        });
        res.on("error", (e) => finish(e));
        res.on("close", () => finish(new Error("the watch stream ended")));
      });
    }, (e: Error) => finish(e));
    return () => finish();
  }

  /** Ends every stream and idle connection. */
  close(): void {
    for (const r of this.streams) r.destroy();
    this.streams.clear();
    this.agent.destroy();
  }

  // ---- internals -----------------------------------------------------------

  /** One call with failover across endpoints (see 2) and re-authentication (see 3). */
  private async call(path: string, body: Json): Promise<Json> {
    const text = JSON.stringify(body);
    let last: unknown;
    for (let i = 0; i < this.urls.length; i++) {
      const at = (this.current + i) % this.urls.length;
      const url = this.urls[at]!;
      try {
        let r: Json;
        try {
          r = await this.post(url, path, text, this.callTimeoutMs, await this.headers(url));
        } catch (e) {
          if (!(e instanceof EtcdCallError && e.grpcCode === 16 && /invalid auth token/.test(e.message) && this.o.username)) throw e;
          this.tokens.delete(url);
          r = await this.post(url, path, text, this.callTimeoutMs, await this.headers(url));
        }
        this.current = at;
        return r;
      } catch (e) {
        last = url.startsWith("https:") && e instanceof EtcdCallError && e.grpcCode === 14 && /connection closed|handshake/.test(e.message)
          ? new EtcdCallError(`${e.message} (etcd's gateway could not reach its own gRPC server: with --client-cert-auth, etcd 3.4 needs a server certificate that also allows client authentication, extendedKeyUsage clientAuth)`, 14, e.httpStatus)
          : e;
        if (!unavailable(e)) {
          this.current = at;
          throw e;
        }
      }
    }
    throw last;
  }

  private headers(url: string): Promise<Record<string, string>> {
    const { username, password } = this.o;
    if (!username || !password) return Promise.resolve({});
    let token = this.tokens.get(url);
    if (!token) {
      token = this.post(url, "/v3/auth/authenticate", { name: username, password }, this.callTimeoutMs).then((r) => {
        if (typeof r.token !== "string" || !r.token) throw bad("no token", r);
        return r.token;
      });
      this.tokens.set(url, token);
      token.catch(() => this.tokens.delete(url));
    }
    return token.then((t) => ({ authorization: t }));
  }

  private request(url: string, path: string, headers: Record<string, string>, body: string): http.ClientRequest {
    return sendRequest(url + path, {
      method: "POST", agent: this.agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers },
    }, body);
  }

  private async post(url: string, path: string, body: string | Json, timeoutMs: number, headers: Record<string, string> = {}): Promise<Json> {
    const req = this.request(url, path, headers, typeof body === "string" ? body : JSON.stringify(body));
    const { status, text } = await readAnswer(req, timeoutMs, `${url}${path}: no answer within ${timeoutMs} ms`);
    const v = tryJson(text);
    if (status !== 200) throw callError(status, v);
    if (!isObj(v)) throw bad(path, text);
    return v;
  }
}

function tryJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
