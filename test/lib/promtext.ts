/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4),
 * for tests: it throws on the first line a Prometheus server would reject
 * or that breaks the format's rules, naming the line.
 *
 * Checked: `# HELP` / `# TYPE` lines (at most one each per family, TYPE
 * before the family's samples, a known type); metric and label names;
 * label values (only \\, \" and \n escapes); no duplicate label in a
 * sample; numeric values (floats, +Inf, -Inf, NaN) and optional integer
 * timestamps (values as Prometheus reads them: NaN and Inf in any case);
 * every sample belongs to a declared family (histograms:
 * _bucket with `le`, _sum, _count; summaries: quantiles, _sum, _count);
 * a family's samples are contiguous; no series appears twice; histogram
 * buckets are cumulative and end with le="+Inf" equal to _count.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  readonly type: MetricType;
  readonly help?: string;
  readonly samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** As Prometheus reads a value (Go's strconv.ParseFloat: NaN and Inf in any case). */
function parseValue(s: string, where: string): number {
  if (/^\+?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) throw new Error(`${where}: value ${JSON.stringify(s)} is not a number`);
  return Number(s);
}

/** Parses `{a="x",b="y"}` starting at text[0] === "{"; returns the labels and the rest of the line. */
function parseLabels(text: string, where: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  for (;;) {
    if (text[i] === "}") return { labels, rest: text.slice(i + 1) };
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(text.slice(i));
    if (!m) throw new Error(`${where}: bad label at ${JSON.stringify(text.slice(i, i + 20))}`);
    const name = m[1]!;
    if (name in labels) throw new Error(`${where}: label ${name} twice`);
    i += m[0].length;
    let value = "";
    for (;;) {
      const c = text[i];
      if (c === undefined) throw new Error(`${where}: unterminated label value`);
      if (c === "\"") { i++; break; }
      if (c === "\\") {
        const e = text[i + 1];
        if (e === "\\") value += "\\";
        else if (e === "\"") value += "\"";
        else if (e === "n") value += "\n";
        else throw new Error(`${where}: bad escape \\${e ?? ""} in label ${name}`);
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    labels[name] = value;
    if (text[i] === ",") i++;
    else if (text[i] !== "}") throw new Error(`${where}: expected , or } after label ${name}`);
  }
}

/** The family a sample name belongs to, given the declared families. */
function familyOf(name: string, families: Map<string, Family>): { family: Family; suffix: string } | undefined {
  const exact = families.get(name);
  if (exact && exact.type !== "histogram") return { family: exact, suffix: "" };
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === "histogram" || (f.type === "summary" && suffix !== "_bucket"))) return { family: f, suffix };
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const closed = new Set<string>();
  let current: string | undefined;
  const lines = text.split("\n");
  if (lines[lines.length - 1] !== "") throw new Error("the text does not end with a newline");
  lines.pop();
  lines.forEach((line, idx) => {
    const where = `line ${idx + 1} ${JSON.stringify(line.slice(0, 80))}`;
    if (line === "") return;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) {
        if (/^# (HELP|TYPE)/.test(line)) throw new Error(`${where}: malformed ${line.slice(2, 6)} line`);
        return; // a comment
      }
      const [, kind, name, rest] = m;
      if (!METRIC_NAME.test(name!)) throw new Error(`${where}: bad metric name ${name}`);
      if (closed.has(name!) || (current !== undefined && current !== name && families.get(name!)?.samples.length)) {
        throw new Error(`${where}: family ${name} is not contiguous`);
      }
      if (current !== undefined && current !== name) closed.add(current);
      current = name;
      const f = families.get(name!) ?? { name: name!, type: "untyped" as MetricType, samples: [] };
      const declared = f as { type: MetricType; help?: string; typed?: boolean };
      if (kind === "HELP") {
        if (declared.help !== undefined) throw new Error(`${where}: second HELP for ${name}`);
        declared.help = (rest ?? "").replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
      } else {
        if (declared.typed) throw new Error(`${where}: second TYPE for ${name}`);
        if (f.samples.length) throw new Error(`${where}: TYPE after samples of ${name}`);
        if (!TYPES.has(rest ?? "")) throw new Error(`${where}: unknown type ${rest}`);
        declared.type = rest as MetricType;
        declared.typed = true;
      }
      families.set(name!, f);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/.exec(line);
    if (!m) throw new Error(`${where}: not a sample`);
    const name = m[1]!;
    let rest = m[2]!;
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) ({ labels, rest } = parseLabels(rest, where));
    const parts = rest.split(" ");
    if (parts[0] !== "" || parts.length < 2 || parts.length > 3) throw new Error(`${where}: expected " value [timestamp]"`);
    const value = parseValue(parts[1]!, where);
    if (parts[2] !== undefined && !/^-?\d+$/.test(parts[2])) throw new Error(`${where}: bad timestamp ${parts[2]}`);
    for (const l of Object.keys(labels)) if (!LABEL_NAME.test(l) || l.startsWith("__")) throw new Error(`${where}: reserved or bad label name ${l}`);
    const fam = familyOf(name, families);
    if (!fam) throw new Error(`${where}: sample ${name} belongs to no declared family`);
    if (fam.family.name !== current) throw new Error(`${where}: sample of ${fam.family.name} outside its family's block`);
    if (fam.suffix === "_bucket" && !("le" in labels)) throw new Error(`${where}: histogram bucket without le`);
    if (fam.family.type === "counter" && value < 0) throw new Error(`${where}: negative counter`);
    const id = `${name}{${Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(",")}}`;
    if (seen.has(id)) throw new Error(`${where}: series ${id} appears twice`);
    seen.add(id);
    fam.family.samples.push({ name, labels, value });
  });
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, Sample[]>();
  const keyOf = (s: Sample) => JSON.stringify(Object.entries(s.labels).filter(([k]) => k !== "le").sort());
  for (const s of f.samples) {
    const k = keyOf(s);
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  for (const [k, ss] of groups) {
    const buckets = ss.filter((s) => s.name === `${f.name}_bucket`).map((s) => ({ le: parseValue(s.labels.le!, `${f.name} le`), v: s.value }));
    buckets.sort((a, b) => a.le - b.le);
    for (let i = 1; i < buckets.length; i++) if (buckets[i]!.v < buckets[i - 1]!.v) throw new Error(`${f.name}${k}: buckets are not cumulative`);
    const inf = buckets[buckets.length - 1];
    const count = ss.find((s) => s.name === `${f.name}_count`);
    if (!inf || inf.le !== Infinity) throw new Error(`${f.name}${k}: no le="+Inf" bucket`);
    if (!count || count.value !== inf.v) throw new Error(`${f.name}${k}: _count differs from the +Inf bucket`);
    if (!ss.some((s) => s.name === `${f.name}_sum`)) throw new Error(`${f.name}${k}: no _sum`);
  }
}

/** The value of one series (labels must match exactly the given subset), or undefined. */
export function sampleValue(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of fams.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}
