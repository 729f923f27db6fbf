import { createServer } from "node:net";

/** A port nothing listens on right now (bound and released, so another process may take it later). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(15_000) });
  return { status: response.status, type: response.headers.get("content-type") ?? "", body: await response.text() };
}

export interface Exposition {
  /** Names declared with `# TYPE`. */
  families: Set<string>;
  /** The value of the sample with exactly these labels, or undefined when absent. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** Every sample of a name. */
  samples(name: string): { labels: Record<string, string>; value: number }[];
}

/** Parses Prometheus text exposition (the subset prom-client writes). */
export function parseExposition(text: string): Exposition {
  const families = new Set<string>();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) \S+$/.exec(line);
    if (type) families.add(type[1]!);
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, raw] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = raw!.replace(/\\(.)/g, "$1");
    const value = match[3] === "+Inf" ? Infinity : match[3] === "-Inf" ? -Infinity : Number(match[3]);
    samples.push({ name: match[1]!, labels, value });
  }
  const sameLabels = (a: Record<string, string>, b: Record<string, string>) =>
    Object.keys(a).length === Object.keys(b).length && Object.entries(b).every(([key, value]) => a[key] === value);
  return {
    families,
    value: (name, labels = {}) => samples.find((sample) => sample.name === name && sameLabels(sample.labels, labels))?.value,
    samples: (name) => samples.filter((sample) => sample.name === name).map(({ labels, value }) => ({ labels, value })),
  };
}
