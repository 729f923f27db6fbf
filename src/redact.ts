/**
 * Credentials in URLs (`http://user:password@host`, `postgres://user:password@host/db`,
 * `https://token@host`) must never reach a log line, an error line or a stored error. Every
 * path that prints text which may hold a URL goes through redactCredentials: the logger (each
 * line it writes), describeError (log fields, dead letters, the CLI's error line) and the
 * settings logged at start.
 */

/**
 * A scheme, `//`, then the userinfo up to its last `@` before the host: a password with a raw
 * `@` is still covered. Quotes, brackets and backslashes end the match, so the URL in one JSON
 * field cannot swallow the next.
 */
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#"'<>\\]*)@/gi;

/** `text` with the password (or lone token) of every URL in it replaced by `***`. */
export function redactCredentials(text: string): string {
  return text.replace(USERINFO, (_match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(":");
    return `${scheme}${colon === -1 ? "***" : `${userinfo.slice(0, colon)}:***`}@`;
  });
}

/**
 * Splits the credentials off an http(s) URL (Ollama's `host[:port]` form too), for clients that
 * refuse URLs with userinfo (fetch does): the URL without them, and the Basic authorization
 * header that carries them instead. A URL without userinfo is returned unchanged.
 */
export function splitCredentials(url: string): { url: string; authorization?: string } {
  const parsed = url.includes("@") ? parseHttpUrl(url) : undefined;
  if (!parsed || (parsed.username === "" && parsed.password === "")) return { url };
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  parsed.username = "";
  parsed.password = "";
  return { url: parsed.href.replace(/\/$/, ""), authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` };
}

function parseHttpUrl(url: string): URL | undefined {
  try {
    return new URL(/^https?:\/\//i.test(url) ? url : `http://${url}`);
  } catch {
    return undefined;
  }
}
