/**
 * Go RE2 patterns (flanneld's --iface-regex) as JavaScript RegExps.
 *
 * How it works: one left-to-right scan over the pattern, aware of escapes
 * and of bracket classes, copies what both dialects read alike and rewrites
 * the rest:
 *   (?P<name>…)          → (?<name>…)         named group, Go's spelling
 *   \A  \z               → ^  $               start / end of text (no `m` flag, so they mean the same)
 *   \Q…\E                → the text, escaped  literal run
 *   [[:alpha:]] (etc.)   → [a-zA-Z]            POSIX classes inside brackets
 *   \pL  \PL             → \p{L}  \P{L}       one-letter Unicode classes (adds the `u` flag)
 *   (?i) (?s) (?m) at the very start         → the JavaScript flags i, s, m
 * and refuses, with the reason, what RE2 does not accept (backreferences,
 * lookahead/lookbehind, possessive or atomic groups) or what JavaScript
 * cannot say (flags in the middle of a pattern, (?U) ungreedy mode, \C).
 * Matching is unanchored in both (Go's MatchString, RegExp.test).
 * Errors: ERR_INVALID_FLAG "… is not an RE2 regular expression: <why>".
 */
import { TwillError } from "../errors.js";

const POSIX: Record<string, string> = {
  alnum: "0-9A-Za-z", alpha: "A-Za-z", ascii: "\\x00-\\x7F", blank: "\\t ", cntrl: "\\x00-\\x1F\\x7F",
  digit: "0-9", graph: "!-~", lower: "a-z", print: " -~", punct: "!-/:-@[-`{-~", space: "\\t\\n\\v\\f\\r ",
  upper: "A-Z", word: "0-9A-Za-z_", xdigit: "0-9A-Fa-f",
};

const escapeLiteral = (s: string): string => s.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");

/** The JavaScript source and flags that match what `pattern` matches in Go; throws Error(why). */
export function translateRE2(pattern: string): { source: string; flags: string } {
  let flags = "";
  let i = 0;
  const lead = /^\(\?([ims]+)\)/.exec(pattern);
  if (lead) {
    flags = [...new Set(lead[1]!)].join("");
    i = lead[0].length;
  }
  let out = "";
  let inClass = false;
  while (i < pattern.length) {
    const c = pattern[i]!;
    if (c === "\\") {
      const n = pattern[i + 1];
      if (n === undefined) throw new Error("trailing backslash");
      if (n === "Q") {
        const end = pattern.indexOf("\\E", i + 2);
        const lit = pattern.slice(i + 2, end < 0 ? undefined : end);
        out += escapeLiteral(lit);
        i = end < 0 ? pattern.length : end + 2;
        continue;
      }
      if (/[1-9]/.test(n)) throw new Error(`backreference \\${n} (RE2 has none)`);
      if (n === "C") throw new Error("\\C (any byte) has no JavaScript equivalent");
      if (!inClass && n === "A") { out += "^"; i += 2; continue; }
      if (!inClass && n === "z") { out += "$"; i += 2; continue; }
      if (n === "p" || n === "P") {
        if (pattern[i + 2] === "{") {
          const end = pattern.indexOf("}", i + 3);
          if (end < 0) throw new Error("unclosed \\p{");
          out += pattern.slice(i, end + 1);
          i = end + 1;
        } else {
          const cls = pattern[i + 2];
          if (cls === undefined) throw new Error(`\\${n} without a class`);
          out += `\\${n}{${cls}}`;
          i += 3;
        }
        if (!flags.includes("u")) flags += "u";
        continue;
      }
      out += c + n;
      i += 2;
      continue;
    }
    if (inClass) {
      if (c === "[" && pattern[i + 1] === ":") {
        const end = pattern.indexOf(":]", i + 2);
        const name = end < 0 ? "" : pattern.slice(i + 2, end);
        const neg = name.startsWith("^");
        const body = POSIX[neg ? name.slice(1) : name];
        if (body === undefined) throw new Error(`unknown POSIX class [:${name}:]`);
        if (neg) throw new Error(`negated POSIX class [:${name}:] inside a class`);
        out += body;
        i = end + 2;
        continue;
      }
      if (c === "]") inClass = false;
      out += c;
      i++;
      continue;
    }
    if (c === "[") {
      inClass = true;
      out += c;
      i++;
      // A ']' right after '[' or '[^' is a literal in RE2.
      if (pattern[i] === "^") { out += "^"; i++; }
      if (pattern[i] === "]") { out += "\\]"; i++; }
      continue;
    }
    if (c === "(" && pattern[i + 1] === "?") {
      const rest = pattern.slice(i + 2);
      if (rest.startsWith("P<")) { out += "(?<"; i += 4; continue; }
      if (rest.startsWith(":")) { out += "(?:"; i += 3; continue; }
      if (/^<[A-Za-z_]/.test(rest)) { out += "(?<"; i += 3; continue; } // Go 1.22 accepts (?<name>) too
      if (/^(=|!|<=|<!)/.test(rest)) throw new Error("lookahead/lookbehind (RE2 has none)");
      if (/^>/.test(rest)) throw new Error("atomic group (RE2 has none)");
      throw new Error(`flag group "(?${rest.slice(0, rest.indexOf(")") + 1)}" is only supported as (?i), (?s) or (?m) at the start`);
    }
    if ((c === "+" || c === "*" || c === "?" || c === "}") && pattern[i + 1] === "+") {
      throw new Error("possessive quantifier (RE2 has none)");
    }
    out += c;
    i++;
  }
  return { source: out, flags };
}

/** A RegExp for the RE2 `pattern`, or ERR_INVALID_FLAG naming `what` and the pattern. */
export function compileRE2(pattern: string, what = "--iface-regex"): RegExp {
  try {
    const { source, flags } = translateRE2(pattern);
    return new RegExp(source, flags);
  } catch (e) {
    throw new TwillError("ERR_INVALID_FLAG", `${what} ${JSON.stringify(pattern)} is not an RE2 regular expression: ${(e as Error).message}`, { cause: e });
  }
}
