/**
 * A real etcd server for tests and the benchmark, on loopback only.
 *
 *   /tmp/<prefix>/            per-run directory (prefix "et" + 4 hex digits)
 *     data/                   etcd's data dir (kept across stop()/start())
 *     etcd.log                etcd's output
 *     tls/                    CA, server and client certificates (with tls)
 *
 *   etcd --listen-client-urls http(s)://127.0.0.1:<free port>
 *        --listen-peer-urls   http://127.0.0.1:<another free port>
 *        --initial-cluster    <name>=http://127.0.0.1:<peer port>
 *
 * How it works: `startEtcd` picks two free ports (bind to port 0, read it,
 * close), starts etcd through exec.ts's spawnIn (own process group, killed
 * by the exit/signal safety net) and waits until `etcdctl endpoint health`
 * answers. `stop()` + `start()` restart it on the same ports and data, so a
 * test can take etcd away and bring it back. `destroy()` kills it and
 * removes the directory; the directory is also removed at process exit,
 * even after a failed test. With `tls`, openssl makes a CA, a server
 * certificate (SAN IP:127.0.0.1; extendedKeyUsage serverAuth and clientAuth,
 * as kubeadm makes them: etcd 3.4's JSON gateway dials etcd's own gRPC port
 * with the server certificate) and a client certificate, and etcd runs
 * with --client-cert-auth: clients must present a certificate the CA signed.
 * `etcdctl(...)` runs ETCDCTL_API=3 etcdctl against this server (with the
 * client certificate when there is one).
 */
import { mkdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { onCleanup, run, spawnIn, stopProcess, waitFor, type RunResult } from "./exec.js";

export interface EtcdTLSFiles {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

export interface StartEtcdOptions {
  /** Serve clients over TLS and require client certificates. */
  readonly tls?: boolean;
  /** Run inside this network namespace (a test cluster's router, say), listening on `host`. */
  readonly netns?: string;
  /** The address clients use (default 127.0.0.1); etcd also listens on 127.0.0.1 of its namespace. */
  readonly host?: string;
  /** etcd's --auth-token-ttl (simple tokens unused this long expire); etcd's default is 300. */
  readonly authTokenTTLSeconds?: number;
  /** The start of the server's name and of its directory /tmp/<prefix><hex> (default $TWILL_TEST_PREFIX, else "et"). */
  readonly prefix?: string;
}

/** A free TCP port on 127.0.0.1 (free now: the caller binds it soon after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error("no port"))));
    });
  });
}

async function makeCerts(dir: string, host: string): Promise<EtcdTLSFiles> {
  mkdirSync(dir, { recursive: true });
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => run("openssl", args);
  await ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=twill-test-ca",
    "-keyout", f("ca.key"), "-out", f("ca.crt"));
  const leaf = async (name: string, cn: string, ext: string) => {
    await ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${cn}`, "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`));
    await run("bash", ["-c", `printf '%s\\n' "$1" > "$2"`, "-", ext, f(`${name}.ext`)]);
    await ssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial",
      "-days", "2", "-extfile", f(`${name}.ext`), "-out", f(`${name}.crt`));
  };
  await leaf("server", host, `subjectAltName=IP:127.0.0.1,IP:${host}\nextendedKeyUsage=serverAuth,clientAuth`);
  await leaf("client", "twill-test-client", "extendedKeyUsage=clientAuth");
  return { ca: f("ca.crt"), serverCert: f("server.crt"), serverKey: f("server.key"), clientCert: f("client.crt"), clientKey: f("client.key") };
}

export class EtcdServer {
  private proc: ChildProcess | undefined;
  /** "user:password" for etcdctl once a test has enabled auth. */
  etcdctlUser: string | undefined;
  private constructor(
    readonly prefix: string,
    readonly dir: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly tls: EtcdTLSFiles | undefined,
    readonly netns: string | undefined,
    readonly host: string,
    readonly authTokenTTLSeconds?: number,
  ) {}

  /** The client URL, e.g. "http://127.0.0.1:40123". */
  get endpoint(): string {
    return `${this.tls ? "https" : "http"}://${this.host}:${this.clientPort}`;
  }
  get dataDir(): string { return join(this.dir, "data"); }
  get logFile(): string { return join(this.dir, "etcd.log"); }
  get running(): boolean { return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null; }

  static async start(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
    const prefix = (opts.prefix ?? process.env.TWILL_TEST_PREFIX ?? "et") + randomBytes(2).toString("hex");
    const dir = join("/tmp", prefix);
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(dir, { recursive: true });
    const host = opts.host ?? "127.0.0.1";
    const tls = opts.tls ? await makeCerts(join(dir, "tls"), host) : undefined;
    // A namespace of our own has every port free.
    const [cp, pp] = opts.netns ? [2379, 2380] : [await freePort(), await freePort()];
    const server = new EtcdServer(prefix, dir, cp, pp, tls, opts.netns, host, opts.authTokenTTLSeconds);
    try {
      await server.start();
    } catch (e) {
      await server.destroy();
      throw e;
    }
    return server;
  }

  /** Starts (or restarts, same ports and data) etcd and waits until it is healthy. */
  async start(): Promise<void> {
    if (this.running) return;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const listen = this.host === "127.0.0.1" ? this.endpoint : `${this.endpoint},${this.endpoint.replace(this.host, "127.0.0.1")}`;
    const args = [
      "--name", this.prefix, "--data-dir", this.dataDir,
      "--listen-client-urls", listen, "--advertise-client-urls", this.endpoint,
      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
      "--initial-cluster", `${this.prefix}=${peer}`, "--initial-cluster-state", "new",
      "--initial-cluster-token", this.prefix,
      "--heartbeat-interval", "50", "--election-timeout", "500",
      // scale tests write thousands of leases in one transaction
      "--max-txn-ops", "100000", "--max-request-bytes", "67108864",
      "--logger", "zap", "--log-level", "warn",
      ...(this.authTokenTTLSeconds ? ["--auth-token-ttl", String(this.authTokenTTLSeconds)] : []),
    ];
    if (this.tls) {
      args.push("--cert-file", this.tls.serverCert, "--key-file", this.tls.serverKey,
        "--client-cert-auth", "--trusted-ca-file", this.tls.ca);
    }
    this.proc = spawnIn(this.netns, "etcd", args, { logFile: this.logFile });
    const proc = this.proc;
    await waitFor(async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`etcd exited (${proc.exitCode ?? proc.signalCode}); see ${this.logFile}`);
      return (await this.etcdctl(["endpoint", "health", "--command-timeout=1s"], { allowFail: true })).code === 0;
    }, { what: `etcd on ${this.endpoint} to be healthy`, timeoutMs: 15_000, intervalMs: 100 });
  }

  /** Stops etcd (SIGTERM, then SIGKILL); its data stays for start(). */
  async stop(): Promise<void> {
    if (this.proc) await stopProcess(this.proc, { graceMs: 2000 });
    this.proc = undefined;
  }

  /** Stops etcd and removes its directory. */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The etcdctl flags that reach this server. */
  etcdctlFlags(): string[] {
    const flags = [`--endpoints=${this.endpoint}`];
    if (this.tls) flags.push(`--cacert=${this.tls.ca}`, `--cert=${this.tls.clientCert}`, `--key=${this.tls.clientKey}`);
    if (this.etcdctlUser) flags.push(`--user=${this.etcdctlUser}`);
    return flags;
  }

  /** Runs `ETCDCTL_API=3 etcdctl <flags> ...args`; throws on failure unless allowFail. */
  etcdctl(args: string[], opts: { allowFail?: boolean; input?: string } = {}): Promise<RunResult> {
    return run("etcdctl", [...this.etcdctlFlags(), ...args], { env: { ETCDCTL_API: "3" }, timeoutMs: 15_000, netns: this.netns, ...opts });
  }

  /** `etcdctl -w json ...args`, parsed. */
  async etcdctlJson<T>(args: string[]): Promise<T> {
    const r = await this.etcdctl(["-w", "json", ...args]);
    return JSON.parse(r.stdout) as T;
  }

  /** The store's current revision. */
  async revision(): Promise<number> {
    const r = await this.etcdctlJson<{ header: { revision: number } }>(["get", "--keys-only", "--limit=1", "/"]);
    return Number(r.header.revision);
  }
}
