/**
 * The healthz HTTP server: /healthz (liveness), /readyz (subnet file written
 * and dataplane programmed), /metrics (Prometheus text), on
 * --healthz-ip:--healthz-port.
 *
 * How it works: the server is read-only and cannot stall the daemon, and
 * no client can starve the kubelet's probes.
 *  1) GET and HEAD only (405 with Allow otherwise); no request body is ever
 *     read: a request that announces one (Content-Length > 0 or
 *     Transfer-Encoding) is answered 413 and its connection closed, so a
 *     slow body cannot hold a socket.
 *  2) Limits (HealthLimits, defaults below): headers at most 8 KiB (431,
 *     answered by Node's parser before any handler runs), 50 header lines;
 *     the headers must arrive within headersTimeoutMs (slowloris: 408, then
 *     the socket is destroyed; a timer per open connection, armed at accept
 *     and after each answer for the keep-alive wait plus headersTimeoutMs —
 *     not Node's server-wide check, which wakes the event loop every
 *     interval even with no connection: it stays only as a 30 s backstop,
 *     which also holds the whole request to requestTimeoutMs); an idle or
 *     unread socket is destroyed after idleTimeoutMs; keep-alive
 *     connections close after keepAliveTimeoutMs.
 *  3) Two connection pools, decided at accept (the path is not known yet):
 *     connections from this host — the source address is the address they
 *     reached, which is how the kubelet's probes of a host-network pod
 *     arrive (the node IP, or 127.0.0.1) — have localConnections (16) slots
 *     of their own; every other host shares maxConnections (64). A socket
 *     beyond its pool's cap is destroyed at accept. So other hosts holding
 *     every slot, or dripping headers, cannot keep a probe out.
 *  4) /metrics has its own bound (metrics/gate.ts): at most metricsSlots (4)
 *     scrapes in flight (503 with Retry-After beyond), one collection at a
 *     time and at most one per metricsIntervalMs (1 s), shared by the
 *     requests that wait for it; its connection is closed after the answer,
 *     so a scraper never keeps a slot between scrapes. /healthz and /readyz
 *     never wait for a scrape: they are answered from memory, in the turn
 *     their request is parsed, while a scrape yields to the event loop
 *     every few ms.
 *  5) Nothing throws: malformed requests (clientError) get a status line
 *     and a destroyed socket; a failing /metrics collection is a 500; a
 *     server error after listening is logged, never an uncaught exception.
 * `port` 0 picks a free port; the returned server carries the bound `port`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Metrics } from "./metrics.js";
import { ScrapeGate, DEFAULT_SCRAPE_INTERVAL_MS, DEFAULT_SCRAPE_SLOTS } from "./metrics/gate.js";
import { nullLogger, type Logger } from "./log.js";

export interface HealthLimits {
  readonly maxHeaderBytes: number;
  readonly maxHeaderLines: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  /** Connections from other hosts, at once. */
  readonly maxConnections: number;
  /** Connections from this host (the kubelet's probes), at once: a pool of their own. */
  readonly localConnections: number;
  /** /metrics requests in flight at once. */
  readonly metricsSlots: number;
  /** At most one metrics collection starts per this many ms. */
  readonly metricsIntervalMs: number;
}

export const DEFAULT_LIMITS: HealthLimits = {
  maxHeaderBytes: 8192,
  maxHeaderLines: 50,
  headersTimeoutMs: 5000,
  requestTimeoutMs: 10000,
  idleTimeoutMs: 10000,
  keepAliveTimeoutMs: 5000,
  maxConnections: 64,
  localConnections: 16,
  metricsSlots: DEFAULT_SCRAPE_SLOTS,
  metricsIntervalMs: DEFAULT_SCRAPE_INTERVAL_MS,
};

/** Whether a connection comes from this host: its source is the address it reached (or both are loopback). */
export function fromThisHost(remote: string | undefined, local: string | undefined): boolean {
  if (!remote || !local) return false;
  const plain = (a: string) => a.replace(/^::ffff:/i, "");
  const r = plain(remote), l = plain(local);
  const loop = (a: string) => a === "::1" || a === "127.0.0.1";
  return r === l || (loop(r) && loop(l));
}

export interface HealthServer extends Server {
  /** The bound port (useful with port 0). */
  readonly port: number;
}

export interface HealthOptions {
  readonly log?: Logger;
  readonly limits?: Partial<HealthLimits>;
}

const CLIENT_ERRORS: Record<string, string> = {
  HPE_HEADER_OVERFLOW: "431 Request Header Fields Too Large",
  ERR_HTTP_REQUEST_TIMEOUT: "408 Request Timeout",
};

/** Node's default connectionsCheckingInterval: its server-wide check, kept only as a backstop. */
const BACKSTOP_CHECK_MS = 30_000;
const TIMED_OUT = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/**
 * One connection's slowloris deadline: a request's headers must be in by
 * then, or the socket is told 408 and destroyed (as Node's own check does).
 * Armed at accept and after each answer (the keep-alive wait, then the
 * headers), cleared while a request is answered and on close: a timer
 * exists only while a connection is open, so an idle server never wakes.
 */
class Deadline {
  private timer?: NodeJS.Timeout;
  /** Requests being answered (pipelined ones overlap): no deadline while any is. */
  private answering = 0;
  constructor(private readonly socket: Socket) {}
  /** A request's headers came in: no deadline until its answer ends. */
  begin(): void {
    this.answering++;
    this.clear();
  }
  /** A request's answer ended: armed for `ms` once no other is being answered. */
  end(ms: number): void {
    if (--this.answering === 0) this.arm(ms);
  }
  arm(ms: number): void {
    this.clear();
    if (this.socket.destroyed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const s = this.socket;
      if (s.destroyed) return;
      if (s.writable) s.end(TIMED_OUT);
      setTimeout(() => s.destroy(), 1000).unref(); // if the peer never reads
    }, ms).unref();
  }
  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (len !== undefined && len !== "0");
}

function handle(req: IncomingMessage, res: ServerResponse, state: { ready: () => boolean }, scrapes: ScrapeGate, metrics: Metrics, log: Logger): void {
  const send = (status: number, body = "", headers: Record<string, string> = {}) => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": String(Buffer.byteLength(body)), ...headers }).end(body);
  };
  if (req.method !== "GET" && req.method !== "HEAD") return send(405, "method not allowed\n", { allow: "GET, HEAD", connection: "close" });
  if (hasBody(req)) return send(413, "a request body is not accepted\n", { connection: "close" });
  const path = (req.url ?? "/").split("?")[0];
  if (path === "/healthz") return send(200, "ok\n");
  if (path === "/readyz") {
    const ok = state.ready();
    return send(ok ? 200 : 503, ok ? "ready\n" : "not ready\n");
  }
  if (path === "/metrics") {
    const text = scrapes.enter();
    if (!text) return send(503, "too many /metrics requests at once\n", { "retry-after": "1", connection: "close" });
    text.then(
      (t) => send(200, t, { "content-type": metrics.registry.contentType, connection: "close" }),
      (e: unknown) => {
        log.warn("collecting metrics failed", { err: e });
        send(500, "collecting metrics failed\n", { connection: "close" });
      },
    );
    return;
  }
  send(404, "not found\n");
}

export function startHealthServer(
  host: string, port: number, state: { ready: () => boolean }, metrics: Metrics, opts: HealthOptions = {},
): Promise<HealthServer> {
  const log = opts.log ?? nullLogger;
  const lim = { ...DEFAULT_LIMITS, ...opts.limits };
  const scrapes = new ScrapeGate(() => metrics.registry.metrics(), lim.metricsSlots, lim.metricsIntervalMs);
  const deadlines = new WeakMap<Socket, Deadline>();
  const server = createServer({
    maxHeaderSize: lim.maxHeaderBytes,
    headersTimeout: lim.headersTimeoutMs,
    requestTimeout: lim.requestTimeoutMs,
    keepAliveTimeout: lim.keepAliveTimeoutMs,
    // Node's own check of headersTimeout/requestTimeout is a timer that wakes the
    // loop every interval, connections or not: here only a backstop at Node's
    // default period. The deadlines that bite are per connection (below).
    connectionsCheckingInterval: BACKSTOP_CHECK_MS,
  }, (req, res) => {
    try {
      const d = deadlines.get(req.socket);
      if (d) {
        // Headers in: no deadline while a request is answered; once none is, the next request gets one.
        d.begin();
        res.once("close", () => d.end(lim.keepAliveTimeoutMs + lim.headersTimeoutMs));
      }
      handle(req, res, state, scrapes, metrics, log);
    } catch (e) {
      log.warn("health request failed", { path: req.url, err: e });
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    }
  });
  server.maxHeadersCount = lim.maxHeaderLines;
  // The pools (header, 3): counted here, before Node's HTTP parser sees the socket.
  const open = { local: 0, remote: 0 };
  server.prependListener("connection", (socket: Socket) => {
    const pool = fromThisHost(socket.remoteAddress, socket.localAddress) ? "local" : "remote";
    if (open[pool] >= (pool === "local" ? lim.localConnections : lim.maxConnections)) {
      socket.destroy();
      return;
    }
    open[pool]++;
    const d = new Deadline(socket);
    deadlines.set(socket, d);
    d.arm(lim.headersTimeoutMs);
    socket.once("close", () => {
      open[pool]--;
      d.clear();
    });
  });
  server.setTimeout(lim.idleTimeoutMs, (s: Socket) => s.destroy());
  server.on("clientError", (err: Error & { code?: string }, socket: Socket) => {
    if (err.code !== "ECONNRESET" && socket.writable) {
      const status = CLIENT_ERRORS[err.code ?? ""] ?? "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref(); // if the peer never reads
    } else socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      server.on("error", (e) => log.error("health server failed", { err: e }));
      const bound = (server.address() as AddressInfo).port;
      resolve(Object.assign(server, { port: bound }));
    });
  });
}
