/**
 * Batch map writes on libuv's thread pool while V8 collects, for
 * map-async.test.ts:
 *
 *   node --expose-gc dist/test/lib/async-batch-driver.js '{"rounds":20,"entries":20000}'
 *
 * How it works: one unpinned LPM trie shaped like twill_peers (nothing else
 * on the machine sees it). Each round first fills every thread of the pool
 * with a 20 ms sleep, so the batch update it then asks for waits in the
 * pool's queue, and collects garbage (gc(), plus fresh small Buffers to
 * collect) until the update has returned — the window in which a Buffer
 * that only koffi's argument list held would be freed before libbpf reads
 * it. It prints one JSON line: per round the entries the map holds after
 * the round, whether the map still writes in batches, and libbpf's log
 * lines (a garbage bpf_map_batch_opts shows there as "non-zero extra bytes"
 * or "size … is too small").
 */
import koffi from "koffi";
import { BpfMap } from "../../src/bpf/map.js";
import { closeFd, libbpf, takeLibbpfLog } from "../../src/bpf/libbpf.js";
import { LPM_KEY, PEER } from "../../src/bpf/layout.js";

interface Input { rounds: number; entries: number }

const BPF_MAP_TYPE_LPM_TRIE = 11;
const BPF_F_NO_PREALLOC = 1;
const POOL = Number(process.env.UV_THREADPOOL_SIZE ?? 4);

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2]!) as Input;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("Cannot force collections: run node with --expose-gc");
  const usleep = koffi.load("libc.so.6").func("int usleep(uint32_t usec)");
  // struct bpf_map_create_opts (libbpf 1.1): sz at 0, map_flags at 28.
  const createOpts = Buffer.alloc(64);
  createOpts.writeBigUInt64LE(64n, 0);
  createOpts.writeUInt32LE(BPF_F_NO_PREALLOC, 28);
  const n = input.entries;
  const fd = libbpf().map_create(BPF_MAP_TYPE_LPM_TRIE, "twill_async_t", LPM_KEY.size, PEER.size, input.rounds * n + 16, createOpts) as number;
  if (fd < 0) throw new Error(`Cannot create an LPM trie: errno ${-fd}`);
  const map = new BpfMap("twill_async_t", fd, LPM_KEY.size, PEER.size, input.rounds * n + 16, BPF_MAP_TYPE_LPM_TRIE);
  takeLibbpfLog();
  const rounds: { error?: string; entries: number; batch: boolean; log: string[] }[] = [];
  for (let round = 0; round < input.rounds; round++) {
    // Entries of this round: 10.<round>.<i/256>.<i%256>/32 (prefixlen 32 + 32 family bits), family 4.
    const keys = Buffer.alloc(n * LPM_KEY.size), vals = Buffer.alloc(n * PEER.size);
    for (let i = 0; i < n; i++) {
      const at = i * LPM_KEY.size;
      keys.writeUInt32LE(64, at);
      keys.writeUInt32LE(4, at + 4);
      keys[at + 8] = 10;
      keys[at + 9] = round;
      keys[at + 10] = (i >> 8) & 255;
      keys[at + 11] = i & 255;
    }
    for (let t = 0; t < POOL; t++) usleep.async(20_000, () => undefined);
    let done = false;
    const write = map.updateBatchAsync(keys, vals, n).then(() => undefined, (e: unknown) => (e instanceof Error ? e.message : String(e))).finally(() => (done = true));
    while (!done) {
      for (let j = 0; j < 500; j++) Buffer.alloc(24).fill(0xab);
      gc();
      await new Promise((r) => setImmediate(r));
    }
    const error = await write;
    rounds.push({ ...(error !== undefined && { error }), entries: map.count(), batch: (map as unknown as { batchUpdate: boolean }).batchUpdate, log: takeLibbpfLog() });
  }
  closeFd(fd);
  process.stdout.write(JSON.stringify({ rounds }) + "\n");
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stdout.write(JSON.stringify({ fatal: e instanceof Error ? e.message : String(e) }) + "\n");
    process.exit(1);
  },
);
