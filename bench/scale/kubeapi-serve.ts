/**
 * The fake Kubernetes API server (sim/kubeapi.ts) holding N peer nodes, as a
 * process in a benchmark cluster's router namespace:
 *
 *   nsenter --net=/run/netns/<router> node dist/bench/scale/kubeapi-serve.js '<json>'
 *   json: {"host":"192.168.50.1","port":6443,"nodes":[{"name":…,"podCIDR":…,"internalIP":…,"annotations":{…}}],
 *          "realNodes":N,"tls":{"cert":"<PEM>","key":"<PEM>"},"tokens":["…"]}
 *   (all three optional: N real-sized peer nodes made here, kubenodes.ts realNode(1..N); https; bearer tokens)
 *
 * How it works: loads the server module at run time (it is another
 * engineer's, being moved out of test/; a missing module is reported, not
 * a build error), adds the real-sized peer nodes, then the given ones,
 * prints {"listening": url} and serves until it is killed (the benchmark's
 * cleanup kills every process it spawned).
 */
import { existsSync } from "node:fs";
import { realNode } from "./kubenodes.js";

interface Server { readonly url: string; addNode(init: unknown): unknown }
type ServerModule = Record<string, unknown>;

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2] ?? "{}") as { host: string; port: number; nodes: unknown[]; realNodes?: number; tls?: { cert: string; key: string }; tokens?: string[] };
  const url = new URL("../../sim/kubeapi.js", import.meta.url);
  const where = existsSync(url) ? url.href : undefined;
  if (!where) throw new Error("Cannot start the fake Kubernetes API: dist/sim/kubeapi.js is not built (sim/kubeapi.ts)");
  const mod = (await import(where)) as ServerModule;
  const cls = Object.values(mod).find((v) => typeof v === "function" && typeof (v as { start?: unknown }).start === "function") as
    { start(o: { host: string; port: number; tls?: { cert: string; key: string }; tokens?: string[] }): Promise<Server> } | undefined;
  if (!cls) throw new Error(`Cannot start the fake Kubernetes API: ${where} exports no class with a static start()`);
  const server = await cls.start({ host: input.host, port: input.port, ...(input.tls && { tls: input.tls }), ...(input.tokens && { tokens: input.tokens }) });
  for (let i = 1; i <= (input.realNodes ?? 0); i++) await server.addNode(realNode(i));
  for (const n of input.nodes) await server.addNode(n);
  process.stdout.write(JSON.stringify({ listening: server.url }) + "\n");
}

main().catch((e: unknown) => {
  process.stdout.write(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }) + "\n");
  process.exit(1);
});
