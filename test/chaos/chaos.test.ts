// The short chaos run: `npm run chaos` scaled down (its own embedded Postgres, restarted once;
// three worker processes SIGKILLed and respawned; faults in both test servers; edits and
// deletes racing their processing), then every invariant asserted.
import t from "tap";
import { runChaos } from "../../bench/chaos/run.ts";

t.test("chaos: faults, SIGKILLs, racing edits and deletes, a Postgres restart; every invariant holds", async (t) => {
  const result = await runChaos({
    seconds: Number(process.env.CHAOS_TEST_SECONDS ?? 20),
    documents: Number(process.env.CHAOS_TEST_DOCUMENTS ?? 150),
    workers: 3,
    waves: 4,
    killEveryMs: 4_000,
    qdrantFaultRate: 0.15,
    ollamaFaultRate: 0.08,
    drainTimeoutMs: 120_000,
    log: (line) => t.comment(line),
  });
  t.comment(result.summary);

  // The run did what it claims: otherwise the checks below prove nothing.
  t.ok(result.figures.restart, "Postgres was restarted once, mid-run");
  t.ok(result.figures.kills > 0, `workers were SIGKILLed (${result.figures.kills})`);
  t.ok(result.figures.faults.qdrant > 0 && result.figures.faults.ollama > 0, `faults were injected (Qdrant ${result.figures.faults.qdrant}, Ollama ${result.figures.faults.ollama})`);
  t.ok(result.figures.documents.edited > 0 && result.figures.documents.deleted > 0, "documents were edited and deleted during the run");
  t.not(result.figures.drainSeconds, null, "the workers drained every job and outbox change");

  for (const check of result.checks) t.ok(check.ok, `${check.name}: ${check.detail}`);
  for (const exit of result.selfExits) t.comment(`worker ${exit.pid} exited by itself (code ${exit.code}):\n${exit.output}`);
});
