import { mkdtempSync, realpathSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../../test/helpers/cli.ts";
import { generateCorpus, type CorpusDocument } from "../../test/helpers/corpus.ts";

export interface WaveReport {
  added: number;
  edited: number;
  deleted: number;
  resurrected: number;
}

/**
 * The documents of a chaos run as files in one directory, changed in waves through the CLI as
 * a user would: new files and rewritten ones go in with one `pgconverge ingest <dir>`
 * (unchanged files are no-ops), removed ones with `pgconverge delete <path>...`. It remembers
 * what each document's content must be at the end.
 */
export class ChaosDocuments {
  readonly dir = realpathSync(mkdtempSync(join(tmpdir(), "pgconverge-chaos-docs-")));
  /** Current content of every live document, by source (its absolute path, as ingest stores it). */
  readonly live = new Map<string, string>();
  private readonly deleted = new Set<string>();
  private readonly pending: CorpusDocument[];
  /** Texts edits draw from, so a "rewrite" brings entirely new chunks. */
  private readonly rewrites: CorpusDocument[];
  private revision = 0;
  totals: WaveReport = { added: 0, edited: 0, deleted: 0, resurrected: 0 };
  /** CLI commands that failed and were retried (e.g. the database was restarting). */
  cliRetries = 0;

  private readonly env: Record<string, string>;
  /** Told of each failed CLI command before it is retried. */
  private readonly onRetry: (args: string[], stderr: string) => void;
  private readonly random: () => number;

  constructor(count: number, env: Record<string, string>, onRetry: (args: string[], stderr: string) => void = () => {}, random: () => number = Math.random) {
    this.env = env;
    this.onRetry = onRetry;
    this.random = random;
    this.pending = generateCorpus(count, 17);
    this.rewrites = generateCorpus(Math.max(50, Math.ceil(count / 5)), 29);
  }

  get remaining(): number {
    return this.pending.length;
  }

  /**
   * One wave: `add` new documents, edits of some live ones (so they race with their own
   * processing), then deletes of others and the return of a deleted one with new content.
   */
  async wave(add: number, { editFraction = 0.05, deleteFraction = 0.02 } = {}): Promise<WaveReport> {
    const report: WaveReport = { added: 0, edited: 0, deleted: 0, resurrected: 0 };
    const existing = [...this.live.keys()];
    const toEdit = this.sample(existing, existing.length === 0 ? 0 : Math.max(2, Math.round(existing.length * editFraction)));
    for (const source of toEdit) this.write(source, this.edit(this.live.get(source)!));
    report.edited = toEdit.length;
    const back = this.sample([...this.deleted], this.deleted.size > 0 ? 1 : 0);
    for (const source of back) {
      this.deleted.delete(source);
      this.write(source, this.edit(this.rewrites[Math.floor(this.random() * this.rewrites.length)]!.content));
    }
    report.resurrected = back.length;
    const added = this.pending.splice(0, add);
    for (const document of added) this.write(join(this.dir, document.name), document.content);
    report.added = added.length;
    if (this.live.size > 0) await this.cli(["ingest", this.dir]);

    const candidates = [...this.live.keys()].filter((source) => !toEdit.includes(source));
    const toDelete = this.sample(candidates, existing.length === 0 ? 0 : Math.max(1, Math.round(existing.length * deleteFraction)));
    if (toDelete.length > 0) {
      for (const source of toDelete) {
        unlinkSync(source);
        this.live.delete(source);
        this.deleted.add(source);
      }
      await this.cli(["delete", ...toDelete]);
    }
    report.deleted = toDelete.length;
    for (const key of Object.keys(report) as Array<keyof WaveReport>) this.totals[key] += report[key];
    return report;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private write(source: string, content: string): void {
    writeFileSync(source, content);
    this.live.set(source, content);
  }

  /** Kinds of edit that change chunks differently: added, removed, moved and replaced text. */
  private edit(content: string): string {
    const revision = ++this.revision;
    const paragraphs = content.split("\n\n");
    const line = `Revision ${revision} was written while the previous one may still be in flight.`;
    switch (Math.floor(this.random() * 4)) {
      case 0:
        return `${content.trimEnd()}\n\n${line}\n`;
      case 1:
        return `${paragraphs.slice(0, Math.max(1, Math.ceil(paragraphs.length / 2))).join("\n\n").trimEnd()}\n\n${line}\n`;
      case 2:
        return `${[paragraphs[0], ...paragraphs.slice(1).reverse()].join("\n\n").trimEnd()}\n\n${line}\n`;
      default:
        return `# Rewritten (${revision})\n\n${this.rewrites[revision % this.rewrites.length]!.content}`;
    }
  }

  private sample<T>(items: T[], count: number): T[] {
    const pool = [...items];
    const out: T[] = [];
    while (out.length < count && pool.length > 0) out.push(pool.splice(Math.floor(this.random() * pool.length), 1)[0]!);
    return out;
  }

  /** Runs a CLI command; a failure (say, during the restart) is retried, as a user would. */
  private async cli(args: string[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const result = await runCli(args, { env: this.env });
      // delete exits 1 for a reference it cannot find: on a retry, what the failed run deleted.
      if (result.code === 0 || (args[0] === "delete" && attempt > 1 && result.code === 1 && !/error|ECONN/i.test(result.stderr.replace(/no document with id or source/g, "")))) return;
      if (attempt >= 10) throw new Error(`pgconverge ${args[0]} failed ${attempt} times: ${result.stderr.trim()}`);
      this.cliRetries++;
      this.onRetry(args, result.stderr.trim());
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }
}
