/**
 * EtcdSource without an etcd server: option checks, and behaviour when the
 * endpoint refuses connections (a loopback port nobody listens on). The
 * real-server behaviour is in test/integration/etcd-source.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { EtcdSource, type EtcdSourceOptions } from "../../src/lease/etcdsource.js";
import { decodeRange, encodeRange } from "../../src/lease/etcdclient.js";
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

/** A protobuf writer for the test's own messages (independent of etcdclient.ts's encoder). */
const pb = {
  varint(v: bigint): number[] {
    const out: number[] = [];
    let x = BigInt.asUintN(64, v);
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    return out;
  },
  int(field: number, v: bigint): number[] {
    return [...pb.varint(BigInt(field << 3)), ...pb.varint(v)];
  },
  bytes(field: number, b: Buffer | number[]): number[] {
    return [...pb.varint(BigInt((field << 3) | 2)), ...pb.varint(BigInt(b.length)), ...b];
  },
};

test("gRPC Range messages: the request's fields, and every field of a reply that is read, exactly (big IDs, unknown fields, truncation)", () => {
  const req = encodeRange({ key: Buffer.from("/a/"), rangeEnd: Buffer.from("/a0"), limit: 10_000, revision: 1234567890123n, minModRevision: 5n });
  assert.deepEqual([...req], [...pb.bytes(1, Buffer.from("/a/")), ...pb.bytes(2, Buffer.from("/a0")), ...pb.int(3, 10_000n), ...pb.int(4, 1234567890123n), ...pb.int(10, 5n)]);
  const keys = encodeRange({ key: Buffer.from("/a/"), rangeEnd: Buffer.from("/a0"), limit: 0, minModRevision: 5n, keysOnly: true });
  assert.deepEqual([...keys], [...pb.bytes(1, Buffer.from("/a/")), ...pb.bytes(2, Buffer.from("/a0")), ...pb.int(8, 1n), ...pb.int(10, 5n)], "keys_only is field 8, a bool");
  assert.deepEqual([...encodeRange({ key: Buffer.from("k"), rangeEnd: Buffer.from("l"), limit: 0 })], [...pb.bytes(1, Buffer.from("k")), ...pb.bytes(2, Buffer.from("l"))], "zero fields are left out");

  const value = `{"PublicIP":"192.168.1.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}`;
  const header = [...pb.int(1, 18446744073709551557n), ...pb.int(2, 9007199254740993n), ...pb.int(3, 4242n), ...pb.int(4, 7n)];
  const kv = (key: string, mod: bigint, lease: bigint) => [
    ...pb.bytes(1, Buffer.from(key)), ...pb.int(2, 3n), ...pb.int(3, mod), ...pb.int(4, 1n), ...pb.bytes(5, Buffer.from(value)), ...pb.int(6, lease),
    0x3d, 1, 2, 3, 4, // field 7, fixed32: unknown, skipped
    0x41, 1, 2, 3, 4, 5, 6, 7, 8, // field 8, fixed64: unknown, skipped
  ];
  const reply = Buffer.from([
    ...pb.bytes(1, header), ...pb.bytes(2, kv("/a/10.0.0.0-24", 100n, 0n)), ...pb.bytes(2, kv("/a/10.0.1.0-24\u00e9", 9007199254740991n, 7587869371525563430n)),
    ...pb.int(3, 1n), ...pb.int(4, 250_000n), ...pb.bytes(15, [1, 2, 3]),
  ]);
  const page = decodeRange(reply);
  assert.equal(page.revision, 4242n);
  assert.equal(page.clusterId, "18446744073709551557", "uint64 beyond 2^53, exactly");
  assert.equal(page.count, 250_000);
  assert.equal(page.more, true);
  assert.deepEqual(page.kvs, [
    { key: "/a/10.0.0.0-24", value, modRevision: "100", lease: "0" },
    { key: "/a/10.0.1.0-24\u00e9", value, modRevision: "9007199254740991", lease: "7587869371525563430" },
  ]);
  assert.deepEqual(page.lastKey, Buffer.from("/a/10.0.1.0-24\u00e9"), "the last key's bytes (the next page starts after them)");
  assert.deepEqual(decodeRange(Buffer.from(pb.bytes(1, pb.int(3, 9n)))), { revision: 9n, clusterId: "0", count: 0, more: false, kvs: [], lastKey: undefined }, "an empty range");
  for (const cut of [1, 10, reply.length - 1]) assert.throws(() => decodeRange(reply.subarray(0, cut)), /truncated/, `cut at ${cut}`);
});
