/**
 * A readiness probe that costs the node nothing while it waits: one process,
 * started in the node's namespace before the daemon, asks /readyz every
 * few milliseconds over loopback (a refused connect while the daemon is not
 * serving yet) and prints "ready" when the answer says so, then exits.
 *
 *   nsenter --net=/run/netns/NS node dist/bench/scale/readyprobe.js PORT [INTERVAL_MS]
 *
 * Why not `curl` per poll: each poll was a process (nsenter + curl, ~10 ms
 * of CPU) 20 times a second on a 2-core machine, taken from the daemon it
 * was timing. It prints "probing" once it is up, so the caller starts the
 * clock only then.
 */
import http from "node:http";

const port = Number(process.argv[2]);
const interval = Number(process.argv[3] ?? 10);

function poll(): void {
  const req = http.get({ host: "127.0.0.1", port, path: "/readyz", agent: false, timeout: 2000 }, (res) => {
    let body = "";
    res.setEncoding("utf8");
    res.on("data", (d: string) => (body += d));
    res.on("end", () => {
      if (body.startsWith("ready")) {
        process.stdout.write("ready\n", () => process.exit(0));
      } else setTimeout(poll, interval);
    });
  });
  req.on("timeout", () => req.destroy());
  req.on("error", () => setTimeout(poll, interval));
}

process.stdout.write("probing\n");
poll();
