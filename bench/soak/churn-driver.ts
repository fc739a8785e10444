/**
 * The soak's lease churn, run INSIDE the namespace that reaches etcd:
 *
 *   nsenter --net=/run/netns/<prefix>rt node dist/bench/soak/churn-driver.js '<ChurnInput JSON>'
 *
 * How it works: an open loop at a fixed pace (one event every 1000/rate ms,
 * whether earlier writes have finished or not) writes the events of
 * leases.ts's seeded Churn with the etcd3 client, as flanneld writes
 * leases. While etcd is down (the soak restarts it) writes fail: each is
 * counted and the loop keeps its pace; at most MAX_IN_FLIGHT writes wait at
 * once, beyond that an event is skipped (and counted). Every 10 s it prints
 * a progress line; on SIGTERM it stops, waits up to 10 s for the writes in
 * flight, prints one final JSON line (ChurnOutput, "final": true) and exits
 * 0. Output lines are JSON, one object each.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Etcd3 } from "etcd3";
import { Churn, ETCD_PREFIX, type ChurnEvent } from "./leases.js";
import { mulberry32 } from "../lib/prng.js";

export interface ChurnInput {
  readonly endpoint: string;
  readonly rate: number;
  readonly seed: number;
  /** The four real nodes' underlay addresses (the "own-node" bad leases name them). */
  readonly realIPs: readonly string[];
}

export interface ChurnCounts {
  /** Events the loop reached (sent + skipped). */
  due: number;
  sent: number;
  ok: number;
  failed: number;
  skipped: number;
  byWhat: Record<ChurnEvent["what"], number>;
}

export interface ChurnOutput extends ChurnCounts {
  readonly final: true;
  readonly spanMs: number;
  /** Events acknowledged by etcd per second over the whole run. */
  readonly okRate: number;
  /** The latest a send came after its due time. */
  readonly maxSendLagMs: number;
  /** First error messages seen (distinct, up to 5). */
  readonly errors: readonly string[];
}

const MAX_IN_FLIGHT = 1000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

async function main(input: ChurnInput): Promise<ChurnOutput> {
  const client = new Etcd3({ hosts: input.endpoint });
  const churn = new Churn(mulberry32(input.seed), input.realIPs);
  const counts: ChurnCounts = {
    due: 0, sent: 0, ok: 0, failed: 0, skipped: 0,
    byWhat: { "valid-put": 0, "valid-update": 0, "valid-delete": 0, "bad-put": 0, "bad-delete": 0 },
  };
  const errors = new Set<string>();
  let stopping = false;
  process.on("SIGTERM", () => (stopping = true));
  process.on("SIGINT", () => (stopping = true));
  await client.get(`${ETCD_PREFIX}/config`).string(); // connect before the pace starts
  const inFlight = new Set<Promise<void>>();
  const interval = 1000 / input.rate;
  const start = performance.now();
  let maxLag = 0;
  let lastProgress = start;
  for (let k = 0; !stopping; k++) {
    const due = start + k * interval;
    const wait = due - performance.now();
    if (wait > 0.5) await sleep(wait);
    if (stopping) break;
    counts.due++;
    const e = churn.next();
    if (inFlight.size >= MAX_IN_FLIGHT) {
      counts.skipped++;
      continue;
    }
    maxLag = Math.max(maxLag, performance.now() - due);
    counts.sent++;
    counts.byWhat[e.what]++;
    const write = e.op === "put" ? client.put(e.key).value(e.value!).exec() : client.delete().key(e.key).exec();
    const p: Promise<void> = write.then(
      () => { counts.ok++; },
      (err: unknown) => {
        counts.failed++;
        if (errors.size < 5) errors.add(err instanceof Error ? err.message.slice(0, 200) : String(err));
      },
    ).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (performance.now() - lastProgress >= 10_000) {
      lastProgress = performance.now();
      process.stdout.write(JSON.stringify({ progress: true, atS: Math.round((lastProgress - start) / 1000), ...counts, inFlight: inFlight.size }) + "\n");
    }
  }
  const spanMs = performance.now() - start;
  await Promise.race([Promise.all(inFlight), sleep(10_000)]);
  client.close();
  return { final: true, ...counts, spanMs, okRate: counts.ok / (spanMs / 1000), maxSendLagMs: maxLag, errors: [...errors] };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(JSON.parse(process.argv[2] ?? "{}") as ChurnInput).then(
    (out) => process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0)),
    (e: unknown) => {
      process.stdout.write(JSON.stringify({ final: true, error: e instanceof Error ? e.message : String(e) }) + "\n", () => process.exit(1));
    },
  );
}
