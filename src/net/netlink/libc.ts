/**
 * The libc calls netlink needs, through koffi (as src/bpf/libbpf.ts loads
 * libbpf): socket, bind, setsockopt, send, recv, close, poll, eventfd,
 * read, write, strerror, and errno.
 *
 * How it works: libc.so.6 is loaded once, lazily. Buffers are passed as
 * `void *` so koffi hands the kernel their memory directly (no copy); a
 * call returns -1 and the errno is read right after it with koffi.errno().
 * `poll` is also exposed as `.async` (koffi runs it on a libuv worker
 * thread), which net/netlink/poller.ts uses to wait for events without
 * blocking the event loop.
 */
import koffi from "koffi";
import { constants as osc } from "node:os";

function load() {
  const libc = koffi.load("libc.so.6");
  return {
    socket: libc.func("int socket(int domain, int type, int protocol)"),
    bind: libc.func("int bind(int fd, void *addr, uint32_t len)"),
    setsockopt: libc.func("int setsockopt(int fd, int level, int name, void *val, uint32_t len)"),
    send: libc.func("long send(int fd, void *buf, size_t len, int flags)"),
    recv: libc.func("long recv(int fd, void *buf, size_t len, int flags)"),
    close: libc.func("int close(int fd)"),
    poll: libc.func("int poll(void *fds, unsigned long nfds, int timeout)"),
    eventfd: libc.func("int eventfd(unsigned int initval, int flags)"),
    read: libc.func("long read(int fd, void *buf, size_t len)"),
    write: libc.func("long write(int fd, void *buf, size_t len)"),
    strerror: libc.func("const char *strerror(int errnum)"),
  };
}

let cached: ReturnType<typeof load> | undefined;
export const libc = (): ReturnType<typeof load> => (cached ??= load());

/** The errno of the last failed libc call on this thread. */
export const errno = (): number => koffi.errno();

const names = new Map<number, string>(Object.entries(osc.errno).map(([k, v]) => [v as number, k]));
/** "ENOENT" for 2. */
export const errnoName = (n: number): string => names.get(Math.abs(n)) ?? `errno ${Math.abs(n)}`;
/** "No such file or directory" for 2 (libc's text, as iproute2 prints it). */
export const strerror = (n: number): string => String(libc().strerror(Math.abs(n)) ?? errnoName(n));

export const E = {
  EPERM: osc.errno.EPERM, ENOENT: osc.errno.ENOENT, ESRCH: osc.errno.ESRCH, EINTR: osc.errno.EINTR,
  EAGAIN: osc.errno.EAGAIN, ENODEV: osc.errno.ENODEV, EEXIST: osc.errno.EEXIST, ENOBUFS: osc.errno.ENOBUFS,
  EADDRINUSE: osc.errno.EADDRINUSE, EBUSY: osc.errno.EBUSY, ENETUNREACH: osc.errno.ENETUNREACH,
} as const;
