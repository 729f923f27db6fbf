// The LISTEN session: it must notice a server that stopped answering, and never hang waiting
// for one that accepts a connection and then says nothing.
import { execFileSync, spawnSync } from "node:child_process";
import { createServer, type Socket } from "node:net";
import pino from "pino";
import t from "tap";
import { Listener } from "../../src/db/listener.ts";
import { waitFor } from "../helpers/db.ts";

const HAS_SS = spawnSync("ss", ["-V"]).status === 0;

/** A TCP server that accepts connections and never sends a byte (a half-dead host, a stuck proxy). */
async function blackHole(t: { teardown(fn: () => unknown): void }): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

t.test("a LISTEN session to a server that never answers gives up and retries instead of hanging, over a keepalive socket", async (t) => {
  const port = await blackHole(t);
  const warnings: string[] = [];
  const log = pino({ level: "warn" }, { write: (line: string) => warnings.push(line) });
  const listener = new Listener({ url: `postgres://postgres@127.0.0.1:${port}/postgres`, channels: ["jobs:insert"], onNotification: () => {}, retryMs: 60_000, log, name: "test-listener" });
  t.teardown(() => listener.stop());
  const started = listener.start();
  if (HAS_SS) {
    // While the connect waits, its socket probes a silent peer (ss prints timer:(keepalive,...)).
    const line = await waitFor("the listener's socket", async () => {
      const out = execFileSync("ss", ["-tno", "state", "established", "dst", `127.0.0.1:${port}`], { encoding: "utf8" });
      return out.split("\n").find((row) => row.includes(`:${port}`));
    });
    t.match(line, /timer:\(keepalive,/, "the LISTEN session's socket has TCP keepalive on");
  }
  // Without a connect timeout this never settles (the test times out).
  await started;
  t.match(warnings.join(""), /could not LISTEN; polling until it can/, "the failed attempt is logged; a retry is scheduled");
});
