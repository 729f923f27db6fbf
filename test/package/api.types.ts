// Type-level tests of the public API, checked by `npm run typecheck` (never run): each
// expect-error directive below fails the typecheck if the line after it compiles.
import pg from "pg";
import { addJob, addJobs, createDashboard, defineSync, defineTask, JOB_RESULT_MAX_BYTES, type Dashboard, type JobResult, enqueueSync, reconcile, runWorker, type PointId, type PointState } from "pgconverge";
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
  await addJob(pool, noServices, { n: 1 }, { jobKey: "count", jobKeyMode: "preserve_run_at", runAt: new Date() });
  // @ts-expect-error graphile-worker's unsafe_dedupe is not offered
  await addJob(pool, noServices, { n: 1 }, { jobKey: "count", jobKeyMode: "unsafe_dedupe" });
  await addJobs(client, noServices, [{ payload: { n: 1 } }, { payload: { n: 2 }, spec: { queueName: "serial" } }]);
  // @ts-expect-error addJobs checks each payload against the task
  await addJobs(client, noServices, [{ payload: { n: "1" } }]);

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

  const products = defineSync({
    collection: "products",
    vectors: { size: 3 },
    async load(_db, ids) {
      return new Map<PointId, PointState>(ids.map((id) => [id, { vector: [1, 0, 0], payload: { name: "lamp" }, hash: "h" }]));
    },
    async page() {
      return [{ id: 1, hash: "h" }];
    },
  });
  defineSync({
    collection: "bad",
    vectors: { size: 3 },
    // @ts-expect-error load must return a map of points (vector, payload, hash), not rows
    async load(_db, ids) {
      return ids.map((id) => ({ id, embedding: [1, 0, 0] }));
    },
    async page() {
      return [];
    },
  });
  defineSync({
    collection: "bad",
    vectors: { size: 3 },
    async load() {
      // @ts-expect-error a point without its hash
      return new Map<PointId, PointState>([[1, { vector: [1], payload: {} }]]);
    },
    async page() {
      return [];
    },
  });
  await enqueueSync(client, products, [1, "5f0c6a52-3c64-4d5e-9d3b-1f7a0e7a5e11"]);
  await enqueueSync(pool, "products", [2n]);
  // @ts-expect-error ids are point ids, not rows
  await enqueueSync(client, products, [{ id: 1 }]);
  await runWorker({ pool, tasks: { count: noServices }, syncs: [products], qdrant: { url: "http://127.0.0.1:6333" }, reconcileCron: "0 * * * *" });
  const [report] = await reconcile({ pool, qdrant: { url: "http://127.0.0.1:6333" }, syncs: [products], repair: true });
  report!.missing satisfies number;

  // The dashboard: a node:http listener and a fetch handler, mounted under a path.
  const dashboard: Dashboard = await createDashboard({ pool, basePath: "/ops", auth: { user: "ops", password: "a long password" }, syncs: [products] });
  dashboard.listener satisfies (request: import("node:http").IncomingMessage, response: import("node:http").ServerResponse) => void;
  (await dashboard.fetch(new Request("http://127.0.0.1/ops/"))) satisfies Response;
  // @ts-expect-error auth takes user, password and token
  await createDashboard({ pool, auth: { secret: "x" } });
  await createDashboard({ pool, databasePoolMode: "transaction", allowAnonymous: true });
  await dashboard.close();
  // apply may return a small JSON result for the job's history.
  defineTask({ payload: z.object({}), async apply() { return { rows: 3, ids: ["a"] } satisfies JobResult; } });
  // @ts-expect-error a result is JSON, not a function
  defineTask({ payload: z.object({}), async apply() { return () => 1; } });
  JOB_RESULT_MAX_BYTES satisfies number;
}
