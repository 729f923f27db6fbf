const BAR_WIDTH = 30;

/**
 * A one-line progress bar on stderr, redrawn in place; a no-op unless stderr is a terminal,
 * so pipes and logs never see carriage returns.
 */
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): { update(done: number, total: number): void; end(): void } {
  if (!stream.isTTY) return { update() {}, end() {} };
  let drawn = false;
  return {
    update(done, total) {
      const filled = total === 0 ? BAR_WIDTH : Math.round((done / total) * BAR_WIDTH);
      stream.write(`\r${label} [${"#".repeat(filled)}${" ".repeat(BAR_WIDTH - filled)}] ${done.toLocaleString("en")}/${total.toLocaleString("en")}  `);
      drawn = true;
    },
    end() {
      if (drawn) stream.write("\n");
    },
  };
}
