/**
 * The one-line results an action redirects with (`?notice=code&...`). Only these codes exist
 * and their parameters are numbers or a declared collection, so a link cannot put text of its
 * own on a dashboard page.
 */
const NOTICES: Record<string, (param: (name: string) => string | undefined) => string | undefined> = {
  "retried-one": (p) => (p("dl") && p("job") ? `dead letter ${p("dl")} re-enqueued as job ${p("job")}` : undefined),
  retried: (p) => (p("n") ? `${p("n")} dead letter(s) re-enqueued` : undefined),
  discarded: (p) => (p("n") ? `${p("n")} dead letter(s) discarded` : undefined),
  "outbox-retried": (p) => (p("n") ? `${p("n")} dead change(s) put back in line` : undefined),
  "reconcile-started": (p) => (p("collection") ? `reconcile of ${p("collection")} started; its progress and result show below` : undefined),
  "reconcile-busy": (p) => (p("collection") ? `a reconcile of ${p("collection")} started here is still running; wait for it to finish` : undefined),
};

export type NoticeCode = keyof typeof NOTICES;

const NUMBER = /^[0-9]{1,19}$/;

/** The query string of a notice: its code and parameters. */
export function noticeQuery(code: NoticeCode, params: Record<string, string | number> = {}): string {
  const query = new URLSearchParams({ notice: code });
  for (const [name, value] of Object.entries(params)) query.set(name, String(value));
  return query.toString();
}

/** The text of the notice a request's query names; undefined for none or anything not made by noticeQuery. */
export function noticeText(query: (name: string) => string | undefined, collections: ReadonlySet<string>): string | undefined {
  const code = query("notice");
  if (code === undefined || !Object.hasOwn(NOTICES, code)) return undefined;
  const param = (name: string) => {
    const value = query(name);
    if (value === undefined) return undefined;
    if (name === "collection") return collections.has(value) ? value : undefined;
    return NUMBER.test(value) ? value : undefined;
  };
  return NOTICES[code]!(param);
}
