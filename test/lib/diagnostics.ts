/**
 * Failure output for end-to-end tests: what a person would look at.
 *
 * How it works: withDiagnostics runs a test body; when it throws, the
 * cluster's diagnostics (per host: links, addresses, routes, neighbours, FDB,
 * tc/tcx attachments, `twill maps`, the daemon's last log lines; the leases)
 * are appended to the error's message, so the test report carries them.
 */
import type { TwillCluster } from "./twill.js";

export async function withDiagnostics(tc: TwillCluster, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const diag = await tc.diagnostics().catch((d: unknown) => `(diagnostics failed: ${String(d)})`);
    if (e instanceof Error) {
      // the runner prints the stack, which was made with the old message: rebuild its head
      const frames = e.stack?.slice(e.stack.indexOf("\n    at ")) ?? "";
      e.message += `\n----- diagnostics -----\n${diag}`;
      e.stack = `${e.name}: ${e.message}${frames}`;
    }
    throw e;
  }
}
