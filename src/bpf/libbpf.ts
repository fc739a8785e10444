/**
 * libbpf through koffi: the only file that declares C functions.
 *
 * How it works: libbpf.so.1 (Debian's libbpf1, v1.1) is loaded once, lazily.
 * Objects, maps and programs are opaque pointers; keys, values and info
 * structs are Buffers laid out by src/bpf/layout.ts. libbpf 1.x returns
 * negative errno values directly (NULL + errno for constructors); `check`
 * turns them into TwillErrors carrying the errno name. libbpf's own log
 * (including a verifier log when a program is rejected) is captured through
 * libbpf_set_print, formatted with libc's vsnprintf, and kept in a ring so a
 * failed load can quote it.
 */
import koffi from "koffi";
import { constants as osc } from "node:os";
import { TwillError, type ErrorCode } from "../errors.js";

export type Ptr = unknown;

const errnoNames = new Map<number, string>(
  Object.entries(osc.errno).map(([k, v]) => [v as number, k]),
);
export const errnoName = (n: number): string => errnoNames.get(Math.abs(n)) ?? `errno ${Math.abs(n)}`;

/** libbpf's bpf_object_open_opts as of v1.1 (size_t sz first; unknown tail zero). */
const OpenOpts = koffi.struct("twill_bpf_object_open_opts", {
  sz: "size_t",
  object_name: "const char *",
  relaxed_maps: "bool",
  pin_root_path: "const char *",
  _attach_prog_fd: "uint32",
  kconfig: "const char *",
  btf_custom_path: "const char *",
  kernel_log_buf: "void *",
  kernel_log_size: "size_t",
  kernel_log_level: "uint32",
});

function load() {
  const lib = koffi.load("libbpf.so.1");
  const libc = koffi.load("libc.so.6");
  const vsnprintf = libc.func("int vsnprintf(_Out_ uint8_t *buf, size_t n, const char *fmt, void *ap)");
  const PrintFn = koffi.proto("int twill_libbpf_print_fn(int level, const char *fmt, void *ap)");
  return {
    lib,
    vsnprintf,
    PrintFn,
    set_print: lib.func("void *libbpf_set_print(twill_libbpf_print_fn *fn)"),
    num_possible_cpus: lib.func("int libbpf_num_possible_cpus()"),
    open_file: lib.func("void *bpf_object__open_file(const char *path, const twill_bpf_object_open_opts *opts)"),
    obj_load: lib.func("int bpf_object__load(void *obj)"),
    obj_close: lib.func("void bpf_object__close(void *obj)"),
    find_map: lib.func("void *bpf_object__find_map_by_name(void *obj, const char *name)"),
    next_map: lib.func("void *bpf_object__next_map(void *obj, void *prev)"),
    map_name: lib.func("const char *bpf_map__name(void *map)"),
    map_fd: lib.func("int bpf_map__fd(void *map)"),
    map_type: lib.func("int bpf_map__type(void *map)"),
    map_key_size: lib.func("uint32_t bpf_map__key_size(void *map)"),
    map_value_size: lib.func("uint32_t bpf_map__value_size(void *map)"),
    map_max_entries: lib.func("uint32_t bpf_map__max_entries(void *map)"),
    map_set_max_entries: lib.func("int bpf_map__set_max_entries(void *map, uint32_t max)"),
    map_flags: lib.func("uint32_t bpf_map__map_flags(void *map)"),
    map_pin_path: lib.func("const char *bpf_map__pin_path(void *map)"),
    map_btf_key_type_id: lib.func("uint32_t bpf_map__btf_key_type_id(void *map)"),
    map_btf_value_type_id: lib.func("uint32_t bpf_map__btf_value_type_id(void *map)"),
    obj_btf: lib.func("void *bpf_object__btf(void *obj)"),
    btf_load_by_id: lib.func("void *btf__load_from_kernel_by_id(uint32_t id)"),
    btf_free: lib.func("void btf__free(void *btf)"),
    btf_type_by_id: lib.func("const void *btf__type_by_id(void *btf, uint32_t id)"),
    btf_name_by_offset: lib.func("const char *btf__name_by_offset(void *btf, uint32_t off)"),
    find_prog: lib.func("void *bpf_object__find_program_by_name(void *obj, const char *name)"),
    prog_fd: lib.func("int bpf_program__fd(void *prog)"),
    obj_get: lib.func("int bpf_obj_get(const char *path)"),
    map_create: lib.func("int bpf_map_create(int type, const char *name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, void *opts)"),
    obj_pin: lib.func("int bpf_obj_pin(int fd, const char *path)"),
    get_info: lib.func("int bpf_obj_get_info_by_fd(int fd, _Inout_ uint8_t *info, _Inout_ uint32_t *len)"),
    prog_by_id: lib.func("int bpf_prog_get_fd_by_id(uint32_t id)"),
    map_by_id: lib.func("int bpf_map_get_fd_by_id(uint32_t id)"),
    link_create: lib.func("int bpf_link_create(int prog_fd, int target_fd, int attach_type, void *opts)"),
    link_update: lib.func("int bpf_link_update(int link_fd, int new_prog_fd, void *opts)"),
    link_detach: lib.func("int bpf_link_detach(int link_fd)"),
    update: lib.func("int bpf_map_update_elem(int fd, const uint8_t *key, const uint8_t *value, uint64_t flags)"),
    lookup: lib.func("int bpf_map_lookup_elem(int fd, const uint8_t *key, _Out_ uint8_t *value)"),
    del: lib.func("int bpf_map_delete_elem(int fd, const uint8_t *key)"),
    next_key: lib.func("int bpf_map_get_next_key(int fd, const uint8_t *key, _Out_ uint8_t *next)"),
    update_batch: lib.func(
      "int bpf_map_update_batch(int fd, const uint8_t *keys, const uint8_t *values, _Inout_ uint32_t *count, const uint8_t *opts)",
    ),
    lookup_batch: lib.func(
      "int bpf_map_lookup_batch(int fd, const uint8_t *in_batch, _Out_ uint8_t *out_batch, _Out_ uint8_t *keys, _Out_ uint8_t *values, _Inout_ uint32_t *count, const uint8_t *opts)",
    ),
    tc_hook_create: lib.func("int bpf_tc_hook_create(const uint8_t *hook)"),
    tc_attach: lib.func("int bpf_tc_attach(const uint8_t *hook, _Inout_ uint8_t *opts)"),
    tc_detach: lib.func("int bpf_tc_detach(const uint8_t *hook, const uint8_t *opts)"),
    tc_query: lib.func("int bpf_tc_query(const uint8_t *hook, _Inout_ uint8_t *opts)"),
    close: libc.func("int close(int fd)"),
    if_nametoindex: libc.func("unsigned int if_nametoindex(const char *name)"),
  };
}

let api: ReturnType<typeof load> | undefined;
export function libbpf(): ReturnType<typeof load> {
  if (!api) {
    api = load();
    installLogger(api);
  }
  return api;
}

/* ---- libbpf's log ---- */

const LOG_MAX = 400;
const logRing: string[] = [];
let logListener: ((level: number, line: string) => void) | undefined;

function installLogger(a: ReturnType<typeof load>): void {
  const buf = Buffer.alloc(8192);
  const cb = koffi.register((level: number, fmt: string, ap: Ptr) => {
    const n = a.vsnprintf(buf, buf.length, fmt, ap);
    const text = buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString("utf8");
    for (const line of text.split("\n")) {
      if (!line) continue;
      logRing.push(line);
      if (logRing.length > LOG_MAX) logRing.shift();
      // Probes that expect "not found" (quietly) must not warn: debug at most.
      logListener?.(quiet > 0 ? 2 : level, line);
    }
    return 0;
  }, koffi.pointer(a.PrintFn));
  a.set_print(cb);
}

let quiet = 0;
/** Runs `fn` with libbpf's messages demoted to debug (for probes whose failure is expected). */
export function quietly<T>(fn: () => T): T {
  quiet++;
  try {
    return fn();
  } finally {
    quiet--;
  }
}

/** Routes libbpf's log lines (level 0 warn, 1 info, 2 debug) to a listener. */
export function onLibbpfLog(fn: (level: number, line: string) => void): void {
  logListener = fn;
}

/** Returns (and forgets) libbpf's log lines since the last call. */
export function takeLibbpfLog(): string[] {
  return logRing.splice(0, logRing.length);
}

/* ---- results ---- */

/** Throws a TwillError when a libbpf call returned a negative errno. */
export function check(ret: number, code: ErrorCode, what: string): number {
  if (ret < 0) {
    const e = new TwillError(code, `${what}: ${errnoName(ret)}`);
    (e as { errno?: number }).errno = -ret;
    throw e;
  }
  return ret;
}

export function openObject(path: string, pinRoot: string): Ptr {
  const a = libbpf();
  const opts = {
    sz: koffi.sizeof(OpenOpts),
    object_name: null,
    relaxed_maps: false,
    pin_root_path: pinRoot,
    _attach_prog_fd: 0,
    kconfig: null,
    btf_custom_path: null,
    kernel_log_buf: null,
    kernel_log_size: 0,
    kernel_log_level: 0,
  };
  const obj = a.open_file(path, opts);
  if (!obj) {
    throw new TwillError("ERR_BPF_OPEN", `cannot open BPF object ${path}: ${errnoName(koffi.errno())}`);
  }
  return obj;
}

export function closeFd(fd: number): void {
  if (fd >= 0) libbpf().close(fd);
}

export function numPossibleCpus(): number {
  return check(libbpf().num_possible_cpus(), "ERR_BPF_MAP", "libbpf_num_possible_cpus");
}

/** The ifindex of a device in the caller's network namespace, 0 if there is none (no process spawned). */
export function ifNameToIndex(name: string): number {
  return libbpf().if_nametoindex(name);
}
