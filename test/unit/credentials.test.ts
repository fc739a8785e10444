/**
 * Credentials: never in a message or a log line, never over plain http://
 * without --allow-insecure-credentials — for etcd (--etcd-username and
 * --etcd-password) and for a kubeconfig (token, tokenFile, basic auth,
 * client certificate, userinfo in the server URL). No server is contacted
 * except a loopback port nobody listens on.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EtcdSource } from "../../src/lease/etcdsource.js";
import { loadConnection } from "../../src/lease/kubeconfig.js";
import { KubeClient } from "../../src/lease/kubeapi.js";
import { redactURL } from "../../src/lease/credentials.js";
import { parseFlags } from "../../src/config/flags.js";
import { createLogger } from "../../src/log.js";
import { isTwillError } from "../../src/errors.js";
import { freePort } from "../lib/etcd.js";

const SECRET = "s3cr3t-pa";

test("redactURL removes the userinfo of every URL in a text", () => {
  assert.equal(redactURL(`http://u:${SECRET}@10.0.0.1:2379,https://x@h:1/p`), "http://***@10.0.0.1:2379,https://***@h:1/p");
  assert.equal(redactURL("http://10.0.0.1:2379 and mail a@b"), "http://10.0.0.1:2379 and mail a@b");
});

test("etcd: a password to an http:// endpoint is refused naming the flags, unless --allow-insecure-credentials; never quoted", () => {
  for (const endpoints of [["http://127.0.0.1:2379"], ["127.0.0.1:2379"]]) {
    assert.throws(() => new EtcdSource({ endpoints, username: "flannel", password: SECRET }), (e) => {
      assert.ok(isTwillError(e, "ERR_INVALID_FLAG"), String(e));
      assert.match(e.message, /refusing to send --etcd-username\/--etcd-password to --etcd-endpoints .*127\.0\.0\.1:2379 over plain http:\/\/.*--allow-insecure-credentials/);
      assert.ok(!e.message.includes(SECRET));
      return true;
    });
  }
  const logs: string[] = [];
  const s = new EtcdSource({ endpoints: ["http://127.0.0.1:2379"], username: "flannel", password: SECRET, allowInsecureCredentials: true, onLog: (_l, m, f) => logs.push(m + JSON.stringify(f ?? {})) });
  void s.close();
  assert.equal(logs.length, 1);
  assert.match(logs[0]!, /sending --etcd-username\/--etcd-password to .* over plain http:\/\/ \(--allow-insecure-credentials\)/);
  assert.ok(!logs[0]!.includes(SECRET));
  // https: no question asked; no credentials: nothing to refuse
  void new EtcdSource({ endpoints: ["https://127.0.0.1:2379"], username: "flannel", password: SECRET }).close();
  void new EtcdSource({ endpoints: ["http://127.0.0.1:2379"] }).close();
});

test("etcd: userinfo in an endpoint never reaches an error message or a log line", async () => {
  const port = await freePort(); // nothing listens there
  const endpoint = `http://root:${SECRET}@127.0.0.1:${port}`;
  const lines: string[] = [];
  const log = createLogger("debug", {}, (l) => lines.push(l));
  assert.throws(() => new EtcdSource({ endpoints: [endpoint, "https://127.0.0.1:1"] }), (e) => isTwillError(e, "ERR_INVALID_FLAG") && !e.message.includes(SECRET) && e.message.includes("http://***@127.0.0.1"));
  const s = new EtcdSource({ endpoints: [endpoint], callTimeoutMs: 1000, cafile: "/nonexistent/ca.pem", onLog: (level, m, f) => log[level](m, f) });
  try {
    await assert.rejects(s.readConfig(), (e) => {
      assert.ok(isTwillError(e, "ERR_STORE"), String(e));
      assert.ok(!e.message.includes(SECRET), e.message);
      log.error("start failed", { err: e });
      return true;
    });
  } finally {
    await s.close();
  }
  assert.ok(lines.length >= 2, lines.join("\n"));
  for (const l of lines) assert.ok(!l.includes(SECRET), l);
});

function kubeconfig(dir: string, server: string, user: Record<string, string>): string {
  const file = join(dir, `kc-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify({
    apiVersion: "v1", kind: "Config", "current-context": "c",
    clusters: [{ name: "c", cluster: { server } }], contexts: [{ name: "c", context: { cluster: "c", user: "u" } }], users: [{ name: "u", user }],
  }));
  return file;
}

test("kubeconfig: token, tokenFile, basic auth, a client certificate or userinfo to an http:// API server are refused unless allowed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pa-cred-"));
  try {
    writeFileSync(join(dir, "token"), SECRET);
    const pem = Buffer.from(`-----BEGIN X-----\n${SECRET}\n-----END X-----\n`).toString("base64");
    const cases: Array<[string, string, Record<string, string>, RegExp]> = [
      ["token", "http://127.0.0.1:6443", { token: SECRET }, /a bearer token/],
      ["tokenFile", "http://127.0.0.1:6443", { tokenFile: "token" }, /the token of .*token/],
      ["basic", "http://127.0.0.1:6443", { username: "admin", password: SECRET }, /a username and password/],
      ["client cert", "http://127.0.0.1:6443", { "client-certificate-data": pem, "client-key-data": pem }, /a client certificate/],
      ["userinfo", `http://admin:${SECRET}@127.0.0.1:6443`, {}, /the userinfo of the server URL/],
    ];
    for (const [name, server, user, what] of cases) {
      const file = kubeconfig(dir, server, user);
      await assert.rejects(loadConnection({ kubeconfigFile: file }), (e) => {
        assert.ok(isTwillError(e, "ERR_INVALID_FLAG"), `${name}: ${String(e)}`);
        assert.match(e.message, what, name);
        assert.match(e.message, /over plain http:\/\/.*--allow-insecure-credentials/, name);
        assert.ok(!e.message.includes(SECRET), `${name}: ${e.message}`);
        return true;
      });
      await assert.rejects(KubeClient.create({ kubeconfigFile: file }), (e) => isTwillError(e, "ERR_INVALID_FLAG"), name);
      const c = await loadConnection({ kubeconfigFile: file, allowInsecureCredentials: true });
      assert.match(c.insecureWarning ?? "", /over plain http:\/\/ \(--allow-insecure-credentials\)/, name);
      assert.ok(!c.insecureWarning!.includes(SECRET), name);
      const client = await KubeClient.create({ kubeconfigFile: file, allowInsecureCredentials: true });
      assert.ok(!client.server.includes(SECRET), client.server);
      // The same credentials over https: accepted, no warning.
      const tls = await loadConnection({ kubeconfigFile: kubeconfig(dir, server.replace("http:", "https:"), user) });
      assert.equal(tls.insecureWarning, undefined, name);
    }
    // --kube-api-url over http without credentials: nothing to refuse
    assert.equal((await loadConnection({ kubeApiUrl: "http://127.0.0.1:8080" })).insecureWarning, undefined);
    // userinfo in --kube-api-url is a credential too
    await assert.rejects(loadConnection({ kubeApiUrl: `http://a:${SECRET}@127.0.0.1:8080` }), (e) => isTwillError(e, "ERR_INVALID_FLAG") && !e.message.includes(SECRET));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("kubeconfig: a YAML error or a bad server URL is reported without quoting the file or the URL's userinfo", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pa-cred-"));
  try {
    const yaml = join(dir, "kc.yaml");
    writeFileSync(yaml, ["apiVersion: v1", "users:", "- name: u", "  user:", `    token: ${SECRET}`, "   bad: [indent"].join("\n"));
    await assert.rejects(loadConnection({ kubeconfigFile: yaml }), (e) => {
      assert.ok(isTwillError(e, "ERR_INVALID_CONFIG"), String(e));
      assert.match(e.message, /is not valid YAML: .* at line \d+, column \d+/);
      assert.ok(!e.message.includes(SECRET), e.message);
      return true;
    });
    await assert.rejects(loadConnection({ kubeconfigFile: kubeconfig(dir, `ftp://a:${SECRET}@h`, {}) }),
      (e) => isTwillError(e, "ERR_INVALID_CONFIG") && e.message.includes("ftp://***@h") && !e.message.includes(SECRET));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("flags: --allow-insecure-credentials (off by default, TWILL_ALLOW_INSECURE_CREDENTIALS); a mistyped flag's value is not echoed", () => {
  const host = () => "h";
  assert.equal(parseFlags([], {}, host).allowInsecureCredentials, false);
  assert.equal(parseFlags(["--allow-insecure-credentials"], {}, host).allowInsecureCredentials, true);
  assert.equal(parseFlags([], { TWILL_ALLOW_INSECURE_CREDENTIALS: "true" }, host).allowInsecureCredentials, true);
  assert.throws(() => parseFlags([`--etcd-pasword=${SECRET}`], {}, host), (e) => isTwillError(e, "ERR_INVALID_FLAG") && /unknown flag "--etcd-pasword"/.test(e.message) && !e.message.includes(SECRET));
});
