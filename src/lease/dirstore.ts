/**
 * The embedded lease store: a directory laid out like flannel's etcd keys.
 *
 *   <dir>/config                          the network config JSON
 *   <dir>/subnets/10.244.1.0-24           one lease per file, named by its key,
 *   <dir>/subnets/10.244.2.0-24&fc00:...  holding flannel's LeaseAttrs JSON
 *   <dir>/subnets/.<key>.<pid>.<n>.tmp    temp files (dotfiles are never read)
 *
 * How it works:
 *  - Every write goes to a dotfile first, so a reader never sees a partial
 *    lease: an update is temp + rename(2) (atomic replace); a creation is
 *    temp + link(2), which fails with EEXIST when the key exists — the
 *    O_CREAT|O_EXCL of a directory, and the equivalent of flannel's
 *    "create if version = 0" etcd transaction. (Where link(2) is not
 *    supported we fall back to open(O_CREAT|O_EXCL) + write.)
 *  - acquire = list, chooseSubnet (allocate.ts), create; on EEXIST list
 *    again and retry (bounded). Exclusive create covers two nodes picking
 *    the same key; it does not cover two dual-stack keys sharing a subnet
 *    ("A&B" vs "A&C"). So after creating, we list again and give the
 *    subnet up (delete, retry) if any other lease overlaps ours. This is
 *    safe: of two overlapping creators, the later one's check runs after
 *    the earlier one's create, so at least one of them sees the other and
 *    yields; if both yield, each waits a random, growing backoff before it
 *    picks again, so ties do not repeat forever.
 *  - list() never throws for a bad lease file: it returns it in `errors`.
 *  - watch() is fs.watch on subnets/, debounced; dotfiles are ignored.
 * There are no TTLs here: a lease lives until deleted. Errors: bad config →
 * ERR_INVALID_CONFIG; I/O → ERR_STORE (retryable).
 */
import { mkdirSync, watch as fsWatch, type FSWatcher } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { TwillError, isTwillError } from "../errors.js";
import { parseNetConfig } from "../config/netconf.js";
import { chooseSubnet, leasesOverlap } from "./allocate.js";
import { parseLease, parseLeaseKey, serializeLease } from "./parse.js";
import type { Lease, NetConfig } from "./types.js";
import type { AcquireOptions, ListResult } from "./source.js";

export type { AcquireOptions, ListResult } from "./source.js";

const MAX_TRIES = 30;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let tmpCounter = 0;

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

function storeError(what: string, e: unknown): TwillError {
  if (isTwillError(e)) return e;
  return new TwillError("ERR_STORE", `lease store: ${what}: ${(e as Error).message ?? String(e)}`, { cause: e, retryable: true });
}

export class DirStore {
  readonly dir: string;
  readonly subnetsDir: string;

  constructor(dir: string) {
    this.dir = dir;
    this.subnetsDir = path.join(dir, "subnets");
  }

  async readConfig(): Promise<NetConfig> {
    const file = path.join(this.dir, "config");
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (e) {
      throw storeError(errno(e) === "ENOENT" ? `network config ${file} not found` : `reading ${file}`, e);
    }
    return parseNetConfig(text);
  }

  async writeConfig(text: string): Promise<void> {
    parseNetConfig(text); // refuse to store a config nobody can read
    await this.atomicWrite(path.join(this.dir, "config"), text, this.dir);
  }

  async list(): Promise<ListResult> {
    let names: string[];
    try {
      names = (await fs.readdir(this.subnetsDir)).filter((n) => !n.startsWith(".")).sort();
    } catch (e) {
      if (errno(e) === "ENOENT") return { leases: [], errors: [] };
      throw storeError(`listing ${this.subnetsDir}`, e);
    }
    const result: ListResult = { leases: [], errors: [] };
    for (const key of names) {
      let text: string;
      try {
        text = await fs.readFile(path.join(this.subnetsDir, key), "utf8");
      } catch (e) {
        if (errno(e) === "ENOENT") continue; // deleted since readdir
        result.errors.push({ key, error: storeError(`reading lease ${key}`, e) });
        continue;
      }
      try {
        result.leases.push(parseLease(key, text));
      } catch (e) {
        result.errors.push({ key, error: isTwillError(e) ? e : storeError(`parsing lease ${key}`, e) });
      }
    }
    return result;
  }

  /** Finds or creates our lease; see the design note at the top. */
  async acquire(opts: AcquireOptions = {}): Promise<Lease> {
    const config = await this.readConfig();
    await this.mkdirs();
    for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
      const { leases } = await this.list();
      const choice = chooseSubnet({ config, leases, random: opts.random ?? Math.random, ...pick(opts, "publicIP", "publicIPv6", "previous") });
      for (const l of choice.stale) await this.deleteLease(l.key);
      const lease: Lease = {
        key: choice.key,
        ...pick(choice, "subnet", "ipv6Subnet"),
        ...pick(opts, "publicIP", "publicIPv6", "backendData", "backendV6Data"),
        backendType: opts.backendType ?? "vxlan",
      };
      if (choice.kind === "reuse") {
        await this.writeLease(lease);
        return lease;
      }
      if (!(await this.create(lease))) continue; // someone took the key: look again
      const after = await this.list();
      if (after.leases.some((l) => l.key !== lease.key && leasesOverlap(l, lease))) {
        await this.deleteLease(lease.key); // lost (or tied) a race on one family's subnet
        await sleep(Math.random() * Math.min(1000, 5 * 2 ** attempt)); // random backoff breaks ties
        continue;
      }
      return lease;
    }
    throw new TwillError("ERR_LEASE_CONFLICT", `lease store: gave up after ${MAX_TRIES} conflicting attempts to acquire a subnet`, { retryable: true });
  }

  /** Writes (creates or replaces) a lease atomically. */
  async writeLease(lease: Lease): Promise<void> {
    parseLeaseKey(lease.key);
    await this.mkdirs();
    await this.atomicWrite(path.join(this.subnetsDir, lease.key), serializeLease(lease), this.subnetsDir);
  }

  /** Deletes a lease; a missing one is not an error. */
  async deleteLease(key: string): Promise<void> {
    parseLeaseKey(key); // a key, not a path
    try {
      await fs.unlink(path.join(this.subnetsDir, key));
    } catch (e) {
      if (errno(e) !== "ENOENT") throw storeError(`deleting lease ${key}`, e);
    }
  }

  /** Calls onChange (debounced) after leases are added, changed or removed. Returns stop(). */
  watch(onChange: () => void, opts: { debounceMs?: number; onError?: (e: TwillError) => void } = {}): () => void {
    const debounceMs = opts.debounceMs ?? 100;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const fire = () => {
      if (stopped) return;
      clearTimeout(timer);
      timer = setTimeout(() => { if (!stopped) onChange(); }, debounceMs);
    };
    let watcher: FSWatcher;
    try {
      mkdirSync(this.subnetsDir, { recursive: true }); // fs.watch needs the directory
      watcher = fsWatch(this.subnetsDir, (_event, name) => {
        if (name === null || !String(name).startsWith(".")) fire();
      });
    } catch (e) {
      throw storeError(`watching ${this.subnetsDir}`, e);
    }
    watcher.on("error", (e) => opts.onError?.(storeError(`watching ${this.subnetsDir}`, e)));
    return () => {
      stopped = true;
      clearTimeout(timer);
      watcher.close();
    };
  }

  private async mkdirs(): Promise<void> {
    try {
      await fs.mkdir(this.subnetsDir, { recursive: true });
    } catch (e) {
      throw storeError(`creating ${this.subnetsDir}`, e);
    }
  }

  private tempPath(dir: string, name: string): string {
    return path.join(dir, `.${name}.${process.pid}.${tmpCounter++}.tmp`);
  }

  private async atomicWrite(file: string, text: string, dir: string): Promise<void> {
    const tmp = this.tempPath(dir, path.basename(file));
    try {
      await fs.writeFile(tmp, text, { flag: "wx" });
      await fs.rename(tmp, file);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw storeError(`writing ${file}`, e);
    }
  }

  /** Creates a lease only if its key is free; false when it exists. */
  private async create(lease: Lease): Promise<boolean> {
    const file = path.join(this.subnetsDir, lease.key);
    const text = serializeLease(lease);
    const tmp = this.tempPath(this.subnetsDir, lease.key);
    try {
      await fs.writeFile(tmp, text, { flag: "wx" });
      await fs.link(tmp, file);
      return true;
    } catch (e) {
      if (errno(e) === "EEXIST") return false;
      if (["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes(errno(e) ?? "")) return this.createNoLink(file, text);
      throw storeError(`creating lease ${lease.key}`, e);
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  private async createNoLink(file: string, text: string): Promise<boolean> {
    try {
      await fs.writeFile(file, text, { flag: "wx" });
      return true;
    } catch (e) {
      if (errno(e) === "EEXIST") return false;
      throw storeError(`creating ${file}`, e);
    }
  }
}

/** The defined properties of `o` among `keys` (so optional fields stay absent, not undefined). */
function pick<T extends object, K extends keyof T>(o: T, ...keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
