import type { IncomingMessage, ServerResponse } from "node:http";

/** A fault the test servers can inject into requests. */
export type Fault =
  /** An error status; after `delayMs` when given (a slow failure, e.g. a struggling upstream's 503). `grpcCode`: what the Qdrant test server's gRPC front answers instead of the status's usual code. */
  | { kind: "status"; status: number; retryAfterSeconds?: number; message?: string; delayMs?: number; grpcCode?: number }
  | { kind: "reset" }
  | { kind: "delay"; ms: number }
  /**
   * Holds the request until `until` settles, then serves it even if its client has given up
   * meanwhile: a write that lands late (the Qdrant test server reads the body before it holds).
   * `onArrival` is called when the request is held.
   */
  | { kind: "hold"; until: Promise<unknown>; onArrival?: () => void };

export interface RandomFaults {
  /** Probability, 0..1, that a request gets a fault. */
  rate: number;
  faults: Fault[];
}

/**
 * Fault schedule shared by the Qdrant and Ollama test servers: queued faults hit the next
 * requests in order; random faults hit any request with the given probability.
 */
export class FaultInjector {
  private queued: Fault[] = [];
  private random: RandomFaults | null = null;
  injected = 0;

  /** The next `times` requests (matching nothing else) get `fault`. */
  next(fault: Fault, times = 1): void {
    for (let i = 0; i < times; i++) this.queued.push(fault);
  }

  /**
   * Holds the next request (see the "hold" fault): `arrived` resolves once it is held,
   * `release()` lets it through.
   */
  hold(): { arrived: Promise<void>; release: () => void } {
    let release!: () => void;
    let arrive!: () => void;
    const until = new Promise<void>((resolve) => (release = resolve));
    const arrived = new Promise<void>((resolve) => (arrive = resolve));
    this.next({ kind: "hold", until, onArrival: arrive });
    return { arrived, release };
  }

  setRandom(random: RandomFaults | null): void {
    this.random = random;
  }

  clear(): void {
    this.queued = [];
    this.random = null;
  }

  take(): Fault | undefined {
    const queued = this.queued.shift();
    if (queued) return queued;
    if (this.random && this.random.faults.length > 0 && Math.random() < this.random.rate) {
      return this.random.faults[Math.floor(Math.random() * this.random.faults.length)];
    }
    return undefined;
  }

  /**
   * Applies the fault to the exchange. Returns true when the response has been dealt with
   * (an error status or a reset); a delay returns false after waiting, so the request proceeds.
   */
  async apply(
    fault: Fault,
    request: IncomingMessage,
    response: ServerResponse,
    errorBody: (status: number, message: string) => unknown,
  ): Promise<boolean> {
    this.injected++;
    if (fault.kind === "reset") {
      request.socket.destroy();
      return true;
    }
    if (fault.kind === "hold") {
      fault.onArrival?.();
      await fault.until;
      return false;
    }
    if (fault.kind === "delay") {
      // A keep-alive socket carries many requests: the close listener goes when the delay ends.
      await new Promise<void>((resolve) => {
        const onClose = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          request.socket.off("close", onClose);
          resolve();
        }, fault.ms);
        request.socket.once("close", onClose);
      });
      return request.socket.destroyed;
    }
    if (fault.delayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
    if (request.socket.destroyed) return true;
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (fault.retryAfterSeconds !== undefined) headers["retry-after"] = String(fault.retryAfterSeconds);
    response.writeHead(fault.status, headers);
    response.end(JSON.stringify(errorBody(fault.status, fault.message ?? `injected fault ${fault.status}`)));
    return true;
  }
}

export async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  if (chunks.length === 0) return {};
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}
