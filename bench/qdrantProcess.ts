// The Qdrant test server in a process of its own, so that a benchmark's CPU profile shows the
// relay's share and the server's apart (run the bench under `node --cpu-prof`: the child is
// profiled too), and so that the relay does not share its event loop with the server.
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { FakeQdrant } from "../test/servers/qdrant.ts";
import { FakeQdrantGrpc } from "../test/servers/qdrantGrpc.ts";

type Request = { kind: "writtenAt"; collection: string } | { kind: "stop" };

export interface QdrantProcess {
  url: string;
  /** Its gRPC front (points written over gRPC land in the same collections). */
  grpcUrl: string;
  /** The server process, for its CPU time. */
  pid: number;
  /** Point id → Date.now() of its last write, for lag measurements. */
  writtenAt(collection: string): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

export async function startQdrantProcess(): Promise<QdrantProcess> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--child"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const next = () => new Promise<unknown>((resolve, reject) => {
    child.once("message", resolve);
    child.once("exit", (code) => reject(new Error(`Qdrant test server process exited (${code})`)));
  });
  const { url, grpcUrl } = (await next()) as { url: string; grpcUrl: string };
  return {
    url,
    grpcUrl,
    pid: child.pid!,
    async writtenAt(collection) {
      const answer = next();
      child.send({ kind: "writtenAt", collection } satisfies Request);
      return new Map((await answer) as [string, number][]);
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.send({ kind: "stop" } satisfies Request);
      await exited;
    },
  };
}

if (process.argv.includes("--child")) {
  const server = new FakeQdrant();
  const grpc = new FakeQdrantGrpc(server);
  process.send!({ url: await server.start(), grpcUrl: await grpc.start() });
  process.on("message", async (request: Request) => {
    if (request.kind === "writtenAt") process.send!(server.points(request.collection).map((point) => [String(point.id), point.writtenAt]));
    else {
      await grpc.stop();
      await server.stop();
      process.disconnect();
    }
  });
}
