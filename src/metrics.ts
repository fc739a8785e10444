/**
 * Prometheus metrics (prom-client), one registry per daemon.
 *
 * How it works: the daemon updates these as it works; /metrics on the
 * healthz port serves `registry.metrics()`. Label sets are bounded: error
 * codes and event types are fixed enums.
 */
import client from "prom-client";

export function createMetrics(version: string, dataplane: string) {
  const registry = new client.Registry();
  const buildInfo = new client.Gauge({ name: "twill_build_info", help: "twill build information (always 1).", labelNames: ["version", "dataplane", "node_version"], registers: [registry] });
  buildInfo.set({ version, dataplane, node_version: process.version }, 1);
  return {
    registry,
    leases: new client.Gauge({ name: "twill_leases", help: "Leases known, by state (peer, rejected, own).", labelNames: ["state"], registers: [registry] }),
    leaseEvents: new client.Counter({ name: "twill_lease_events_total", help: "Lease changes applied to the dataplane, by type.", labelNames: ["type"], registers: [registry] }),
    leaseErrors: new client.Counter({ name: "twill_lease_errors_total", help: "Leases rejected (bad or conflicting), by error code; each bad lease version counts once.", labelNames: ["code"], registers: [registry] }),
    errors: new client.Counter({ name: "twill_errors_total", help: "Errors by stable error code.", labelNames: ["code"], registers: [registry] }),
    reconciles: new client.Counter({ name: "twill_reconcile_runs_total", help: "Full reconciles of the dataplane against the leases.", registers: [registry] }),
    reconcileSeconds: new client.Histogram({ name: "twill_reconcile_duration_seconds", help: "Duration of a full reconcile.", buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [registry] }),
    repairs: new client.Counter({ name: "twill_drift_repairs_total", help: "Dataplane entries repaired by reconcile, by kind (added, updated, removed).", labelNames: ["kind"], registers: [registry] }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
