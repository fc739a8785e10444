/**
 * Credentials in transit and in text: where twill sends a secret, and what
 * it writes about one.
 *
 * How it works:
 *  1) Never in text: `redactURL` replaces the userinfo of every URL in a
 *     string (http://user:secret@host → http://***@host); endpoint lists
 *     and API server URLs go through it before they reach a message or a
 *     log line. Passwords, tokens and keys are never put in messages at all
 *     (the callers name the field, not the value).
 *  2) Never over plain http:// unless asked: `refuseOverHttp` throws
 *     ERR_INVALID_FLAG when credentials (etcd --etcd-username/--etcd-password;
 *     a kubeconfig's token, tokenFile, basic auth, client certificate, or
 *     userinfo in the server URL) would go to an http:// server, naming what
 *     and where, and the flag that allows it: --allow-insecure-credentials.
 *     With the flag it returns a warning for the caller to log once.
 */
import { TwillError } from "../errors.js";

export const ALLOW_FLAG = "--allow-insecure-credentials";

/** `text` with the userinfo of every scheme://user:pass@host URL in it replaced by "***". */
export function redactURL(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@?#]*@/gi, "$1***@");
}

/** Whether a URL (with a scheme) carries userinfo. */
export function hasUserinfo(url: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\/[^/\s@?#]*@/i.test(url);
}

/**
 * Throws ERR_INVALID_FLAG when `what` (e.g. "--etcd-password", "the
 * kubeconfig's token") would go to `where` over plain http and `allow` is
 * false; returns the warning to log when allowed; "" when there is nothing
 * to say (no credentials, or TLS).
 */
export function refuseOverHttp(what: readonly string[], where: string, plainHttp: boolean, allow: boolean): string {
  if (!what.length || !plainHttp) return "";
  const safe = redactURL(where);
  if (!allow) {
    throw new TwillError("ERR_INVALID_FLAG",
      `refusing to send ${what.join(", ")} to ${safe} over plain http:// (anyone on the path could read ${what.length > 1 ? "them" : "it"}): use https://, or pass ${ALLOW_FLAG} to send ${what.length > 1 ? "them" : "it"} anyway`);
  }
  return `sending ${what.join(", ")} to ${safe} over plain http:// (${ALLOW_FLAG})`;
}
