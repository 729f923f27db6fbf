import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import t from "tap";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));

function cli(args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, DATABASE_URL: "postgres://127.0.0.1:1/none", ...env },
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: result.status, stderr: result.stderr, stdout: result.stdout };
}

const badConfig: Array<[string, string, RegExp]> = [
  ["WORKER_CONCURRENCY", "abc", /^pgconverge: WORKER_CONCURRENCY: must be a whole number \(got "abc"\)\n$/],
  ["WORKER_CONCURRENCY", "0", /^pgconverge: WORKER_CONCURRENCY: must be at least 1 \(got "0"\)\n$/],
  ["DATABASE_URL", "mysql://localhost/x", /^pgconverge: DATABASE_URL: must be a postgres:\/\/ or postgresql:\/\/ URL/],
  ["LOG_LEVEL", "loud", /^pgconverge: LOG_LEVEL: /],
  ["HEARTBEAT_INTERVAL_MS", "20000", /^pgconverge: WORKER_DEAD_AFTER_MS: must be at least 3 x HEARTBEAT_INTERVAL_MS/],
];

for (const [name, value, message] of badConfig) {
  t.test(`${name}=${value} exits 2 with one line naming the variable`, async (t) => {
    const result = cli(["worker"], { [name]: value });
    t.equal(result.code, 2);
    t.match(result.stderr, message);
    t.equal(result.stderr.trim().split("\n").length, 1, "one line, no stack trace");
  });
}

t.test("bad usage exits 2 with one line", async (t) => {
  for (const args of [[], ["frobnicate"], ["worker", "extra"], ["--nope"]]) {
    const result = cli(args);
    t.equal(result.code, 2, `pgconverge ${args.join(" ")}`);
    t.equal(result.stderr.trim().split("\n").length, 1);
  }
  const help = cli(["--help"]);
  t.equal(help.code, 0);
  t.match(help.stdout, /usage: pgconverge \[--config FILE\] <command>/);
});

t.test("an unreachable database is a runtime failure: exit 1, one line", async (t) => {
  const result = cli(["migrate"]);
  t.equal(result.code, 1);
  t.match(result.stderr, /^pgconverge: .*ECONNREFUSED/);
  t.equal(result.stderr.trim().split("\n").length, 1);
});

t.test("a task directory that cannot be read is a configuration error", async (t) => {
  const result = cli(["worker"], { PGCONVERGE_TASKS_DIR: "/nonexistent/tasks" });
  t.equal(result.code, 2);
  t.match(result.stderr, /^pgconverge: task directory \/nonexistent\/tasks cannot be read\n$/);
});
