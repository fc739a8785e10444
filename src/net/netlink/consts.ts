/**
 * The numbers of the netlink protocols twill speaks, from the kernel's UAPI
 * headers (include/uapi/linux/{netlink,rtnetlink,if_link,if_addr,neighbour}.h
 * and netfilter/{nfnetlink,nf_tables}.h). Only what the codecs use.
 */

// sockets (sys/socket.h, linux/netlink.h)
export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_RCVTIMEO = 20;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const MSG_PEEK = 0x02;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;

// nlmsghdr
export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
export const NLM_F_REQUEST = 0x01;
export const NLM_F_MULTI = 0x02;
export const NLM_F_ACK = 0x04;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;

export const NLA_F_NESTED = 0x8000;
export const NLA_TYPE_MASK = 0x3fff;

// rtnetlink message types
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;

// rtnetlink multicast groups (enum rtnetlink_groups)
export const RTNLGRP_LINK = 1;
export const RTNLGRP_NEIGH = 3;
export const RTNLGRP_IPV4_IFADDR = 5;
export const RTNLGRP_IPV4_ROUTE = 7;
export const RTNLGRP_IPV6_IFADDR = 9;
export const RTNLGRP_IPV6_ROUTE = 11;

// ifinfomsg (16 bytes) and IFLA_*
export const IFINFOMSG_LEN = 16;
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_MASTER = 10;
export const IFLA_OPERSTATE = 16;
export const IFLA_LINKINFO = 18;
export const IFLA_EXT_MASK = 29;
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_VXLAN_ID = 1;
export const IFLA_VXLAN_GROUP = 2;
export const IFLA_VXLAN_LINK = 3;
export const IFLA_VXLAN_LOCAL = 4;
export const IFLA_VXLAN_TTL = 5;
export const IFLA_VXLAN_LEARNING = 7;
export const IFLA_VXLAN_PORT = 15;
export const IFLA_VXLAN_GROUP6 = 16;
export const IFLA_VXLAN_LOCAL6 = 17;
export const IFLA_VXLAN_COLLECT_METADATA = 25;

// net_device flags, in the order iproute2 prints them (RUNNING is never printed)
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;
export const IFF_NOARP = 0x80;
export const IFF_NAMES: readonly (readonly [number, string])[] = [
  [0x8, "LOOPBACK"], [0x2, "BROADCAST"], [0x10, "POINTOPOINT"], [0x1000, "MULTICAST"], [0x80, "NOARP"],
  [0x200, "ALLMULTI"], [0x100, "PROMISC"], [0x20, "NOTRAILERS"], [0x4, "DEBUG"], [0x8000, "DYNAMIC"],
  [0x4000, "AUTOMEDIA"], [0x2000, "PORTSEL"], [0x400, "MASTER"], [0x800, "SLAVE"], [0x1, "UP"],
  [0x10000, "LOWER_UP"], [0x20000, "DORMANT"], [0x40000, "ECHO"],
];

// ifaddrmsg (8 bytes) and IFA_*
export const IFADDRMSG_LEN = 8;
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;
export const IFA_F_TEMPORARY = 0x01;
export const IFA_F_DEPRECATED = 0x20;
export const IFA_F_PERMANENT = 0x80;

// rtmsg (12 bytes) and RTA_*
export const RTMSG_LEN = 12;
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_PREFSRC = 7;
export const RTA_TABLE = 15;
export const RT_TABLE_UNSPEC = 0;
export const RT_TABLE_MAIN = 254;
export const RTN_UNICAST = 1;
export const RTN_BLACKHOLE = 6;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_NOWHERE = 255;
export const RTPROT_BOOT = 3;
export const RTNH_F_ONLINK = 4;
/** rtm_flags names as iproute2 prints them (RTNH_F_* and RTM_F_*). */
export const RTM_FLAG_NAMES: readonly (readonly [number, string])[] = [
  [1, "dead"], [2, "pervasive"], [4, "onlink"], [8, "offload"], [16, "linkdown"], [32, "unresolved"], [64, "trap"],
  [0x100, "notify"],
];
/** /etc/iproute2/rt_protos, the names iproute2 prints. */
export const RTPROT_NAMES: ReadonlyMap<number, string> = new Map([
  [0, "unspec"], [1, "redirect"], [2, "kernel"], [3, "boot"], [4, "static"], [8, "gated"], [9, "ra"], [10, "mrt"],
  [11, "zebra"], [12, "bird"], [13, "dnrouted"], [14, "xorp"], [15, "ntk"], [16, "dhcp"], [18, "keepalived"],
  [42, "babel"], [99, "openr"], [186, "bgp"], [187, "isis"], [188, "ospf"], [189, "rip"], [192, "eigrp"],
]);
/** Address and route scopes as iproute2 prints them. */
export const SCOPE_NAMES: ReadonlyMap<number, string> = new Map([
  [0, "global"], [200, "site"], [253, "link"], [254, "host"], [255, "nowhere"],
]);

// ndmsg (12 bytes) and NDA_*
export const NDMSG_LEN = 12;
export const NDA_DST = 1;
export const NDA_LLADDR = 2;
export const NDA_MASTER = 9;
export const NUD_PERMANENT = 0x80;
export const NUD_NOARP = 0x40;
export const NUD_NAMES: readonly (readonly [number, string])[] = [
  [0x01, "INCOMPLETE"], [0x02, "REACHABLE"], [0x04, "STALE"], [0x08, "DELAY"], [0x10, "PROBE"], [0x20, "FAILED"],
  [0x40, "NOARP"], [0x80, "PERMANENT"],
];
export const NTF_SELF = 0x02;
export const NTF_MASTER = 0x04;
/** ndm_flags names as `bridge fdb` prints them. */
export const NTF_NAMES: readonly (readonly [number, string])[] = [
  [0x02, "self"], [0x80, "router"], [0x10, "extern_learn"], [0x20, "offload"], [0x04, "master"], [0x40, "sticky"],
];

// nfnetlink / nf_tables
export const NFNLGRP_NFTABLES = 7;
export const NFNL_SUBSYS_NFTABLES = 10;
export const NFGENMSG_LEN = 4;
export const NFT_MSG_NEWTABLE = 0;
export const NFT_MSG_DELTABLE = 2;
export const NFT_MSG_NEWCHAIN = 3;
export const NFT_MSG_DELCHAIN = 5;
export const NFT_MSG_NEWRULE = 6;
export const NFT_MSG_DELRULE = 8;
export const NFT_MSG_NEWGEN = 15;
export const NFT_MSG_DESTROYTABLE = 26;
export const NFT_MSG_DESTROYCHAIN = 27;
export const NFT_MSG_DESTROYRULE = 28;
export const NFTA_TABLE_NAME = 1;
export const NFTA_CHAIN_TABLE = 1;
export const NFTA_CHAIN_NAME = 3;
export const NFTA_RULE_TABLE = 1;
export const NFTA_RULE_CHAIN = 2;
export const NFTA_GEN_PROC_PID = 2;
