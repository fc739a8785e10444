/**
 * Fuzzing the edges where untyped data enters twill: lease keys and values
 * (flannel's LeaseAttrs JSON), Kubernetes nodes and their annotations, the
 * network config, interface names.
 *
 * How it works: a seeded PRNG (mulberry32). `make test` runs a fixed list
 * of seeds (SEEDS), so CI is reproducible; TWILL_FUZZ_SEED=<n> runs one
 * more (a random one with TWILL_FUZZ_SEED=random; the seed is printed),
 * TWILL_FUZZ_CASES=<n> sets the count per seed. A seed that ever found a
 * bug is added to SEEDS (a regression case).
 * mutates valid inputs — field values swapped for other types, huge and
 * fractional numbers, unicode and very long strings, shell metacharacters,
 * "__proto__"/"constructor" keys, keys in other cases, deleted fields, deep
 * nesting, truncated and byte-mutated text — or makes random bytes. For
 * every case a parser must either return a typed value or throw a
 * TwillError; anything else (TypeError, RangeError, ...) fails the test.
 * Every accepted lease then goes, in batches, through leasesToPeers with a
 * config (a fixed one or a fuzzed config that parsed), and every resulting
 * Peer is encoded with the map encoders and checked byte by byte: prefix
 * inside the network with the right length and zero host bits, address
 * family right, MAC 6 bytes unicast and non-zero, VNI 0..2^24-1, kind
 * vxlan/direct, no two peers overlapping — and turned into the kernel
 * dataplane's netlink ops (flannel's neigh, FDB and route), each checked
 * with checkOp and against the peer. So no bad entry could reach a map or
 * a kernel table. (The event path is fuzzed in fuzz-events.test.ts.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isTwillError, TwillError } from "../../src/errors.js";
import { parseLease, parseLeaseKey } from "../../src/lease/parse.js";
import { annotationNames, nodeToLease, type NodeLike } from "../../src/lease/kubenode.js";
import { nodeEntry } from "../../src/lease/kubewatch.js";
import { parseNetConfig } from "../../src/config/netconf.js";
import { leasesToPeers, type PeerRules } from "../../src/peers.js";
import { checkIfName } from "../../src/net/link.js";
import { LPM_FAMILY_BITS, LPM_KEY, PEER, PeerKind, decodeLpmKey, decodePeer, encodeLpmKey, encodePeer } from "../../src/bpf/layout.js";
import { bits, formatPrefix, ipEqual, makePrefix, prefixContains, prefixEqual, prefixOverlaps, toBig, type Prefix } from "../../src/net/ip.js";
import { peerEntries } from "../../src/dataplane/kerneldiff.js";
import { checkOp, describe } from "../../src/net/netlink/ops.js";
import type { Lease, NetConfig } from "../../src/lease/types.js";
import type { Peer } from "../../src/dataplane/types.js";
import { mulberry32 } from "../lib/prng.js";

/** Fixed seeds run by `make test`; add any seed that ever failed. */
const SEEDS = [1, 2, 3, 0x5eed];
const EXTRA = process.env.TWILL_FUZZ_SEED;
const CASES = Number(process.env.TWILL_FUZZ_CASES ?? 20_000);
/** The seed of the run under way (messages name it). */
let SEED = SEEDS[0]!;

/* ---- the PRNG and generic generators ---- */

let rnd = mulberry32(SEED);
const int = (n: number) => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
const chance = (p: number) => rnd() < p;

const STRINGS = [
  "", " ", "0.0.0.0", "::", "1.2.3.4", "192.168.77.2", "255.255.255.255", "fd00::2", "fe80::1%eth0", "::ffff:1.2.3.4",
  "1.2.3.4/24", "1.2.3", "01.2.3.4", "1.2.3.4 ", "1.2.3.4\n", "256.1.1.1", "fd00::2::3",
  "8e:d0:f8:0a:41:19", "8E:D0:F8:0A:41:19", "8e-d0-f8-0a-41-19", "8ed0.f80a.4119", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01",
  "00:00:00:00:00:00", "8e:d0:f8:0a:41", "8e:d0:f8:0a:41:19:00", "8e:d0:f8:0a:41:1g",
  "vxlan", "VXLAN", "host-gw", "udp", "true", "null", "1", "-1", "16777216",
  "$(reboot)", "`id`", "; rm -rf /", "eth0 up", "a\nb", "../../etc/passwd", "\u0000", "\u202e", "é", "🙂", "\ud800",
  "__proto__", "constructor", "prototype", "toString", "hasOwnProperty",
];
const NUMBERS = [0, 1, -1, 0.5, -0, 1e308, -1e308, 2 ** 24 - 1, 2 ** 24, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 8472, 65535, 65536, 67, 68, 24, 32, 33, 64, 128, 129, 1e-7];
const CHARS = "0123456789abcdefABCDEF.:-/&_ \"{}[],\\x\u00e9\u4e2d\ud83d\ude42\n\t\u0000";

function randString(): string {
  if (chance(0.01)) return "x".repeat(100_000 + int(100_000)); // very long (rare: they are slow to copy around)
  switch (int(5)) {
    case 0: return pick(STRINGS);
    case 1: return Array.from({ length: int(40) }, () => CHARS[int(CHARS.length)]).join("");
    case 2: return pick(STRINGS).repeat(1 + int(300)); // long
    case 3: return String.fromCharCode(...Array.from({ length: int(20) }, () => int(0x10000)));
    default: return pick(STRINGS) + pick(STRINGS);
  }
}

function nest(depth: number, inner: unknown): unknown {
  let v = inner;
  for (let i = 0; i < depth; i++) v = chance(0.5) ? [v] : { a: v };
  return v;
}

/** Any JSON value, of any type. */
function randValue(depth = 0): unknown {
  switch (int(depth > 2 ? 5 : 9)) {
    case 0: return pick(NUMBERS);
    case 1: return int(2 ** 31) * (chance(0.5) ? 1 : -1);
    case 2: return randString();
    case 3: return chance(0.5);
    case 4: return null;
    case 5: return Array.from({ length: int(4) }, () => randValue(depth + 1));
    case 6: return randObject(depth + 1);
    case 7: return nest(chance(0.9) ? 1 + int(20) : 1000, randValue(3)); // deeper nesting is made as text (mutateText)
    default: return pick(STRINGS);
  }
}

/** Sets a key as an own, enumerable property, even "__proto__" (so JSON.stringify writes it). */
function put(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function randObject(depth = 0): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (let i = int(4); i > 0; i--) put(o, chance(0.3) ? pick(["__proto__", "constructor", "prototype"]) : randString().slice(0, 20), randValue(depth + 1));
  return o;
}

/** Mutations of a parsed JSON object (in place), at the top or one level down. */
function mutateObject(o: Record<string, unknown>, fields: readonly string[]): void {
  const target = (): Record<string, unknown> => {
    const nested = Object.values(o).filter((v): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v));
    return nested.length && chance(0.4) ? pick(nested) : o;
  };
  for (let n = 1 + int(3); n > 0; n--) {
    const t = target();
    const keys = Object.keys(t);
    switch (int(8)) {
      case 0: if (keys.length) put(t, pick(keys), randValue()); break; // type swap / bad value
      case 1: if (keys.length) delete t[pick(keys)]; break;
      case 2: { // another case of a key (Go matches case-insensitively)
        const k = keys.length ? pick(keys) : pick(fields);
        const v = t[k];
        delete t[k];
        put(t, chance(0.5) ? k.toLowerCase() : k.toUpperCase(), v);
        break;
      }
      case 3: put(t, pick(["__proto__", "constructor", "prototype", "toString"]), chance(0.5) ? randObject() : randValue()); break;
      case 4: put(t, pick(fields), randValue()); break;
      case 5: put(t, pick(fields).toLowerCase(), randValue()); break; // a second spelling beside the exact one
      case 6: // deep nesting of a field's value: up to 1,000 levels as objects, 100,000 as text (expandDeep)
        if (keys.length) put(t, pick(keys), chance(0.99) ? nest(pick([5, 50, 1000]), t[pick(keys)] ?? null) : DEEP);
        break;
      default: put(t, pick(fields), pick(STRINGS)); break;
    }
  }
}

/** A marker value that expandDeep turns into 100,000 nested arrays (too deep for JSON.stringify). */
const DEEP = "\u0001deep\u0001";
const DEEP_TEXT = "[".repeat(100_000) + "]".repeat(100_000);
const expandDeep = (text: string) => text.replaceAll(JSON.stringify(DEEP), DEEP_TEXT);

/** Mutations of JSON text: truncation, byte edits, garbage, deep nesting. */
function mutateText(s: string): string {
  switch (int(7)) {
    case 0: return s.slice(0, int(s.length + 1));
    case 1: { const i = int(s.length + 1); return s.slice(0, i) + CHARS[int(CHARS.length)] + s.slice(i); }
    case 2: { const i = int(s.length); return s.slice(0, i) + CHARS[int(CHARS.length)] + s.slice(i + 1); }
    case 3: return s + pick(["}", "]", ",", "{}", " ", "\u0000", "garbage"]);
    case 4: return "[".repeat(1 + int(200)) + s;
    case 5: { // deep nesting (rarely very deep: 100,000 levels)
      const d = chance(0.95) ? int(300) : 100_000;
      return `{"BackendData":${"[".repeat(d)}${"]".repeat(chance(0.5) ? d : int(d + 1))}}`;
    }
    default: return Buffer.from(Array.from({ length: int(64) }, () => int(256))).toString(chance(0.5) ? "utf8" : "latin1");
  }
}

/* ---- what must hold of every outcome ---- */

let accepted = 0, rejected = 0;
/** Runs a parser; returns its value, undefined on a TwillError, fails the test on any other exception. */
function attempt<T>(what: string, input: unknown, f: () => T, codes: readonly string[]): T | undefined {
  try {
    const v = f();
    accepted++;
    return v;
  } catch (e) {
    if (!(e instanceof TwillError) || !codes.includes(e.code)) {
      const shown = (() => { try { return JSON.stringify(input)?.slice(0, 300); } catch { return String(input).slice(0, 300); } })();
      assert.fail(`${what} threw ${e instanceof Error ? `${e.name} ${(e as { code?: string }).code ?? ""}: ${e.message.slice(0, 300)}` : String(e)} (seed ${SEED}) on ${shown}`);
    }
    rejected++;
    return undefined;
  }
}

let peersChecked = 0;
/** Every peer encodes into a valid map entry for this config. */
function checkPeers(peers: readonly Peer[], config: NetConfig, checkLength: boolean): void {
  for (const p of peers) {
    const fam = p.subnet.ip.family;
    const net = fam === 4 ? config.network : config.ipv6Network;
    const where = `${formatPrefix(p.subnet)} (seed ${SEED})`;
    assert.ok(fam === 4 ? config.enableIPv4 : config.enableIPv6, `${where}: family not enabled`);
    assert.ok(net && prefixContains(net, p.subnet), `${where}: outside the network`);
    if (checkLength) assert.equal(p.subnet.len, fam === 4 ? config.subnetLen : config.ipv6SubnetLen, where);
    assert.ok(p.subnet.len >= 1 && p.subnet.len <= bits(fam), where);
    assert.equal(toBig(makePrefix(p.subnet.ip, p.subnet.len).ip), toBig(p.subnet.ip), `${where}: host bits set`);
    assert.equal(p.subnet.ip.bytes.length, fam === 4 ? 4 : 16, where);
    assert.equal(p.publicIP.family, fam, `${where}: public IP of the other family`);
    assert.equal(p.publicIP.bytes.length, fam === 4 ? 4 : 16, where);
    assert.notEqual(toBig(p.publicIP), 0n, `${where}: zero public IP`);

    const key = encodeLpmKey(p.subnet);
    assert.equal(key.length, LPM_KEY.size);
    assert.equal(key.readUInt32LE(0), LPM_FAMILY_BITS + p.subnet.len, where);
    assert.equal(key.readUInt32LE(4), fam, where);
    assert.deepEqual(decodeLpmKey(key), p.subnet, where);

    const kind = p.direct ? PeerKind.Direct : PeerKind.Vxlan;
    const v = encodePeer({ kind, remote: p.publicIP, vtepMAC: p.vtepMAC, vni: p.vni, id: 7 });
    assert.equal(v.length, PEER.size);
    const mac = v.subarray(16, 22);
    assert.equal(mac.length, 6);
    assert.equal(mac[0]! & 1, 0, `${where}: multicast VTEP MAC ${p.vtepMAC}`);
    assert.ok(mac.some((b) => b !== 0), `${where}: zero VTEP MAC`);
    assert.equal(v.readUInt8(22), kind, where);
    assert.equal(v.readUInt8(23), fam, where);
    assert.ok(Number.isInteger(p.vni) && p.vni >= 0 && p.vni <= 0xffffff, `${where}: VNI ${p.vni}`);
    assert.equal(v.readUInt32LE(24), p.vni, where);
    const back = decodePeer(v);
    assert.equal(back.vtepMAC, p.vtepMAC, where);
    assert.deepEqual(back.remote, p.publicIP, where);
    // The kernel dataplane's ops for this peer (flannel's exact entries): well formed, and about this peer.
    const ops = peerEntries(p, "flannel.1", "eth0").map((e) => e.op);
    for (const op of ops) {
      checkOp(op);
      assert.match(describe(op), /^[\x21-\x7e]+( [\x21-\x7e]+)*$/, `${where}: ${JSON.stringify(describe(op))}`);
    }
    const route = ops.find((o) => o.kind === "route");
    assert.ok(route && route.kind === "route" && prefixEqual(route.dst, p.subnet), `${where}: no route for the subnet`);
    if (p.direct) {
      assert.ok(route.via && ipEqual(route.via, p.publicIP) && route.dev === "eth0" && ops.length === 1, `${where}: direct: ${ops.map(describe).join("; ")}`);
    } else {
      assert.ok(route.via && ipEqual(route.via, p.subnet.ip) && route.onlink && route.dev === "flannel.1", `${where}: ${describe(route)}`);
      const fdb = ops.find((o) => o.kind === "fdb"), neigh = ops.find((o) => o.kind === "neigh");
      assert.ok(fdb?.kind === "fdb" && fdb.dst && ipEqual(fdb.dst, p.publicIP) && fdb.mac === p.vtepMAC.toLowerCase(), `${where}: fdb`);
      assert.ok(neigh?.kind === "neigh" && ipEqual(neigh.dst, p.subnet.ip) && neigh.lladdr === p.vtepMAC.toLowerCase(), `${where}: neigh`);
      assert.deepEqual(ops.map((o) => o.kind), ["neigh", "fdb", "route"], `${where}: flannel's order`);
    }
    peersChecked++;
  }
  for (let i = 0; i < peers.length; i++) {
    for (let j = i + 1; j < peers.length; j++) {
      assert.ok(!prefixOverlaps(peers[i]!.subnet, peers[j]!.subnet), `peers overlap: ${formatPrefix(peers[i]!.subnet)} ${formatPrefix(peers[j]!.subnet)} (seed ${SEED})`);
    }
  }
}

/** What must hold of every config parseNetConfig accepts. */
function checkConfig(c: NetConfig): void {
  assert.ok(c.enableIPv4 || c.enableIPv6);
  for (const [on, net, len, min, max, w] of [
    [c.enableIPv4, c.network, c.subnetLen, c.subnetMin, c.subnetMax, 32],
    [c.enableIPv6, c.ipv6Network, c.ipv6SubnetLen, c.ipv6SubnetMin, c.ipv6SubnetMax, 128],
  ] as const) {
    if (!on) continue;
    assert.ok(net, "an enabled family has a network");
    assert.ok(Number.isInteger(len) && len >= net.len + 2 && len <= w - 2, `SubnetLen ${len} for ${formatPrefix(net)}`);
    for (const b of [min, max] as Array<Prefix | undefined>) {
      assert.ok(b && prefixContains(net, b) && b.len === len, "SubnetMin/Max inside the network");
    }
    assert.ok(toBig(min!.ip) <= toBig(max!.ip));
  }
  const b = c.backend;
  if (b.type !== "vxlan") return;
  assert.ok(Number.isInteger(b.vni) && b.vni >= 0 && b.vni <= 0xffffff, `VNI ${b.vni}`);
  assert.ok(Number.isInteger(b.port) && b.port >= 1 && b.port <= 65535, `Port ${b.port}`);
  assert.ok(b.mtu === 0 || (Number.isInteger(b.mtu) && b.mtu >= 68 && b.mtu <= 65535), `MTU ${b.mtu}`);
}

/* ---- valid inputs to mutate ---- */

const V4_CONF = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`;
const DUAL_CONF = `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","VNI":1,"Port":8472,"DirectRouting":true}}`;
const V6_CONF = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":64,"Backend":{"Type":"vxlan","VNI":4096}}`;
const CONF_VALID = [V4_CONF, DUAL_CONF, V6_CONF,
  `{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.16.0.0","SubnetMax":"10.32.0.0","Backend":{"Type":"vxlan","VNI":100,"MTU":1400,"GBP":false,"Learning":false}}`];
const CONF_FIELDS = ["Network", "SubnetLen", "SubnetMin", "SubnetMax", "EnableIPv4", "EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "Backend", "Type", "VNI", "Port", "MTU", "DirectRouting", "GBP", "Learning"];
const CONFIGS = [V4_CONF, DUAL_CONF, V6_CONF].map((t) => parseNetConfig(t));

const mac = () => {
  const b = Array.from({ length: 6 }, () => int(256));
  if (chance(0.9)) b[0] = (b[0]! & 0xfe) | 2;
  return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
};
const v4Sub = () => `10.${chance(0.9) ? 244 : int(256)}.${int(256)}.${chance(0.95) ? 0 : int(256)}-${chance(0.9) ? 24 : int(34)}`;
const v6Sub = () => `fc00:0:${chance(0.95) ? 0 : int(65536).toString(16)}:${int(65536).toString(16)}::-${chance(0.9) ? 64 : int(130)}`;
function leaseKey(): string {
  switch (int(6)) {
    case 0: case 1: return v4Sub();
    case 2: return `${v4Sub()}&${v6Sub()}`;
    case 3: return `0.0.0.0-0&${v6Sub()}`;
    case 4: return v6Sub();
    default: return mutateText(pick([v4Sub(), `${v4Sub()}&${v6Sub()}`]));
  }
}
function leaseValue(): Record<string, unknown> {
  const o: Record<string, unknown> = {
    PublicIP: `192.168.${int(256)}.${1 + int(254)}`,
    PublicIPv6: chance(0.6) ? `fd00::${(1 + int(65534)).toString(16)}` : null,
    BackendType: chance(0.9) ? "vxlan" : pick(["host-gw", "udp", ""]),
    BackendData: { VNI: chance(0.9) ? 1 : int(2 ** 24), VtepMAC: mac() },
  };
  if (chance(0.6)) o.BackendV6Data = { VNI: 1, VtepMAC: mac() };
  return o;
}
const LEASE_FIELDS = ["PublicIP", "PublicIPv6", "BackendType", "BackendData", "BackendV6Data", "VNI", "VtepMAC"];

/* ---- the cases ---- */

const batch: Lease[] = [];
let batchConfig: NetConfig = CONFIGS[0]!;
let batchCheckLength = true;
let fuzzedConfigs: NetConfig[] = [];

function flush(): void {
  if (!batch.length) return;
  const own = batch[int(batch.length)]!;
  const rules: PeerRules = {
    config: batchConfig,
    own: { key: chance(0.5) ? own.key : "10.244.255.0-24", ...(own.subnet && { subnet: own.subnet }), ...(own.ipv6Subnet && { ipv6Subnet: own.ipv6Subnet }) },
    direct: () => chance(0.3),
    checkLength: batchCheckLength,
  };
  const r = leasesToPeers(batch, rules);
  checkPeers(r.peers, batchConfig, batchCheckLength);
  batch.length = 0;
  batchCheckLength = chance(0.8);
  batchConfig = fuzzedConfigs.length && chance(0.25) ? pick(fuzzedConfigs) : pick(CONFIGS);
}

function leaseCase(): void {
  const key = leaseKey();
  const obj = leaseValue();
  if (chance(0.7)) mutateObject(obj, LEASE_FIELDS);
  let text = expandDeep(JSON.stringify(obj));
  if (chance(0.15)) text = mutateText(text);
  const lease = attempt("parseLease", { key, text }, () => parseLease(key, text), ["ERR_INVALID_LEASE"]);
  if (lease) batch.push(lease);
}

function keyCase(): void {
  const key = chance(0.5) ? leaseKey() : randString();
  attempt("parseLeaseKey", key, () => parseLeaseKey(key), ["ERR_INVALID_LEASE"]);
}

const NAMES = annotationNames();
const FAMS = [{ enableIPv4: true, enableIPv6: false }, { enableIPv4: true, enableIPv6: true }, { enableIPv4: false, enableIPv6: true }];

function node(): Record<string, unknown> {
  const v4 = v4Sub().replace("-", "/"), v6 = v6Sub().replace("-", "/");
  const cidrs = pick([[v4], [v4, v6], [v6], [v6, v4]]);
  const ann: Record<string, unknown> = {
    [NAMES.kubeSubnetManager]: "true",
    [NAMES.backendType]: chance(0.9) ? "vxlan" : "host-gw",
    [NAMES.publicIP]: `192.168.${int(256)}.${1 + int(254)}`,
    [NAMES.publicIPv6]: `fd00::${(1 + int(65534)).toString(16)}`,
    [NAMES.backendData]: JSON.stringify({ VNI: 1, VtepMAC: mac() }),
    [NAMES.backendV6Data]: JSON.stringify({ VNI: 1, VtepMAC: mac() }),
  };
  return { metadata: { name: `node-${int(1000)}`, annotations: ann }, spec: { podCIDR: cidrs[0], podCIDRs: cidrs } };
}

/** A typed NodeLike with mutated (string) annotation and podCIDR values: nodeToLease's contract. */
function nodeCase(): void {
  const n = node() as { metadata: { annotations: Record<string, string> }; spec: { podCIDR?: string; podCIDRs?: string[] } };
  const ann = n.metadata.annotations;
  for (let i = 1 + int(3); i > 0; i--) {
    const k = pick(Object.keys(ann));
    switch (int(5)) {
      case 0: ann[k] = randString(); break;
      case 1: delete ann[k]; break;
      case 2: {
        const o = JSON.parse(JSON.stringify({ VNI: 1, VtepMAC: mac() }));
        mutateObject(o, LEASE_FIELDS);
        ann[k] = expandDeep(JSON.stringify(o));
        break;
      }
      case 3: ann[k] = mutateText(ann[k] ?? ""); break;
      default: n.spec.podCIDRs = chance(0.5) ? [randString()] : Array.from({ length: int(4) }, () => pick([v4Sub(), v6Sub()]).replace("-", "/")); break;
    }
  }
  const fam = pick(FAMS);
  const lease = attempt("nodeToLease", n, () => nodeToLease(n as NodeLike, NAMES, fam), ["ERR_INVALID_LEASE"]);
  if (lease) {
    if (batch.length && batchCheckLength) flush(); // Kubernetes podCIDRs: any length
    batchCheckLength = false;
    batch.push(lease);
  }
}

/** Untyped junk where the API's node JSON goes: nodeEntry (the edge) must never throw. */
function nodeJunkCase(): void {
  const n = node();
  mutateObject(n, ["metadata", "spec", "annotations", "podCIDR", "podCIDRs", "name", ...Object.values(NAMES)]);
  const fam = pick(FAMS);
  const e = attempt("nodeEntry", n, () => nodeEntry(n as never, NAMES, fam), []);
  if (e?.lease) {
    if (batch.length && batchCheckLength) flush();
    batchCheckLength = false;
    batch.push(e.lease);
  } else if (e) assert.ok(e.error === undefined || isTwillError(e.error), "a node entry's error is a TwillError");
}

function configCase(): void {
  let text: string;
  if (chance(0.05)) text = mutateText("");
  else {
    const o = JSON.parse(pick(CONF_VALID)) as Record<string, unknown>;
    mutateObject(o, CONF_FIELDS);
    text = expandDeep(JSON.stringify(o));
    if (chance(0.1)) text = mutateText(text);
  }
  const c = attempt("parseNetConfig", text, () => parseNetConfig(text), ["ERR_INVALID_CONFIG"]);
  if (c) {
    checkConfig(c);
    if (fuzzedConfigs.length < 200) fuzzedConfigs.push(c);
    else fuzzedConfigs[int(200)] = c;
  }
}

function annotationPrefixCase(): void {
  const p = chance(0.5) ? randString() : mutateText("flannel.alpha.coreos.com");
  attempt("annotationNames", p, () => annotationNames(p), ["ERR_INVALID_FLAG"]);
}

const KINDS: Array<[string, () => void, number]> = [
  ["lease", leaseCase, 45], ["key", keyCase, 10], ["node", nodeCase, 15], ["nodeJunk", nodeJunkCase, 5], ["config", configCase, 20], ["prefix", annotationPrefixCase, 5],
];
const TOTAL_WEIGHT = KINDS.reduce((s, k) => s + k[2], 0);

const seeds = [...SEEDS, ...(EXTRA === undefined ? [] : [EXTRA === "random" ? (Date.now() ^ (process.pid << 16)) >>> 0 : Number(EXTRA) >>> 0])];
for (const seed of seeds) test(`fuzz: ${CASES} random and mutated leases, keys, nodes, configs (seed ${seed})`, (t) => {
  SEED = seed;
  t.diagnostic(`seed ${SEED} (replay: TWILL_FUZZ_SEED=${SEED})`);
  rnd = mulberry32(SEED);
  accepted = rejected = peersChecked = 0;
  const counts = new Map<string, number>(), ms = new Map<string, number>();
  const start = Date.now();
  for (let i = 0; i < CASES; i++) {
    let w = int(TOTAL_WEIGHT);
    const kind = KINDS.find((k) => (w -= k[2]) < 0)!;
    const t0 = performance.now();
    kind[1]();
    counts.set(kind[0], (counts.get(kind[0]) ?? 0) + 1);
    ms.set(kind[0], (ms.get(kind[0]) ?? 0) + performance.now() - t0);
    if (batch.length >= 64) flush();
  }
  flush();
  t.diagnostic(`${CASES} cases in ${Date.now() - start} ms: ${[...counts].map(([k, n]) => `${k} ${n} (${Math.round(ms.get(k)!)} ms)`).join(", ")}; accepted ${accepted}, rejected ${rejected} (TwillError); ${peersChecked} peers encoded and checked`);
  // The generators must reach both sides, or the fuzzing proves little.
  assert.ok(accepted > CASES / 10, `only ${accepted} inputs were accepted`);
  assert.ok(rejected > CASES / 10, `only ${rejected} inputs were rejected`);
  assert.ok(peersChecked > CASES / 20, `only ${peersChecked} peers reached the encoders`);
});

test("interface names: checkIfName rejects what the kernel or a command line would misread", () => {
  for (const bad of ["", ".", "..", "a/b", "/", "eth 0", " eth0", "eth0\n", "eth0\t", "a".repeat(16), "verylonginterfacename", "eth0;reboot", "$(id)", "`id`", "eth0\u0000", "é", "eth0'"]) {
    assert.throws(() => checkIfName(bad), (e) => isTwillError(e, "ERR_IFACE"), JSON.stringify(bad));
  }
  for (const good of ["eth0", "flannel.1", "flannel-v6.1", "cni0", "veth1234abcd", "a".repeat(15), "enp0s31f6", "tw_h1"]) assert.equal(checkIfName(good), good);
  // Random names: whatever is accepted is 1-15 bytes, no '/', no blank, no control or non-ASCII character, not "." or "..".
  rnd = mulberry32(SEED ^ 0x5bd1e995);
  for (let i = 0; i < 20_000; i++) {
    const s = chance(0.5) ? randString().slice(0, 20) : Array.from({ length: 1 + int(17) }, () => pick([..."ab09._-:@/ \n.\u00e9$;`'"])).join("");
    let ok = true;
    try {
      checkIfName(s);
    } catch (e) {
      assert.ok(isTwillError(e, "ERR_IFACE"), String(e));
      ok = false;
    }
    if (ok) {
      assert.ok(Buffer.byteLength(s) >= 1 && Buffer.byteLength(s) <= 15, JSON.stringify(s));
      assert.ok(!/[/\s\u0000-\u001f\u007f-\uffff]/.test(s) && s !== "." && s !== "..", JSON.stringify(s));
    }
  }
});

test("no process is started through a shell: child_process only as execFile/spawn with argument arrays, never shell: true", () => {
  const src = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "src");
  const files: string[] = [];
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith(".ts")) files.push(p);
    }
  };
  walk(src);
  assert.ok(files.length > 10, `found the sources in ${src}`);
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    assert.doesNotMatch(text, /shell\s*:\s*true/, f);
    assert.doesNotMatch(text, /\b(execSync|exec)\s*\(\s*[`"']/, f);
    const imports = [...text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"node:child_process"/g)].flatMap((m) => m[1]!.split(",").map((x) => x.trim().replace(/^type\s+/, "").split(/\s+as\s+/)[0]!));
    for (const name of imports) assert.ok(["execFile", "spawn", "spawnSync", "ChildProcess"].includes(name), `${f} imports ${name} from node:child_process`);
  }
});
