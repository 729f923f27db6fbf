// `npm run chaos`: the pipeline under faults, SIGKILLs, edits racing their processing and a
// Postgres restart, then every invariant checked. One summary line; exit 0 if all hold.
// CHAOS_SECONDS (120), CHAOS_DOCUMENTS (1000), CHAOS_WORKERS (3), CHAOS_WAVES (8),
// CHAOS_KILL_EVERY_MS (8000), CHAOS_QDRANT_FAULT_RATE (0.15), CHAOS_OLLAMA_FAULT_RATE (0.08),
// CHAOS_DRAIN_SECONDS (300).
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { runChaos } from "./chaos/run.ts";
import { envNumber } from "./lib.ts";

const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));

const options = {
  seconds: envNumber("CHAOS_SECONDS", 120),
  documents: envNumber("CHAOS_DOCUMENTS", 1000),
  workers: envNumber("CHAOS_WORKERS", 3),
  waves: envNumber("CHAOS_WAVES", 8),
  killEveryMs: envNumber("CHAOS_KILL_EVERY_MS", 8000),
  qdrantFaultRate: envNumber("CHAOS_QDRANT_FAULT_RATE", 0.15),
  ollamaFaultRate: envNumber("CHAOS_OLLAMA_FAULT_RATE", 0.08),
  drainTimeoutMs: envNumber("CHAOS_DRAIN_SECONDS", 300) * 1000,
};

const result = await runChaos({ ...options, log: (line) => console.error(line) });
for (const [message, count] of Object.entries(result.workerMessages).slice(0, 15)) console.error(`  worker log x${count}: ${message}`);
for (const check of result.checks) console.error(`  ${check.ok ? "ok  " : "FAIL"} ${check.name}: ${check.detail}`);
mkdirSync(RESULTS, { recursive: true });
writeFileSync(
  `${RESULTS}chaos.json`,
  `${JSON.stringify({ command: "npm run chaos", at: new Date().toISOString(), options, ok: result.ok, summary: result.summary, checks: result.checks, figures: result.figures, workerMessages: result.workerMessages, selfExits: result.selfExits }, null, 2)}\n`,
);
console.log(result.summary);
process.exit(result.ok ? 0 : 1);
