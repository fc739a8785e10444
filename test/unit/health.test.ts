/**
 * The health server on 127.0.0.1:0 with a real metrics registry: the three
 * endpoints, read-only methods, no request bodies, the header size cap
 * (431), and a slowloris client cut off by the headers timeout while normal
 * requests keep being answered. Raw sockets, so nothing in between retries
 * or buffers.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { once } from "node:events";
import { startHealthServer, DEFAULT_LIMITS, type HealthServer } from "../../src/health.js";
import { createMetrics } from "../../src/metrics.js";

/** One raw HTTP/1.1 exchange; resolves with the status code and the whole response text. */
async function raw(port: number, request: string | Buffer): Promise<{ status: number; text: string }> {
  const s = connect(port, "127.0.0.1");
  await once(s, "connect");
  s.on("error", () => {});
  let text = "";
  s.setEncoding("latin1");
  s.on("data", (d: string) => (text += d));
  s.end(request);
  await once(s, "close");
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return { status: m ? Number(m[1]) : 0, text };
}
const get = (port: number, path: string, method = "GET", extra = "") =>
  raw(port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${extra}\r\n`);

async function withServer(f: (s: HealthServer, ready: { value: boolean }) => Promise<void>, limits = {}): Promise<void> {
  const ready = { value: false };
  const s = await startHealthServer("127.0.0.1", 0, { ready: () => ready.value }, createMetrics("test", "bpf"), { limits });
  try {
    await f(s, ready);
  } finally {
    s.closeAllConnections();
    s.close();
  }
}

/** A raw connection to the server; reply() is everything it was sent so far. */
async function rawClient(port: number): Promise<{ socket: Socket; reply: () => string }> {
  const socket = connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await once(socket, "connect");
  let text = "";
  socket.setEncoding("latin1");
  socket.on("data", (d: string) => (text += d));
  return { socket, reply: () => text };
}

/** Writes `text` one byte every `ms` (from the start again at its end) while the socket is open. */
function dripper(socket: Socket, text: string, ms: number): { stop(): void; sent(): number } {
  let i = 0;
  const timer = setInterval(() => {
    if (!socket.destroyed && socket.writable) socket.write(text[i++ % text.length]!);
  }, ms);
  return { stop: () => clearInterval(timer), sent: () => i };
}

test("port 0 binds a free port on the given address; the server reports it", async () => {
  await withServer(async (s) => {
    assert.ok(s.port > 0);
    const a = s.address();
    assert.ok(a && typeof a === "object" && a.address === "127.0.0.1" && a.port === s.port);
  });
});

test("GET /healthz 200, /readyz 503 then 200, /metrics 200 with Prometheus text, unknown path 404, HEAD works", async () => {
  await withServer(async (s, ready) => {
    const h = await get(s.port, "/healthz");
    assert.equal(h.status, 200);
    assert.match(h.text, /\r\n\r\nok\n$/);
    assert.equal((await get(s.port, "/readyz")).status, 503);
    ready.value = true;
    const r = await get(s.port, "/readyz?verbose");
    assert.equal(r.status, 200);
    assert.match(r.text, /ready\n$/);
    const m = await get(s.port, "/metrics");
    assert.equal(m.status, 200);
    assert.match(m.text, /content-type: text\/plain; version=0\.0\.4/i);
    assert.match(m.text, /\n# TYPE \w+ \w+\n/);
    assert.equal((await get(s.port, "/nope")).status, 404);
    const head = await get(s.port, "/healthz", "HEAD");
    assert.equal(head.status, 200);
    assert.ok(head.text.endsWith("\r\n\r\n"), "HEAD has no body");
  });
});

test("read-only: other methods get 405 with Allow; a request with a body gets 413 and its body is never read", async () => {
  await withServer(async (s) => {
    for (const m of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
      const r = await get(s.port, "/healthz", m, "Content-Length: 0\r\n");
      assert.equal(r.status, 405, m);
      assert.match(r.text, /allow: GET, HEAD/i);
    }
    assert.equal((await get(s.port, "/healthz", "GET", "Content-Length: 5\r\n")).status, 413);
    assert.equal((await get(s.port, "/healthz", "GET", "Transfer-Encoding: chunked\r\n")).status, 413);

    // A POST announcing 1 MB that sends it slowly: answered at once, the connection closed.
    const c = connect(s.port, "127.0.0.1");
    c.on("error", () => {});
    await once(c, "connect");
    let text = "";
    c.on("data", (d) => (text += d));
    const t0 = Date.now();
    c.write("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc");
    await once(c, "close");
    assert.match(text, /^HTTP\/1\.1 405/);
    assert.ok(Date.now() - t0 < 2000, `closed after ${Date.now() - t0} ms`);
  });
});

test("a 100 KB header is refused with 431 and the server still answers", async () => {
  await withServer(async (s) => {
    const big = await get(s.port, "/healthz", "GET", `X-Big: ${"a".repeat(100 * 1024)}\r\n`);
    assert.equal(big.status, 431);
    const many = await get(s.port, "/healthz", "GET", Array.from({ length: 2000 }, (_, i) => `X-${i}: y\r\n`).join(""));
    assert.equal(many.status, 431, "2,000 small headers exceed the 8 KiB cap too");
    assert.equal((await get(s.port, "/healthz")).status, 200);
  });
});

test("a slowloris client (headers at 1 byte per second) is cut off by the headers timeout; others are served meanwhile", async () => {
  assert.equal(DEFAULT_LIMITS.headersTimeoutMs, 5000);
  // A shorter timeout than the default keeps the test quick; the mechanism is the same.
  await withServer(async (s) => {
    // Node's server-wide check runs only every 30 s here (an idle server must not wake every second):
    // the cut-off below within the 2 s headers timeout is the per-connection deadline's.
    const every = (s as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval;
    assert.ok(every >= 30_000, `Node's check every ${every} ms`);
    const { socket: slow, reply } = await rawClient(s.port);
    const drip = dripper(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a".repeat(100), 1000);
    const t0 = Date.now();
    const closed = once(slow, "close");
    try {
      // While it drips, normal requests are answered promptly.
      for (let k = 0; k < 3; k++) {
        const t = Date.now();
        assert.equal((await get(s.port, "/healthz")).status, 200);
        assert.ok(Date.now() - t < 500, `served in ${Date.now() - t} ms`);
        await new Promise((r) => setTimeout(r, 400));
      }
      await closed;
    } finally {
      drip.stop();
    }
    const took = Date.now() - t0;
    assert.ok(took >= 1500 && took < 5000, `cut off after ${took} ms (headers timeout 2000 ms)`);
    assert.match(reply(), /^HTTP\/1\.1 408/, "told why");
    assert.ok(drip.sent() < 6, `it sent only ${drip.sent()} bytes`);
    assert.equal((await get(s.port, "/healthz")).status, 200, "still serving");
  }, { headersTimeoutMs: 2000, requestTimeoutMs: 3000 });
});

test("after an answer, a keep-alive client that drips its next request is cut off too (keep-alive wait + headers timeout)", async () => {
  await withServer(async (s) => {
    const { socket: c, reply } = await rawClient(s.port);
    c.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    while (!reply().includes("ok\n")) await once(c, "data");
    assert.match(reply(), /^HTTP\/1\.1 200/);
    // Now one byte every 300 ms: each resets the socket's idle timer, none completes the headers.
    const drip = dripper(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a".repeat(100), 300);
    const t0 = Date.now();
    try {
      await once(c, "close");
    } finally {
      drip.stop();
    }
    const took = Date.now() - t0;
    assert.ok(took >= 2000 && took < 4500, `cut off ${took} ms after the answer (keep-alive 1000 + headers 1500 ms)`);
    assert.match(reply().slice(reply().indexOf("ok\n") + 3), /^HTTP\/1\.1 408/, "told why");
  }, { headersTimeoutMs: 1500, requestTimeoutMs: 3000, keepAliveTimeoutMs: 1000, idleTimeoutMs: 10_000 });
});

/** A connection from 127.0.0.2 to the server on 127.0.0.1: "another host" for the pools (its source is not the address it reached). */
async function holdFromElsewhere(port: number): Promise<Socket> {
  const c = connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" });
  c.on("error", () => {});
  await once(c, "connect");
  return c;
}

test("connections from other hosts beyond maxConnections are dropped; probes from this host keep a pool of their own", async () => {
  await withServer(async (s, ready) => {
    const held = await Promise.all(Array.from({ length: 4 }, () => holdFromElsewhere(s.port)));
    await new Promise((r) => setTimeout(r, 100));
    const over = await holdFromElsewhere(s.port);
    let reply = "";
    over.setEncoding("latin1");
    over.on("data", (d: string) => (reply += d));
    over.end("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    await once(over, "close");
    assert.equal(reply, "", "the 5th connection from another host is closed without an answer");
    // The kubelet's probes come from this host (source = the address they reach): still answered.
    ready.value = true;
    for (let i = 0; i < 3; i++) {
      assert.equal((await get(s.port, "/healthz")).status, 200);
      assert.equal((await get(s.port, "/readyz")).status, 200);
    }
    held.forEach((c) => c.destroy());
    await new Promise((r) => setTimeout(r, 100));
    const again = await holdFromElsewhere(s.port);
    again.end("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = "";
    again.setEncoding("latin1");
    again.on("data", (d: string) => (text += d));
    await once(again, "close");
    assert.match(text, /^HTTP\/1\.1 200/, "served again once slots are free");
  }, { maxConnections: 4 });
});

test("this host's pool has its own cap", async () => {
  await withServer(async (s) => {
    const held = await Promise.all(Array.from({ length: 2 }, async () => {
      const c = connect(s.port, "127.0.0.1");
      c.on("error", () => {});
      await once(c, "connect");
      return c;
    }));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(s.port, "/healthz")).status, 0, "the 3rd local connection is dropped");
    held.forEach((c) => c.destroy());
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(s.port, "/healthz")).status, 200);
  }, { localConnections: 2 });
});

test("probes answer while other clients hold every /metrics slot; the next scrape gets 503 at once", async () => {
  let release!: () => void;
  const stalled = new Promise<void>((r) => (release = r));
  let reads = 0;
  const source = { stats: async () => { reads++; await stalled; return undefined; } };
  const ready = { value: true };
  const s = await startHealthServer("127.0.0.1", 0, { ready: () => ready.value }, createMetrics("test", "bpf", () => source), {});
  try {
    assert.equal(DEFAULT_LIMITS.metricsSlots, 4);
    // Every /metrics slot held, from other hosts, by scrapes that cannot finish yet.
    const scrapers = await Promise.all(Array.from({ length: DEFAULT_LIMITS.metricsSlots }, () => holdFromElsewhere(s.port)));
    const replies = scrapers.map((c) => {
      let t = "";
      c.setEncoding("latin1");
      c.on("data", (d: string) => (t += d));
      c.write("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
      return { text: () => t, closed: once(c, "close") };
    });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(reads, 1, "the waiting scrapes share one collection");
    const t0 = Date.now();
    const fifth = await get(s.port, "/metrics");
    assert.equal(fifth.status, 503);
    assert.match(fifth.text, /retry-after: 1/i);
    for (let i = 0; i < 5; i++) {
      const t = Date.now();
      assert.equal((await get(s.port, "/healthz")).status, 200);
      assert.equal((await get(s.port, "/readyz")).status, 200);
      assert.ok(Date.now() - t < 500, `probes answered in ${Date.now() - t} ms`);
    }
    assert.ok(Date.now() - t0 < 2000);
    release();
    await Promise.all(replies.map((r) => r.closed));
    for (const r of replies) assert.match(r.text(), /^HTTP\/1\.1 200/, "the held scrapes complete, then their connections close");
  } finally {
    release();
    s.closeAllConnections();
    s.close();
  }
});
