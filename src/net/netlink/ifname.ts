/**
 * Interface names, checked against the kernel's rules before any request
 * carries them: 1-15 bytes (IFNAMSIZ - 1), no slash, blank or NUL, not "."
 * or "..". We also keep to the characters iproute2 users write (letters,
 * digits, _ . : @ -), as twill always has.
 */
import { TwillError } from "../../errors.js";

const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

/** Returns `name` if it is a valid interface name, else throws ERR_IFACE. */
export function checkIfName(name: string, what = "interface name"): string {
  if (typeof name !== "string" || !IFNAME.test(name) || name === "." || name === "..") {
    throw new TwillError("ERR_IFACE", `${what} ${JSON.stringify(name)} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . : @ -)`);
  }
  return name;
}
