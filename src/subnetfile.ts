/**
 * The subnet file read by the flannel CNI plugin (--subnet-file, default
 * /run/flannel/subnet.env), written exactly as flanneld's WriteSubnetFile:
 *
 *   FLANNEL_NETWORK=10.244.0.0/16
 *   FLANNEL_SUBNET=10.244.1.1/24            <- first address of our subnet
 *   FLANNEL_IPV6_NETWORK=fc00::/48
 *   FLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64
 *   FLANNEL_MTU=1450
 *   FLANNEL_IPMASQ=true
 *
 * How it works: the caller passes the network and subnet of each enabled
 * family (flannel: `if config.EnableIPv4`); those are written in that order, then
 * MTU and IPMASQ. The text goes to a new temp file beside the target, with
 * an unpredictable name, created with O_EXCL | O_NOFOLLOW (a file or symlink
 * planted there is never followed), mode 0644 whatever the umask, synced,
 * and renamed over the target (atomicfile.ts), so the CNI plugin never reads
 * half a file. Its directory is created first, 0755 whatever the umask (the
 * CNI plugin runs as root, but `cat` by an admin should work). Reading (for the "previous subnet" at
 * start-up) is forgiving like flannel's: a value that does not parse is
 * skipped (and named in `warnings`), and FLANNEL_SUBNET's "10.244.1.1/24"
 * comes back as the subnet 10.244.1.0/24.
 */
import * as path from "node:path";
import { makeDirs, writeAtomic } from "./atomicfile.js";
import { TwillError } from "./errors.js";
import { readRegularFile } from "./saferead.js";
import { formatIP, formatPrefix, makePrefix, nthIP, parsePrefix, type Family, type Prefix } from "./net/ip.js";

/** What to write: a family is written when its network and subnet are given. */
export interface SubnetFileData {
  readonly network?: Prefix;
  readonly subnet?: Prefix;
  readonly ipv6Network?: Prefix;
  readonly ipv6Subnet?: Prefix;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

export interface SubnetFileValues {
  readonly network?: Prefix;
  readonly subnet?: Prefix;
  readonly ipv6Network?: Prefix;
  readonly ipv6Subnet?: Prefix;
  readonly mtu?: number;
  readonly ipMasq?: boolean;
  /** Lines or values that were skipped, for the log. */
  readonly warnings: readonly string[];
}

/** The file's text, byte for byte what flanneld writes. */
export function formatSubnetFile(d: SubnetFileData): string {
  const families: [string, Prefix | undefined, Prefix | undefined][] = [
    ["FLANNEL", d.network, d.subnet],
    ["FLANNEL_IPV6", d.ipv6Network, d.ipv6Subnet],
  ];
  let out = "";
  for (const [name, network, subnet] of families) {
    if (!network && !subnet) continue;
    if (!network || !subnet) {
      throw new TwillError("ERR_SUBNET_FILE", `cannot write the subnet file: ${name}_${network ? "SUBNET" : "NETWORK"} is unknown`);
    }
    out += `${name}_NETWORK=${formatPrefix(network)}\n`;
    out += `${name}_SUBNET=${formatIP(nthIP(subnet, 1))}/${subnet.len}\n`;
  }
  return out + `FLANNEL_MTU=${d.mtu}\nFLANNEL_IPMASQ=${d.ipMasq}\n`;
}

/** The subnet file's mode, and its directory's when we create it. */
export const SUBNET_FILE_MODE = 0o644;
export const SUBNET_DIR_MODE = 0o755;
/** The most of an existing subnet file read back (flannel's is ~150 bytes). */
const MAX_SUBNET_FILE_BYTES = 64 * 1024;

/** Writes the file atomically (unpredictable temp + rename), creating its directory. */
export async function writeSubnetFile(file: string, d: SubnetFileData): Promise<void> {
  const text = formatSubnetFile(d);
  try {
    makeDirs(path.dirname(file), SUBNET_DIR_MODE);
    await writeAtomic(file, text, SUBNET_FILE_MODE);
  } catch (e) {
    throw new TwillError("ERR_SUBNET_FILE", `cannot write the subnet file ${file}: ${(e as Error).message}`, { cause: e, retryable: true });
  }
}

/** godotenv's KEY=VALUE lines: comments, "export ", and quotes allowed. */
function envLines(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim().replace(/^export\s+/, "");
    const m = /^([A-Za-z_][A-Za-z0-9_.]*)\s*[=:]\s*(.*)$/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const q = /^(["'])(.*)\1$/.exec(m[2]!);
    vars.set(m[1]!, q ? q[2]! : m[2]!.replace(/\s+#.*$/, "").trim());
  }
  return vars;
}

/** Parses the file's text; values that do not parse are skipped and reported. */
export function parseSubnetFile(text: string): SubnetFileValues {
  const vars = envLines(text);
  const warnings: string[] = [];
  const prefix = (name: string, family: Family): Prefix | undefined => {
    const v = vars.get(name);
    if (v === undefined) return undefined;
    try {
      const p = parsePrefix(v, name, true);
      if (p.ip.family !== family) throw new Error(`is not IPv${family}`);
      return makePrefix(p.ip, p.len);
    } catch {
      warnings.push(`${name}=${v} is not an IPv${family} prefix`);
      return undefined;
    }
  };
  const network = prefix("FLANNEL_NETWORK", 4);
  const subnet = prefix("FLANNEL_SUBNET", 4);
  const ipv6Network = prefix("FLANNEL_IPV6_NETWORK", 6);
  const ipv6Subnet = prefix("FLANNEL_IPV6_SUBNET", 6);
  const mtuText = vars.get("FLANNEL_MTU");
  const mtu = mtuText !== undefined && /^\d{1,5}$/.test(mtuText) ? Number(mtuText) : undefined;
  if (mtuText !== undefined && mtu === undefined) warnings.push(`FLANNEL_MTU=${mtuText} is not a number`);
  const masqText = vars.get("FLANNEL_IPMASQ");
  const ipMasq = masqText === "true" ? true : masqText === "false" ? false : undefined;
  if (masqText !== undefined && ipMasq === undefined) warnings.push(`FLANNEL_IPMASQ=${masqText} is not true or false`);
  return {
    ...(network && { network }), ...(subnet && { subnet }),
    ...(ipv6Network && { ipv6Network }), ...(ipv6Subnet && { ipv6Subnet }),
    ...(mtu !== undefined && { mtu }), ...(ipMasq !== undefined && { ipMasq }),
    warnings,
  };
}

/**
 * Reads the file; undefined when it does not exist. Only a regular file is
 * read (saferead.ts): anything else planted there (a FIFO, a symlink) reads
 * as a file without values, named in `warnings` (the next write replaces it).
 */
export async function readSubnetFile(file: string): Promise<SubnetFileValues | undefined> {
  let got: Awaited<ReturnType<typeof readRegularFile>>;
  try {
    got = await readRegularFile(file, MAX_SUBNET_FILE_BYTES);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new TwillError("ERR_SUBNET_FILE", `cannot read the subnet file ${file}: ${(e as Error).message}`, { cause: e, retryable: true });
  }
  if (!got.ok) return { warnings: [`the subnet file ${file} ${got.why}: not read`] };
  return parseSubnetFile(got.text);
}
