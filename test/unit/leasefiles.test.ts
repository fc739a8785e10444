/**
 * What the lease store and the subnet file do with files someone planted:
 *
 *   <fiXXXX>/outside                       a readable file holding a good lease
 *   <fiXXXX>/leases/subnets/10.244.156.0-24  FIFO          ┐
 *   <fiXXXX>/leases/subnets/10.244.157.0-24  symlink → outside │ each one: ERR_LEASE_FILE naming it
 *   <fiXXXX>/leases/subnets/10.244.158.0-24  directory     │ and its kind, never opened,
 *   <fiXXXX>/leases/subnets/10.244.159.0-24  socket        │ nothing blocked
 *   <fiXXXX>/leases/subnets/10.244.160.0-24  char device   │ (when mknod is allowed)
 *   <fiXXXX>/leases/subnets/10.244.161.0-24  70 KiB file   ┘
 *   <fiXXXX>/leases/subnets/10.244.1.0-24    an honest lease written afterwards: listed
 *
 * Every directory made here starts with a per-run "fi" prefix and is
 * removed in a finally, even on failure.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants, lstatSync, statSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { DirStore, MAX_LEASE_BYTES } from "../../src/lease/dirstore.js";
import { isTwillError } from "../../src/errors.js";
import { makeDirs, writeExclusive } from "../../src/atomicfile.js";
import { readRegularFile } from "../../src/saferead.js";
import { formatSubnetFile, readSubnetFile, writeSubnetFile } from "../../src/subnetfile.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";

const run = promisify(execFile);
const RUN = `fi${randomBytes(3).toString("hex")}`;
const V4 = (mac: string) => `{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
const HONEST = V4("02:00:00:00:00:01");

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${RUN}-`));
  try {
    await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Runs `fn` with the process umask set to `mask`. */
async function withUmask(mask: number, fn: () => Promise<void>): Promise<void> {
  const old = process.umask(mask);
  try {
    await fn();
  } finally {
    process.umask(old);
  }
}

/** Plants every kind of non-lease file in `sub`; returns name → the kind its report must name, and a cleanup. */
async function plant(sub: string, outside: string): Promise<{ kinds: Map<string, RegExp>; close: () => Promise<void> }> {
  const kinds = new Map<string, RegExp>();
  await run("mkfifo", [path.join(sub, "10.244.156.0-24")]);
  kinds.set("10.244.156.0-24", /lease file 10\.244\.156\.0-24 is a FIFO, not a regular file/);
  await fs.symlink(outside, path.join(sub, "10.244.157.0-24"));
  kinds.set("10.244.157.0-24", /lease file 10\.244\.157\.0-24 is a symlink, not a regular file/);
  await fs.mkdir(path.join(sub, "10.244.158.0-24"));
  kinds.set("10.244.158.0-24", /lease file 10\.244\.158\.0-24 is a directory, not a regular file/);
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(path.join(sub, "10.244.159.0-24"), r));
  kinds.set("10.244.159.0-24", /lease file 10\.244\.159\.0-24 is a socket, not a regular file/);
  try {
    await run("mknod", [path.join(sub, "10.244.160.0-24"), "c", "1", "3"]); // /dev/null's numbers
    kinds.set("10.244.160.0-24", /lease file 10\.244\.160\.0-24 is a character device, not a regular file/);
  } catch {
    // no CAP_MKNOD here: the other kinds still run
  }
  await fs.writeFile(path.join(sub, "10.244.161.0-24"), HONEST + " ".repeat(70 * 1024));
  kinds.set("10.244.161.0-24", new RegExp(`lease file 10\\.244\\.161\\.0-24 is ${HONEST.length + 70 * 1024} bytes, more than ${MAX_LEASE_BYTES}`));
  return { kinds, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** How long the event loop was held at most while `p` ran (ms). */
async function maxStall<T>(p: Promise<T>): Promise<[T, number]> {
  let worst = 0, last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 5);
  try {
    return [await p, worst];
  } finally {
    clearInterval(timer);
  }
}

function assertReported(errors: readonly { key: string; error: Error }[], kinds: Map<string, RegExp>): void {
  const shown = JSON.stringify(errors.map((e) => [e.key, e.error.message]));
  assert.deepEqual(errors.map((e) => e.key).sort(), [...kinds.keys()].sort(), shown);
  for (const { key, error } of errors) {
    assert.ok(isTwillError(error, "ERR_LEASE_FILE"), shown);
    assert.match(error.message, kinds.get(key)!);
  }
}

for (const mode of ["one thread", "reader threads"] as const) {
  test(`list (${mode}): FIFO, symlink, directory, socket, device, oversized file reported and skipped; an honest lease after them is listed`, { timeout: 20_000 }, async () => {
    await withDir(async (dir) => {
      const outside = path.join(dir, "outside");
      await fs.writeFile(outside, V4("02:00:00:00:00:99")); // a good lease: were the symlink followed, it would be listed
      const sub = path.join(dir, "leases", "subnets");
      await fs.mkdir(sub, { recursive: true });
      const { kinds, close } = await plant(sub, outside);
      try {
        const s = new DirStore(path.join(dir, "leases"), mode === "reader threads" ? { readers: 2, parallelMin: 2 } : {});
        try {
          const [first, stall] = await maxStall(s.list());
          assert.deepEqual(first.leases, []);
          assertReported(first.errors, kinds);
          assert.ok(stall < 500, `the event loop was held ${stall.toFixed(0)} ms`);
          // Written afterwards: listed (incremental list: the watcher names it).
          await fs.writeFile(path.join(sub, "10.244.1.0-24"), HONEST);
          const second = await s.list();
          assert.deepEqual(second.leases.map((l) => l.key), ["10.244.1.0-24"]);
          assertReported(second.errors, kinds);
          // A fresh store (full validation) sees the same.
          const fresh = new DirStore(path.join(dir, "leases"), mode === "reader threads" ? { readers: 2, parallelMin: 2 } : {});
          const third = await fresh.list();
          fresh.close();
          assert.deepEqual(third.leases.map((l) => l.key), ["10.244.1.0-24"]);
          assertReported(third.errors, kinds);
          // The FIFO never had a reader: a writer opening it without blocking finds none.
          await assert.rejects(fs.open(path.join(sub, "10.244.156.0-24"), constants.O_WRONLY | constants.O_NONBLOCK),
            (e) => (e as NodeJS.ErrnoException).code === "ENXIO");
        } finally {
          s.close();
        }
      } finally {
        await close();
      }
    });
  });
}

test("a FIFO planted after the first list (a change event) is reported; watch + list deliver an honest lease written afterwards", { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const s = new DirStore(path.join(dir, "leases"));
    const sub = s.subnetsDir;
    let wake: () => void = () => undefined;
    const stop = s.watch(() => wake(), { debounceMs: 20 });
    try {
      assert.deepEqual(await s.list(), { leases: [], errors: [] });
      let fired = new Promise<void>((r) => (wake = r));
      await run("mkfifo", [path.join(sub, "10.244.156.0-24")]);
      await fired;
      const a = await s.list();
      assert.equal(a.errors.length, 1);
      assert.ok(isTwillError(a.errors[0]!.error, "ERR_LEASE_FILE") && /is a FIFO/.test(a.errors[0]!.error.message));
      fired = new Promise<void>((r) => (wake = r));
      const t0 = performance.now();
      await fs.writeFile(path.join(sub, "10.244.1.0-24"), HONEST);
      await fired;
      const b = await s.list();
      assert.deepEqual(b.leases.map((l) => l.key), ["10.244.1.0-24"]);
      assert.ok(performance.now() - t0 < 1000, `delivered in ${(performance.now() - t0).toFixed(0)} ms`);
      // A lease file replaced by a FIFO: reported, the lease is gone from the list.
      await fs.rm(path.join(sub, "10.244.1.0-24"));
      await run("mkfifo", [path.join(sub, "10.244.1.0-24")]);
      const c = await s.list();
      assert.deepEqual(c.leases, []);
      assert.deepEqual(c.errors.map((e) => e.key), ["10.244.1.0-24", "10.244.156.0-24"]);
    } finally {
      stop();
      s.close();
    }
  });
});

test("a file swapped between a lease and a FIFO or symlink while lists run: never blocks, each list reports it or lists it", { timeout: 30_000 }, async () => {
  await withDir(async (dir) => {
    const sub = path.join(dir, "subnets");
    await fs.mkdir(sub);
    for (let i = 1; i <= 20; i++) await fs.writeFile(path.join(sub, `10.244.${i}.0-24`), HONEST);
    await fs.writeFile(path.join(dir, "outside"), V4("02:00:00:00:00:99"));
    // A shell swaps subnets/10.244.100.0-24 (dotfiles are staged and ignored) as fast as it can, until
    // the stop file exists: it then ends between two swaps (a killed shell could leave an mv running
    // that puts a file back while the directory is being removed).
    const stop = path.join(dir, "stop");
    const swapper = execFile("sh", ["-c", `cd ${JSON.stringify(sub)} && while [ ! -e ${JSON.stringify(stop)} ]; do
      printf '%s' '${HONEST}' > .r && mv -f .r 10.244.100.0-24
      mkfifo .f && mv -f .f 10.244.100.0-24
      ln -s ../outside .l && mv -f .l 10.244.100.0-24
    done`]);
    const swapperDone = new Promise<void>((resolve) => swapper.once("exit", () => resolve()));
    try {
      const seen = new Set<string>();
      const t0 = performance.now();
      while (performance.now() - t0 < 2000) {
        for (const opts of [{}, { readers: 2, parallelMin: 2 }]) {
          const s = new DirStore(dir, opts);
          const { leases, errors } = await s.list();
          s.close();
          assert.equal(leases.filter((l) => l.key !== "10.244.100.0-24").length, 20);
          const mine = leases.find((l) => l.key === "10.244.100.0-24");
          if (mine) {
            assert.equal(mine.backendData?.vtepMAC, "02:00:00:00:00:01", "the symlink's target was read");
            seen.add("lease");
          }
          for (const e of errors) {
            assert.equal(e.key, "10.244.100.0-24");
            assert.ok(isTwillError(e.error, "ERR_LEASE_FILE"), e.error.message);
            seen.add(e.error.message.replace(/^.*10\.244\.100\.0-24 /, ""));
          }
        }
      }
      console.log(`seen: ${[...seen].join("; ")}`);
      assert.ok(seen.size >= 2, [...seen].join("; "));
    } finally {
      await fs.writeFile(stop, "");
      await swapperDone;
    }
  });
});

test("the network config and the index: a FIFO there does not hold the store", { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    await run("mkfifo", [path.join(dir, "config")]);
    await run("mkfifo", [path.join(dir, ".subnets.index")]);
    await fs.mkdir(path.join(dir, "subnets"));
    for (let i = 1; i <= 3; i++) await fs.writeFile(path.join(dir, "subnets", `10.244.${i}.0-24`), HONEST);
    const s = new DirStore(dir, { indexMinLeases: 0 });
    try {
      await assert.rejects(s.readConfig(), (e) => isTwillError(e, "ERR_STORE") && /network config .* is a FIFO/.test(e.message));
      assert.equal((await s.list()).leases.length, 3, "the index is a hint: a FIFO there is ignored");
    } finally {
      s.close();
    }
  });
});

test("readRegularFile: a regular file is read, anything else is refused by its kind without being opened", async () => {
  await withDir(async (dir) => {
    await fs.writeFile(path.join(dir, "f"), "hello");
    const ok = await readRegularFile(path.join(dir, "f"), 5);
    assert.ok(ok.ok && ok.text === "hello");
    const big = await readRegularFile(path.join(dir, "f"), 4);
    assert.ok(!big.ok && big.why === "is 5 bytes, more than 4");
    await fs.symlink("f", path.join(dir, "l"));
    const link = await readRegularFile(path.join(dir, "l"), 5);
    assert.ok(!link.ok && link.why === "is a symlink, not a regular file");
    await assert.rejects(readRegularFile(path.join(dir, "missing"), 5), (e) => (e as NodeJS.ErrnoException).code === "ENOENT");
  });
});

test("lease writes: files 0644 and new directories 0755 whatever the umask; temp names unpredictable; nothing left behind", async () => {
  for (const mask of [0o077, 0o000, 0o027]) {
    await withDir(async (dir) => {
      await withUmask(mask, async () => {
        const root = path.join(dir, "a", "leases"); // neither exists yet: the store creates both (and subnets/)
        const s = new DirStore(root);
        const victim = path.join(dir, "victim");
        await fs.writeFile(victim, "untouched");
        const lease = "10.244.7.0-24";
        await s.writeLease({ key: lease, subnet: parsePrefix("10.244.7.0/24"), publicIP: parseIP("192.168.1.7"), backendType: "vxlan", backendData: { vni: 1, vtepMAC: "02:00:00:00:00:07" } });
        assert.equal(statSync(path.join(dir, "a")).mode & 0o777, 0o755, `parent dir mode, umask ${mask.toString(8)}`);
        assert.equal(statSync(root).mode & 0o777, 0o755, `lease dir mode, umask ${mask.toString(8)}`);
        assert.equal(statSync(path.join(root, "subnets")).mode & 0o777, 0o755, `subnets/ mode, umask ${mask.toString(8)}`);
        assert.equal(statSync(path.join(root, "subnets", lease)).mode & 0o777, 0o644, `lease file mode, umask ${mask.toString(8)}`);
        // Predictable names of the old scheme (.<key>.<pid>.<n>.tmp), planted as symlinks to a file outside: none may be followed.
        for (let n = 0; n < 20; n++) await fs.symlink(victim, path.join(root, "subnets", `.10.244.8.0-24.${process.pid}.${n}.tmp`));
        await fs.writeFile(path.join(root, "config"), `{"Network":"10.244.0.0/16"}`);
        const got = await s.acquire({ publicIP: parseIP("192.168.1.8"), backendData: { vni: 1, vtepMAC: "02:00:00:00:00:08" }, random: () => 0 });
        await s.writeConfig(`{"Network":"10.244.0.0/16"}`);
        assert.equal(statSync(path.join(root, "config")).mode & 0o777, 0o644, "config mode");
        assert.equal(statSync(path.join(root, "subnets", got.key)).mode & 0o777, 0o644, "created lease mode");
        assert.equal(await fs.readFile(victim, "utf8"), "untouched");
        const left = (await fs.readdir(path.join(root, "subnets"))).filter((n) => n.startsWith(".") && !n.startsWith(".10.244.8.0-24."));
        assert.deepEqual(left, [], "no temp files left behind");
        s.close();
      });
    });
  }
});

test("subnet file: a symlink planted at the old temp name or as the file is not followed; modes 0644 / 0755 whatever the umask", async () => {
  const data = { network: parsePrefix("10.244.0.0/16"), subnet: parsePrefix("10.244.1.0/24"), mtu: 1450, ipMasq: true };
  for (const mask of [0o077, 0o000]) {
    await withDir(async (dir) => {
      await withUmask(mask, async () => {
        const victim = path.join(dir, "victim");
        await fs.writeFile(victim, "untouched");
        const runDir = path.join(dir, "run", "flannel");
        const file = path.join(runDir, "subnet.env");
        await writeSubnetFile(file, data);
        assert.equal(statSync(path.join(dir, "run")).mode & 0o777, 0o755, `run/ mode, umask ${mask.toString(8)}`);
        assert.equal(statSync(runDir).mode & 0o777, 0o755, `run/flannel mode, umask ${mask.toString(8)}`);
        assert.equal(statSync(file).mode & 0o777, 0o644, `subnet file mode, umask ${mask.toString(8)}`);
        // The old predictable temp name, and the file itself, as symlinks to the victim.
        await fs.symlink(victim, path.join(runDir, `.subnet.env.${process.pid}`));
        await fs.rm(file);
        await fs.symlink(victim, file);
        const back = await readSubnetFile(file);
        assert.ok(back && back.subnet === undefined && /is a symlink, not a regular file: not read/.test(back.warnings.join()), JSON.stringify(back));
        await writeSubnetFile(file, data);
        assert.equal(await fs.readFile(victim, "utf8"), "untouched");
        assert.ok(lstatSync(file).isFile(), "the symlink was replaced, not written through");
        assert.equal(await fs.readFile(file, "utf8"), formatSubnetFile(data));
        assert.equal(statSync(file).mode & 0o777, 0o644);
        assert.deepEqual((await fs.readdir(runDir)).sort(), [`.subnet.env.${process.pid}`, "subnet.env"], "no temp file left");
        // A FIFO as the subnet file: reading does not block, the next write replaces it.
        await fs.rm(file);
        await run("mkfifo", [file]);
        assert.match((await readSubnetFile(file))!.warnings.join(), /is a FIFO/);
        await writeSubnetFile(file, data);
        assert.ok(lstatSync(file).isFile());
      });
    });
  }
});

test("writeExclusive never follows or reuses what is at the path; makeDirs sets the mode of what it creates only", async () => {
  await withDir(async (dir) => {
    const victim = path.join(dir, "victim");
    await fs.writeFile(victim, "untouched");
    await fs.symlink(victim, path.join(dir, "planted"));
    await fs.symlink(path.join(dir, "nowhere"), path.join(dir, "dangling"));
    await assert.rejects(writeExclusive(path.join(dir, "planted"), "x", 0o644), (e) => (e as NodeJS.ErrnoException).code === "EEXIST");
    await assert.rejects(writeExclusive(path.join(dir, "dangling"), "x", 0o644), (e) => (e as NodeJS.ErrnoException).code === "EEXIST");
    await assert.rejects(fs.stat(path.join(dir, "nowhere")), "the dangling symlink's target was not created");
    assert.equal(await fs.readFile(victim, "utf8"), "untouched");
    await withUmask(0o077, async () => {
      await fs.mkdir(path.join(dir, "mine"), { mode: 0o711 });
      await fs.chmod(path.join(dir, "mine"), 0o711);
      makeDirs(path.join(dir, "mine", "x", "y"), 0o755);
    });
    assert.equal(statSync(path.join(dir, "mine")).mode & 0o777, 0o711, "an existing directory keeps its mode");
    assert.equal(statSync(path.join(dir, "mine", "x")).mode & 0o777, 0o755);
    assert.equal(statSync(path.join(dir, "mine", "x", "y")).mode & 0o777, 0o755);
  });
});
