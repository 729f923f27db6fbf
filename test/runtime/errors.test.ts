import t from "tap";
import { TimeoutError } from "p-timeout";
import { z } from "zod";
import { classifyError, describeError, PermanentError, TaskTimeoutError } from "../../src/runtime/errors.ts";

const withProps = (message: string, props: Record<string, unknown>) => Object.assign(new Error(message), props);

t.test("transient: worth another attempt", async (t) => {
  const cases: Array<[string, unknown]> = [
    ["connection refused", withProps("connect ECONNREFUSED", { code: "ECONNREFUSED" })],
    ["connection reset", withProps("read ECONNRESET", { code: "ECONNRESET" })],
    ["undici socket error behind fetch's TypeError", new TypeError("fetch failed", { cause: withProps("other side closed", { code: "UND_ERR_SOCKET" }) })],
    ["HTTP 408", withProps("Request Timeout", { status: 408 })],
    ["HTTP 429", withProps("Too Many Requests", { status: 429 })],
    ["HTTP 503 (Qdrant client shape)", withProps("Service Unavailable", { status: 503 })],
    ["HTTP 500 (ollama client shape)", withProps("internal error", { status_code: 500 })],
    ["HTTP 502 on a response object", withProps("Bad Gateway", { response: { status: 502 } })],
    ["serialization failure", withProps("could not serialize access", { code: "40001" })],
    ["deadlock", withProps("deadlock detected", { code: "40P01" })],
    ["connection failure", withProps("connection failure", { code: "08006" })],
    ["admin shutdown", withProps("terminating connection due to administrator command", { code: "57P01" })],
    ["statement timeout", withProps("canceling statement due to statement timeout", { code: "57014" })],
    ["our prepare deadline", new TaskTimeoutError("prepare exceeded its 10 ms deadline")],
    ["p-timeout", new TimeoutError("timed out")],
    ["an aborted request", new DOMException("This operation was aborted", "AbortError")],
    ["an unknown bug (retried, then dead-lettered)", new TypeError("x is undefined")],
  ];
  for (const [name, error] of cases) t.equal(classifyError(error), "transient", name);
});

t.test("permanent: the same input fails the same way", async (t) => {
  const invalid = z.object({ n: z.number() }).safeParse({ n: "x" });
  const cases: Array<[string, unknown]> = [
    ["PermanentError", new PermanentError("bad document")],
    ["PermanentError wrapped", new Error("outer", { cause: new PermanentError("inner") })],
    ["payload validation", invalid.success ? null : invalid.error],
    ["HTTP 400 wrong vector size", withProps("Bad Request", { status: 400 })],
    ["HTTP 401", withProps("Unauthorized", { status: 401 })],
    ["HTTP 404 model not found", withProps('model "x" not found, try pulling it first', { status_code: 404 })],
    ["unique violation", withProps("duplicate key value", { code: "23505" })],
    ["invalid text", withProps("invalid byte sequence for encoding", { code: "22021" })],
  ];
  for (const [name, error] of cases) t.equal(classifyError(error), "permanent", name);
});

t.test("describeError is one line without a stack", async (t) => {
  t.equal(describeError(new PermanentError("line one\nline two")), "PermanentError: line one line two");
  const invalid = z.object({ n: z.number() }).safeParse({ n: "x" });
  t.match(describeError(invalid.success ? null : invalid.error), /^invalid payload: n: Expected number, received string$/);
  t.equal(describeError("plain"), "plain");
  t.ok(describeError(new Error("x".repeat(5000))).length < 2100, "bounded length");
});

t.test("errors from another copy of pgconverge or of zod are still permanent", async (t) => {
  // What a PermanentError and a ZodError thrown by a second install of the package (or the
  // application's own zod) look like here: same brand and name, another class.
  const permanent = Object.assign(new Error("document is not valid UTF-8"), { [Symbol.for("pgconverge.permanentError")]: true });
  t.ok(permanent instanceof PermanentError);
  t.equal(classifyError(permanent), "permanent");
  const zodError = Object.assign(new Error("invalid"), { name: "ZodError", issues: [{ path: ["n"], message: "Expected number" }] });
  t.equal(classifyError(zodError), "permanent");
  t.equal(describeError(zodError), "invalid payload: n: Expected number");
  t.notOk(new Error("plain") instanceof PermanentError);
  class Narrower extends PermanentError {}
  t.notOk(new PermanentError("x") instanceof Narrower, "a subclass keeps ordinary instanceof");
});
