/**
 * EtcdSource without an etcd server: option checks, and behaviour when the
 * endpoint refuses connections (a loopback port nobody listens on). The
 * real-server behaviour is in test/integration/etcd-source.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { EtcdSource, type EtcdSourceOptions } from "../../src/lease/etcdsource.js";
import { isTwillError, type TwillError } from "../../src/errors.js";
import { parseIP } from "../../src/net/ip.js";
import { freePort } from "../lib/etcd.js";
import { sleep } from "../lib/exec.js";

const bad = (o: EtcdSourceOptions, re: RegExp) =>
  assert.throws(() => new EtcdSource(o), (e) => isTwillError(e, "ERR_INVALID_FLAG") && re.test(e.message), String(re));

test("options: bad combinations are refused naming the flag", () => {
  bad({ endpoints: [] }, /--etcd-endpoints is empty/);
  bad({ endpoints: ["http://127.0.0.1:2379", "https://127.0.0.1:2380"] }, /mixes http:\/\/ and https:\/\//);
  bad({ endpoints: ["https://127.0.0.1:2379"], certfile: "/x.crt" }, /--etcd-certfile and --etcd-keyfile go together/);
  bad({ endpoints: ["https://127.0.0.1:2379"], cafile: "/nonexistent/ca.pem" }, /--etcd-cafile \/nonexistent\/ca.pem: ENOENT/);
  bad({ endpoints: ["http://127.0.0.1:2379"], renewMarginMinutes: 1440 }, /--subnet-lease-renew-margin 1440 minutes/);
  bad({ endpoints: ["127.0.0.1:2379"], cafile: "/nonexistent/ca.pem" }, /--etcd-cafile/); // no scheme + files = TLS
  const logs: string[] = [];
  const s = new EtcdSource({ endpoints: ["http://127.0.0.1:2379"], cafile: "/nonexistent/ca.pem", username: "flannel", onLog: (_l, m) => logs.push(m) });
  void s.close();
  assert.deepEqual(logs, [
    "TLS files are ignored: the etcd endpoints are http://", // as Go's clientv3
    "--etcd-username and --etcd-password go together; connecting without authentication",
  ]);
});

test("etcd unreachable: operations fail with ERR_STORE (retryable); the watch reports errors and keeps retrying", async () => {
  const endpoint = `http://127.0.0.1:${await freePort()}`; // nothing listens there
  const s = new EtcdSource({ endpoints: [endpoint], watchBackoffMaxMs: 200, callTimeoutMs: 2000 });
  try {
    const unreachable = (e: unknown) => isTwillError(e, "ERR_STORE") && e.retryable && e.message.includes(endpoint);
    await assert.rejects(s.readConfig(), unreachable);
    await assert.rejects(s.list(), unreachable);
    await assert.rejects(s.acquire({ publicIP: parseIP("192.168.1.1") }), unreachable);
    const errors: TwillError[] = [];
    let other = 0;
    const stop = s.watch({ onEvents: () => other++, onResync: () => other++, onError: (e) => errors.push(e) });
    await sleep(1200);
    stop();
    const n = errors.length;
    assert.ok(n >= 3, `${n} errors in 1.2 s (backoff 100, 200, 200 ms ...)`);
    assert.ok(errors.every(unreachable), errors.map((e) => e.message).join("; "));
    assert.equal(other, 0, "no events, no resync while etcd is away");
    await sleep(500);
    assert.equal(errors.length, n, "stop() ends the retries");
  } finally {
    await s.close();
  }
  await assert.rejects(s.list(), (e) => isTwillError(e, "ERR_STORE") && /closed/.test(e.message));
});
