/**
 * --ip-blackhole-route's route, added over twill's netlink like flannel's
 * ip.AddBlackholeV4Route/AddBlackholeV6Route.
 *
 *   netns fg<rand>
 *   ┌──────────────────────────────────────────────────────┐
 *   │ fgk0 ── veth ── fgk0p   10.244.8.1/24 (a cni0-like   │
 *   │                          connected route to the same │
 *   │                          prefix as one blackhole)    │
 *   └──────────────────────────────────────────────────────┘
 *
 * The netlink side runs in a child (FGTEST_CHILD=1, nsenter --net); the
 * parent reads the routes with `ip -j`. The namespace is removed in a finally.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

const SELF = fileURLToPath(import.meta.url);

if (process.env["FGTEST_CHILD"]) {
  const { ensureBlackhole } = await import("../../src/net/blackhole.js");
  const { parsePrefix } = await import("../../src/net/ip.js");
  const run = (p: string) => {
    try {
      return ensureBlackhole(parsePrefix(p));
    } catch (e) {
      return `error: ${(e as Error).message}`;
    }
  };
  const r = [run("10.244.7.0/24"), run("10.244.7.0/24"), run("fc00:0:0:7::/64"), run("fc00:0:0:7::/64"), run("10.244.8.0/24")];
  process.stdout.write(JSON.stringify(r) + "\n");
} else {
  const skip = process.getuid?.() !== 0 ? "needs root (network namespaces)" : false;
  test("blackhole route for our subnet: added once, then found; a connected route to the prefix makes it fail, as in flannel", { skip }, () => {
    const ns = `fg${randomBytes(3).toString("hex")}`;
    const ip = (...args: string[]) => execFileSync("ip", ["-n", ns, ...args], { encoding: "utf8" });
    execFileSync("ip", ["netns", "add", ns]);
    try {
      ip("link", "add", "fgk0", "type", "veth", "peer", "name", "fgk0p");
      ip("addr", "add", "10.244.8.1/24", "dev", "fgk0");
      ip("link", "set", "fgk0", "up");
      ip("link", "set", "fgk0p", "up");
      const out = execFileSync("nsenter", [`--net=/run/netns/${ns}`, process.execPath, SELF], {
        encoding: "utf8", env: { ...process.env, FGTEST_CHILD: "1" }, timeout: 60_000,
      });
      const r = JSON.parse(out) as string[];
      assert.deepEqual(r.slice(0, 4), ["added", "present", "added", "present"], out);
      assert.match(r[4]!, /^error: route add blackhole 10\.244\.8\.0\/24: File exists/, out);
      const bh4 = JSON.parse(ip("-j", "route", "show", "type", "blackhole"));
      // (ip -j leaves out protocol "boot", the default: the route is flannel's `ip route add blackhole`.)
      assert.deepEqual(bh4.map((x: { dst: string; protocol?: string }) => [x.dst, x.protocol ?? "boot"]), [["10.244.7.0/24", "boot"]]);
      const bh6 = JSON.parse(ip("-6", "-j", "route", "show", "type", "blackhole"));
      assert.deepEqual(bh6.map((x: { dst: string }) => x.dst), ["fc00:0:0:7::/64"]);
    } finally {
      execFileSync("ip", ["netns", "del", ns]);
    }
  });
}
