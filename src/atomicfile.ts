/**
 * Files and directories twill writes for others to read (the subnet file
 * the CNI plugin reads, lease files, the lease index, the network config):
 * written atomically, with explicit modes, in directories whose other
 * writers we do not trust to play fair.
 *
 * How it works:
 *  - writeExclusive creates a new file with O_CREAT | O_EXCL | O_NOFOLLOW:
 *    it never opens a file or follows a symlink someone planted at the path
 *    (EEXIST instead); fchmod sets `mode` on the fd (the umask does not
 *    apply), then write and fsync.
 *  - writeTemp does that at `.<name>.<16 random hex digits>.tmp` beside the
 *    target: a name nobody can predict, so nobody can plant a file there
 *    first. (A name already starting with "." keeps its one dot.)
 *  - writeAtomic = writeTemp, rename(2) over the target (a reader sees the
 *    old file or the new one, never half of one), fsync of the directory
 *    (the rename survives a crash). On failure the temp file is removed.
 *  - makeDirs is mkdir -p that gives every directory it creates `mode`,
 *    set by fchmod on a directory fd opened with O_NOFOLLOW (the umask does
 *    not apply, and a directory swapped for a symlink is not followed).
 *    Directories that exist are left as they are: their mode is an admin's
 *    choice.
 * Errors are raw errno errors: callers wrap them in their own TwillError
 * (ERR_STORE, ERR_SUBNET_FILE), naming the file.
 */
import { randomBytes } from "node:crypto";
import { closeSync, constants, fchmodSync, mkdirSync, openSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";

const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Creates `file` (it must not exist, not even as a dangling symlink) holding `text`, with `mode`, synced to disk. */
export async function writeExclusive(file: string, text: string, mode: number): Promise<void> {
  const fh = await fs.open(file, CREATE_FLAGS, mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The unpredictable temp path writeTemp uses for `name` in `dir`. */
export function tempPath(dir: string, name: string): string {
  return path.join(dir, `${name.startsWith(".") ? "" : "."}${name}.${randomBytes(8).toString("hex")}.tmp`);
}

/** Writes `text` to a new temp file beside `name` in `dir` (see writeExclusive); returns its path. */
export async function writeTemp(dir: string, name: string, text: string, mode: number): Promise<string> {
  const tmp = tempPath(dir, name);
  try {
    await writeExclusive(tmp, text, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") await fs.rm(tmp, { force: true });
    throw e;
  }
  return tmp;
}

/** fsync(2)s a directory, so the names created or renamed in it are on disk (filesystems that cannot: ignored). */
export async function syncDir(dir: string): Promise<void> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch {
    return;
  }
  try {
    await fh.sync();
  } catch (e) {
    if (!["EINVAL", "ENOTSUP", "EOPNOTSUPP", "EBADF"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
  } finally {
    await fh.close();
  }
}

/** Replaces `file` with `text` atomically, with `mode`; see the design note. */
export async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const dir = path.dirname(file);
  const tmp = await writeTemp(dir, path.basename(file), text, mode);
  try {
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(dir);
}

/** mkdir -p `dir`; every directory it creates gets `mode` whatever the umask (existing ones are left alone). */
export function makeDirs(dir: string, mode: number): void {
  const first = mkdirSync(dir, { recursive: true, mode });
  if (first === undefined) return;
  const created: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    created.unshift(d);
    if (d === path.resolve(first) || d === path.dirname(d)) break;
  }
  for (const d of created) {
    const fd = openSync(d, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      fchmodSync(fd, mode);
    } finally {
      closeSync(fd);
    }
  }
}
