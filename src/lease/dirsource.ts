/**
 * The embedded directory store as a LeaseSource.
 *
 * How it works: DirStore (dirstore.ts) does the file work; a directory has
 * no change feed that says what changed, so every (debounced) fs event is a
 * resync: the daemon re-lists and diffs against what it knows. There is no
 * TTL, so nothing needs renewing.
 */
import { DirStore } from "./dirstore.js";
import type { AcquireOptions, LeaseSource, ListResult, WatchHandlers } from "./source.js";
import type { Lease, NetConfig } from "./types.js";

export class DirSource implements LeaseSource {
  readonly kind = "dir";
  readonly store: DirStore;

  constructor(dir: string) {
    this.store = new DirStore(dir);
  }

  readConfig(): Promise<NetConfig> {
    return this.store.readConfig();
  }
  list(): Promise<ListResult> {
    return this.store.list();
  }
  acquire(opts: AcquireOptions): Promise<Lease> {
    return this.store.acquire(opts);
  }
  writeLease(lease: Lease): Promise<void> {
    return this.store.writeLease(lease);
  }
  watch(h: WatchHandlers): () => void {
    return this.store.watch(() => h.onResync(), { debounceMs: 20, onError: (e) => h.onError(e) });
  }
  async close(): Promise<void> {
    this.store.close();
  }
}
