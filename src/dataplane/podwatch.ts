/**
 * Watches the pod bridge's ports so the fast path follows pods as the CNI
 * plugin creates and deletes their veths.
 *
 * How it works: `ip -o monitor link` streams netlink link events; any event
 * triggers a (debounced) re-scan of `ip -j link show master <bridge>`, and a
 * periodic re-scan (every `periodMs`) covers a monitor that died or missed
 * something. Each scan hands the full port list to `onPorts`, which is
 * idempotent (attach new, drop vanished), so events need no interpretation.
 */
import { spawn, type ChildProcess } from "node:child_process";
import type { Logger } from "../log.js";
import { bridgePorts } from "../net/link.js";

export interface Port { readonly name: string; readonly ifindex: number }

export class PodWatcher {
  private monitor?: ChildProcess;
  private timer?: NodeJS.Timeout;
  private pending?: NodeJS.Timeout;
  private running = false;
  private again = false;
  private stopped = false;

  constructor(
    private readonly bridge: string,
    private readonly onPorts: (ports: Port[]) => Promise<void>,
    private readonly log: Logger,
    private readonly periodMs = 1000,
  ) {}

  start(): void {
    this.startMonitor();
    this.timer = setInterval(() => this.kick(), this.periodMs);
    this.kick();
  }

  private startMonitor(): void {
    if (this.stopped) return;
    const m = spawn("ip", ["-o", "monitor", "link"], { stdio: ["ignore", "pipe", "ignore"] });
    this.monitor = m;
    m.stdout!.on("data", () => this.debounced());
    m.on("exit", () => {
      if (!this.stopped) setTimeout(() => this.startMonitor(), 1000);
    });
  }

  private debounced(): void {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.kick();
    }, 50);
  }

  /** Runs a scan now (or right after the one in progress). */
  kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      try {
        do {
          this.again = false;
          const ports = await bridgePorts(this.bridge).catch(() => []);
          await this.onPorts(ports.map((p) => ({ name: p.name, ifindex: p.ifindex })));
        } while (this.again && !this.stopped);
      } catch (e) {
        this.log.warn("pod port scan failed", { err: e });
      } finally {
        this.running = false;
      }
    })();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.pending);
    this.monitor?.kill();
  }
}
