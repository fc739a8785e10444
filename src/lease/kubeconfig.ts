/**
 * Where the Kubernetes API is and how to authenticate to it: a kubeconfig
 * file, --kube-api-url, or the pod's service account, as flannel's
 * clientcmd.BuildConfigFromFlags chooses.
 *
 * How it works:
 *  1) The source: --kubeconfig-file (its current context; --kube-api-url,
 *     when also given, replaces its server); else --kube-api-url alone (no
 *     auth); else the in-cluster service account (KUBERNETES_SERVICE_HOST
 *     and _PORT, the token, ca.crt); else, outside a pod, $KUBECONFIG
 *     (files separated by ':', merged as kubectl does: the first file to
 *     set a value wins).
 *  2) A kubeconfig is YAML (or JSON, which js-yaml reads too). js-yaml is
 *     imported only here and only for a file: in a pod (the DaemonSet) no
 *     YAML parser is loaded. The document is checked once (loadKubeconfig)
 *     into a KubeConnection; paths in it are relative to the file's folder.
 *  3) Supported: server, certificate-authority(-data),
 *     insecure-skip-tls-verify, tls-server-name; client-certificate(-data)
 *     and client-key(-data); token, tokenFile; username/password (basic).
 *     exec and auth-provider plugins are refused naming the field: they
 *     would run programs or cloud SDKs inside the daemon.
 *  4) Tokens from a file (tokenFile, the service account's bound token,
 *     which the kubelet rotates) are re-read when older than a minute, as
 *     client-go does, and at once after a 401 (see kubeapi.ts).
 *  5) Credentials (token, tokenFile, basic auth, a client certificate, or
 *     userinfo in the server URL) are not sent to an http:// server unless
 *     --allow-insecure-credentials is given (ERR_INVALID_FLAG naming them:
 *     credentials.ts); the connection then carries the warning to log.
 *     No message quotes a secret: URLs lose their userinfo, and a YAML
 *     error is reported by line and column, never with js-yaml's excerpt
 *     of the file (which could hold a token or a key).
 * Errors: ERR_INVALID_CONFIG "Cannot load <what>: <why>".
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { TwillError } from "../errors.js";
import { hasUserinfo, redactURL, refuseOverHttp } from "./credentials.js";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** A bearer token, fixed or re-read from a file. */
export interface TokenSource {
  readonly file?: string;
  readonly value?: string;
}

export interface KubeConnection {
  /** The API server, without a trailing slash. */
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly insecureSkipTLSVerify: boolean;
  readonly tlsServerName?: string;
  readonly token?: TokenSource;
  readonly basic?: { readonly username: string; readonly password: string };
  /** For messages: "kubeconfig /etc/kubeconfig", "the in-cluster config", ... */
  readonly origin: string;
  /** Set when credentials go over plain http by --allow-insecure-credentials: the warning to log once. */
  readonly insecureWarning?: string;
}

export interface KubeConfigOptions {
  /** --kube-api-url */
  readonly kubeApiUrl?: string;
  /** --kubeconfig-file */
  readonly kubeconfigFile?: string;
  /** The environment (KUBERNETES_SERVICE_HOST/PORT, KUBECONFIG); default process.env. */
  readonly env?: Record<string, string | undefined>;
  /** Where the service account's files are; default SERVICE_ACCOUNT_DIR. */
  readonly serviceAccountDir?: string;
  /** --allow-insecure-credentials (see 5). */
  readonly allowInsecureCredentials?: boolean;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

class ConfigError extends Error {}

function str(o: Obj, field: string, at: string): string | undefined {
  const v = o[field];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new ConfigError(`${at}.${field} is not a string`);
  return v;
}

/** The connection the flags and the environment select (see 1), its credentials checked against its scheme (see 5). */
export async function loadConnection(o: KubeConfigOptions): Promise<KubeConnection> {
  const c = await selectConnection(o);
  const what = credentialsOf(c);
  const warning = refuseOverHttp(what, `the Kubernetes API server ${c.server} (${c.origin})`, c.server.startsWith("http:"), o.allowInsecureCredentials === true);
  return warning ? { ...c, insecureWarning: warning } : c;
}

/** The credentials a connection sends, by name (never by value). */
export function credentialsOf(c: KubeConnection): string[] {
  const out: string[] = [];
  if (c.token?.value !== undefined) out.push("a bearer token");
  if (c.token?.file !== undefined) out.push(`the token of ${c.token.file}`);
  if (c.basic) out.push("a username and password");
  if (c.cert) out.push("a client certificate");
  if (hasUserinfo(c.server)) out.push("the userinfo of the server URL");
  return out;
}

async function selectConnection(o: KubeConfigOptions): Promise<KubeConnection> {
  const env = o.env ?? process.env;
  if (o.kubeconfigFile) return fromKubeconfig([o.kubeconfigFile], `kubeconfig ${o.kubeconfigFile}`, o.kubeApiUrl);
  if (o.kubeApiUrl) return { server: checkServer(o.kubeApiUrl, "--kube-api-url"), insecureSkipTLSVerify: false, origin: "--kube-api-url" };
  if (env.KUBERNETES_SERVICE_HOST) return inCluster(env, o.serviceAccountDir ?? SERVICE_ACCOUNT_DIR);
  const files = (env.KUBECONFIG ?? "").split(":").filter(Boolean);
  if (files.length) return fromKubeconfig(files, `KUBECONFIG ${env.KUBECONFIG}`);
  throw new TwillError("ERR_INVALID_CONFIG", "Cannot load the in-cluster config: not in a pod (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig-file, --kube-api-url nor KUBECONFIG is given");
}

function checkServer(url: string, what: string): string {
  const s = url.replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(s)) throw new TwillError("ERR_INVALID_CONFIG", `the Kubernetes API server ${JSON.stringify(redactURL(url))} (${what}) is not an http:// or https:// URL`);
  return s;
}

async function inCluster(env: Record<string, string | undefined>, dir: string): Promise<KubeConnection> {
  const host = env.KUBERNETES_SERVICE_HOST!;
  const port = env.KUBERNETES_SERVICE_PORT;
  const origin = "the in-cluster config";
  if (!port) throw new TwillError("ERR_INVALID_CONFIG", `Cannot load ${origin}: KUBERNETES_SERVICE_PORT is unset`);
  const tokenFile = `${dir}/token`;
  let ca: Buffer;
  try {
    await readFile(tokenFile);
    ca = await readFile(`${dir}/ca.crt`);
  } catch (e) {
    throw new TwillError("ERR_INVALID_CONFIG", `Cannot load ${origin}: ${(e as Error).message}`, { cause: e });
  }
  return { server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`, ca, insecureSkipTLSVerify: false, token: { file: tokenFile }, origin };
}

async function fromKubeconfig(files: readonly string[], origin: string, serverOverride?: string): Promise<KubeConnection> {
  const { load } = await import("js-yaml");
  const fail = (why: string, cause?: unknown) => new TwillError("ERR_INVALID_CONFIG", `Cannot load ${origin}: ${why}`, { cause });
  // Merge as kubectl: named entries and current-context from the first file that has them.
  const clusters = new Map<string, { v: Obj; dir: string }>();
  const users = new Map<string, { v: Obj; dir: string }>();
  const contexts = new Map<string, Obj>();
  let current: string | undefined;
  for (const file of files) {
    let doc: unknown;
    try {
      doc = load(readFileSync(file, "utf8"), { filename: file });
    } catch (e) {
      if (files.length > 1 && (e as NodeJS.ErrnoException).code === "ENOENT") continue; // KUBECONFIG may list missing files
      throw fail(yamlProblem(e), e);
    }
    if (doc === undefined || doc === null) continue;
    if (!isObj(doc)) throw fail(`${file} is not a kubeconfig (not a mapping)`);
    const dir = dirname(resolve(file));
    try {
      for (const [list, into, inner] of [["clusters", clusters, "cluster"], ["users", users, "user"], ["contexts", contexts, "context"]] as const) {
        const items = doc[list];
        if (items === undefined || items === null) continue;
        if (!Array.isArray(items)) throw new ConfigError(`${list} is not a list`);
        for (const [i, it] of items.entries()) {
          if (!isObj(it) || typeof it.name !== "string") throw new ConfigError(`${list}[${i}] has no name`);
          const v = it[inner] ?? {};
          if (!isObj(v)) throw new ConfigError(`${list}[${i}].${inner} is not a mapping`);
          if (!into.has(it.name)) (into as Map<string, unknown>).set(it.name, list === "contexts" ? v : { v, dir });
        }
      }
      current ??= str(doc, "current-context", "kubeconfig");
    } catch (e) {
      throw e instanceof ConfigError ? fail(`${file}: ${e.message}`) : e;
    }
  }
  try {
    if (!current) throw new ConfigError("it has no current-context");
    const ctx = contexts.get(current);
    if (!ctx) throw new ConfigError(`its current context ${JSON.stringify(current)} is not defined`);
    const clusterName = str(ctx, "cluster", `contexts[${current}]`);
    const cluster = clusterName ? clusters.get(clusterName) : undefined;
    if (!cluster) throw new ConfigError(`its current context ${JSON.stringify(current)} names no cluster`);
    const userName = str(ctx, "user", `contexts[${current}]`);
    const user = userName ? users.get(userName) : undefined;
    const c = cluster.v;
    const cAt = `clusters[${clusterName}].cluster`;
    const server = serverOverride ?? str(c, "server", cAt);
    if (!server) throw new ConfigError(`${cAt}.server is not set`);
    const ca = material(c, "certificate-authority", cAt, cluster.dir);
    const conn: { -readonly [K in keyof KubeConnection]: KubeConnection[K] } = {
      server: checkServer(server, serverOverride ? "--kube-api-url" : `${cAt}.server`),
      insecureSkipTLSVerify: c["insecure-skip-tls-verify"] === true,
      ...(ca && { ca }),
      origin,
    };
    const sni = str(c, "tls-server-name", cAt);
    if (sni) conn.tlsServerName = sni;
    if (user) {
      const u = user.v;
      const uAt = `users[${userName}].user`;
      for (const f of ["exec", "auth-provider"]) {
        if (u[f] !== undefined && u[f] !== null) throw new ConfigError(`${uAt}.${f} is not supported by twill (use a token, tokenFile or a client certificate)`);
      }
      const cert = material(u, "client-certificate", uAt, user.dir);
      const key = material(u, "client-key", uAt, user.dir);
      if (!!cert !== !!key) throw new ConfigError(`${uAt}: client-certificate and client-key go together`);
      if (cert && key) Object.assign(conn, { cert, key });
      const token = str(u, "token", uAt);
      const tokenFile = str(u, "tokenFile", uAt);
      if (token) conn.token = { value: token };
      else if (tokenFile) conn.token = { file: resolve(user.dir, tokenFile) };
      const username = str(u, "username", uAt);
      if (username) conn.basic = { username, password: str(u, "password", uAt) ?? "" };
    }
    return conn;
  } catch (e) {
    throw e instanceof ConfigError ? fail(e.message) : e;
  }
}

/** <field>-data (base64 PEM) or <field> (a file, relative to the kubeconfig). */
function material(o: Obj, field: string, at: string, dir: string): Buffer | undefined {
  const data = str(o, `${field}-data`, at);
  if (data) return Buffer.from(data, "base64");
  const file = str(o, field, at);
  if (!file) return undefined;
  try {
    return readFileSync(resolve(dir, file));
  } catch (e) {
    throw new ConfigError(`${at}.${field}: ${(e as Error).message}`);
  }
}

/**
 * A read or YAML error in words without the file's content: js-yaml's
 * message quotes the lines around the error, which may hold a token or a
 * key, so only its reason and position are kept (see 5).
 */
function yamlProblem(e: unknown): string {
  const y = e as { name?: string; reason?: string; mark?: { line: number; column: number; name?: string | null } };
  if (y?.name === "YAMLException") {
    const at = y.mark ? ` at line ${y.mark.line + 1}, column ${y.mark.column + 1}` : "";
    return `${y.mark?.name ?? "the file"} is not valid YAML: ${y.reason ?? "syntax error"}${at}`;
  }
  return (e as Error).message;
}
