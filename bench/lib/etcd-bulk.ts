/**
 * Writes many etcd keys at once, in one transaction per batch (one watch
 * response per batch on the other side), with the etcd3 client.
 *
 *   node dist/bench/lib/etcd-bulk.js <endpoint>   < [{"op":"put","key":...,"value":...}|{"op":"del","key":...}]
 *
 * Run it inside the namespace that reaches the etcd (nsenter), feeding the
 * operations as JSON on stdin. Prints {"ops": N, "ms": T}.
 */
import { Etcd3 } from "etcd3";

type Op = { op: "put"; key: string; value: string } | { op: "del"; key: string };

async function main(endpoint: string): Promise<void> {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  const ops = JSON.parse(text) as Op[];
  const client = new Etcd3({ hosts: endpoint });
  const t0 = performance.now();
  try {
    for (let i = 0; i < ops.length; i += 5000) {
      const batch = client.if("/twill-bulk-never", "Create", "==", 0).then(...ops.slice(i, i + 5000).map((o) =>
        o.op === "put" ? client.put(o.key).value(o.value) : client.delete().key(o.key)));
      await batch.commit();
    }
  } finally {
    client.close();
  }
  process.stdout.write(JSON.stringify({ ops: ops.length, ms: performance.now() - t0 }) + "\n");
}

main(process.argv[2] ?? "http://127.0.0.1:2379").catch((e) => {
  process.stderr.write(String(e) + "\n");
  process.exit(1);
});
