/**
 * Attaching programs to tc with tcx links, pinned so they outlive the
 * controller.
 *
 * How it works: each attachment (program role, interface, direction) has a
 * pin path. If a pinned link exists and is still attached to that
 * interface, we adopt it: when it already runs a program with the same tag
 * nothing changes; otherwise bpf_link_update swaps the program atomically
 * (no packet sees a missing hook). A pinned link whose interface vanished is
 * detached and unpinned. A missing link is created with bpf_link_create
 * (BPF_TCX_INGRESS/EGRESS, not in libbpf 1.1's headers) and pinned.
 * `attach` picks tcx or tc cls_bpf (bpf/tc.ts): "auto" tries tcx and falls
 * back to tc for good when the kernel does not know tcx. Attaching one way
 * removes twill's attachment of the other way on that hook, so switching
 * modes never leaves a program running twice (a tc filter only when it runs
 * a twill_* program: bpf/tc.ts tcDetachOwned). Pin directories are created
 * by bpf/pindir.ts makePinDir, which fails once instead of looping.
 * Re-asserting an attachment that is in place (every reconcile) costs four
 * calls: open the pin, read the link's info, read our program's id and tag,
 * close. The tag of the program the link runs is read from the kernel only
 * the first time that program id is met (ids are not reused while the
 * system runs, and a program's tag never changes).
 */
import { unlinkSync, readdirSync } from "node:fs";
import { makePinDir } from "./pindir.js";
import { dirname, join } from "node:path";
import { TwillError } from "../errors.js";
import { libbpf, check, closeFd, errnoName } from "./libbpf.js";
import { tcAttach, tcDetachOwned } from "./tc.js";

export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
export type Direction = "ingress" | "egress";

export interface LinkInfo { id: number; progId: number; ifindex: number; attachType: number }

const ENOENT = 2;
/** bpf_*_info scratch space: every call is synchronous, and its fields are copied out at once. */
const infoBuf = Buffer.alloc(64);
const infoLen = new Uint32Array(1);

function getInfo(fd: number, what: string): Buffer {
  infoBuf.fill(0);
  infoLen[0] = infoBuf.length;
  check(libbpf().get_info(fd, infoBuf, infoLen), "ERR_BPF_ATTACH", `bpf_obj_get_info_by_fd(${what})`);
  return infoBuf;
}

export function linkInfo(fd: number): LinkInfo {
  const info = getInfo(fd, "link");
  return { id: info.readUInt32LE(4), progId: info.readUInt32LE(8), ifindex: info.readUInt32LE(16), attachType: info.readUInt32LE(20) };
}

/** A program's kernel id and 8-byte tag, by fd (one call). */
function progIdentity(fd: number): { id: number; tag: string } {
  const info = getInfo(fd, "prog");
  return { id: info.readUInt32LE(4), tag: info.toString("hex", 8, 16) };
}

/** The 8-byte tag of a program, by fd. */
export function progTag(fd: number): string {
  return progIdentity(fd).tag;
}

/** Tags of the programs met by id (ids are not reused while the system runs; a tag never changes). */
const tagById = new Map<number, string>();
const TAGS_KEPT = 256;

function progTagById(id: number): string | undefined {
  const known = tagById.get(id);
  if (known !== undefined) return known;
  const fd = libbpf().prog_by_id(id);
  if (fd < 0) return undefined;
  try {
    const tag = progTag(fd);
    if (tagById.size >= TAGS_KEPT) tagById.clear();
    tagById.set(id, tag);
    return tag;
  } finally {
    closeFd(fd);
  }
}

/** Whether the program `progId` (a link's) is `progFd`'s program or one with the same tag. */
function sameProgram(progId: number, progFd: number): boolean {
  const ours = progIdentity(progFd);
  return progId === ours.id || progTagById(progId) === ours.tag;
}

export type AttachResult = "created" | "updated" | "adopted";

export function attachTcx(progFd: number, ifindex: number, dir: Direction, pinPath: string): AttachResult {
  const a = libbpf();
  const type = dir === "ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
  // No stat first: opening the pin says whether it is there (ENOENT).
  const fd = a.obj_get(pinPath);
  if (fd >= 0) {
    try {
      const li = linkInfo(fd);
      if (li.ifindex === ifindex && li.attachType === type) {
        if (sameProgram(li.progId, progFd)) return "adopted";
        check(a.link_update(fd, progFd, null), "ERR_BPF_ATTACH", `replacing the program on ifindex ${ifindex} ${dir}`);
        return "updated";
      }
      a.link_detach(fd);
    } finally {
      closeFd(fd);
    }
  }
  if (fd !== -ENOENT) unlinkQuietly(pinPath);
  const lfd = a.link_create(progFd, ifindex, type, null);
  if (lfd < 0) {
    const e = new TwillError("ERR_BPF_ATTACH", `attaching tcx ${dir} on ifindex ${ifindex}: ${errnoName(lfd)}`);
    (e as { errno?: number }).errno = -lfd;
    throw e;
  }
  try {
    makePinDir(dirname(pinPath));
    check(a.obj_pin(lfd, pinPath), "ERR_BPF_ATTACH", `pinning link at ${pinPath}`);
  } finally {
    closeFd(lfd);
  }
  return "created";
}

/** Removes a pin (or a stray file in its place); false when there was none. */
function unlinkQuietly(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

/** Detaches and unpins one pinned link; false when there was none. */
export function detachPinned(pinPath: string): boolean {
  const a = libbpf();
  const fd = a.obj_get(pinPath);
  if (fd === -ENOENT) return false;
  if (fd >= 0) {
    a.link_detach(fd);
    closeFd(fd);
  }
  return unlinkQuietly(pinPath);
}

/** Pinned links in a directory, with what they are attached to (ifindex 0 = defunct). */
export function listPinnedLinks(dir: string): Array<{ name: string; path: string; info?: LinkInfo }> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  return names.map((name) => {
    const path = join(dir, name);
    const fd = libbpf().obj_get(path);
    if (fd < 0) return { name, path };
    try {
      return { name, path, info: linkInfo(fd) };
    } catch {
      return { name, path };
    } finally {
      closeFd(fd);
    }
  });
}

export type AttachMode = "auto" | "tcx" | "tc";

/** Attaches with tcx or tc as `mode` says; returns what happened and the mode used. */
export class Attacher {
  private mode: AttachMode;
  constructor(mode: AttachMode) {
    this.mode = mode;
  }
  get effective(): AttachMode {
    return this.mode;
  }

  attach(progFd: number, ifindex: number, dir: Direction, pinPath: string): AttachResult {
    if (this.mode !== "tc") {
      try {
        const r = attachTcx(progFd, ifindex, dir, pinPath);
        if (r !== "adopted") tcDetachOwned(ifindex, dir); // a tc filter from an earlier mode (twill's program only)
        if (this.mode === "auto") this.mode = "tcx";
        return r;
      } catch (e) {
        const errno = (e as { errno?: number }).errno;
        // EINVAL/EOPNOTSUPP/ENOTSUPP from link_create: this kernel has no tcx.
        if (this.mode !== "auto" || !(errno === 22 || errno === 95 || errno === 524)) throw e;
        this.mode = "tc";
      }
    }
    detachPinned(pinPath);
    return tcAttach(progFd, ifindex, dir, (id) => sameProgram(id, progFd));
  }

  /** Removes twill's program from a hook, either kind. */
  detach(ifindex: number, dir: Direction, pinPath: string): void {
    detachPinned(pinPath);
    tcDetachOwned(ifindex, dir);
  }
}
