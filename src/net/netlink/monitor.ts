/**
 * Netlink event subscriptions: multicast groups of any netlink protocol,
 * delivered on the event loop.
 *
 * How it works: `subscribe` opens a non-blocking socket joined to the
 * groups and hands its fd to the shared poller (poller.ts). When the fd is
 * readable, every queued datagram is read (MSG_DONTWAIT until EAGAIN) and
 * its messages go to `onMessages`. When the kernel had to drop messages for
 * us (ENOBUFS: the receive buffer overflowed during an event storm), the
 * subscriber's `onOverrun` is called: events were lost, so re-read the state
 * (a dump) instead of trusting the event stream. `stop()` closes the socket.
 */
import { NETLINK_ROUTE } from "./consts.js";
import type { Message } from "./message.js";
import { unwatchFd, watchFd } from "./poller.js";
import { NlSocket, OverrunError } from "./socket.js";

export interface Subscription {
  stop(): void;
}

export interface SubscribeOptions {
  /** NETLINK_ROUTE unless given. */
  readonly protocol?: number;
  readonly groups: readonly number[];
  readonly onMessages: (messages: Message[]) => void;
  /** Events were lost: re-read the state. */
  readonly onOverrun: () => void;
  /** A read failed for another reason (defaults to onOverrun: re-read). */
  readonly onError?: (e: unknown) => void;
}

export function subscribe(o: SubscribeOptions): Subscription {
  const sock = NlSocket.open(o.protocol ?? NETLINK_ROUTE, { groups: o.groups, nonblock: true });
  let stopped = false;
  const onReadable = (): void => {
    for (let i = 0; i < 10_000 && !stopped; i++) {
      let msgs: Message[] | undefined;
      try {
        msgs = sock.recv("netlink events", true);
      } catch (e) {
        if (e instanceof OverrunError) o.onOverrun();
        else (o.onError ?? (() => o.onOverrun()))(e);
        continue;
      }
      if (msgs === undefined) return;
      if (msgs.length > 0) o.onMessages(msgs);
    }
  };
  watchFd(sock.fd, onReadable);
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      unwatchFd(sock.fd);
      sock.close();
    },
  };
}
