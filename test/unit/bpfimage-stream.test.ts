/**
 * Streaming a first start (bpfimage.ts, 5): BpfImage.sync hands runs of new
 * slots and remotes to a writer while it encodes, and marks them sent until
 * their bytes change. The reconcile's repair skips what is sent, so a mark
 * that outlives a change would leave a wrong entry in the map: these cases
 * check that every change after a run was handed over clears its mark.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { BpfImage, KEY_SIZE, REMOTE_KEY_SIZE, VALUE_SIZE, type Stream } from "../../src/dataplane/bpfimage.js";
import { encodeEpKey, encodeLpmKey, peerIdAt } from "../../src/bpf/layout.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import type { Peer } from "../../src/dataplane/types.js";

const own = [parsePrefix("10.255.255.0/24")], networks = [parsePrefix("10.0.0.0/8")];
const hex = (n: number) => n.toString(16).padStart(2, "0");
const peer = (i: number, ip = `100.64.${(i >> 8) & 255}.${i & 255}`): Peer => ({
  subnet: parsePrefix(`10.${i >> 8}.${i & 255}.0/24`), publicIP: parseIP(ip), vtepMAC: `0e:b0:00:00:${hex((i >> 8) & 255)}:${hex(i & 255)}`, vni: 1, direct: false,
});

/** A writer that records each run with a copy of the bytes it was handed (what the kernel would have written). */
function recorder(image: () => BpfImage, every: number) {
  const runs: Array<{ from: number; to: number; rfrom: number; rto: number; keys: Buffer; vals: Buffer; rkeys: Buffer }> = [];
  const stream: Stream = {
    every,
    write(from, to, rfrom, rto) {
      const im = image();
      runs.push({
        from, to, rfrom, rto,
        keys: Buffer.from(im.keys.subarray(from * KEY_SIZE, to * KEY_SIZE)),
        vals: Buffer.from(im.vals.subarray(from * VALUE_SIZE, to * VALUE_SIZE)),
        rkeys: Buffer.from(im.rkeys.subarray(rfrom * REMOTE_KEY_SIZE, rto * REMOTE_KEY_SIZE)),
      });
    },
  };
  return { runs, stream };
}

test("a first sync hands over every new slot and remote once, in runs, with the bytes the image keeps", async () => {
  const image = new BpfImage();
  const peers = Array.from({ length: 5000 }, (_, i) => peer(i + 1));
  const { runs, stream } = recorder(() => image, 1000);
  await image.sync({ peers, own, networks }, { exact: true, stream });
  assert.ok(runs.length >= 5, `runs: ${runs.length}`);
  // The runs tile the slots and the remotes without gaps or overlaps.
  let slot = runs[0]!.from, remote = runs[0]!.rfrom;
  for (const r of runs) {
    assert.equal(r.from, slot);
    assert.equal(r.rfrom, remote);
    slot = r.to;
    remote = r.rto;
  }
  assert.equal(slot, image.top);
  assert.equal(remote, image.remoteTop);
  for (const r of runs) {
    // What was handed over is what the image holds now (nothing changed after it).
    assert.ok(r.keys.equals(image.keys.subarray(r.from * KEY_SIZE, r.to * KEY_SIZE)));
    assert.ok(r.vals.equals(image.vals.subarray(r.from * VALUE_SIZE, r.to * VALUE_SIZE)));
    assert.ok(r.rkeys.equals(image.rkeys.subarray(r.rfrom * REMOTE_KEY_SIZE, r.rto * REMOTE_KEY_SIZE)));
    for (let s = r.from; s < r.to; s++) assert.ok(image.isSent(s));
    for (let x = r.rfrom; x < r.rto; x++) assert.ok(image.isRemoteSent(x));
  }
  // Every peer has its own slot with a fresh id, found by its key.
  const ids = new Set<number>();
  const k = Buffer.alloc(KEY_SIZE);
  for (const p of peers) {
    const s = image.slotOf(encodeLpmKey(p.subnet, k, 0), 0);
    assert.ok(s >= 0);
    ids.add(peerIdAt(image.vals, s * VALUE_SIZE));
  }
  assert.equal(ids.size, peers.length);
  image.clearSent();
  for (let s = 0; s < image.top; s++) assert.ok(!image.isSent(s));
});

test("a change after a run was handed over clears its mark: a new value, a second lease for a subnet, a shared address, a freed slot reused", async () => {
  const image = new BpfImage();
  const peers = Array.from({ length: 3000 }, (_, i) => peer(i + 1));
  // The same subnet again later in the list with another VTEP MAC (the last one wins).
  const dup = { ...peer(7), vtepMAC: "0e:b0:00:ff:ff:ff" };
  // A peer later in the list behind the address of peer 8 (a second subnet behind one remote: its first stays).
  const shared = peer(2999, peers[7]!.publicIP.bytes.join("."));
  const list = [...peers.slice(0, 2998), shared, dup];
  const { stream } = recorder(() => image, 512);
  await image.sync({ peers: list, own, networks }, { exact: true, stream });
  const k = Buffer.alloc(KEY_SIZE);
  const slotOf = (p: Peer) => image.slotOf(encodeLpmKey(p.subnet, k, 0), 0);
  assert.ok(!image.isSent(slotOf(dup)), "the subnet's value changed after its run: not sent");
  assert.ok(image.isSent(slotOf(peers[7]!)), "an untouched slot stays sent");
  // An event changes a sent slot.
  const changed = { ...peers[100]!, vni: 9 };
  image.setPeer(encodeLpmKey(changed.subnet, Buffer.alloc(KEY_SIZE), 0), 0, changed);
  assert.ok(!image.isSent(slotOf(changed)));
  // An event removes a sent slot, another takes the freed slot.
  const gone = peers[200]!;
  const goneSlot = slotOf(gone);
  image.delete(encodeLpmKey(gone.subnet, Buffer.alloc(KEY_SIZE), 0), 0);
  const fresh = peer(4000);
  const freshSlot = image.setPeer(encodeLpmKey(fresh.subnet, Buffer.alloc(KEY_SIZE), 0), 0, fresh);
  assert.equal(freshSlot, goneSlot, "the freed slot is reused");
  assert.ok(!image.isSent(freshSlot));
  // Moving the first subnet of a remote away gives the remote another first slot: its value changes.
  const first = peers[7]!;
  const r = image.remoteOfKey(encodeEpKey(first.publicIP), 0);
  assert.ok(r >= 0 && image.isRemoteSent(r));
  image.setPeer(encodeLpmKey(first.subnet, Buffer.alloc(KEY_SIZE), 0), 0, { ...first, publicIP: parseIP("100.99.0.1") });
  assert.ok(!image.isRemoteSent(r), "the remote's first slot changed: not sent");
});

test("slots that reuse freed ones are not streamed (they are not a run at the top): the repair writes them", async () => {
  const image = new BpfImage();
  await image.sync({ peers: Array.from({ length: 100 }, (_, i) => peer(i + 1)), own, networks }, { exact: true });
  // Half of them go: 50 slots are free, and the next new peers fill them first.
  await image.sync({ peers: Array.from({ length: 50 }, (_, i) => peer(i + 1)), own, networks }, { exact: true });
  const next = [...Array.from({ length: 50 }, (_, i) => peer(i + 1)), ...Array.from({ length: 2000 }, (_, i) => peer(i + 1000))];
  const { runs, stream } = recorder(() => image, 256);
  await image.sync({ peers: next, own, networks }, { exact: true, stream });
  const k = Buffer.alloc(KEY_SIZE);
  const reused = next.slice(50, 100).map((p) => image.slotOf(encodeLpmKey(p.subnet, k, 0), 0));
  for (const s of reused) assert.ok(s < 102 && !image.isSent(s), `slot ${s} reused a freed one: not sent`);
  assert.ok(runs.length > 0, "once the free slots are used up, new slots at the top are streamed");
  for (const r of runs) {
    assert.ok(r.from >= 102);
    assert.ok(r.vals.equals(image.vals.subarray(r.from * VALUE_SIZE, r.to * VALUE_SIZE)));
  }
  for (const p of next) assert.ok(image.slotOf(encodeLpmKey(p.subnet, k, 0), 0) >= 0);
});
