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
 *  5) Big ranges (scan): etcd's gateway marshals JSON at ~14 µs a key
 *     (100,000 leases: ~1.4 s before the first byte, 30 MB of base64), so
 *     a scan speaks gRPC to the same port instead: etcd serves both there,
 *     and gives the same 100,000 keys in ~0.3 s as 18 MB of protobuf. That
 *     is one unary call, /etcdserverpb.KV/Range, over node:http2 (http.ts
 *     grpcUnary; no gRPC stack), with the two messages encoded and decoded
 *     by hand below (encodeRange, decodeRange: only the fields used).
 *     Failover and auth are as for the other calls (the token goes in the
 *     "token" metadata). Where gRPC cannot be spoken at all (a proxy that
 *     passes only HTTP/1.1, say: no gRPC answer) and the gateway answers
 *     instead, scans use the gateway from then on. Either way a scan reads
 *     pages of `pageSize` keys at the revision of its first page (one
 *     consistent snapshot) and asks for the next page as soon as a page has
 *     arrived, so etcd prepares page n+1 while the caller handles page n.
 *     Keys and values come back as text (from base64 on the gateway,
 *     through one scratch buffer: no Buffer per key or value).
 *  6) watch: POST /v3/watch with one create_request; the answer is a chunked
 *     stream of newline-separated {"result": WatchResponse} or {"error": ...}
 *     objects. The gateway is not full duplex (etcd 3.4 is built with Go
 *     1.19), so there is no progress_request to ping the stream; instead a
 *     count-only range to the watch's endpoint every `pingMs` (deadline
 *     `pingTimeoutMs`) finds a silently dead peer (gRPC's keepalive did that
 *     for etcd3), and the stream is then ended as lost.
 */
import * as http from "node:http";
import type { ClientHttp2Session } from "node:http2";
import * as https from "node:https";
import { redactURL } from "./credentials.js";
import { grpcUnary, loadHttp2, onLines, onText, openSession, readAnswer, sendRequest } from "./http.js";

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

/** A key and value as UTF-8 text (what scan() returns). */
export interface TextKeyValue {
  readonly key: string;
  readonly value: string;
  readonly modRevision: string;
  /** The etcd lease ID, "0" for none. */
  readonly lease: string;
}

export interface ScanOptions {
  /** Keys per page; default 10000; 0: one page. */
  readonly pageSize?: number;
  /** Only keys changed at or after this revision (etcd's min_mod_revision); the
   * pages then hold just those keys, and `total` still counts every key in the range. */
  readonly minModRevision?: bigint;
  /** Keys and mod_revisions only, no values (etcd's keys_only): a value reads as "". */
  readonly keysOnly?: boolean;
  /** Read at this revision (default: the newest; every later page is read at the first page's). */
  readonly revision?: bigint;
}

/** One page of a scan. */
export interface ScanPage {
  /** The revision every page of this scan was read at. */
  readonly revision: bigint;
  /** The cluster's ID (it changes when a cluster is rebuilt from a backup). */
  readonly clusterId: string;
  /** How many keys [key, rangeEnd) holds at `revision`, whatever the filter (the first page's count). */
  readonly total: number;
  readonly kvs: TextKeyValue[];
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

/** Decodes base64 into UTF-8 text through one growing scratch buffer. */
let scratch = Buffer.allocUnsafe(1024);
function text(v: unknown, what: string): string {
  if (v === undefined) return "";
  if (typeof v !== "string") throw bad(what, v);
  const most = (v.length >>> 2) * 3 + 3;
  if (most > scratch.length) scratch = Buffer.allocUnsafe(2 ** Math.ceil(Math.log2(most)));
  return scratch.toString("utf8", 0, scratch.write(v, 0, "base64"));
}

/** What one page of a range read asks for. */
interface RangeQuery {
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  /** 0: no limit. */
  readonly limit: number;
  readonly revision?: bigint;
  readonly minModRevision?: bigint;
  readonly keysOnly?: boolean;
}

/** One page of a range read, from either transport. */
interface RangePage {
  readonly revision: bigint;
  readonly clusterId: string;
  /** Keys in [key, rangeEnd) at `revision`, whatever the filter. */
  readonly count: number;
  readonly more: boolean;
  readonly kvs: TextKeyValue[];
  /** The last key's bytes (where the next page starts). */
  readonly lastKey?: Buffer;
}

function parseTextKV(v: unknown): TextKeyValue {
  if (!isObj(v)) throw bad("kv", v);
  return { key: text(v.key, "kv.key"), value: text(v.value, "kv.value"), modRevision: int64(v.mod_revision, "kv.mod_revision"), lease: int64(v.lease, "kv.lease") };
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
  /** HTTP/2 sessions for gRPC, by endpoint (open while a scan runs). */
  private readonly sessions = new Map<string, Promise<ClientHttp2Session>>();
  /** Whether scans speak gRPC: undefined until a scan has found out (see 5). */
  private grpc: boolean | undefined;

  constructor(private readonly o: EtcdClientOptions) {
    this.urls = o.endpoints.map((e) => new URL(/^[a-z]+:\/\//i.test(e) ? e : `${o.tls ? "https" : "http"}://${e}`).origin);
    this.callTimeoutMs = o.callTimeoutMs ?? 15_000;
    const https_ = this.urls.some((u) => u.startsWith("https:"));
    this.agent = https_
      ? new https.Agent({ keepAlive: true, ...(o.ca && { ca: o.ca }), ...(o.cert && { cert: o.cert }), ...(o.key && { key: o.key }) })
      : new http.Agent({ keepAlive: true });
    void loadHttp2().catch(() => undefined); // for the first scan (see 5), while the first calls wait for etcd
  }

  /** How scans reach etcd (see 5): undefined until the first scan has found out. */
  get scanTransport(): "grpc" | "gateway" | undefined {
    return this.grpc === undefined ? undefined : this.grpc ? "grpc" : "gateway";
  }

  /** The endpoints, as given, without userinfo (for messages). */
  get endpoints(): string {
    return redactURL(this.o.endpoints.join(","));
  }

  // ---- kv and lease ------------------------------------------------------

  async range(key: Buffer, rangeEnd?: Buffer, opts: { countOnly?: boolean } = {}): Promise<RangeResult> {
    const r = await this.call("/v3/kv/range", { key: b64(key), ...(rangeEnd && { range_end: b64(rangeEnd) }), ...(opts.countOnly && { count_only: true }) });
    const kvs = r.kvs === undefined ? [] : Array.isArray(r.kvs) ? r.kvs.map(parseKV) : [];
    return { revision: revisionOf(r), kvs };
  }

  /**
   * Every key in [key, rangeEnd) at one revision, page by page (see 5). A
   * page's rejection is handled here (an abandoned scan leaves none behind).
   */
  async *scan(key: Buffer, rangeEnd: Buffer, o: ScanOptions = {}): AsyncGenerator<ScanPage, void, undefined> {
    const limit = o.pageSize ?? 10_000;
    const ask = (from: Buffer, revision?: bigint): Promise<RangePage> => {
      const p = this.rangePage({ key: from, rangeEnd, limit, revision, minModRevision: o.minModRevision, keysOnly: o.keysOnly });
      p.catch(() => undefined); // awaited below, or dropped with the scan
      return p;
    };
    try {
      let next = ask(key, o.revision);
      let at: { revision: bigint; clusterId: string; total: number } | undefined;
      for (;;) {
        const page = await next;
        // (a page read at a given revision still reports the store's current one in its header)
        at ??= { revision: o.revision ?? page.revision, clusterId: page.clusterId, total: page.count };
        // the next page starts right after this page's last key
        const more = limit > 0 && page.more && page.lastKey !== undefined;
        if (more) next = ask(Buffer.concat([page.lastKey!, Buffer.from([0])]), at.revision);
        yield { ...at, kvs: page.kvs };
        if (!more) return;
      }
    } finally {
      this.closeSessions();
    }
  }

  /** One page of a range: over gRPC, or the gateway where gRPC cannot be spoken (see 5). */
  private async rangePage(q: RangeQuery): Promise<RangePage> {
    if (this.grpc !== false) {
      try {
        const page = await this.failover((url, headers) => this.grpcRange(url, q, headers));
        this.grpc = true;
        return page;
      } catch (e) {
        // etcd answered (with an error), or gRPC worked before: a failure like any other
        if (e instanceof EtcdCallError || this.grpc) throw e;
      }
    }
    const r = await this.call("/v3/kv/range", {
      key: b64(q.key), range_end: b64(q.rangeEnd), ...(q.limit > 0 && { limit: String(q.limit) }),
      ...(q.revision !== undefined && { revision: q.revision.toString() }),
      ...(q.minModRevision !== undefined && { min_mod_revision: q.minModRevision.toString() }),
      ...(q.keysOnly && { keys_only: true }),
    });
    this.grpc ??= false; // the gateway answers where gRPC did not
    const kvs = r.kvs === undefined ? [] : Array.isArray(r.kvs) ? (r.kvs as unknown[]) : [];
    const header = r.header as Json;
    const last = kvs[kvs.length - 1];
    return {
      revision: revisionOf(r), clusterId: int64(isObj(header) ? header.cluster_id : undefined, "header.cluster_id"),
      count: Number(int64(r.count, "count")), more: r.more === true,
      kvs: kvs.map(parseTextKV), lastKey: last === undefined ? undefined : bytes(isObj(last) ? last.key : undefined, "kv.key"),
    };
  }

  /** One Range call over gRPC to `url`. */
  private async grpcRange(url: string, q: RangeQuery, headers: Record<string, string>): Promise<RangePage> {
    let session = await this.session(url);
    if (session.closed || session.destroyed) {
      this.sessions.delete(url);
      session = await this.session(url);
    }
    const a = await grpcUnary(session, "/etcdserverpb.KV/Range", encodeRange(q), headers.authorization ? { token: headers.authorization } : {},
      this.callTimeoutMs, `${url}/etcdserverpb.KV/Range: no answer within ${this.callTimeoutMs} ms`);
    if (a.status !== 0) throw new EtcdCallError(a.message || `gRPC status ${a.status}`, a.status, 200);
    return decodeRange(a.reply);
  }

  /** The HTTP/2 session to `url`, opened once for concurrent callers. */
  private session(url: string): Promise<ClientHttp2Session> {
    let p = this.sessions.get(url);
    if (!p) {
      const opening = openSession(url, this.o);
      p = opening;
      void opening.then((s) => s.on("close", () => { if (this.sessions.get(url) === opening) this.sessions.delete(url); }), () => this.sessions.delete(url));
      this.sessions.set(url, p);
    }
    return p;
  }

  private closeSessions(): void {
    for (const p of this.sessions.values()) void p.then((s) => s.close(), () => undefined);
    this.sessions.clear();
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

  /** One watch stream (see 6); returns cancel(), after which no handler is called. */
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
    for (const p of this.sessions.values()) void p.then((s) => s.destroy(), () => undefined);
    this.sessions.clear();
  }

  // ---- internals -----------------------------------------------------------

  /** One call with failover across endpoints (see 2) and re-authentication (see 3). */
  private call(path: string, body: Json): Promise<Json> {
    const text = JSON.stringify(body);
    return this.failover((url, headers) => this.post(url, path, text, this.callTimeoutMs, headers));
  }

  /** Runs `attempt` on the endpoints in turn (see 2), authenticating again once on an expired token (see 3). */
  private async failover<T>(attempt: (url: string, headers: Record<string, string>) => Promise<T>): Promise<T> {
    let last: unknown;
    for (let i = 0; i < this.urls.length; i++) {
      const at = (this.current + i) % this.urls.length;
      const url = this.urls[at]!;
      try {
        let r: T;
        try {
          r = await attempt(url, await this.headers(url));
        } catch (e) {
          if (!(e instanceof EtcdCallError && e.grpcCode === 16 && /invalid auth token/.test(e.message) && this.o.username)) throw e;
          this.tokens.delete(url);
          r = await attempt(url, await this.headers(url));
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

// ---- protobuf: etcdserverpb.RangeRequest / RangeResponse, mvccpb.KeyValue ----------

const pbBad = (what: string) => new Error(`etcd gRPC: unexpected answer (${what})`);

/** Appends a varint (a non-negative int64). */
function putVarint(out: number[], v: bigint): void {
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

/** RangeRequest: key = 1, range_end = 2, limit = 3, revision = 4, keys_only = 8, min_mod_revision = 10 (zero fields left out). */
export function encodeRange(q: RangeQuery): Buffer {
  const out: number[] = [];
  const bytesField = (field: number, b: Buffer) => {
    out.push((field << 3) | 2);
    putVarint(out, BigInt(b.length));
    for (const x of b) out.push(x);
  };
  const intField = (field: number, v: bigint) => {
    if (v === 0n) return;
    out.push(field << 3);
    putVarint(out, v);
  };
  bytesField(1, q.key);
  bytesField(2, q.rangeEnd);
  intField(3, BigInt(q.limit));
  intField(4, q.revision ?? 0n);
  intField(8, q.keysOnly ? 1n : 0n);
  intField(10, q.minModRevision ?? 0n);
  return Buffer.from(out);
}

/** Reads protobuf fields from buf[at, end); a nested message is read in place, between enter() and leave(). */
class ProtoReader {
  constructor(private readonly buf: Buffer, public at: number, private end: number) {}
  /** Reads the nested message (a length-delimited field) next; returns what leave() needs. */
  enter(): number {
    const n = this.uint();
    if (this.at + n > this.end) throw pbBad("truncated");
    const outer = this.end;
    this.end = this.at + n;
    return outer;
  }
  leave(outer: number): void {
    this.at = this.end;
    this.end = outer;
  }
  get done(): boolean {
    return this.at >= this.end;
  }
  private byte(): number {
    if (this.at >= this.end) throw pbBad("truncated");
    return this.buf[this.at++]!;
  }
  /** The next varint as a double (exact up to 2^53). */
  private varint(): number {
    let v = 0, mul = 1, b: number;
    do {
      b = this.byte();
      v += (b & 0x7f) * mul;
      mul *= 128;
    } while (b & 0x80);
    return v;
  }
  /** A varint that fits a double exactly (tags, lengths, counts, revisions). */
  uint(): number {
    const v = this.varint();
    if (v > Number.MAX_SAFE_INTEGER) throw pbBad(`a number over 2^53 (${v})`);
    return v;
  }
  /** An int64 (signed) or uint64 varint, exactly, as decimal text (as the gateway writes them). */
  decimal(signed: boolean): string {
    const from = this.at;
    const v = this.varint();
    if (v <= Number.MAX_SAFE_INTEGER) return String(v);
    let big = 0n;
    for (let i = this.at - 1; i >= from; i--) big = (big << 7n) | BigInt(this.buf[i]! & 0x7f);
    return (signed ? BigInt.asIntN(64, big) : BigInt.asUintN(64, big)).toString();
  }
  /** Skips a length-delimited field; returns where it starts (it ends at `at`). */
  span(): number {
    const n = this.uint();
    if (this.at + n > this.end) throw pbBad("truncated");
    const from = this.at;
    this.at += n;
    return from;
  }
  skip(wire: number): void {
    if (wire === 0) while (this.byte() & 0x80); // any size
    else if (wire === 1) this.at += 8;
    else if (wire === 2) this.span();
    else if (wire === 5) this.at += 4;
    else throw pbBad(`wire type ${wire}`);
    if (this.at > this.end) throw pbBad("truncated");
  }
}

/** RangeResponse: header = 1 (cluster_id = 1, revision = 3), kvs = 2 (key = 1, mod_revision = 3, value = 5, lease = 6), more = 3, count = 4. */
export function decodeRange(buf: Buffer): RangePage {
  const r = new ProtoReader(buf, 0, buf.length);
  let revision = 0n, clusterId = "0", count = 0, more = false;
  const kvs: TextKeyValue[] = [];
  let lastKey: Buffer | undefined;
  let keyAt = 0, keyEnd = 0;
  while (!r.done) {
    const tag = r.uint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 1 && wire === 2) {
      const outer = r.enter();
      while (!r.done) {
        const t = r.uint();
        if (t === (1 << 3)) clusterId = r.decimal(false);
        else if (t === (3 << 3)) revision = BigInt(r.decimal(true));
        else r.skip(t & 7);
      }
      r.leave(outer);
    } else if (field === 2 && wire === 2) {
      const outer = r.enter();
      let key = "", value = "", modRevision = "0", lease = "0";
      while (!r.done) {
        const t = r.uint();
        if (t === ((1 << 3) | 2) || t === ((5 << 3) | 2)) {
          const from = r.span(), to = r.at;
          if (t === ((1 << 3) | 2)) {
            key = buf.toString("utf8", from, to);
            keyAt = from;
            keyEnd = to;
          } else {
            value = buf.toString("utf8", from, to);
          }
        } else if (t === (3 << 3)) modRevision = r.decimal(true);
        else if (t === (6 << 3)) lease = r.decimal(true);
        else r.skip(t & 7);
      }
      r.leave(outer);
      kvs.push({ key, value, modRevision, lease });
    } else if (field === 3 && wire === 0) more = r.uint() !== 0;
    else if (field === 4 && wire === 0) count = r.uint();
    else r.skip(wire);
  }
  if (kvs.length > 0) lastKey = Buffer.from(buf.subarray(keyAt, keyEnd));
  return { revision, clusterId, count, more, kvs, lastKey };
}
