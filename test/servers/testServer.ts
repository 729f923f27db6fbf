import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { FaultInjector } from "./faults.ts";

/**
 * Lifecycle shared by the in-repo test servers: listen on a free port of 127.0.0.1, stop by
 * dropping every connection, and restart on the same port (so a "down" server comes back
 * where its clients expect it).
 */
export abstract class TestServer {
  readonly faults = new FaultInjector();
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private port = 0;
  /** Every Authorization header the server was sent. */
  readonly authorizations = new Set<string>();

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  protected abstract handle(request: IncomingMessage, response: ServerResponse): Promise<void>;

  async start(port = this.port): Promise<string> {
    if (this.server) return this.url;
    const server = createServer((request, response) => {
      if (request.headers.authorization) this.authorizations.add(request.headers.authorization);
      void this.handle(request, response);
    });
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this.url;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
