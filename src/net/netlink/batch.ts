/**
 * Many route/neighbour/FDB writes on one socket: the replacement for
 * `ip -batch -` / `bridge -batch -`, with the same contract.
 *
 * How it works:
 * 1) Every op is checked first (names, MACs, families); a bad op throws a
 *    plain TwillError before anything is sent (nothing applied).
 * 2) Device names are resolved to ifindexes once per batch; an unknown
 *    device fails its ops with 'Cannot find device "x"' (ENODEV).
 * 3) Without `force`: ops go one request at a time (a few µs each) and the
 *    first failure throws a BatchError with `failedIndex`: every op before
 *    it was applied, it and every op after it were not — exactly what
 *    `ip -batch` without -force guarantees. (Pipelining cannot give that:
 *    the kernel keeps applying the rest of a datagram after a failure.)
 * 4) With `force`: ops are pipelined, up to CHUNK requests per send, each
 *    with NLM_F_ACK and its own sequence number; every op is tried and the
 *    failures come back with their 0-based index, as `-force` does.
 */
import { BatchError, NetlinkError, type BatchFailure, type BatchResult } from "./error.js";
import { checkOp, describe, encodeOp, type NlOp } from "./ops.js";
import { ifindexOf } from "./rtnl.js";
import { kernelError, rtnl } from "./socket.js";

/** Requests per send with `force` (acks of 256 requests fit the 4 MiB receive buffer many times over). */
const CHUNK = 256;

export interface NetlinkBatchOptions {
  /** Try every op and return the failures instead of stopping at the first. */
  readonly force?: boolean;
}

/** Resolves device names once per batch; a failure is remembered for the name. */
function resolver(): (op: NlOp) => number | NetlinkError {
  const cache = new Map<string, number | NetlinkError>();
  return (op) => {
    let v = cache.get(op.dev);
    if (v === undefined) {
      try {
        v = ifindexOf(op.dev, describe(op));
      } catch (e) {
        if (!(e instanceof NetlinkError)) throw e;
        v = e;
      }
      cache.set(op.dev, v);
    }
    return v instanceof NetlinkError ? new NetlinkError(describe(op), v.stderr, undefined, v.errno) : v;
  };
}

const failureOf = (index: number, op: NlOp, e: NetlinkError): BatchFailure => ({ index, line: describe(op), message: e.stderr });

/** Applies `ops` in order (see the module comment for failures). */
export function netlinkBatch(ops: readonly NlOp[], opts: NetlinkBatchOptions = {}): BatchResult {
  ops.forEach(checkOp);
  const ifindex = resolver();
  const sock = rtnl();
  if (!opts.force) {
    ops.forEach((op, i) => {
      const idx = ifindex(op);
      let err = idx instanceof NetlinkError ? idx : undefined;
      if (!err) {
        const seq = sock.nextSeq();
        const e = sock.transact([encodeOp(op, idx as number, seq)], [seq], describe(op)).errors.get(seq);
        if (e && e.errno !== 0) err = kernelError(describe(op), e);
      }
      if (err) {
        const f = failureOf(i, op, err);
        throw new BatchError(`${describe(op)} (op ${i + 1} of ${ops.length})`, err.stderr, [f], i, err.errno);
      }
    });
    return { failures: [] };
  }
  const failures: BatchFailure[] = [];
  for (let start = 0; start < ops.length; start += CHUNK) {
    const msgs: Buffer[] = [], seqs: number[] = [], at = new Map<number, number>();
    for (let i = start; i < Math.min(ops.length, start + CHUNK); i++) {
      const op = ops[i]!;
      const idx = ifindex(op);
      if (idx instanceof NetlinkError) {
        failures.push(failureOf(i, op, idx));
        continue;
      }
      const seq = sock.nextSeq();
      msgs.push(encodeOp(op, idx, seq));
      seqs.push(seq);
      at.set(seq, i);
    }
    if (msgs.length === 0) continue;
    const { errors } = sock.transact(msgs, seqs, `batch of ${msgs.length} ops`);
    for (const [seq, e] of errors) {
      if (e.errno === 0) continue;
      const i = at.get(seq)!;
      failures.push(failureOf(i, ops[i]!, kernelError(describe(ops[i]!), e)));
    }
  }
  failures.sort((a, b) => a.index - b.index);
  return { failures };
}
