/**
 * Link events (RTNLGRP_LINK) as decoded RawLinks.
 *
 * How it works: one subscription (monitor.ts) to the link group; each
 * RTM_NEWLINK ("appeared or changed": name, flags, master, ...) and
 * RTM_DELLINK ("gone") is decoded with the same codec as a dump, and the
 * batch of events read in one wake-up is handed over at once. `onOverrun`
 * means events were lost: the subscriber must re-dump.
 */
import { RTM_DELLINK, RTM_NEWLINK, RTNLGRP_LINK } from "./consts.js";
import { decodeLink, type RawLink } from "./link-codec.js";
import { subscribe, type Subscription } from "./monitor.js";

export interface LinkEvent {
  readonly type: "new" | "del";
  readonly link: RawLink;
}

export function watchLinks(onEvents: (events: LinkEvent[]) => void, onOverrun: () => void): Subscription {
  return subscribe({
    groups: [RTNLGRP_LINK],
    onOverrun,
    onMessages(msgs) {
      const events: LinkEvent[] = [];
      for (const m of msgs) {
        if (m.type !== RTM_NEWLINK && m.type !== RTM_DELLINK) continue;
        const link = decodeLink(m);
        if (link) events.push({ type: m.type === RTM_NEWLINK ? "new" : "del", link });
      }
      if (events.length > 0) onEvents(events);
    },
  });
}
