// Small helpers of the pipeline's commands: printing stored text safely, a progress bar, id checks.
import { UsageError } from "pgconverge";

/**
 * Control characters, and the format characters that reorder a line (bidi overrides and
 * isolates): C0 but tab and newline, DEL, C1, U+061C, U+200E-F, U+2028-202E, U+2066-2069.
 */
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;
const LINE_BREAKS = /[\t\n]/g;

/**
 * Stored text (document content and sources) as a command prints it for a person: every control
 * character becomes a visible escape (`\x1b`, `\u202e`), so the text cannot clear the screen or
 * reorder the line. `--json` output needs none of this: JSON escapes control characters itself.
 */
export function printable(text: string, { keepLineBreaks = false } = {}): string {
  const escaped = text.replace(UNPRINTABLE, escape);
  return keepLineBreaks ? escaped : escaped.replace(LINE_BREAKS, escape);
}

function escape(character: string): string {
  const code = character.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

const BAR_WIDTH = 30;

/** A one-line progress bar on stderr, redrawn in place; a no-op unless stderr is a terminal. */
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

/** A flag's value; a blank one is a usage error. */
export function nonBlank(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === "") throw new UsageError(`--${flag} needs a value that is not blank`);
  return value;
}
