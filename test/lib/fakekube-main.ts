/**
 * The fake Kubernetes API server as a process of its own, so it can run in
 * a test cluster's namespace where the twill daemons reach it.
 *
 *   node dist/test/lib/fakekube-main.js <host> <port> [<options JSON>]
 *
 * Options (all optional): {"certFile":..., "keyFile":...} serve HTTPS with
 * that certificate; {"tokens":[...]} accept only these bearer tokens.
 *
 * How it works: it serves the API (sim/kubeapi.ts) on host:port and takes
 * commands as JSON lines on stdin — {"id":1,"op":"addNode","args":[{...}]} —
 * answering each with {"id":1,"result":...} or {"id":1,"error":"..."} on
 * stdout. `FakeKubeProcess` (below) is the test side.
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { FakeKube } from "../../sim/kubeapi.js";
import { spawnIn, stopProcess } from "./exec.js";

type Op = "addNode" | "addPod" | "updatePodCIDR" | "annotate" | "deleteNode" | "node" | "patches" | "expireWatches" | "dropWatches";

/** The server's options, as the command line's third argument (JSON). */
export interface FakeKubeProcessOptions {
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly tokens?: readonly string[];
}

async function main(host: string, port: number, o: FakeKubeProcessOptions): Promise<void> {
  const tls = o.certFile && o.keyFile ? { cert: readFileSync(o.certFile), key: readFileSync(o.keyFile) } : undefined;
  const fake = await FakeKube.start({ host, port, ...(tls && { tls }), ...(o.tokens && { tokens: o.tokens }) });
  const ops: Record<Op, (...a: any[]) => unknown> = {
    addNode: (init) => fake.addNode(init),
    addPod: (namespace: string, name: string, nodeName: string) => fake.addPod(namespace, name, nodeName),
    updatePodCIDR: (name: string, cidr: string) => fake.updateNode(name, (n) => { n.spec.podCIDR = cidr; n.spec.podCIDRs = [cidr]; }),
    annotate: (name: string, ann: Record<string, string>) => fake.annotate(name, ann),
    deleteNode: (name: string) => fake.deleteNode(name),
    node: (name: string) => fake.node(name),
    patches: () => fake.patches,
    expireWatches: () => fake.expireWatches(),
    dropWatches: () => fake.dropWatches(),
  };
  process.stdout.write(JSON.stringify({ listening: fake.url }) + "\n");
  for await (const line of createInterface({ input: process.stdin })) {
    const { id, op, args } = JSON.parse(line) as { id: number; op: Op; args: unknown[] };
    try {
      process.stdout.write(JSON.stringify({ id, result: (await ops[op](...(args ?? []))) ?? null }) + "\n");
    } catch (e) {
      process.stdout.write(JSON.stringify({ id, error: String(e) }) + "\n");
    }
  }
  await fake.close();
}

/** The test side: starts the server in `netns` and sends it commands. */
export class FakeKubeProcess {
  private next = 1;
  private readonly waiting = new Map<number, (r: { result?: unknown; error?: string }) => void>();
  private constructor(private readonly proc: ChildProcess, readonly url: string) {}

  static async start(netns: string, host: string, port = 6443, opts: FakeKubeProcessOptions = {}): Promise<FakeKubeProcess> {
    const proc = spawnIn(netns, process.execPath, [fileURLToPath(import.meta.url), host, String(port), JSON.stringify(opts)], { stdio: ["pipe", "pipe", "pipe"] });
    const lines = createInterface({ input: proc.stdout! });
    let ready!: (url: string) => void;
    const url = new Promise<string>((r) => (ready = r));
    let self: FakeKubeProcess | undefined;
    lines.on("line", (l) => {
      const m = JSON.parse(l) as { listening?: string; id?: number; result?: unknown; error?: string };
      if (m.listening) ready(m.listening);
      else if (m.id !== undefined) self?.waiting.get(m.id)?.(m);
    });
    const timeout = setTimeout(() => proc.kill(), 10000);
    self = new FakeKubeProcess(proc, await url);
    clearTimeout(timeout);
    return self;
  }

  call<T = unknown>(op: Op, ...args: unknown[]): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, (r) => {
        this.waiting.delete(id);
        if (r.error) reject(new Error(`fake kube ${op}: ${r.error}`));
        else resolve(r.result as T);
      });
      this.proc.stdin!.write(JSON.stringify({ id, op, args }) + "\n");
    });
  }

  async stop(): Promise<void> {
    this.proc.stdin?.end();
    await stopProcess(this.proc, { graceMs: 1000 });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv[2] ?? "127.0.0.1", Number(process.argv[3] ?? 6443), JSON.parse(process.argv[4] ?? "{}") as FakeKubeProcessOptions).catch((e) => {
    process.stderr.write(String(e) + "\n");
    process.exit(1);
  });
}
