/**
 * The typed shapes of flannel's network config and subnet leases.
 *
 * How it works: these are the only forms the core sees. They are produced
 * from untyped JSON/text exactly once, by `parseNetConfig` (config/netconf.ts)
 * and `parseLease` (lease/parse.ts), which reject bad input with a
 * TwillError naming the field and value. A lease may carry an IPv4 subnet,
 * an IPv6 subnet, or both (flannel's dual-stack key "A-24&B-64").
 */
import type { IP, Prefix } from "../net/ip.js";

export interface VxlanBackend {
  readonly type: "vxlan";
  readonly vni: number;
  readonly port: number;
  readonly directRouting: boolean;
  /** 0 = derive from the underlay (underlay MTU - 50 for v4, - 70 for v6). */
  readonly mtu: number;
  readonly gbp: boolean;
  readonly learning: boolean;
}

export interface NetConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly network?: Prefix;
  readonly subnetLen: number;
  readonly subnetMin?: Prefix;
  readonly subnetMax?: Prefix;
  readonly ipv6Network?: Prefix;
  readonly ipv6SubnetLen: number;
  readonly ipv6SubnetMin?: Prefix;
  readonly ipv6SubnetMax?: Prefix;
  readonly backend: VxlanBackend;
}

/** flannel's BackendData for vxlan: {"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}. */
export interface VxlanLeaseData {
  readonly vni: number;
  /** Lower-case, colon separated, unicast. */
  readonly vtepMAC: string;
}

export interface Lease {
  /** The store key's last element, e.g. "10.244.1.0-24" or "10.244.1.0-24&fc00:0:0:1::-64". */
  readonly key: string;
  readonly subnet?: Prefix;
  readonly ipv6Subnet?: Prefix;
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  /** "vxlan", "host-gw", ...: only "vxlan" leases are vxlan peers. */
  readonly backendType: string;
  readonly backendData?: VxlanLeaseData;
  readonly backendV6Data?: VxlanLeaseData;
  /** Expiry (ms since epoch) if the store has one. */
  readonly expiration?: number;
}
