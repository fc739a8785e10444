/**
 * The scale scenario's load driver, run INSIDE the node's network namespace:
 *
 *   nsenter --net=/run/netns/<host> node dist/bench/scale/driver.js '<DriverInput JSON>'
 *
 * It writes lease events to etcd with the etcd3 client (as a node's
 * flanneld would) and times each one until the node's dataplane shows it,
 * through a probe in this same process (bpf: the pinned map, polled every
 * ~0.1 ms from a worker thread; kernel: `ip -o monitor route`). Prints one
 * JSON line (DriverOutput) and exits 0, or {"error": …} and exits 1.
 *
 * Phases:
 * - "events": one new lease after the other; each put waits until the
 *   previous one is in the dataplane. Latency = from just before the put
 *   is sent to the first moment the dataplane shows the peer. That
 *   includes etcd's commit (its WAL fsync: a p50 of ~3-5 ms and a p99 of
 *   ~12-14 ms on this VM's disk), so each sample also has `eventMs`: from
 *   the moment this process's own watch on the subnets prefix received the
 *   event (etcd sends it to every watcher at once, after the commit) to the
 *   dataplane showing it — the node's part, from the lease event on.
 * - "churn": open loop at a fixed pace (every intervalMs, whether earlier
 *   writes have finished or not): even events put a lease that is not
 *   there, odd ones delete one that is (the ring of leases.ts, so the run
 *   can be as long as wanted). Every sampleEvery-th event is timed as above,
 *   alternately a put and a delete. Right after the last event is sent the
 *   probe waits until every churned key is in its final state; that moment
 *   minus the last send is the convergence lag.
 * The client connects (one request) before anything is timed.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Etcd3, type Watcher } from "etcd3";
import { BpfProbe } from "./bpfprobe.js";
import { RouteProbe } from "./routeprobe.js";
import { now, type Probe, type Want } from "./probe.js";
import { ETCD_PREFIX, churnEvent, etcdKey, leasePrefix, leasePublicIP, leaseValue, type Ring } from "./leases.js";

export interface DriverInput {
  readonly mode: "bpf" | "kernel";
  readonly endpoint: string;
  /** The node's --bpf-pin-dir (bpf). */
  readonly pinDir: string;
  readonly phase: "events" | "churn" | "scrape";
  /** scrape: the daemon's healthz port on 127.0.0.1, scrapes of /metrics, seconds of /healthz probing before them. */
  readonly scrape?: { readonly port: number; readonly scrapes: number; readonly baselineSeconds: number };
  /** events: the peers to add, one after the other. */
  readonly events?: readonly number[];
  /** events: wait a random [min, max] ms between one event's arrival and the next put (default none). */
  readonly gapMs?: readonly [number, number];
  readonly churn?: {
    /** The ring the events walk (leases.ts churnEvent), and how many events. */
    readonly ring: Ring;
    readonly events: number;
    readonly intervalMs: number;
    readonly sampleEvery: number;
    /** How long one timed event, and the convergence, may take (a node that falls behind needs long). */
    readonly timeoutMs: number;
  };
}

export interface Sample {
  /** Event number within the phase. */
  readonly k: number;
  readonly op: "put" | "delete";
  readonly peer: number;
  /** Send → first seen in the dataplane. */
  readonly latencyMs: number;
  /** Send → etcd acknowledged the write. */
  readonly ackMs: number;
  /** This process's watch received the event → first seen in the dataplane (negative: the node was first). */
  readonly eventMs?: number;
  /** Send time relative to the phase's start. */
  readonly atMs: number;
}

export interface DriverOutput {
  readonly phase: "events" | "churn";
  readonly samples: readonly Sample[];
  /** churn: events sent, and how the pace held. */
  readonly sent?: number;
  readonly spanMs?: number;
  readonly maxSendLagMs?: number;
  readonly convergenceLagMs?: number;
  /** Wall time of the whole phase. */
  readonly durationMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * When this process's own watch on the subnets prefix received each key's
 * latest put and delete: the moment the lease event existed for any watcher.
 */
class EventClock {
  private readonly at = new Map<string, { put?: number; delete?: number }>();
  private readonly waiters = new Set<() => void>();
  private constructor(private readonly watcher: Watcher) {}

  static async start(client: Etcd3): Promise<EventClock> {
    const w = await client.watch().prefix(`${ETCD_PREFIX}/subnets/`).create();
    const c = new EventClock(w);
    const mark = (op: "put" | "delete") => (kv: { key: Buffer }) => {
      const t = now();
      const key = kv.key.toString("utf8");
      c.at.set(key, { ...c.at.get(key), [op]: t });
      for (const wake of [...c.waiters]) wake();
    };
    w.on("put", mark("put"));
    w.on("delete", mark("delete"));
    return c;
  }

  /** When the watch received `op` of `key` at or after `since` (waits up to timeoutMs; undefined if it never did). */
  async when(key: string, op: "put" | "delete", since: number, timeoutMs = 10_000): Promise<number | undefined> {
    const get = (): number | undefined => {
      const t = this.at.get(key)?.[op];
      return t !== undefined && t >= since ? t : undefined;
    };
    const t = get();
    if (t !== undefined) return t;
    return new Promise((resolve) => {
      const done = (v: number | undefined): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(v);
      };
      const check = (): void => {
        const v = get();
        if (v !== undefined) done(v);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.waiters.add(check);
    });
  }

  async close(): Promise<void> {
    await this.watcher.cancel().catch(() => {});
  }
}

async function events(client: Etcd3, clock: EventClock, probe: Probe, peers: readonly number[], gap?: readonly [number, number]): Promise<Sample[]> {
  const samples: Sample[] = [];
  const t00 = now();
  for (const [k, i] of peers.entries()) {
    if (gap) await sleep(gap[0] + Math.random() * (gap[1] - gap[0]));
    const seen = probe.expect(leasePrefix(i), { present: true, remote: leasePublicIP(i) });
    const t0 = now();
    const event = clock.when(etcdKey(i), "put", t0);
    await client.put(etcdKey(i)).value(leaseValue(i));
    const ack = now();
    const t1 = await seen;
    const te = await event;
    samples.push({ k, op: "put", peer: i, latencyMs: t1 - t0, ackMs: ack - t0, atMs: t0 - t00, ...(te !== undefined ? { eventMs: t1 - te } : {}) });
  }
  return samples;
}

/** The same promise, marked handled: it is awaited only after the loop, and a rejection must not end the process first. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Which churn events are timed: one in `every`; for an even `every`, alternately a put (even k) and a delete (odd k). */
export const sampled = (k: number, every: number): boolean => k % every === Math.floor(k / every) % 2;

async function churn(client: Etcd3, clock: EventClock, probe: Probe, c: NonNullable<DriverInput["churn"]>): Promise<Omit<DriverOutput, "phase" | "durationMs">> {
  const total = c.events;
  const final = new Map<string, Want>();
  const timed: Promise<Sample>[] = [];
  const writes: Promise<unknown>[] = [];
  let maxLag = 0, lastSent = 0;
  const start = now();
  for (let k = 0; k < total; k++) {
    const due = start + k * c.intervalMs;
    if (due - now() > 0.5) await sleep(due - now());
    const { put, peer: i } = churnEvent(c.ring, k);
    const want: Want = put ? { present: true, remote: leasePublicIP(i) } : { present: false };
    final.set(leasePrefix(i), want);
    const seen = sampled(k, c.sampleEvery) ? quiet(probe.expect(leasePrefix(i), want, c.timeoutMs)) : undefined;
    const t0 = now();
    const event = seen ? clock.when(etcdKey(i), put ? "put" : "delete", t0, c.timeoutMs) : undefined;
    maxLag = Math.max(maxLag, t0 - due);
    lastSent = t0;
    const write: Promise<unknown> = put ? client.put(etcdKey(i)).value(leaseValue(i)).exec() : client.delete().key(etcdKey(i)).exec();
    const w = write.then(() => now());
    writes.push(quiet(w));
    if (seen) {
      timed.push(quiet(Promise.all([seen, w, event]).then(([t1, ack, te]): Sample =>
        ({ k, op: put ? "put" : "delete", peer: i, latencyMs: t1 - t0, ackMs: ack - t0, atMs: t0 - start, ...(te !== undefined ? { eventMs: t1 - te } : {}) }))));
    }
  }
  const converged = probe.converge(final, c.timeoutMs);
  const [samples, tc] = await Promise.all([Promise.all(timed), converged, Promise.all(writes)]);
  return { samples, sent: total, spanMs: lastSent - start, maxSendLagMs: maxLag, convergenceLagMs: tc - lastSent };
}

/** The scrape phase's result: /healthz round trips alone and while /metrics is scraped, and the scrapes. */
export interface ScrapeOutput {
  readonly phase: "scrape";
  /** /healthz round trips (ms) with nothing else asked of the daemon. */
  readonly baseline: readonly number[];
  /** /healthz round trips (ms) that overlapped a /metrics scrape. */
  readonly during: readonly number[];
  /** Each scrape's time (ms) and size (bytes). */
  readonly scrapes: readonly { readonly ms: number; readonly bytes: number }[];
  readonly durationMs: number;
}

/**
 * Event-loop block of a /metrics scrape, seen from outside: one keep-alive
 * connection asks /healthz back to back (a reply needs the daemon's event
 * loop, so a round trip that spans a blocked loop is as long as the block)
 * — first alone, then while another connection scrapes /metrics `scrapes`
 * times in a row.
 */
async function scrapePhase(c: NonNullable<DriverInput["scrape"]>): Promise<Omit<ScrapeOutput, "phase" | "durationMs">> {
  const { Agent, request } = await import("node:http");
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string, a?: InstanceType<typeof Agent>): Promise<number> => new Promise((res, rej) => {
    const req = request({ host: "127.0.0.1", port: c.port, path, agent: a ?? false }, (r) => {
      let bytes = 0;
      r.on("data", (d: Buffer) => (bytes += d.length));
      r.on("end", () => res(bytes));
    });
    req.on("error", rej);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path}: no answer in 10 s`)));
    req.end();
  });
  const probe = async (until: () => boolean, out: number[]): Promise<void> => {
    while (!until()) {
      const t0 = now();
      await get("/healthz", agent);
      out.push(now() - t0);
      await sleep(1);
    }
  };
  const baseline: number[] = [], during: number[] = [], scrapes: { ms: number; bytes: number }[] = [];
  await get("/healthz", agent);
  const end = now() + c.baselineSeconds * 1000;
  await probe(() => now() >= end, baseline);
  let done = false;
  const probing = probe(() => done, during);
  for (let k = 0; k < c.scrapes; k++) {
    const t0 = now();
    const bytes = await get("/metrics");
    scrapes.push({ ms: now() - t0, bytes });
  }
  done = true;
  await probing;
  agent.destroy();
  return { baseline, during, scrapes };
}

async function main(input: DriverInput): Promise<DriverOutput | ScrapeOutput> {
  if (input.phase === "scrape") {
    if (!input.scrape) throw new Error("Cannot run phase scrape: the input has no scrape section");
    const t0 = now();
    return { phase: "scrape", ...await scrapePhase(input.scrape), durationMs: now() - t0 };
  }
  const client = new Etcd3({ hosts: input.endpoint });
  const probe: Probe = input.mode === "bpf" ? new BpfProbe(input.pinDir) : await RouteProbe.start();
  let clock: EventClock | undefined;
  try {
    await client.get(`${ETCD_PREFIX}/config`).string(); // connect before timing anything
    clock = await EventClock.start(client);
    const t0 = now();
    if (input.phase === "events") {
      const samples = await events(client, clock, probe, input.events ?? [], input.gapMs);
      return { phase: "events", samples, durationMs: now() - t0 };
    }
    if (!input.churn) throw new Error("Cannot run phase churn: the input has no churn section");
    const r = await churn(client, clock, probe, input.churn);
    return { phase: "churn", ...r, durationMs: now() - t0 };
  } finally {
    await clock?.close();
    await probe.close();
    client.close();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(JSON.parse(process.argv[2] ?? "{}") as DriverInput).then(
    (out) => {
      // Exit once the line is written: a soak's result is tens of MB, and
      // process.exit() with a pipe still draining would cut it short.
      process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
    },
    (e: unknown) => {
      process.stdout.write(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }) + "\n");
      process.exit(1);
    },
  );
}
