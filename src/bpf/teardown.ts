/**
 * Removing exactly what twill pinned and attached on a node — nothing else.
 *
 * How it works:
 *  1) The pin directory must be on a bpffs (bpf/pindir.ts requireBpffs):
 *     nothing is removed from a path that could be an ordinary directory.
 *  2) Pins: only twill's names are removed, one unlink each — the tcx links
 *     <pin-dir>/links/<role>-<ifindex> (each detached first) and the maps
 *     <pin-dir>/maps/twill_*. Then the directories links/, maps/ and the pin
 *     directory itself are removed only if that left them empty (rmdir, never
 *     a recursive delete). Another tool's pins, even inside the pin
 *     directory, stay, and so does the directory that holds them.
 *  3) tc cls_bpf filters: on every link, both directions, the filter at
 *     twill's handle and priority is removed only when its program is named
 *     twill_* (bpf/tc.ts tcDetachOwned). Other filters stay.
 */
import { readdirSync, rmdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { detachPinned, listPinnedLinks } from "./attach.js";
import { requireBpffs } from "./pindir.js";
import { PROG_PREFIX, tcDetachOwned } from "./tc.js";

/** A tcx link pin's name: <role>-<ifindex> (dataplane/bpf.ts linkPin). */
const LINK_PIN = /^[a-z_]+-\d+$/;

export interface PinsRemoved { links: string[]; maps: string[]; kept: string[] }

/** Removes twill's pins under `pinDir` (see the header); returns what it removed and what it left. */
export function removeTwillPins(pinDir: string, mountinfo?: () => string): PinsRemoved {
  requireBpffs(pinDir, mountinfo);
  const out: PinsRemoved = { links: [], maps: [], kept: [] };
  const linksDir = join(pinDir, "links");
  for (const l of listPinnedLinks(linksDir)) {
    // Only what opens as a link under a link pin's name: anything else there is not ours to remove.
    if (LINK_PIN.test(l.name) && l.info) {
      detachPinned(l.path);
      out.links.push(l.name);
    } else out.kept.push(l.path);
  }
  const mapsDir = join(pinDir, "maps");
  for (const name of entries(mapsDir)) {
    if (name.startsWith(PROG_PREFIX)) {
      unlinkQuietly(join(mapsDir, name));
      out.maps.push(name);
    } else out.kept.push(join(mapsDir, name));
  }
  for (const d of [linksDir, mapsDir, pinDir]) rmdirIfEmpty(d);
  for (const name of entries(pinDir)) if (name !== "links" && name !== "maps") out.kept.push(join(pinDir, name));
  return out;
}

/** Removes twill's tc filters (both directions) from each ifindex; returns the hooks it cleared. */
export function detachTwillFilters(links: ReadonlyArray<{ ifindex: number; name: string }>): string[] {
  const removed: string[] = [];
  for (const l of links) {
    for (const dir of ["ingress", "egress"] as const) if (tcDetachOwned(l.ifindex, dir) === "removed") removed.push(`${l.name} ${dir}`);
  }
  return removed;
}

function entries(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

function rmdirIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
  }
}
