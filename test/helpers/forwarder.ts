import net from "node:net";

/** A port on 127.0.0.1 that nothing listens on (until a forwarder does). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A TCP forwarder from `port` to the database of `databaseUrl`, to stand for a server that goes
 * away and comes back: until start() and after stop() or refuseNew() the port refuses
 * connections, and stop() also cuts the connections it carried.
 */
export function forwarder(port: number, databaseUrl: string) {
  const target = new URL(databaseUrl);
  const sockets = new Set<net.Socket>();
  let server: net.Server | null = null;
  return {
    /** `databaseUrl` with its host and port replaced by the forwarder's. */
    url: (() => {
      const through = new URL(databaseUrl);
      through.hostname = "127.0.0.1";
      through.port = String(port);
      return through.toString();
    })(),
    start: () =>
      new Promise<void>((resolve) => {
        server = net.createServer((client) => {
          const upstream = net.connect(Number(target.port || 5432), target.hostname);
          for (const socket of [client, upstream]) {
            sockets.add(socket);
            socket.on("error", () => {});
            socket.on("close", () => sockets.delete(socket));
          }
          client.pipe(upstream).pipe(client);
        });
        server.listen(port, "127.0.0.1", resolve);
      }),
    /** New connections are refused from now on; those it carries go on. */
    refuseNew: () => {
      // close() stops listening at once; its callback would wait for the carried connections to end.
      server?.close();
      server = null;
    },
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      if (server) await new Promise((resolve) => server!.close(resolve));
      server = null;
    },
  };
}
