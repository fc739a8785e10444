/**
 * Tells the daemon when flannel's iptables rules may need repair, so it runs
 * iptables only then instead of at every reconcile.
 *
 * How it works:
 * 1) `firewallBackend()` finds which iptables is installed without running
 *    it: the `iptables` on PATH resolves (through /etc/alternatives) to
 *    xtables-nft-multi ("nft") or xtables-legacy-multi ("legacy").
 * 2) nft: every ruleset change anyone commits is announced on the nfnetlink
 *    group NFNLGRP_NFTABLES: one message per changed table/chain/rule, then
 *    NFT_MSG_NEWGEN carrying the pid of the committing process. We join the
 *    group (one socket on the shared poller, no process, no timer) and note
 *    whether a transaction touched our tables (nat, filter) and chains
 *    (FLANNEL-POSTRTG, FLANNEL-FWD and the POSTROUTING/FORWARD jumps), or
 *    deleted a whole table. At NEWGEN, if it did and the pid is not one of
 *    the iptables processes twill ran itself (masq.ts isOwnPid), `onChange`
 *    is called (debounced). Lost events (ENOBUFS) count as a change.
 * 3) legacy (no events exist) or unknown: a timer every `fallbackMs`
 *    (default 10 minutes) calls `onChange`. With nft a slower timer (default
 *    an hour) is the safety net: the events are the signal, lost ones are
 *    reported (ENOBUFS), and each check runs iptables, so an idle node
 *    starts a process only once an hour.
 * Use: await ensureForward/ensureMasq once at start, then
 *   const fw = await watchFirewall(() => recheck());   // recheck = ensureForward + ensureMasq
 *   ... fw.stop() at shutdown.
 */
import { access, realpath } from "node:fs/promises";
import { constants } from "node:fs";
import { delimiter, join, basename } from "node:path";
import { getStr, parseAttrs } from "./netlink/attrs.js";
import {
  NETLINK_NETFILTER, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTABLES, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE,
  NFT_MSG_DELTABLE, NFT_MSG_DESTROYCHAIN, NFT_MSG_DESTROYRULE, NFT_MSG_DESTROYTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWGEN,
  NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_GEN_PROC_PID, NFTA_RULE_CHAIN,
  NFTA_RULE_TABLE, NFTA_TABLE_NAME,
} from "./netlink/consts.js";
import type { Message } from "./netlink/message.js";
import { subscribe, type Subscription } from "./netlink/monitor.js";
import { isOwnPid } from "./masq.js";

export type FirewallBackend = "nft" | "legacy" | "unknown";

/** Which iptables `iptables` on PATH is, from the binary it resolves to. */
export async function firewallBackend(path = process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"): Promise<FirewallBackend> {
  for (const dir of path.split(delimiter)) {
    const p = join(dir, "iptables");
    try {
      await access(p, constants.X_OK);
      const real = basename(await realpath(p));
      return real.includes("nft") ? "nft" : real.includes("legacy") ? "legacy" : "unknown";
    } catch {
      // not in this directory
    }
  }
  return "unknown";
}

export interface FirewallWatchOptions {
  /** Re-check period: without events (legacy) default 10 minutes; as the safety net beside nft events default an hour. */
  readonly fallbackMs?: number;
  /** Default 200 ms: one call for a burst of commits. */
  readonly debounceMs?: number;
  /** Tables and chains whose changes matter (defaults: flannel's). */
  readonly tables?: readonly string[];
  readonly chains?: readonly string[];
  /** Override the detection (tests). */
  readonly backend?: FirewallBackend;
}

export interface FirewallWatch {
  /** "events": nft notifications (plus the slow timer); "timer": the timer only. */
  readonly mode: "events" | "timer";
  stop(): void;
}

const TYPE = (msg: number): number => (NFNL_SUBSYS_NFTABLES << 8) | msg;
/** The re-check period without events, and beside them (the safety net). */
const FALLBACK_MS = 600_000, FALLBACK_WITH_EVENTS_MS = 3_600_000;

/** What an nf_tables notification touched: [table, chain?], or undefined for other messages. */
export function touched(m: Message): { table: string; chain?: string; gen?: number } | undefined {
  if (m.body.length < NFGENMSG_LEN) return undefined;
  const a = parseAttrs(m.body, NFGENMSG_LEN);
  switch (m.type) {
    case TYPE(NFT_MSG_NEWRULE): case TYPE(NFT_MSG_DELRULE): case TYPE(NFT_MSG_DESTROYRULE): {
      const chain = getStr(a, NFTA_RULE_CHAIN);
      return { table: getStr(a, NFTA_RULE_TABLE) ?? "", ...(chain !== undefined ? { chain } : {}) };
    }
    case TYPE(NFT_MSG_NEWCHAIN): case TYPE(NFT_MSG_DELCHAIN): case TYPE(NFT_MSG_DESTROYCHAIN): {
      const chain = getStr(a, NFTA_CHAIN_NAME);
      return { table: getStr(a, NFTA_CHAIN_TABLE) ?? "", ...(chain !== undefined ? { chain } : {}) };
    }
    case TYPE(NFT_MSG_NEWTABLE): case TYPE(NFT_MSG_DELTABLE): case TYPE(NFT_MSG_DESTROYTABLE):
      return { table: getStr(a, NFTA_TABLE_NAME) ?? "" };
    default:
      return undefined;
  }
}

/** The committing pid of an NFT_MSG_NEWGEN (big-endian u32), or undefined for other messages. */
export function genPid(m: Message): number | undefined {
  if (m.type !== TYPE(NFT_MSG_NEWGEN) || m.body.length < NFGENMSG_LEN) return undefined;
  const b = parseAttrs(m.body, NFGENMSG_LEN).get(NFTA_GEN_PROC_PID);
  return b && b.length >= 4 ? b.readUInt32BE(0) : 0;
}

export async function watchFirewall(onChange: (reason: string) => void, opts: FirewallWatchOptions = {}): Promise<FirewallWatch> {
  const tables = new Set(opts.tables ?? ["nat", "filter"]);
  const chains = new Set(opts.chains ?? ["FLANNEL-POSTRTG", "FLANNEL-FWD", "POSTROUTING", "FORWARD"]);
  const backend = opts.backend ?? (await firewallBackend());
  let pending: NodeJS.Timeout | undefined;
  let reason = "";
  const fire = (why: string): void => {
    reason ||= why;
    pending ??= setTimeout(() => {
      pending = undefined;
      const r = reason;
      reason = "";
      onChange(r);
    }, opts.debounceMs ?? 200);
  };
  let sub: Subscription | undefined;
  if (backend === "nft") {
    let relevant: string | undefined;
    try {
      sub = subscribe({
        protocol: NETLINK_NETFILTER,
        groups: [NFNLGRP_NFTABLES],
        onOverrun: () => fire("firewall events were lost"),
        onMessages(msgs) {
          for (const m of msgs) {
            const t = touched(m);
            if (t && tables.has(t.table) && (t.chain === undefined || chains.has(t.chain))) {
              relevant ??= `${t.table}${t.chain ? `/${t.chain}` : ""} changed`;
            }
            const pid = genPid(m);
            if (pid === undefined) continue;
            if (relevant && !isOwnPid(pid)) fire(`${relevant} (pid ${pid})`);
            relevant = undefined;
          }
        },
      });
    } catch {
      sub = undefined; // no nfnetlink (module missing): the timer remains
    }
  }
  const timer = setInterval(() => onChange("periodic check"), opts.fallbackMs ?? (sub ? FALLBACK_WITH_EVENTS_MS : FALLBACK_MS));
  timer.unref();
  return {
    mode: sub ? "events" : "timer",
    stop() {
      clearInterval(timer);
      clearTimeout(pending);
      sub?.stop();
    },
  };
}
