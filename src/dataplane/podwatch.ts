/**
 * Watches the pod bridge's ports so the fast path follows pods as the CNI
 * plugin creates and deletes their veths — from kernel events, without a
 * process and without polling.
 *
 * How it works:
 * 1) start() subscribes to rtnetlink link events (RTNLGRP_LINK) first, then
 *    reads the bridge and its ports with one netlink dump, so nothing that
 *    happens in between is missed (queued events are applied after the dump,
 *    in order, and end in the right state).
 * 2) Each RTM_NEWLINK whose IFLA_MASTER is the bridge adds (or renames) a
 *    port; a NEWLINK with another master, or a DELLINK, of a known port
 *    removes it. Events about the bridge itself: deleted → no ports;
 *    (re)created with a new ifindex → re-dump. Other links are ignored, so
 *    an idle node does no work at all.
 * 3) Changes are debounced (DEBOUNCE_MS), then the full port list goes to
 *    `onPorts`, which is idempotent (attach new, drop vanished); calls never
 *    overlap. When the kernel drops events (ENOBUFS) the ports are
 *    re-dumped.
 * 4) kick() (the daemon's reconcile) hands the ports to `onPorts` again, so
 *    an attachment removed by hand (which makes no netlink event) comes
 *    back. The events keep the port list exact, so a kick does not re-dump
 *    it (only without a subscription, the ports' only source then); and
 *    when there are no ports and `onPorts` already settled that, a kick
 *    does nothing at all: an idle node without pods pays nothing for it.
 * `periodMs` is accepted for the old constructor and ignored: there is no
 * periodic re-scan (the daemon's reconcile is the safety net).
 */
import type { Logger } from "../log.js";
import { dumpLinks, getLinkRaw } from "../net/netlink/rtnl.js";
import { watchLinks, type LinkEvent } from "../net/netlink/link-events.js";
import type { Subscription } from "../net/netlink/monitor.js";

export interface Port { readonly name: string; readonly ifindex: number }

const DEBOUNCE_MS = 30;

export class PodWatcher {
  private sub?: Subscription;
  private pending?: NodeJS.Timeout;
  private running = false;
  private again = false;
  private stopped = false;
  private needDump = true;
  private bridgeIndex = 0;
  private readonly ports = new Map<number, string>();
  /** The last `onPorts` call returned for an empty port list: nothing is attached, nothing to re-check. */
  private settledEmpty = false;

  constructor(
    private readonly bridge: string,
    private readonly onPorts: (ports: Port[]) => Promise<void>,
    private readonly log: Logger,
    /** Ignored: kept for callers of the polling version. */
    readonly periodMs = 0,
  ) {}

  start(): void {
    if (this.sub || this.stopped) return;
    try {
      this.sub = watchLinks((evs) => this.onEvents(evs), () => this.rescan());
    } catch (e) {
      this.log.warn("cannot subscribe to link events; pod ports follow kick() only", { err: e });
    }
    this.rescan();
  }

  private onEvents(events: readonly LinkEvent[]): void {
    let changed = false;
    for (const { type, link } of events) {
      if (link.name === this.bridge || link.ifindex === this.bridgeIndex) {
        if (type === "del" && link.ifindex === this.bridgeIndex) {
          this.bridgeIndex = 0;
          this.ports.clear();
          changed = true;
        } else if (type === "new" && link.name === this.bridge && link.ifindex !== this.bridgeIndex) {
          this.needDump = true; // a new bridge of that name
          changed = true;
        }
        continue;
      }
      const isPort = type === "new" && this.bridgeIndex > 0 && link.master === this.bridgeIndex;
      if (isPort && this.ports.get(link.ifindex) !== link.name) {
        this.ports.set(link.ifindex, link.name);
        changed = true;
      } else if (!isPort && this.ports.delete(link.ifindex)) {
        changed = true;
      }
    }
    if (changed) this.debounced();
  }

  private debounced(): void {
    if (this.pending || this.stopped) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.flush();
    }, DEBOUNCE_MS);
  }

  /**
   * Reports the ports again now (or right after the call in progress), so
   * `onPorts` re-checks their attachments; re-reads them first only when no
   * events follow them. Nothing when there are no ports and that is settled.
   */
  kick(): void {
    if (!this.sub) this.needDump = true;
    if (!this.needDump && this.ports.size === 0 && this.settledEmpty) return;
    this.flush();
  }

  /** Re-reads the bridge's ports (events were lost, or at start) and reports them. */
  private rescan(): void {
    this.needDump = true;
    this.flush();
  }

  /** Reads the bridge and its ports; false when that failed (then the ports are not reported, and the next kick reads again). */
  private dump(): boolean {
    this.ports.clear();
    this.bridgeIndex = 0;
    try {
      const br = getLinkRaw(this.bridge);
      if (br) {
        this.bridgeIndex = br.ifindex;
        for (const l of dumpLinks()) if (l.master === br.ifindex) this.ports.set(l.ifindex, l.name);
      }
      this.needDump = false;
      return true;
    } catch (e) {
      this.log.warn("pod port scan failed; will read the ports again at the next event or reconcile", { err: e });
      return false;
    }
  }

  private flush(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      try {
        do {
          this.again = false;
          this.settledEmpty = false;
          if (this.needDump && !this.dump()) break;
          const empty = this.ports.size === 0;
          await this.onPorts([...this.ports].map(([ifindex, name]) => ({ name, ifindex })));
          this.settledEmpty = empty;
        } while (this.again && !this.stopped);
      } catch (e) {
        this.log.warn("pod port sync failed", { err: e });
      } finally {
        this.running = false;
      }
    })();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.pending);
    this.sub?.stop();
    this.sub = undefined;
  }
}
