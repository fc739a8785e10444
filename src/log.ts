/**
 * Structured logs: one JSON object per line on stderr.
 *
 * How it works: a Logger has a level threshold and a set of bound fields
 * (`child`). Errors are logged with their stable `code`. This keeps the
 * daemon's output machine-readable (Kubernetes log collectors) and greppable
 * in tests.
 */
import { errorCode, errorMessage } from "./errors.js";

export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function createLogger(level: Level = "info", bound: Record<string, unknown> = {}, out: (line: string) => void = (l) => process.stderr.write(l + "\n")): Logger {
  const emit = (lvl: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] < ORDER[level]) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg, ...bound };
    for (const [k, v] of Object.entries(fields ?? {})) {
      if (v instanceof Error) {
        rec[k] = errorMessage(v);
        rec.code ??= errorCode(v);
      } else rec[k] = v;
    }
    out(JSON.stringify(rec, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => createLogger(level, { ...bound, ...f }, out),
  };
}

export const nullLogger: Logger = createLogger("error", {}, () => {});
