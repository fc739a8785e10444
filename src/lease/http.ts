/**
 * The HTTP plumbing the etcd and Kubernetes clients share (etcdclient.ts,
 * kubeapi.ts), on node:http(s): one request on a keep-alive agent, a whole
 * answer read under a deadline, and a streamed answer (a watch) read as
 * lines. What a status or a body means is each client's business.
 */
import * as http from "node:http";
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
      onText(res, (text) => {
        clearTimeout(timer);
        resolve({ status: res.statusCode!, text });
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
