/**
 * Metric families whose exposition text twill writes itself, beside
 * prom-client's, in one registry.
 *
 * How it works: prom-client keeps each series of a metric in an object
 * keyed by a hash of its labels and formats it label by label; for the
 * per-peer families (2,000 series each at the series cap) that is most of a
 * scrape's formatting time. A Family's samples are written as lines as they
 * are added (Samples.add: label values in labelNames order, a number), by
 * whoever computes them — in slices, if there are many — and its one
 * collect() per scrape hands them over: the same bytes as prom-client would
 * write (HELP and TYPE lines, label order, escapes, number format;
 * test/unit/metrics.test.ts compares the two).
 * Registry.metrics() asks a Family for its text and every other metric for
 * prom-client's, in registration order. A Family also answers get() like a
 * prom-client metric, so getMetricsAsJSON() and an OpenMetrics registry
 * (formatted by prom-client) see it as any other metric.
 */
import client from "prom-client";

/** The samples of one family for one scrape, written as exposition lines as they are added (Family.samples()). */
export class Samples {
  /** Label values, labelNames.length per sample, sample after sample. */
  readonly labelValues: string[] = [];
  readonly values: number[] = [];
  readonly lines: string[] = [];

  /** `name` and `labelOpen` (`label="` of each label name) of the family. */
  constructor(private readonly name: string, private readonly labelOpen: readonly string[]) {}

  /** One sample; `labelValues` in the family's labelNames order. */
  add(labelValues: readonly string[], value: number): void {
    const w = this.labelOpen.length;
    let line = this.name;
    if (w > 0) {
      line += "{";
      for (let j = 0; j < w; j++) line += `${j ? "," : ""}${this.labelOpen[j]}${escapeLabelValue(labelValues[j]!)}"`;
      line += "}";
    }
    this.lines.push(`${line} ${formatValue(value)}`);
    for (let j = 0; j < w; j++) this.labelValues.push(labelValues[j]!);
    this.values.push(value);
  }

  get length(): number {
    return this.values.length;
  }
}

export interface FamilyOptions {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly labelNames: readonly string[];
  /** This scrape's samples; undefined: none. */
  readonly collect: () => Promise<Samples | undefined>;
  readonly registers: readonly Registry[];
}

/** As prom-client escapes HELP text and label values (lib/registry.js). */
export const escapeHelp = (s: string): string => (/[\\\n]/.test(s) ? s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n") : s);
export const escapeLabelValue = (s: string): string => (/[\\\n"]/.test(s) ? escapeHelp(s).replace(/"/g, '\\"') : s);

/** As prom-client writes a value (lib/util.js getValueAsString). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "Nan";
  if (!Number.isFinite(v)) return v < 0 ? "-Inf" : "+Inf";
  return `${v}`;
}

export class Family {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly labelNames: readonly string[];
  readonly aggregator = "sum";
  private readonly collectSamples: () => Promise<Samples | undefined>;
  /** `name="` of each label, written once. */
  private readonly labelOpen: readonly string[];

  constructor(o: FamilyOptions) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(o.name)) throw new Error(`Cannot create metric family ${JSON.stringify(o.name)}: not a metric name`);
    for (const l of o.labelNames) if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(l)) throw new Error(`Cannot create metric family ${o.name}: ${JSON.stringify(l)} is not a label name`);
    this.name = o.name;
    this.help = o.help;
    this.type = o.type;
    this.labelNames = [...o.labelNames];
    this.collectSamples = o.collect;
    this.labelOpen = this.labelNames.map((l) => `${l}="`);
    for (const r of o.registers) r.registerFamily(this);
  }

  /** An empty set of samples of this family. */
  samples(): Samples {
    return new Samples(this.name, this.labelOpen);
  }

  /** The family's exposition text (no trailing newline), as prom-client writes it. */
  async text(): Promise<string> {
    const s = await this.collectSamples();
    const head = `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}`;
    return s?.length ? `${head}\n${s.lines.join("\n")}` : head;
  }

  /** The samples as prom-client's Metric.get() returns them. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Array<{ value: number; labels: Record<string, string> }> }> {
    const s = await this.collectSamples();
    const w = this.labelNames.length;
    const values = Array.from({ length: s?.length ?? 0 }, (_, i) => ({
      value: s!.values[i]!,
      labels: Object.fromEntries(this.labelNames.map((l, j) => [l, s!.labelValues[i * w + j]!])),
    }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Nothing to reset: the samples are collected afresh at every scrape (prom-client's registry calls this). */
  reset(): void {}
}

/** A prom-client registry that also holds Families. */
export class Registry extends client.Registry {
  registerFamily(f: Family): void {
    // A Family answers every method the registry calls on a metric (get, reset, name, help, type, aggregator).
    this.registerMetric(f as unknown as client.Metric);
  }

  override async metrics(): Promise<string> {
    if (this.contentType !== client.Registry.PROMETHEUS_CONTENT_TYPE) return super.metrics();
    // (prom-client types a metric's `type` as an enum; it is the TYPE line's word, as a Family's is.)
    const all: ReadonlyArray<{ readonly name: string }> = this.getMetricsAsArray();
    const parts = await Promise.all(all.map((m) => (m instanceof Family ? m.text() : this.getSingleMetricAsString(m.name))));
    return `${parts.join("\n\n")}\n`;
  }
}
