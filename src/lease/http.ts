/**
 * The HTTP plumbing the etcd and Kubernetes clients share (etcdclient.ts,
 * kubeapi.ts), on node:http(s): one request on a keep-alive agent, a whole
 * answer read under a deadline, and a streamed answer (a watch) read as
 * lines. And one unary gRPC call over node:http2 (etcd's big range reads):
 * the request is the gRPC framing around an already encoded message, the
 * answer the status, message and framed reply. What a status or a body
 * means is each client's business.
 */
import * as http from "node:http";
import type * as http2 from "node:http2";
import * as https from "node:https";

export interface RequestOptions {
  readonly method: string;
  readonly agent: http.Agent;
  readonly headers: http.OutgoingHttpHeaders;
}

/** Starts a request to `url` (http: or https:), sends `body` and ends it; the socket gets TCP keepalive every 30 s. */
export function sendRequest(url: string, o: RequestOptions, body?: string): http.ClientRequest {
  const mod = url.startsWith("https:") ? https : http;
  const req = mod.request(url, { method: o.method, agent: o.agent, headers: o.headers });
  req.on("socket", (s) => s.setKeepAlive(true, 30_000));
  req.end(body);
  return req;
}

export interface Answer {
  readonly status: number;
  readonly text: string;
}

/**
 * The status and whole body of `req`'s answer. Without one within
 * `timeoutMs` the request is destroyed with the error `timeoutMessage`;
 * a request or response error rejects.
 */
export function readAnswer(req: http.ClientRequest, timeoutMs: number, timeoutMessage: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => req.destroy(new Error(timeoutMessage)), timeoutMs);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      reject(e);
    };
    req.on("error", fail);
    req.on("response", (res) => {
      // Bytes first, one decode at the end: a big answer (a page of 10,000
      // leases from etcd's gateway is ~3 MB) costs one copy, not a string
      // rope to flatten.
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString("utf8") });
      });
      res.on("error", fail);
    });
  });
}

/** Reads a whole (error) answer of a stream as text, then calls `end` with it. */
export function onText(res: http.IncomingMessage, end: (text: string) => void): void {
  res.setEncoding("utf8");
  let text = "";
  res.on("data", (d: string) => (text += d));
  res.on("end", () => end(text));
}

/**
 * Calls `line` with each non-empty, trimmed line of a streamed answer as it
 * arrives, as long as `more()` holds. Returns what is left after the last
 * newline so far (trimmed): the stream's unfinished last line.
 */
export function onLines(res: http.IncomingMessage, more: () => boolean, line: (text: string) => void): () => string {
  res.setEncoding("utf8");
  let buf = "";
  res.on("data", (d: string) => {
    buf += d;
    for (let i = buf.indexOf("\n"); i >= 0 && more(); i = buf.indexOf("\n")) {
      const text = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (text) line(text);
    }
  });
  return () => buf.trim();
}

export interface TlsMaterial {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** node:http2, loaded when first asked for (a daemon that never needs it does not pay for it: ~3 MiB). */
let h2: Promise<typeof http2> | undefined;

/** Loads node:http2 (once); a client that will need it can start this early, while it waits for something else. */
export function loadHttp2(): Promise<typeof http2> {
  return (h2 ??= import("node:http2"));
}
/** NGHTTP2_CANCEL: the code a stream is closed with when its deadline passes. */
const CANCEL = 0x8;

/**
 * An HTTP/2 session to `origin` (https: with TLS and ALPN h2, http: with
 * prior knowledge), with windows big enough for replies of megabytes.
 * Errors end the session (the caller sees them on its requests); it does
 * not keep the process alive (a call's deadline timer does, while it runs).
 */
export async function openSession(origin: string, tls: TlsMaterial): Promise<http2.ClientHttp2Session> {
  const session = (await loadHttp2()).connect(origin, {
    ...(tls.ca && { ca: tls.ca }), ...(tls.cert && { cert: tls.cert }), ...(tls.key && { key: tls.key }),
    settings: { initialWindowSize: 4 << 20 },
  });
  session.on("error", () => undefined); // each request reports it
  session.on("connect", () => session.setLocalWindowSize(16 << 20));
  session.unref();
  return session;
}

export interface GrpcAnswer {
  /** grpc-status: 0 = OK, else the gRPC code of the error (an answer without one is a NotGrpcError). */
  readonly status: number;
  /** grpc-message, decoded. */
  readonly message: string;
  /** The reply message (without its 5-byte frame header), when status is 0. */
  readonly reply: Buffer;
}

/** Thrown when an answer is not a gRPC answer at all (no HTTP/2 server, a proxy speaking HTTP/1.1, …). */
export class NotGrpcError extends Error {
  override readonly name = "NotGrpcError";
}

/**
 * One unary gRPC call: `request` (an encoded protobuf message) to `path`;
 * without an answer within `timeoutMs` the stream is cancelled with the
 * error `timeoutMessage`; a transport failure rejects.
 */
export function grpcUnary(session: http2.ClientHttp2Session, path: string, request: Buffer, headers: http2.OutgoingHttpHeaders, timeoutMs: number, timeoutMessage: string): Promise<GrpcAnswer> {
  return new Promise((resolve, reject) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request({
        ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers",
        "grpc-timeout": `${Math.max(1, Math.ceil(timeoutMs))}m`, ...headers,
      });
    } catch (e) {
      return reject(e);
    }
    const timer = setTimeout(() => stream.close(CANCEL), timeoutMs);
    let failed: Error | undefined;
    let head: http2.IncomingHttpHeaders = {};
    let tail: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (head = h));
    stream.on("trailers", (t) => (tail = t));
    stream.on("data", (d: Buffer) => chunks.push(d));
    stream.on("error", (e) => (failed ??= e));
    stream.on("close", () => {
      clearTimeout(timer);
      if (stream.rstCode === CANCEL && !failed) failed = new Error(timeoutMessage);
      if (failed) return reject(failed);
      // a trailers-only answer carries its status in the headers
      const status = tail["grpc-status"] ?? head["grpc-status"];
      if (status === undefined) {
        return reject(new NotGrpcError(`${path}: not a gRPC answer (HTTP ${head[":status"] ?? "?"}, content-type ${head["content-type"] ?? "none"})`));
      }
      const text = String(tail["grpc-message"] ?? head["grpc-message"] ?? "");
      let message = text;
      try {
        message = decodeURIComponent(text);
      } catch {
        // not percent-encoded after all: as it came
      }
      const body = Buffer.concat(chunks);
      if (Number(status) !== 0) return resolve({ status: Number(status), message, reply: Buffer.alloc(0) });
      // one length-prefixed message: flag 0 (not compressed), 4-byte length
      if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
        return reject(new NotGrpcError(`${path}: a gRPC answer of ${body.length} bytes is not one uncompressed message`));
      }
      resolve({ status: 0, message, reply: body.subarray(5) });
    });
    const frame = Buffer.allocUnsafe(5);
    frame[0] = 0;
    frame.writeUInt32BE(request.length, 1);
    stream.end(Buffer.concat([frame, request]));
  });
}
