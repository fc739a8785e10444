/**
 * V8's young generation for a long-running daemon: small in steady state,
 * free to grow while the start loads every lease.
 *
 * How it works: bin/twill caps the young generation before anything else
 * runs (capYoungGeneration: a semi-space growth factor of 1, so each
 * semi-space stays at the 1 MiB it starts with; the #! line bounds it at
 * --max-semi-space-size=4 in case it is ever let grow). The daemon's
 * garbage is small and short-lived, and a grown young generation is
 * resident memory that swings with it (bin/twill says what was measured).
 * The start is different: it parses every lease and keeps most of what it
 * makes (the store's cache, the peers, the dataplane's image) — at 100,000
 * leases hundreds of MiB pass through a 1 MiB nursery: 532 scavenges,
 * 0.8 s of the main thread (measured, lease directory, --trace-gc); with
 * 4 MiB semi-spaces 136 scavenges, 0.46 s (8 MiB: 0.36 s, but ~11 MiB
 * more RSS at 10,000 peers, where 4 MiB left it within noise).
 * So the daemon lets it grow (V8's factor, 2) while it starts
 * (youngGenerationGrowing), and caps it again once it is ready (or the
 * start failed); V8 shrinks the nursery back when allocation slows.
 * A command line or NODE_OPTIONS that sizes the young generation itself is
 * left alone throughout.
 */
import { setFlagsFromString } from "node:v8";

const SIZED = /--(max|min)[-_]semi[-_]space[-_]size|--semi[-_]space[-_]growth[-_]factor/;
/** bin/twill's own bound, from its #! line (node lists it among the command line's flags). */
export const OUR_BOUND = "--max-semi-space-size=4";
let capped = false;

/** The flags node was started with (command line and NODE_OPTIONS). */
const givenFlags = (): string => `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`;

/** Caps the young generation at its starting size (growth factor 1), unless the command line sizes it; true when it did. */
export function capYoungGeneration(given = givenFlags()): boolean {
  if (SIZED.test(given.replace(OUR_BOUND, ""))) return false;
  setFlagsFromString("--semi-space-growth-factor=1");
  capped = true;
  return true;
}

/** Runs `fn` with the young generation free to grow (when capYoungGeneration capped it), and caps it again after. */
export async function youngGenerationGrowing<T>(fn: () => Promise<T>): Promise<T> {
  if (!capped) return fn();
  setFlagsFromString("--semi-space-growth-factor=2");
  try {
    return await fn();
  } finally {
    setFlagsFromString("--semi-space-growth-factor=1");
  }
}
