// Bad configuration and bad flags, as a newcomer types them: each one is one line on stderr
// naming the variable or flag, exit code 2, never a stack trace, a ZodError or the password.
import t from "tap";
import { runCli } from "../helpers/cli.ts";

const PASSWORD = "s3cretPW";
/** Nothing listens here: a case that got as far as connecting would fail with exit 1. */
const UNREACHABLE = "postgres://127.0.0.1:1/none";

interface Case {
  args: string[];
  env?: Record<string, string>;
  /** The variable or flag the line must name. */
  names: string;
}

const url = (rest: string) => `postgres://app:${rest}`;

const cases: Case[] = [
  // DATABASE_URL, parsed as both drivers (pg and slonik) will parse it.
  { env: { DATABASE_URL: url(`${PASSWORD}@127.0.0.1:5432/db?sslmode=bogus`) }, args: ["status"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`${PASSWORD}%zz@127.0.0.1:5432/db`) }, args: ["status"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`${PASSWORD}@127.0.0.1:99999/db`) }, args: ["status"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`${PASSWORD}@[127.0.0.1/db`) }, args: ["worker"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`${PASSWORD}#x@127.0.0.1/db`) }, args: ["status"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`12/${PASSWORD}@127.0.0.1/db`) }, args: ["status"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`${PASSWORD}@127.0.0.1/db?sslnegotiation=bogus`) }, args: ["status"], names: "DATABASE_URL" },
  { env: { DATABASE_URL: url(`${PASSWORD}@127.0.0.1/db?sslrootcert=/nonexistent/ca.pem`) }, args: ["dlq", "list"], names: "DATABASE_URL" },
  // The other URL settings, as their clients parse them.
  { env: { QDRANT_URL: "http://[::1" }, args: ["reconcile"], names: "QDRANT_URL" },
  { env: { QDRANT_URL: "127.0.0.1:6333" }, args: ["reconcile"], names: "QDRANT_URL" },
  { env: { OLLAMA_HOST: "http://127.0.0.1:port" }, args: ["search", "x"], names: "OLLAMA_HOST" },
  { env: { OLLAMA_HOST: "ftp://127.0.0.1" }, args: ["search", "x"], names: "OLLAMA_HOST" },
  // Numbers.
  { env: { WORKER_CONCURRENCY: "ten" }, args: ["worker"], names: "WORKER_CONCURRENCY" },
  { env: { METRICS_PORT: "70000" }, args: ["worker"], names: "METRICS_PORT" },
  // Flags of each command.
  { args: ["search", "x", "--limit", "abc"], names: "--limit" },
  { args: ["ingest", "-", "--source", ""], names: "--source" },
  { args: ["ingest", "-", "--source", "   "], names: "--source" },
  { args: ["dlq", "list", "--task", ""], names: "--task" },
  { args: ["dlq", "retry", "9999999999999999999"], names: "dlq retry" },
  { args: ["outbox", "retry", "9223372036854775808"], names: "outbox retry" },
  { args: ["status", "--limit", "5"], names: "--limit" },
  { args: ["search", "x", "--limit"], names: "--limit" },
];

t.test("each bad setting or flag: exit 2, one line naming it, no stack, no ZodError, no password", async (t) => {
  // A few at a time: each is a Node.js process.
  for (let start = 0; start < cases.length; start += 6) {
    const batch = cases.slice(start, start + 6);
    const results = await Promise.all(batch.map((c) => runCli(c.args, { env: { DATABASE_URL: UNREACHABLE, ...c.env } })));
    for (const [index, result] of results.entries()) {
      const c = batch[index]!;
      const label = `${Object.entries(c.env ?? {}).map(([k, v]) => `${k}=${v} `).join("")}pgconverge ${c.args.join(" ")}`;
      t.equal(result.code, 2, `${label}: exit 2 (${result.stderr.trim()})`);
      const lines = result.stderr.trimEnd().split("\n");
      t.equal(lines.length, 1, `${label}: one line\n${result.stderr}`);
      t.ok(lines[0]!.startsWith("pgconverge: ") && lines[0]!.includes(c.names), `${label}: names ${c.names}: ${lines[0]}`);
      t.notMatch(result.stderr, /ZodError|URIError|TypeError|\n\s+at /, `${label}: no error dump`);
      t.notOk(result.stderr.includes(PASSWORD), `${label}: no password`);
      t.equal(result.stdout, "", `${label}: nothing on stdout`);
    }
  }
});
