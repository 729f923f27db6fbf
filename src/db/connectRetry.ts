import pRetry from "p-retry";
import type pg from "pg";
import { isLostConnection, LOST_CONNECTION_RETRY } from "./outcomeRetry.ts";

/**
 * The pool as graphile-worker gets it: the same pool, but a connect that fails because the
 * server is not there (refused while Postgres restarts, "the database system is shutting down" or
 * "starting up", a connection cut during its start-up) is tried again with backoff, for about
 * half a minute, before the error reaches graphile-worker. graphile-worker gives up a batch of
 * completions or failures at its first error and then shuts its pool down ("queue is in an
 * inconsistent state"), and a fetch that fails while Postgres restarts does the same; a restart
 * should cost a wait, not the worker. Other errors (authentication, a missing database, too many
 * connections) fail at once. Only this view retries: an application's own pool handed to
 * runWorker keeps its behaviour everywhere else. Once `signal` aborts (the worker stops), a
 * connect waiting for its next try fails with its error instead: one that succeeded after the
 * worker had deregistered would lock jobs under a holder nobody releases.
 */
export function retryingConnects(pool: pg.Pool, signal: AbortSignal): pg.Pool {
  const connect = (callback?: unknown) => {
    // The callback form (graphile-worker's LISTEN, which has its own backoff; pg-pool's query()) is left as it is.
    if (typeof callback === "function") return pool.connect(callback as Parameters<pg.Pool["connect"]>[0]);
    let lastError: unknown;
    return pRetry(
      (attempt) => {
        // After `signal`, a retry ends with the error it was retrying, as if none had been made
        // (the first try still runs: graphile-worker returns its unrun jobs while it stops).
        if (attempt > 1 && signal.aborted) throw lastError;
        return pool.connect();
      },
      {
        ...LOST_CONNECTION_RETRY,
        unref: true,
        onFailedAttempt: ({ error }) => void (lastError = error),
        shouldRetry: ({ error }) => !signal.aborted && isLostConnection(error),
      },
    );
  };
  return new Proxy(pool, {
    get(target, property) {
      if (property === "connect") return connect;
      const value: unknown = Reflect.get(target, property, target);
      // Bound to the pool itself: its methods keep their own state on it.
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
