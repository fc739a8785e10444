/**
 * Structured logs: one JSON object per line on stderr, written by pino.
 *
 * How it works: a Logger has a level threshold (--log-level) and a set of
 * bound fields (`child`). Each line is
 *   {"level":"info","time":"2024-..Z",<bound fields>,<fields>,"msg":".."}
 * (level as a word, ISO time, no pid/hostname: the line format twill had
 * before pino, which tests and log collectors match on, e.g. "msg":"ready").
 * An Error in the fields is logged as its message, and the line gets the
 * error's stable `code` (errorCode: a TwillError's code, a Node errno code,
 * else ERR_UNKNOWN) unless the caller gave a `code` of its own. A bigint field is
 * written as a decimal string (nested ones as JSON numbers, by pino).
 *
 * The destination is synchronous (pino.destination({ sync: true }), a
 * blocking write(2) per line): a daemon that logs "start failed" and then
 * calls process.exit() must not lose that line in an async buffer. twill
 * logs a few lines per lease event, so the cost of a syscall per line does
 * not matter. Tests may pass `out` to receive each line (without "\n").
 *
 * Why pino: the de facto structured logger for Node (fast serialization,
 * bindings serialized once per child, safe stringify of cycles), so the
 * daemon's logs look like every other Node service's to collectors.
 */
import pino from "pino";
import { errorCode, errorMessage } from "./errors.js";

export type Level = "debug" | "info" | "warn" | "error";

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** Keys pino writes itself; a field of the same name is renamed so no line has a key twice. */
const RESERVED = new Set(["level", "time", "msg"]);

/** Fields as they are logged: Errors → message (+ code), bigint → string, reserved keys renamed. */
function prepare(fields: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!fields) return undefined;
  const rec: Record<string, unknown> = {};
  let code: string | undefined;
  for (const [k, v] of Object.entries(fields)) {
    const key = RESERVED.has(k) ? `field.${k}` : k;
    if (v instanceof Error) {
      rec[key] = errorMessage(v);
      code ??= errorCode(v);
    } else rec[key] = typeof v === "bigint" ? v.toString() : v;
  }
  if (code !== undefined && !Object.hasOwn(rec, "code")) rec.code = code;
  return rec;
}

function wrap(p: pino.Logger): Logger {
  const at = (lvl: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (!p.isLevelEnabled(lvl)) return;
    const rec = prepare(fields);
    if (rec) p[lvl](rec, msg);
    else p[lvl](msg);
  };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (f) => wrap(p.child(prepare(f) ?? {})),
  };
}

/** One synchronous stderr stream for every logger of the process. */
let stderr: pino.DestinationStream | undefined;

export function createLogger(level: Level | "silent" = "info", bound: Record<string, unknown> = {}, out?: (line: string) => void): Logger {
  const dest: pino.DestinationStream = out
    ? { write: (s: string) => out(s.endsWith("\n") ? s.slice(0, -1) : s) }
    : (stderr ??= pino.destination({ dest: 2, sync: true }));
  const p = pino(
    {
      level,
      base: null, // no pid, hostname
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
  return wrap(Object.keys(bound).length ? p.child(prepare(bound)!) : p);
}

export const nullLogger: Logger = createLogger("silent", {}, () => {});
