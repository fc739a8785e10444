/**
 * Reading a file that anyone with write access to its directory may have
 * planted (a lease file, the network config, the subnet file): only a
 * regular file of bounded size is ever read.
 *
 * How it works:
 *  1) lstat(2) the path. Anything but a regular file — a FIFO, a device, a
 *     socket, a directory, a symlink — is refused without being opened:
 *     opening a FIFO blocks until a writer comes, opening a device may act
 *     on it, a symlink leads to any file the daemon can read. A file larger
 *     than `maxBytes` is refused too (never read whole).
 *  2) open(2) with O_NOFOLLOW | O_NONBLOCK | O_NOCTTY: a path swapped for a
 *     symlink since the lstat fails (ELOOP), one swapped for a FIFO or a
 *     device opens at once instead of waiting for a writer, and
 *  3) fstat(2) on the opened fd confirms a regular file within the cap
 *     before the first read (the race between 1 and 2 is closed here).
 *  4) At most fstat's size is read (maxBytes + 1 when it says 0, so an
 *     oversized file that claims no size is still caught).
 * readRegularFile runs every step as a promise on libuv's thread pool;
 * readRegularFileSync runs the same steps synchronously — for the lease
 * directory's many small files, where a thread-pool round trip per step
 * costs several times the step: it never waits on a file (a FIFO or a
 * device is never opened blocking, a read is bounded by maxBytes), and its
 * caller yields to the event loop between slices. A refusal is a value (the file's kind and size, for the
 * caller's report); ENOENT and I/O errors throw as they are (the caller
 * wraps them in its own TwillError).
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from "node:fs";
import * as fs from "node:fs/promises";

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

export type FileKind = "regular file" | "directory" | "symlink" | "FIFO" | "socket" | "character device" | "block device" | "file of unknown type";

/** What kind of file a stat describes, in words for a report. */
export function fileKind(st: Stats): FileKind {
  if (st.isFile()) return "regular file";
  if (st.isDirectory()) return "directory";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFIFO()) return "FIFO";
  if (st.isSocket()) return "socket";
  if (st.isCharacterDevice()) return "character device";
  if (st.isBlockDevice()) return "block device";
  return "file of unknown type";
}

export interface ReadOk {
  readonly ok: true;
  readonly text: string;
  /** fstat of the fd that was read. */
  readonly stat: Stats;
}

export interface ReadRefused {
  readonly ok: false;
  /** Why, in words: "is a FIFO, not a regular file", "is 70000 bytes, more than 65536". */
  readonly why: string;
  /** The file's stat (lstat, or fstat when the open found something else). */
  readonly stat: Stats;
  /** The path changed between lstat and open: worth looking at again soon. */
  readonly raced: boolean;
}

function refuse(st: Stats, maxBytes: number, raced: boolean): ReadRefused | undefined {
  if (!st.isFile()) return { ok: false, why: `is a ${fileKind(st)}, not a regular file`, stat: st, raced };
  if (st.size > maxBytes) return { ok: false, why: `is ${st.size} bytes, more than ${maxBytes}`, stat: st, raced };
  return undefined;
}

/** readRegularFile, synchronously (same steps, same answers). */
export function readRegularFileSync(file: string, maxBytes: number): ReadOk | ReadRefused {
  const early = refuse(lstatSync(file), maxBytes, false);
  if (early) return early;
  let fd: number;
  try {
    fd = openSync(file, OPEN_FLAGS);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ELOOP") throw e;
    const now = lstatSync(file);
    return refuse(now, maxBytes, true) ?? { ok: false, why: "changed while it was opened", stat: now, raced: true };
  }
  try {
    const st = fstatSync(fd);
    const late = refuse(st, maxBytes, true);
    if (late) return late;
    const want = st.size > 0 ? st.size : maxBytes + 1;
    const buf = Buffer.allocUnsafe(want);
    let n = 0;
    while (n < want) {
      const got = readSync(fd, buf, n, want - n, null);
      if (got === 0) break;
      n += got;
    }
    if (n > maxBytes) return { ok: false, why: `is more than ${maxBytes} bytes`, stat: st, raced: false };
    return { ok: true, text: buf.toString("utf8", 0, n), stat: st };
  } finally {
    closeSync(fd);
  }
}

/** Reads `file` if it is a regular file of at most `maxBytes`; see the design note. */
export async function readRegularFile(file: string, maxBytes: number): Promise<ReadOk | ReadRefused> {
  const lst = await fs.lstat(file);
  const early = refuse(lst, maxBytes, false);
  if (early) return early;
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, OPEN_FLAGS);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ELOOP") throw e;
    const now = await fs.lstat(file); // swapped for a symlink since the lstat
    return refuse(now, maxBytes, true) ?? { ok: false, why: "changed while it was opened", stat: now, raced: true };
  }
  try {
    const st = await fh.stat();
    const late = refuse(st, maxBytes, true);
    if (late) return late;
    const want = st.size > 0 ? st.size : maxBytes + 1;
    const buf = Buffer.allocUnsafe(want);
    let n = 0;
    while (n < want) {
      const { bytesRead } = await fh.read(buf, n, want - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > maxBytes) return { ok: false, why: `is more than ${maxBytes} bytes`, stat: st, raced: false };
    return { ok: true, text: buf.toString("utf8", 0, n), stat: st };
  } finally {
    await fh.close();
  }
}
