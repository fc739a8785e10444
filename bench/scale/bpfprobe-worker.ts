/**
 * The polling half of bpfprobe.ts, in its own thread so polling never
 * delays the driver's etcd writes (and writes never delay a poll).
 *
 * How it works: the thread opens the node's pinned twill_peers map and loops:
 * take new requests off the port synchronously (receiveMessageOnPort), look
 * every open request's exact LPM key up, answer the satisfied ones with the
 * time of the lookup that saw it, then sleep POLL_MS with Atomics.wait (or up
 * to IDLE_MS when nothing is open; the main thread's Atomics.notify ends
 * either sleep at once). An LPM lookup of 10.x.y.0/24 also matches the /8
 * cluster entry, so "present" means the entry found is kind VXLAN with the
 * expected remote IP, and "gone" means it is not.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";
import { openPinnedMaps } from "../../src/bpf/loader.js";
import { decodePeer, encodeLpmKey, PeerKind } from "../../src/bpf/layout.js";
import { formatIP, parsePrefix } from "../../src/net/ip.js";
import type { BpfMap } from "../../src/bpf/map.js";
import { now, POLL_MS, type Want } from "./probe.js";

const IDLE_MS = 50;

export type Request =
  | { readonly kind: "expect"; readonly id: number; readonly prefix: string; readonly want: Want }
  | { readonly kind: "converge"; readonly id: number; readonly wants: readonly (readonly [string, Want])[] }
  | { readonly kind: "stop" };
export type Reply = { readonly id: number; readonly t: number } | { readonly id: number; readonly error: string };

export interface WorkerInput {
  readonly pinDir: string;
  readonly port: MessagePort;
  /** Int32Array over a SharedArrayBuffer: [0] = 1 when a request is waiting. */
  readonly signal: SharedArrayBuffer;
}

interface Check { readonly key: Buffer; readonly want: Want }

function satisfied(map: BpfMap, c: Check): boolean {
  const v = map.lookup(c.key);
  const p = v && decodePeer(v);
  const present = !!p && p.kind === PeerKind.Vxlan && !!p.remote && c.want.present && formatIP(p.remote) === c.want.remote;
  return c.want.present ? present : !(p && p.kind === PeerKind.Vxlan);
}

const check = (prefix: string, want: Want): Check => ({ key: encodeLpmKey(parsePrefix(prefix)), want });

function main(input: WorkerInput): void {
  const maps = openPinnedMaps(input.pinDir);
  for (const m of Object.values(maps)) if (m !== maps.twill_peers) m.close();
  const peers = maps.twill_peers;
  const signal = new Int32Array(input.signal);
  const port = input.port;
  const open = new Map<number, Check>();
  const converging = new Map<number, { left: Check[]; last: number }>();
  try {
    for (;;) {
      Atomics.store(signal, 0, 0);
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
        const r = m.message as Request;
        if (r.kind === "stop") return;
        if (r.kind === "expect") open.set(r.id, check(r.prefix, r.want));
        else converging.set(r.id, { left: r.wants.map(([p, w]) => check(p, w)), last: 0 });
      }
      for (const [id, c] of open) {
        if (!satisfied(peers, c)) continue;
        port.postMessage({ id, t: now() } satisfies Reply);
        open.delete(id);
      }
      for (const [id, c] of converging) {
        const t = now();
        const before = c.left.length;
        c.left = c.left.filter((x) => !satisfied(peers, x));
        if (c.left.length < before) c.last = t;
        if (c.left.length === 0) {
          port.postMessage({ id, t: c.last } satisfies Reply);
          converging.delete(id);
        }
      }
      Atomics.wait(signal, 0, 0, open.size || converging.size ? POLL_MS : IDLE_MS);
    }
  } catch (e) {
    for (const id of [...open.keys(), ...converging.keys()]) port.postMessage({ id, error: String(e) } satisfies Reply);
    throw e;
  } finally {
    peers.close();
    port.close(); // nothing else keeps this thread alive: it exits
  }
}

if (parentPort) main(workerData as WorkerInput);
