/**
 * The node name, checked as Kubernetes checks a Node's name, and the pin
 * directory derived from it.
 *
 * How it works: a node name is an RFC 1123 DNS subdomain (apimachinery's
 * IsDNS1123Subdomain: lower-case alphanumerics, '-' and '.', starting and
 * ending with an alphanumeric, at most 253 characters), so it can never hold
 * a '/' or be "." or "..": the default pin directory,
 * path.join(PIN_ROOT, name), stays a direct child of PIN_ROOT, which
 * `defaultPinDir` checks again rather than trusting the pattern. The
 * hostname fallback is lower-cased first, as the kubelet does when it
 * registers the node. Errors: ERR_INVALID_FLAG naming where the name came
 * from (--node-name, $NODE_NAME, the hostname) and the value.
 */
import { join, relative, isAbsolute, sep } from "node:path";
import { TwillError } from "../errors.js";

/** Where the default pin directories of all nodes live. */
export const PIN_ROOT = "/sys/fs/bpf/twill";

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
export const NODE_NAME_MAX = 253;

/** Why `name` is not a valid node name; "" when it is. */
export function nodeNameProblem(name: string): string {
  if (name.length === 0) return "empty";
  if (name.length > NODE_NAME_MAX) return `longer than ${NODE_NAME_MAX} characters`;
  if (!DNS1123_SUBDOMAIN.test(name)) {
    return "not a Kubernetes node name (an RFC 1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)";
  }
  return "";
}

/** Returns `name` when valid; throws ERR_INVALID_FLAG naming `where` (e.g. "--node-name") and the value. */
export function checkNodeName(name: string, where: string): string {
  const why = nodeNameProblem(name);
  if (why) throw new TwillError("ERR_INVALID_FLAG", `invalid value ${JSON.stringify(name)} for ${where}: ${why}`);
  return name;
}

/** PIN_ROOT/<name>, refused unless it is a direct child of PIN_ROOT. */
export function defaultPinDir(name: string): string {
  const dir = join(PIN_ROOT, name);
  const rel = relative(PIN_ROOT, dir);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel) || rel.includes(sep)) {
    throw new TwillError("ERR_INVALID_FLAG", `invalid value ${JSON.stringify(name)} for --node-name: the pin directory ${dir} is not inside ${PIN_ROOT}`);
  }
  return dir;
}
