/**
 * Probe for the kernel dataplane: `ip -o monitor route` in this process's
 * network namespace, event-driven (no polling).
 *
 * How it works: flannel's vxlan backend adds a peer as neighbour, FDB entry,
 * then route, and removes it route first — so the route's netlink
 * notification marks the moment traffic to the peer starts (or stops)
 * going to it. Each line is stamped when it arrives; a line
 * "10.x.y.0/24 via 10.x.y.0 dev flannel.1 onlink" is the peer present
 * (the gateway is its subnet's .0, as flannel programs it, not its public
 * IP: the remote is checked through the FDB at the end of the run, not
 * here), "Deleted 10.x.y.0/24 ..." is it gone. Resolution: the arrival of
 * the line at this process's event loop.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { DEFAULT_TIMEOUT_MS, ProbeTimeoutError, describeWant, now, type Probe, type Want } from "./probe.js";

const LINE = /^(?:\[ROUTE\]\s*)?(Deleted\s+)?(\d+\.\d+\.\d+\.\d+\/\d+)\s.*\bdev\s+(\S+)/;

interface Pending {
  readonly wants: Map<string, boolean>;
  last: number;
  resolve(t: number): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class RouteProbe implements Probe {
  private readonly proc: ChildProcess;
  /** prefix → the last change seen: present or not, and when. */
  private readonly seen = new Map<string, { present: boolean; t: number }>();
  private readonly pending = new Set<Pending>();
  private failed: Error | undefined;

  private constructor(private readonly device: string) {
    this.proc = spawn("ip", ["-o", "monitor", "route"], { stdio: ["ignore", "pipe", "pipe"] });
    createInterface({ input: this.proc.stdout! }).on("line", (line) => this.onLine(line, now()));
    this.proc.on("exit", (code, sig) => this.fail(new Error(`ip monitor route exited (${code ?? sig})`)));
    this.proc.on("error", (e) => this.fail(e));
  }

  /** Starts `ip monitor` and gives it a moment to subscribe (it prints nothing until something changes). */
  static async start(device = "flannel.1"): Promise<RouteProbe> {
    const p = new RouteProbe(device);
    await new Promise((r) => setTimeout(r, 300));
    if (p.failed) throw p.failed;
    return p;
  }

  private onLine(line: string, t: number): void {
    const m = LINE.exec(line);
    if (!m || m[3] !== this.device) return;
    const prefix = m[2]!, present = !m[1];
    this.seen.set(prefix, { present, t });
    for (const p of this.pending) {
      if (p.wants.get(prefix) !== present) continue;
      p.wants.delete(prefix);
      p.last = t;
      if (p.wants.size === 0) this.settle(p, t);
    }
  }

  private settle(p: Pending, t: number): void {
    this.pending.delete(p);
    clearTimeout(p.timer);
    p.resolve(t);
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    for (const p of this.pending) { clearTimeout(p.timer); p.reject(e); }
    this.pending.clear();
  }

  private wait(wants: Map<string, boolean>, what: string, timeoutMs: number): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      const p: Pending = {
        wants, last: 0, resolve, reject,
        timer: setTimeout(() => { this.pending.delete(p); reject(new ProbeTimeoutError(what, timeoutMs)); }, timeoutMs),
      };
      this.pending.add(p);
    });
  }

  /** Registered before the change: only a notification that arrives after this counts. */
  expect(prefix: string, want: Want, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    return this.wait(new Map([[prefix, want.present]]), describeWant(prefix, want), timeoutMs);
  }

  /** Prefixes whose change was already seen count at the time they were seen. */
  converge(wants: ReadonlyMap<string, Want>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    const left = new Map<string, boolean>();
    let last = 0;
    for (const [prefix, w] of wants) {
      const s = this.seen.get(prefix);
      if (s && s.present === w.present) last = Math.max(last, s.t);
      else left.set(prefix, w.present);
    }
    if (left.size === 0) return Promise.resolve(last);
    return this.wait(left, `${wants.size} lease changes`, timeoutMs);
  }

  async close(): Promise<void> {
    this.failed ??= new Error("closed");
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const gone = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      await gone;
    }
  }
}
