// defineTask rejects a definition it could not run, with a one-line reason.
import t from "tap";
import { z } from "zod";
import { defineTask } from "pgconverge";

t.test("a task has exactly one of apply and applyBatch", async (t) => {
  const payload = z.object({});
  const apply = async () => {};
  t.ok(defineTask({ payload, apply }));
  t.ok(defineTask({ payload, applyBatch: apply }));
  // The types say so too (for callers in TypeScript); the checks below are for everyone else.
  // @ts-expect-error neither
  t.throws(() => defineTask({ payload }), /exactly one of apply and applyBatch/);
  // @ts-expect-error both
  t.throws(() => defineTask({ payload, apply, applyBatch: apply }), /exactly one of apply and applyBatch/);
  t.throws(() => defineTask({ payload, applyBatch: "insert" } as never), /as a function/);
});

t.test("prepare, when given, is a function, and timeoutMs a positive integer", async (t) => {
  const payload = z.object({});
  const apply = async () => {};
  t.throws(() => defineTask({ payload, apply, prepare: 1 } as never), /prepare must be a function/);
  t.throws(() => defineTask({ payload, apply, timeoutMs: 0 }), /timeoutMs must be a positive integer/);
});
