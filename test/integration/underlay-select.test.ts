/**
 * Underlay selection like flanneld (main.go + ipmatch.LookupExtIface), with
 * two underlay interfaces in one namespace.
 *
 *   netns fg<rand>
 *   ┌────────────────────────────────────────────────────────────────────────────┐
 *   │ fga0 ── veth ── fga0p   10.10.1.2/24, 10.10.1.3/24, fd10:1::2/64           │
 *   │                          10.10.1.9/24 (deprecated: preferred_lft 0)        │
 *   │                          10.20.0.0/16 via 10.10.1.1 src 10.10.1.3          │
 *   │ fgb0 ── veth ── fgb0p   10.10.2.2/24, fd10:2::2/64                          │
 *   │                          default via 10.10.2.1, default via fd10:2::1      │
 *   │ fgc0 ── veth ── fgc0p   fd10:3::2/64 only (no IPv4)                         │
 *   └────────────────────────────────────────────────────────────────────────────┘
 *
 * A netlink socket belongs to the netns of the process that opens it, so
 * findUnderlay runs in a child (this file, FGTEST_CHILD=1, started with
 * nsenter --net: `ip netns exec` would remount /sys) that prints one JSON
 * line per case. The namespace is removed in a finally.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

const SELF = fileURLToPath(import.meta.url);

interface Case {
  readonly name: string;
  readonly iface?: string[];
  readonly ifaceRegex?: string[];
  readonly canReach?: string;
  readonly publicIP?: string;
  readonly publicIPv6?: string;
  readonly stack?: "ipv4" | "ipv6" | "dual";
}

const CASES: Case[] = [
  { name: "default route", stack: "ipv4" },
  { name: "default route v6", stack: "ipv6" },
  { name: "default route dual", stack: "dual" },
  { name: "can-reach", canReach: "10.20.3.4", stack: "ipv4" },
  { name: "can-reach local subnet", canReach: "10.10.2.77", stack: "ipv4" },
  { name: "public-ip alone", publicIP: "10.10.1.2", stack: "ipv4" },
  { name: "public-ipv6 alone", publicIPv6: "fd10:1::2", stack: "ipv6" },
  { name: "public-ip not on any interface", publicIP: "203.0.113.9", stack: "ipv4" },
  { name: "iface by IP", iface: ["10.10.2.2"], stack: "ipv4" },
  { name: "iface by IP, second address", iface: ["nosuch0", "10.10.1.3"], stack: "ipv4" },
  { name: "iface by name", iface: ["fgb0"], stack: "ipv4" },
  { name: "iface by name, NATed public-ip", iface: ["fga0"], publicIP: "203.0.113.9", stack: "ipv4" },
  { name: "iface without IPv4 is skipped", iface: ["fgc0", "fga0"], stack: "ipv4" },
  { name: "iface-regex by address", ifaceRegex: ["^10\\.10\\.1\\."], stack: "ipv4" },
  { name: "iface-regex by name (RE2)", ifaceRegex: ["^nomatch$", "^(?P<n>fgb)\\d$"], stack: "ipv4" },
  { name: "iface-regex misses the deprecated address", ifaceRegex: ["^10\\.10\\.1\\.9$"], stack: "ipv4" },
  { name: "order: iface before regex", iface: ["fga0"], ifaceRegex: ["^fgb0$"], canReach: "10.10.2.77", stack: "ipv4" },
  { name: "order: regex before can-reach", iface: ["nosuch0"], ifaceRegex: ["^fgb0$"], canReach: "10.20.3.4", stack: "ipv4" },
  { name: "order: can-reach last", iface: ["nosuch0"], ifaceRegex: ["^nomatch$"], canReach: "10.20.3.4", stack: "ipv4" },
  { name: "nothing matches", iface: ["nosuch0"], ifaceRegex: ["^nomatch$"], stack: "ipv4" },
  { name: "bad RE2", ifaceRegex: ["(?=x)"], stack: "ipv4" },
  // Without a stack (twill status): both families where present, none required.
  { name: "no stack: default route", },
  { name: "no stack: iface without IPv4", iface: ["fgc0"] },
  { name: "no stack: regex, NATed public-ip", ifaceRegex: ["^10\\.9\\.", "^10\\.10\\.2\\."], publicIP: "203.0.113.7" },
];

async function child(): Promise<void> {
  const { findUnderlay } = await import("../../src/net/link.js");
  const { parseIP, formatIP } = await import("../../src/net/ip.js");
  for (const c of CASES) {
    try {
      const u = await findUnderlay({
        ...(c.iface ? { iface: c.iface } : {}),
        ...(c.ifaceRegex ? { ifaceRegex: c.ifaceRegex } : {}),
        ...(c.canReach ? { canReach: parseIP(c.canReach) } : {}),
        ...(c.publicIP ? { publicIP: parseIP(c.publicIP) } : {}),
        ...(c.publicIPv6 ? { publicIPv6: parseIP(c.publicIPv6) } : {}),
        ...(c.stack ? { stack: c.stack } : {}),
      });
      const t = (ip: { family: 4 | 6; bytes: Uint8Array } | undefined) => (ip ? formatIP(ip) : undefined);
      process.stdout.write(JSON.stringify({ name: c.name, iface: u.name, ipv4: t(u.ipv4), ipv6: t(u.ipv6), ifaceIPv4: t(u.ifaceIPv4), ifaceIPv6: t(u.ifaceIPv6) }) + "\n");
    } catch (e) {
      process.stdout.write(JSON.stringify({ name: c.name, code: (e as { code?: string }).code, message: (e as Error).message }) + "\n");
    }
  }
}

if (process.env["FGTEST_CHILD"]) {
  await child();
} else {
  const skip = process.getuid?.() !== 0 ? "needs root (network namespaces)" : false;

  test("interface selection: --iface, --iface-regex, --iface-can-reach, --public-ip(v6), the default route, in flannel's order", { skip }, () => {
    const ns = `fg${randomBytes(3).toString("hex")}`;
    const ip = (...args: string[]) => execFileSync("ip", ["-n", ns, ...args], { encoding: "utf8" });
    execFileSync("ip", ["netns", "add", ns]);
    let lines: string[] = [];
    try {
      ip("link", "set", "lo", "up");
      for (const [dev, n] of [["fga0", 1], ["fgb0", 2]] as const) {
        ip("link", "add", dev, "type", "veth", "peer", "name", `${dev}p`);
        ip("addr", "add", `10.10.${n}.2/24`, "dev", dev);
        ip("addr", "add", `fd10:${n}::2/64`, "dev", dev, "nodad");
        ip("link", "set", dev, "up");
        ip("link", "set", `${dev}p`, "up");
      }
      ip("addr", "add", "10.10.1.3/24", "dev", "fga0");
      ip("addr", "add", "10.10.1.9/24", "dev", "fga0", "preferred_lft", "0");
      ip("link", "add", "fgc0", "type", "veth", "peer", "name", "fgc0p");
      ip("addr", "add", "fd10:3::2/64", "dev", "fgc0", "nodad");
      ip("link", "set", "fgc0", "up");
      ip("route", "add", "10.20.0.0/16", "via", "10.10.1.1", "dev", "fga0", "src", "10.10.1.3");
      ip("route", "add", "default", "via", "10.10.2.1", "dev", "fgb0");
      ip("-6", "route", "add", "default", "via", "fd10:2::1", "dev", "fgb0");
      const out = execFileSync("nsenter", [`--net=/run/netns/${ns}`, process.execPath, SELF], {
        encoding: "utf8", env: { ...process.env, FGTEST_CHILD: "1" }, timeout: 60_000,
      });
      lines = out.trim().split("\n");
      if (process.env["FGTEST_SHOW"]) process.stderr.write(out);
      const r = new Map(lines.map((l) => JSON.parse(l)).map((x) => [x.name, x]));
      const got = (name: string) => {
        const x = r.get(name);
        assert.ok(x, `no result for ${name}`);
        return x;
      };
      const pick = (name: string) => {
        const x = got(name);
        assert.equal(x.code, undefined, `${name}: ${x.message}`);
        return { iface: x.iface, ipv4: x.ipv4, ipv6: x.ipv6 };
      };
      const failed = (name: string, code: string, fragment: RegExp) => {
        const x = got(name);
        assert.equal(x.code, code, `${name}: ${JSON.stringify(x)}`);
        assert.match(x.message, fragment, name);
      };

      assert.deepEqual(pick("default route"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      assert.deepEqual(pick("default route v6"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      assert.deepEqual(pick("default route dual"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      // The route's interface, and its source address (flannel: route.Src), not the interface's first address.
      assert.deepEqual(pick("can-reach"), { iface: "fga0", ipv4: "10.10.1.3", ipv6: "fd10:1::2" });
      assert.deepEqual(pick("can-reach local subnet"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      assert.deepEqual(pick("public-ip alone"), { iface: "fga0", ipv4: "10.10.1.2", ipv6: "fd10:1::2" });
      assert.deepEqual(pick("public-ipv6 alone"), { iface: "fga0", ipv4: "10.10.1.2", ipv6: "fd10:1::2" });
      failed("public-ip not on any interface", "ERR_IFACE", /--public-ip 203\.0\.113\.9: no interface holds 203\.0\.113\.9/);
      assert.deepEqual(pick("iface by IP"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      assert.deepEqual(pick("iface by IP, second address"), { iface: "fga0", ipv4: "10.10.1.3", ipv6: "fd10:1::2" });
      assert.deepEqual(pick("iface by name"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      assert.deepEqual(pick("iface by name, NATed public-ip"), { iface: "fga0", ipv4: "203.0.113.9", ipv6: "fd10:1::2" });
      assert.equal(got("iface by name, NATed public-ip").ifaceIPv4, "10.10.1.2", "the interface's own address stays known");
      assert.deepEqual(pick("iface without IPv4 is skipped"), { iface: "fga0", ipv4: "10.10.1.2", ipv6: "fd10:1::2" });
      assert.deepEqual(pick("iface-regex by address"), { iface: "fga0", ipv4: "10.10.1.2", ipv6: "fd10:1::2" });
      assert.deepEqual(pick("iface-regex by name (RE2)"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      failed("iface-regex misses the deprecated address", "ERR_IFACE", /matches no interface address or name/);
      assert.equal(pick("order: iface before regex").iface, "fga0");
      assert.equal(pick("order: regex before can-reach").iface, "fgb0");
      assert.deepEqual(pick("order: can-reach last"), { iface: "fga0", ipv4: "10.10.1.3", ipv6: "fd10:1::2" });
      failed("nothing matches", "ERR_IFACE", /--iface nosuch0, then --iface-regex \^nomatch\$.*interfaces: .*fga0\[/);
      failed("bad RE2", "ERR_INVALID_FLAG", /not an RE2 regular expression: lookahead/);
      assert.deepEqual(pick("no stack: default route"), { iface: "fgb0", ipv4: "10.10.2.2", ipv6: "fd10:2::2" });
      assert.deepEqual(pick("no stack: iface without IPv4"), { iface: "fgc0", ipv4: undefined, ipv6: "fd10:3::2" });
      assert.deepEqual(pick("no stack: regex, NATed public-ip"), { iface: "fgb0", ipv4: "203.0.113.7", ipv6: "fd10:2::2" });
    } catch (e) {
      // What a person would look at.
      process.stderr.write(`results:\n${lines.join("\n")}\n${ip("addr")}\n${ip("route")}\n${ip("-6", "route")}\n`);
      throw e;
    } finally {
      execFileSync("ip", ["netns", "del", ns]);
    }
  });
}
