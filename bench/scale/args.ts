/**
 * Flags of the scale CLI (main.ts): parsed once here, typed after.
 */
import { DEFAULT_SCALE } from "./scale.js";
import { SCALE_MODES, type ScaleMode, type ScaleOptions } from "./types.js";

export const SCALE_USAGE = `Usage: node dist/bench/scale/main.js [options]
  --peers N           leases in etcd when the node starts (default ${DEFAULT_SCALE.peers})
  --events N          new leases timed one at a time (default ${DEFAULT_SCALE.events})
  --churn-seconds S   length of the churn phase (default ${DEFAULT_SCALE.churnSeconds})
  --rate R            churn lease events per second (default ${DEFAULT_SCALE.rate})
  --modes LIST        bpf,kernel (default both, in that order)
  --sample-every K    time one churn event in K (default 10)
  --out FILE          result JSON (default bench/results/scale-<timestamp>.json)
  --markdown          print the markdown section instead of the table
  --render FILE       print a saved result (its JSON) again, run nothing
`;

export interface ScaleCli { readonly options: Partial<ScaleOptions>; readonly out?: string; readonly markdown: boolean; readonly render?: string }

/** Parses the flags; throws a sentence naming the flag and the value. */
export function parseScaleArgs(argv: readonly string[]): ScaleCli | "help" {
  const o: { -readonly [K in keyof ScaleOptions]?: ScaleOptions[K] } = {};
  let out: string | undefined, render: string | undefined, markdown = false;
  const num = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`Cannot use ${flag} ${v ?? "(missing)"}: want a number ≥ ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const val = (): string | undefined => inline ?? argv[++i];
    switch (flag) {
      case "-h": case "--help": return "help";
      case "--peers": o.peers = Math.trunc(num(flag, val(), 1)); break;
      case "--events": o.events = Math.trunc(num(flag, val(), 0)); break;
      case "--churn-seconds": o.churnSeconds = num(flag, val(), 0); break;
      case "--rate": o.rate = num(flag, val(), 0.001); break;
      case "--sample-every": o.sampleEvery = Math.trunc(num(flag, val(), 1)); break;
      case "--out": out = val(); break;
      case "--markdown": markdown = true; break;
      case "--render": render = val(); break;
      case "--modes": {
        const v = val() ?? "";
        const modes = v.split(",").filter(Boolean);
        const bad = modes.filter((m) => !SCALE_MODES.includes(m as ScaleMode));
        if (!modes.length || bad.length) throw new Error(`Cannot use --modes ${v}: want a comma-separated list of ${SCALE_MODES.join(", ")}`);
        o.modes = modes as ScaleMode[];
        break;
      }
      default: throw new Error(`Unknown option ${a} (--help lists them)`);
    }
  }
  return { options: o, out, markdown, render };
}
