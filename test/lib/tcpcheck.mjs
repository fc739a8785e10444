#!/usr/bin/env node
// Tiny TCP helpers run inside test namespaces by test/lib/traffic.ts.
// Each prints one JSON line per event on stdout, so the caller can parse it.
//
//   tcpcheck.mjs sink PORT              accept one connection, hash what it sends:
//                                       {"listening":PORT} then {"bytes":N,"sha256":H,"peer":"ip"}
//   tcpcheck.mjs send IP PORT BYTES     connect, send BYTES random bytes, hash them:
//                                       {"bytes":N,"sha256":H,"ms":T}
//   tcpcheck.mjs echo PORT              echo every connection back until killed:
//                                       {"listening":PORT} then {"peer":"ip","port":P} per connection
//   tcpcheck.mjs request IP PORT B64 [TIMEOUT_MS]
//                                       send the base64 payload, half-close, read until EOF:
//                                       {"reply":B64,"ms":T,"local":"ip:port"}
//   tcpcheck.mjs connect IP PORT [TIMEOUT_MS]
//                                       {"connected":true,"ms":T} or {"connected":false,"error":E}
import net from "node:net";
import { createHash, randomBytes } from "node:crypto";

const [mode, ...args] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const die = (msg) => {
  process.stderr.write(`tcpcheck ${mode}: ${msg}\n`);
  process.exit(1);
};
const peerOf = (s) => (s.remoteAddress ?? "").replace(/^::ffff:/, "");

function listen(server, port) {
  // "::" accepts IPv4 too; fall back to IPv4 only where IPv6 is disabled
  server.once("error", (e) => {
    if (e.code === "EAFNOSUPPORT" || e.code === "EADDRNOTAVAIL") server.listen(port, "0.0.0.0");
    else die(e.message);
  });
  server.on("listening", () => say({ listening: server.address().port }));
  server.listen(port, "::");
}

if (mode === "sink") {
  const server = net.createServer((sock) => {
    server.close();
    const h = createHash("sha256");
    let bytes = 0;
    sock.on("data", (b) => {
      bytes += b.length;
      h.update(b);
    });
    sock.on("end", () => {
      say({ bytes, sha256: h.digest("hex"), peer: peerOf(sock) });
      sock.end();
    });
    sock.on("error", (e) => die(e.message));
  });
  listen(server, Number(args[0]));
} else if (mode === "send") {
  const [ip, port, total] = [args[0], Number(args[1]), Number(args[2])];
  const h = createHash("sha256");
  let left = total;
  const start = process.hrtime.bigint();
  const sock = net.connect({ host: ip, port }, () => {
    const pump = () => {
      while (left > 0) {
        const b = randomBytes(Math.min(left, 64 * 1024));
        h.update(b);
        left -= b.length;
        if (!sock.write(b)) return sock.once("drain", pump);
      }
      sock.end();
    };
    pump();
  });
  sock.on("data", () => {});
  sock.on("close", (hadError) => {
    if (hadError) return;
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    say({ bytes: total - left, sha256: h.digest("hex"), ms });
  });
  sock.on("error", (e) => die(e.message));
} else if (mode === "echo") {
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    say({ peer: peerOf(sock), port: sock.remotePort });
    sock.on("error", () => sock.destroy());
    sock.pipe(sock);
  });
  listen(server, Number(args[0]));
} else if (mode === "request") {
  const [ip, port, b64, timeoutMs] = [args[0], Number(args[1]), args[2] ?? "", Number(args[3] ?? 5000)];
  const start = process.hrtime.bigint();
  const parts = [];
  const sock = net.connect({ host: ip, port, allowHalfOpen: true }, () => sock.end(Buffer.from(b64, "base64")));
  sock.setTimeout(timeoutMs, () => die(`no reply within ${timeoutMs} ms`));
  sock.on("data", (b) => parts.push(b));
  sock.on("end", () => {
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    say({ reply: Buffer.concat(parts).toString("base64"), ms, local: `${sock.localAddress}:${sock.localPort}` });
    sock.destroy();
  });
  sock.on("error", (e) => die(e.message));
} else if (mode === "connect") {
  const [ip, port, timeoutMs] = [args[0], Number(args[1]), Number(args[2] ?? 3000)];
  const start = process.hrtime.bigint();
  const sock = net.connect({ host: ip, port }, () => {
    say({ connected: true, ms: Number(process.hrtime.bigint() - start) / 1e6 });
    sock.destroy();
  });
  sock.setTimeout(timeoutMs, () => {
    say({ connected: false, error: `no answer within ${timeoutMs} ms` });
    sock.destroy();
  });
  sock.on("error", (e) => say({ connected: false, error: e.code ?? e.message }));
} else {
  die("usage: tcpcheck.mjs sink PORT | send IP PORT BYTES | echo PORT | request IP PORT B64 [TIMEOUT_MS] | connect IP PORT [TIMEOUT_MS]");
}
