/**
 * The pin directory: where twill pins its maps (<pin-dir>/maps/twill_*) and
 * tcx links (<pin-dir>/links/<role>-<ifindex>), checked before anything is
 * created in it or removed from it.
 *
 * How it works:
 *  1) `requireBpffs` reads /proc/self/mountinfo (dataplane/choose.ts
 *     fsTypeOf) and refuses a --bpf-pin-dir that is not on a bpffs mount,
 *     with ERR_INVALID_FLAG naming the flag, the path and the filesystem it
 *     is on. Under `ip netns exec` /sys is remounted without /sys/fs/bpf, so
 *     the default pin directory lands on sysfs: this is the error then.
 *  2) `makePinDir` creates the directories one level at a time with plain
 *     mkdir(2) and fails once, with the errno, naming the directory. (Node's
 *     mkdirSync({recursive: true}) retries the parent for ever when mkdir
 *     answers ENOENT for a directory whose parent exists, which sysfs does:
 *     a daemon started under `ip netns exec` spun at ~90 % of a core.)
 */
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { TwillError } from "../errors.js";
import { fsTypeOf } from "../dataplane/choose.js";

const readMountinfo = (): string => readFileSync("/proc/self/mountinfo", "utf8");

/** Whether `pinDir` lies on a bpffs mount. */
export function isOnBpffs(pinDir: string, mountinfo: () => string = readMountinfo): boolean {
  return fsTypeOf(pinDir, mountinfo()) === "bpf";
}

/** Throws ERR_INVALID_FLAG unless `pinDir` lies on a bpffs mount. */
export function requireBpffs(pinDir: string, mountinfo: () => string = readMountinfo, flag = "--bpf-pin-dir"): void {
  let type: string | undefined;
  try {
    type = fsTypeOf(pinDir, mountinfo());
  } catch (e) {
    throw new TwillError("ERR_INVALID_FLAG", `cannot tell whether ${flag} ${pinDir} is on a bpffs: reading /proc/self/mountinfo failed (${(e as Error).message})`);
  }
  if (type !== "bpf") {
    throw new TwillError("ERR_INVALID_FLAG",
      `invalid value ${JSON.stringify(pinDir)} for ${flag}: not on a bpffs mount (it is on ${type ?? "no mount"}; mount one, e.g. \`mount -t bpf bpf /sys/fs/bpf\`, or pass ${flag} on a bpffs)`);
  }
}

/** mkdir -p that fails once: each missing level is created with one mkdir(2); an error names the directory. */
export function makePinDir(dir: string): void {
  const target = resolve(dir);
  const missing: string[] = [];
  for (let d = target; ; d = dirname(d)) {
    try {
      if (!statSync(d).isDirectory()) throw new TwillError("ERR_INVALID_FLAG", `cannot create the pin directory ${target}: ${d} is not a directory`);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw wrap(e, target, d);
      if (dirname(d) === d) throw wrap(e, target, d);
      missing.unshift(d);
    }
  }
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw wrap(e, target, d);
    }
  }
}

function wrap(e: unknown, target: string, at: string): Error {
  if (e instanceof TwillError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? "error";
  return new TwillError("ERR_BPF_MAP", `cannot create the pin directory ${target}: mkdir ${at}: ${code} (is it on a bpffs? see --bpf-pin-dir)`, { cause: e });
}
