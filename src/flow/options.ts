import { ConfigError } from "../configFields.ts";

/** A task's flow control, declared with defineTask({ flow }). */
export interface TaskFlowOptions {
  /**
   * Most jobs of this task running at once in the whole fleet, whatever the number of workers
   * and slots (a fleet-wide limit, enforced in Postgres). Jobs over it wait parked, holding no
   * slot or connection, and are woken as running ones finish. Default: no limit.
   */
  concurrency?: number;
  /**
   * A named fleet-wide limit this task shares with other tasks (e.g. every task that calls the
   * GPU: "gpu"); its size comes from the worker (runWorker's flow.queues, FLOW_QUEUE_CONCURRENCY).
   * Not graphile-worker's queueName, which runs jobs one at a time in order. Default: none.
   */
  queue?: string;
}

/** The worker's flow-control settings: they override what the tasks declare. */
export interface WorkerFlowOptions {
  /** Fleet-wide limits by task identifier (FLOW_TASK_CONCURRENCY), over each task's flow.concurrency. */
  concurrency?: Record<string, number>;
  /** Sizes of the named limits by name (FLOW_QUEUE_CONCURRENCY); every flow.queue a task names needs one. */
  queues?: Record<string, number>;
}

/** One fleet-wide limit. */
export interface FlowLimit {
  kind: "task" | "queue";
  name: string;
  maxRunning: number;
}

/** Limit names: what a task identifier may be (and a queue name, the same way). */
const LIMIT_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_LIMIT = 100_000;

/** Why `value` is not a valid limit size, or null. */
function sizeProblem(value: unknown): string | null {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_LIMIT ? null : `must be a whole number from 1 to ${MAX_LIMIT}`;
}

/** Why a task's `flow` option is invalid (defineTask's message), or null. */
export function taskFlowProblem(flow: unknown): string | null {
  if (typeof flow !== "object" || flow === null) return "flow must be an object { concurrency?, queue? }";
  const { concurrency, queue, ...rest } = flow as TaskFlowOptions;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) return `flow has an unknown field ${JSON.stringify(unknown)} (known: concurrency, queue)`;
  if (concurrency !== undefined && sizeProblem(concurrency)) return `flow.concurrency ${sizeProblem(concurrency)} (got ${JSON.stringify(concurrency)})`;
  if (queue !== undefined && (typeof queue !== "string" || !LIMIT_NAME.test(queue))) {
    return `flow.queue must be letters, digits and _, not starting with a digit (got ${JSON.stringify(queue)})`;
  }
  return null;
}

/**
 * Parses "name=n,other=m" (FLOW_TASK_CONCURRENCY, FLOW_QUEUE_CONCURRENCY); blanks around the
 * parts are allowed, an empty string is no limits. Throws Error with the problem.
 */
export function parseLimitList(value: string): Record<string, number> {
  const limits: Record<string, number> = {};
  for (const part of value.split(",").map((each) => each.trim()).filter((each) => each !== "")) {
    const match = /^([^=\s]+)\s*=\s*(\S+)$/.exec(part);
    if (!match) throw new Error(`must be name=n pairs separated by commas, e.g. embed_chunks=4,other=2 (bad part ${JSON.stringify(part)})`);
    const [, name, size] = match as unknown as [string, string, string];
    if (!LIMIT_NAME.test(name)) throw new Error(`${JSON.stringify(name)} must be letters, digits and _, not starting with a digit`);
    if (name in limits) throw new Error(`${name} is given twice`);
    const n = /^[0-9]+$/.test(size) ? Number(size) : Number.NaN;
    if (sizeProblem(n)) throw new Error(`${name}'s limit ${sizeProblem(n)}`);
    limits[name] = n;
  }
  return limits;
}

function checkRecord(record: Record<string, number> | undefined, option: string): void {
  if (record === undefined) return;
  if (typeof record !== "object" || record === null) throw new ConfigError(`${option}: must be an object of name: limit`);
  for (const [name, size] of Object.entries(record)) {
    if (!LIMIT_NAME.test(name)) throw new ConfigError(`${option}: ${JSON.stringify(name)} must be letters, digits and _, not starting with a digit`);
    if (sizeProblem(size)) throw new ConfigError(`${option}.${name}: ${sizeProblem(size)} (got ${JSON.stringify(size)})`);
  }
}

/** What a task declares: its own limit and its named limit's name. */
export interface TaskFlowDeclaration {
  flow?: TaskFlowOptions;
}

/**
 * The limits of each task this worker runs: its own (the worker's flow.concurrency, else the
 * task's flow.concurrency) and its named limit (the task's flow.queue, sized by the worker's
 * flow.queues). A task with neither is absent. A flow.queue without a size is a ConfigError:
 * guessing one could overload what the group protects.
 */
export function resolveLimits(tasks: ReadonlyMap<string, TaskFlowDeclaration>, options: WorkerFlowOptions = {}): Map<string, FlowLimit[]> {
  checkRecord(options.concurrency, "flow.concurrency");
  checkRecord(options.queues, "flow.queues");
  const byTask = new Map<string, FlowLimit[]>();
  for (const [task, definition] of tasks) {
    const limits: FlowLimit[] = [];
    const own = options.concurrency?.[task] ?? definition.flow?.concurrency;
    if (own !== undefined) limits.push({ kind: "task", name: task, maxRunning: own });
    const queue = definition.flow?.queue;
    if (queue !== undefined) {
      const size = options.queues?.[queue];
      if (size === undefined) throw new ConfigError(`task ${task} is in flow queue ${JSON.stringify(queue)}, which has no size: set flow.queues.${queue} (FLOW_QUEUE_CONCURRENCY=${queue}=n)`);
      limits.push({ kind: "queue", name: queue, maxRunning: size });
    }
    if (limits.length > 0) byTask.set(task, limits);
  }
  return byTask;
}

/** Names in the worker's flow options that match none of its tasks or queues (a typo, or meant for other workers). */
export function unusedLimitNames(tasks: ReadonlyMap<string, TaskFlowDeclaration>, options: WorkerFlowOptions = {}): string[] {
  const queues = new Set([...tasks.values()].map((task) => task.flow?.queue).filter((queue) => queue !== undefined));
  return [
    ...Object.keys(options.concurrency ?? {}).filter((name) => !tasks.has(name)).map((name) => `task ${name}`),
    ...Object.keys(options.queues ?? {}).filter((name) => !queues.has(name)).map((name) => `queue ${name}`),
  ];
}
