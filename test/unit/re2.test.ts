import { test } from "node:test";
import assert from "node:assert/strict";
import { compileRE2, translateRE2 } from "../../src/config/re2.js";
import { isTwillError } from "../../src/errors.js";

test("RE2 patterns that JavaScript reads alike pass unchanged", () => {
  for (const p of ["^eth[0-9]+$", "^192\\.168\\.", "en(p|s)\\d+s\\d", "[^a-z]", "a{2,3}?", "\\bfoo\\b", "^(?:eth|ens)\\d"]) {
    assert.deepEqual(translateRE2(p), { source: p, flags: "" }, p);
  }
});

test("what RE2 spells differently is translated", () => {
  assert.deepEqual(translateRE2("(?P<nic>eth)\\d"), { source: "(?<nic>eth)\\d", flags: "" });
  assert.deepEqual(translateRE2("\\Aeth0\\z"), { source: "^eth0$", flags: "" });
  assert.deepEqual(translateRE2("(?i)^ETH"), { source: "^ETH", flags: "i" });
  assert.deepEqual(translateRE2("\\Q10.0.0.1\\E$"), { source: "10\\.0\\.0\\.1$", flags: "" });
  assert.deepEqual(translateRE2("^[[:alpha:]]+[[:digit:]]$"), { source: "^[A-Za-z]+[0-9]$", flags: "" });
  assert.deepEqual(translateRE2("^\\pL+"), { source: "^\\p{L}+", flags: "u" });
  assert.deepEqual(translateRE2("[]a]"), { source: "[\\]a]", flags: "" });
  assert.ok(compileRE2("(?i)^ETH\\d").test("eth0"));
  assert.ok(compileRE2("^[[:alpha:]]+[[:digit:]]$").test("eth0"));
  assert.ok(!compileRE2("\\Aeth0\\z").test("eth01"));
  assert.ok(compileRE2("\\Q10.0.0.1\\E").test("10.0.0.1") && !compileRE2("\\Q10.0.0.1\\E").test("10a0b0c1"));
});

test("what RE2 refuses, or JavaScript cannot say, is ERR_INVALID_FLAG with the reason", () => {
  const no = (p: string, why: RegExp) => assert.throws(() => compileRE2(p), (e) => isTwillError(e, "ERR_INVALID_FLAG") && why.test(e.message) && e.message.includes(JSON.stringify(p)));
  no("(a)\\1", /backreference/);
  no("eth(?=0)", /lookahead/);
  no("(?<!x)eth", /lookahead\/lookbehind/);
  no("a++", /possessive/);
  no("eth(?i)0", /flag group/);
  no("(?U)a+", /flag group/);
  no("[[:nope:]]", /unknown POSIX class/);
  no("(", /not an RE2 regular expression/);
  no("a\\", /trailing backslash/);
});
