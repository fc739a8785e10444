import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { formatSubnetFile, parseSubnetFile, readSubnetFile, writeSubnetFile } from "../../src/subnetfile.js";
import { isTwillError } from "../../src/errors.js";
import { formatPrefix, parsePrefix } from "../../src/net/ip.js";

const v4 = { network: parsePrefix("10.244.0.0/16"), subnet: parsePrefix("10.244.1.0/24") };
const v6 = { ipv6Network: parsePrefix("fc00::/48"), ipv6Subnet: parsePrefix("fc00:0:0:1::/64") };

test("exact text, IPv4 only", () => {
  assert.equal(formatSubnetFile({ ...v4, mtu: 1450, ipMasq: true }),
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
});

test("exact text, dual stack (the example in flannel-compat.md) and IPv6 only", () => {
  assert.equal(formatSubnetFile({ ...v4, ...v6, mtu: 1450, ipMasq: true }),
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
  assert.equal(formatSubnetFile({ ...v6, mtu: 1430, ipMasq: false }),
    "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n");
  assert.throws(() => formatSubnetFile({ network: v4.network, mtu: 1450, ipMasq: false }),
    (e) => isTwillError(e, "ERR_SUBNET_FILE") && /FLANNEL_SUBNET is unknown/.test(e.message));
});

test("write atomically into a new directory, read back the previous subnet", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "twill-subnetfile-"));
  try {
    const file = path.join(dir, "run", "flannel", "subnet.env");
    assert.equal(await readSubnetFile(file), undefined, "missing file");
    await writeSubnetFile(file, { ...v4, ...v6, mtu: 1450, ipMasq: false });
    assert.equal(await fs.readFile(file, "utf8"), formatSubnetFile({ ...v4, ...v6, mtu: 1450, ipMasq: false }));
    assert.deepEqual(await fs.readdir(path.dirname(file)), ["subnet.env"], "no temp file left");
    const back = (await readSubnetFile(file))!;
    assert.equal(formatPrefix(back.subnet!), "10.244.1.0/24", "FLANNEL_SUBNET .1/24 → the subnet");
    assert.equal(formatPrefix(back.network!), "10.244.0.0/16");
    assert.equal(formatPrefix(back.ipv6Subnet!), "fc00:0:0:1::/64");
    assert.equal(formatPrefix(back.ipv6Network!), "fc00::/48");
    assert.equal(back.mtu, 1450);
    assert.equal(back.ipMasq, false);
    assert.deepEqual(back.warnings, []);
    // Rewriting replaces the file.
    await writeSubnetFile(file, { ...v4, mtu: 1400, ipMasq: true });
    assert.equal((await readSubnetFile(file))!.ipv6Subnet, undefined);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("reading is forgiving like flannel's (godotenv): quotes, comments, export; bad values skipped and named", () => {
  const r = parseSubnetFile(`# written by hand
export FLANNEL_NETWORK="10.244.0.0/16"
FLANNEL_SUBNET='10.244.7.1/24'
FLANNEL_IPV6_SUBNET=10.0.0.1/24
FLANNEL_MTU=big
FLANNEL_IPMASQ=yes
`);
  assert.equal(formatPrefix(r.network!), "10.244.0.0/16");
  assert.equal(formatPrefix(r.subnet!), "10.244.7.0/24");
  assert.equal(r.ipv6Subnet, undefined);
  assert.equal(r.mtu, undefined);
  assert.equal(r.ipMasq, undefined);
  assert.deepEqual(r.warnings, [
    "FLANNEL_IPV6_SUBNET=10.0.0.1/24 is not an IPv6 prefix",
    "FLANNEL_MTU=big is not a number",
    "FLANNEL_IPMASQ=yes is not true or false",
  ]);
});
