/**
 * One waiter for every netlink subscription in the process: no thread per
 * watcher, no process, no timer.
 *
 * How it works:
 * 1) Subscribers register a non-blocking fd and a "readable" callback.
 * 2) While at least one fd is registered, ONE koffi `.async` call of libc
 *    `poll()` waits on all of them plus an eventfd; it runs on a libuv
 *    worker thread and costs nothing while idle (the thread sleeps in the
 *    kernel). When it returns, the callbacks of the ready fds run on the
 *    event loop (they read with MSG_DONTWAIT until EAGAIN) and the poll is
 *    armed again.
 * 3) Registering or unregistering writes the eventfd, so the poll returns
 *    and is re-armed with the new set; with no fd left it is not re-armed,
 *    which lets the process exit.
 * 4) On process exit (process.exit, an uncaught exception) the poll is
 *    woken through the eventfd and never re-armed: node waits for its
 *    worker threads while it exits, and a poll still waiting would hold
 *    the process alive for ever (seen: a SIGTERM while the daemon was
 *    still starting, so its watchers were never stopped).
 * The pollfd array is a Buffer handed to poll() as `void *`, so poll writes
 * `revents` into it directly.
 */
import { errno, libc, strerror } from "./libc.js";
import { TwillError } from "../../errors.js";

const POLLIN = 0x1;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

type Handler = () => void;

class Poller {
  private readonly handlers = new Map<number, Handler>();
  private efd = -1;
  private inFlight = false;
  private exiting = false;
  private exitHook = false;

  register(fd: number, onReadable: Handler): void {
    this.handlers.set(fd, onReadable);
    this.wake();
  }

  unregister(fd: number): void {
    if (this.handlers.delete(fd)) this.wake();
  }

  private eventfd(): number {
    if (this.efd < 0) {
      this.efd = libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) as number;
      if (this.efd < 0) throw new TwillError("ERR_NETLINK", `eventfd: ${strerror(errno())}`);
    }
    return this.efd;
  }

  private wake(): void {
    if (!this.inFlight) {
      this.arm();
      return;
    }
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n);
    libc().write(this.eventfd(), one, 8);
  }

  /** The process is exiting: the poll in flight returns now and is not armed again (see 4). */
  private onExit = (): void => {
    this.exiting = true;
    if (this.inFlight) this.wake();
  };

  private arm(): void {
    if (this.inFlight || this.handlers.size === 0 || this.exiting) return;
    if (!this.exitHook) {
      process.once("exit", this.onExit);
      this.exitHook = true;
    }
    const fds = [this.eventfd(), ...this.handlers.keys()];
    const pfd = Buffer.alloc(8 * fds.length);
    fds.forEach((fd, i) => {
      pfd.writeInt32LE(fd, 8 * i);
      pfd.writeInt16LE(POLLIN, 8 * i + 4);
    });
    this.inFlight = true;
    libc().poll.async(pfd, fds.length, -1, (err: unknown) => {
      this.inFlight = false;
      if (err) process.emitWarning(`netlink poll failed: ${String(err)}`);
      const drain = Buffer.alloc(8);
      for (let i = 0; i < fds.length; i++) {
        if (pfd.readInt16LE(8 * i + 6) === 0) continue;
        const fd = fds[i]!;
        if (fd === this.efd) {
          libc().read(fd, drain, 8);
          continue;
        }
        const h = this.handlers.get(fd);
        if (!h) continue;
        try {
          h();
        } catch (e) {
          process.emitWarning(`netlink event handler failed: ${String(e)}`);
        }
      }
      this.arm();
    });
  }
}

const poller = new Poller();

/** Calls `onReadable` on the event loop whenever `fd` is readable, until `unwatchFd(fd)`. */
export const watchFd = (fd: number, onReadable: Handler): void => poller.register(fd, onReadable);
export const unwatchFd = (fd: number): void => poller.unregister(fd);
