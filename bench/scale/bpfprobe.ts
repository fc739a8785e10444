/**
 * Probe for the bpf dataplane: polls the node's pinned twill_peers map for
 * the exact LPM key, every ~0.1 ms while something is awaited.
 *
 * How it works: a worker thread (bpfprobe-worker.ts) owns the map fd and
 * does all lookups; this side sends it requests over a MessageChannel and
 * wakes it with Atomics.notify, and it answers with the time of the lookup
 * that first saw the wanted state. Must run in a process that can open the
 * pins (root; /sys/fs/bpf visible — nsenter --net keeps it visible).
 */
import { MessageChannel, Worker } from "node:worker_threads";
import { DEFAULT_TIMEOUT_MS, ProbeTimeoutError, describeWant, type Probe, type Want } from "./probe.js";
import type { Reply, Request, WorkerInput } from "./bpfprobe-worker.js";

interface Waiter { resolve(t: number): void; reject(e: Error): void; timer: NodeJS.Timeout }

export class BpfProbe implements Probe {
  private readonly worker: Worker;
  private readonly port: MessageChannel["port1"];
  private readonly signal = new Int32Array(new SharedArrayBuffer(4));
  private readonly waiters = new Map<number, Waiter>();
  private nextId = 1;
  private failed: Error | undefined;

  constructor(pinDir: string) {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const data: WorkerInput = { pinDir, port: port2, signal: this.signal.buffer as SharedArrayBuffer };
    this.worker = new Worker(new URL("./bpfprobe-worker.js", import.meta.url), { workerData: data, transferList: [port2] });
    this.port.on("message", (r: Reply) => {
      const w = this.waiters.get(r.id);
      if (!w) return;
      this.waiters.delete(r.id);
      clearTimeout(w.timer);
      if ("error" in r) w.reject(new Error(`bpf probe: ${r.error}`));
      else w.resolve(r.t);
    });
    this.worker.on("error", (e) => this.fail(e));
    this.worker.on("exit", (code) => { if (code !== 0) this.fail(new Error(`bpf probe thread exited ${code}`)); });
  }

  private fail(e: Error): void {
    this.failed = e;
    for (const w of this.waiters.values()) { clearTimeout(w.timer); w.reject(e); }
    this.waiters.clear();
  }

  private ask(req: Request & { id: number }, what: string, timeoutMs: number): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(req.id);
        reject(new ProbeTimeoutError(what, timeoutMs));
      }, timeoutMs);
      this.waiters.set(req.id, { resolve, reject, timer });
      this.port.postMessage(req);
      Atomics.store(this.signal, 0, 1);
      Atomics.notify(this.signal, 0);
    });
  }

  expect(prefix: string, want: Want, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    return this.ask({ kind: "expect", id: this.nextId++, prefix, want }, describeWant(prefix, want), timeoutMs);
  }

  converge(wants: ReadonlyMap<string, Want>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    return this.ask({ kind: "converge", id: this.nextId++, wants: [...wants] }, `${wants.size} lease changes`, timeoutMs);
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((r) => this.worker.once("exit", () => r()));
    this.port.postMessage({ kind: "stop" } satisfies Request);
    Atomics.store(this.signal, 0, 1);
    Atomics.notify(this.signal, 0);
    await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 2000).unref())]);
    await this.worker.terminate();
    this.port.close();
  }
}
