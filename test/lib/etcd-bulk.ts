/**
 * The bulk etcd writer (bench/lib/etcd-bulk.ts, one copy shared with the
 * benchmark), runnable from the tests' build as well:
 *
 *   node dist/test/lib/etcd-bulk.js <endpoint>   < [{"op":"put",...}|{"op":"del",...}]
 */
import "../../bench/lib/etcd-bulk.js";
