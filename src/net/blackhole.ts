/**
 * --ip-blackhole-route: a blackhole route for the node's own pod subnet, so
 * traffic to an unused pod address of ours is dropped here instead of
 * following the default route out (flannel's comment: for setups without
 * the bridge plugin, e.g. Canal).
 *
 * How it works: exactly flannel's ip.AddBlackholeV4Route/AddBlackholeV6Route
 * (pkg/ip/iface.go), over twill's netlink: list the main table's blackhole
 * routes of the family; when none has the subnet as destination, add
 * `blackhole <subnet>` (proto boot, NLM_F_CREATE|NLM_F_EXCL). Any other
 * route to the same prefix with metric 0 — the cni0 bridge's connected
 * route — makes the add fail with EEXIST, as it does for flannel: the
 * caller reports it. flannel re-runs this every --iptables-resync seconds;
 * the daemon does the same (the first time at start, not after N seconds).
 */
import { prefixEqual, type Prefix } from "./ip.js";
import { addBlackhole, dumpBlackholes } from "./netlink/rtnl.js";

/** "present" when the route was there, "added" when this call added it; throws the NetlinkError of the add. */
export function ensureBlackhole(subnet: Prefix): "present" | "added" {
  if (dumpBlackholes(subnet.ip.family).some((r) => prefixEqual(r.dst, subnet))) return "present";
  addBlackhole(subnet);
  return "added";
}
