// Type-level tests of the public API, checked by `npm run typecheck` (never run): each
// expect-error directive below fails the typecheck if the line after it compiles.
import pg from "pg";
import { addJob, defineTask, runWorker } from "pgconverge";
import { z } from "zod";

interface Mailer {
  send(to: string): Promise<void>;
}

const sendEmail = defineTask.withServices<{ mail: Mailer }>()({
  identifier: "send_email",
  payload: z.object({ to: z.string().email(), retries: z.number().int().default(0) }),
  async apply({ payload, services }) {
    await services.mail.send(payload.to);
  },
});

const noServices = defineTask({
  identifier: "count",
  payload: z.object({ n: z.number() }),
  async apply() {},
});

export async function typeTests(pool: pg.Pool, client: pg.PoolClient, mail: Mailer): Promise<void> {
  // The payload is the schema's input: a defaulted field may be left out.
  await addJob(client, sendEmail, { to: "a@example.com" });
  await addJob(pool, noServices, { n: 1 }, { jobKey: "count" });
  // By name, the payload is only checked when the job runs.
  await addJob(pool, "send_email", { anything: true });
  // @ts-expect-error a wrong payload to the typed enqueue
  await addJob(client, sendEmail, { to: 42 });
  // @ts-expect-error a payload missing a required field
  await addJob(client, noServices, {});

  await runWorker({ pool, tasks: { send_email: sendEmail, count: noServices }, services: { mail } });
  await runWorker({ databaseUrl: "postgres://localhost/app", tasks: { count: noServices } });
  // @ts-expect-error a missing service: send_email needs mail
  await runWorker({ pool, tasks: { send_email: sendEmail, count: noServices }, services: {} });
  // @ts-expect-error no services at all, though send_email needs mail
  await runWorker({ pool, tasks: { send_email: sendEmail } });
  // @ts-expect-error a service of the wrong type
  await runWorker({ pool, tasks: { send_email: sendEmail }, services: { mail: "smtp://localhost" } });
  // A directory of task files cannot be checked at compile time: any services go.
  await runWorker({ pool, tasks: "tasks", services: { mail } });

  // @ts-expect-error a task with both apply and applyBatch
  defineTask({ payload: z.object({}), async apply() {}, async applyBatch() {} });
  defineTask({
    payload: z.object({ n: z.number() }),
    async apply({ services }) {
      // @ts-expect-error a task that did not state its services has none
      services.mail;
    },
  });
}
