import { test } from "node:test";
import assert from "node:assert/strict";
import { bytesToMAC, macToBytes, parseMAC, randomMAC, tryParseMAC } from "../../src/lease/mac.js";
import { isTwillError } from "../../src/errors.js";

test("parseMAC accepts unicast MACs and lower-cases them", () => {
  assert.equal(parseMAC("8e:d0:f8:0a:41:19"), "8e:d0:f8:0a:41:19");
  assert.equal(parseMAC("8E:D0:F8:0A:41:19"), "8e:d0:f8:0a:41:19");
  assert.equal(tryParseMAC("02:00:00:00:00:01"), "02:00:00:00:00:01");
});

test("parseMAC rejects bad shapes, multicast and zero, naming field and value", () => {
  const bad: [unknown, RegExp][] = [
    ["8e:d0:f8:0a:41", /is not a MAC address/],
    ["8e:d0:f8:0a:41:19:00", /is not a MAC address/],
    ["8e-d0-f8-0a-41-19", /is not a MAC address/],
    ["8e:d0:f8:0a:41:1", /is not a MAC address/],
    ["8e:d0:f8:0a:41:zz", /is not a MAC address/],
    ["01:00:5e:00:00:01", /is not a unicast MAC \(the multicast bit is set\)/],
    ["ff:ff:ff:ff:ff:ff", /is not a unicast MAC/],
    ["00:00:00:00:00:00", /all zeros/],
    [42, /is not a string/],
    [null, /is not a string/],
  ];
  for (const [v, re] of bad) {
    assert.throws(() => parseMAC(v, "BackendData.VtepMAC"), (e) => {
      assert.ok(isTwillError(e, "ERR_INVALID_MAC"));
      assert.match(e.message, re);
      assert.ok(e.message.startsWith(`BackendData.VtepMAC ${JSON.stringify(v)} `), e.message);
      return true;
    });
    assert.equal(tryParseMAC(v), undefined);
  }
  assert.throws(() => parseMAC(undefined, "VtepMAC"), /^TwillError: VtepMAC is missing$/);
});

test("bytes round-trip", () => {
  const b = macToBytes("8E:d0:f8:0a:41:19");
  assert.deepEqual(Array.from(b), [0x8e, 0xd0, 0xf8, 0x0a, 0x41, 0x19]);
  assert.equal(bytesToMAC(b), "8e:d0:f8:0a:41:19");
  assert.equal(bytesToMAC(Uint8Array.of(1, 2, 3, 4, 5, 6)), "01:02:03:04:05:06");
  assert.throws(() => bytesToMAC(Uint8Array.of(1, 2, 3)), (e) => isTwillError(e, "ERR_INVALID_MAC"));
  assert.throws(() => macToBytes("nope"), (e) => isTwillError(e, "ERR_INVALID_MAC"));
});

test("randomMAC is locally administered unicast", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const m = randomMAC();
    assert.equal(parseMAC(m), m);
    const first = parseInt(m.slice(0, 2), 16);
    assert.equal(first & 1, 0, "unicast");
    assert.equal(first & 2, 2, "locally administered");
    seen.add(m);
  }
  assert.ok(seen.size > 190, "random");
  // Even from all-ones / all-zero random bytes.
  assert.equal(randomMAC(() => new Uint8Array(6).fill(0xff)), "fe:ff:ff:ff:ff:ff");
  assert.equal(randomMAC(() => new Uint8Array(6)), "02:00:00:00:00:01");
});
