/**
 * Control characters, and the format characters that reorder a line (bidi overrides and
 * isolates): C0 but tab and newline, DEL, C1, U+061C, U+200E-F, U+2028-202E, U+2066-2069.
 */
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;
const LINE_BREAKS = /[\t\n]/g;

/**
 * Stored text (document content and sources, error messages, task names, ids) as the CLI prints
 * it for a person, on a terminal or into a file: every control character becomes a visible
 * escape (`\x1b`, `\u202e`), so the text cannot clear the screen, set a hyperlink, ring the bell
 * or reorder the line. Escaping (rather than stripping) keeps it clear that something was there.
 * Tabs and newlines are kept only with `keepLineBreaks`. `--json` output needs none of this:
 * JSON escapes control characters itself.
 */
export function printable(text: string, { keepLineBreaks = false } = {}): string {
  const escaped = text.replace(UNPRINTABLE, escape);
  return keepLineBreaks ? escaped : escaped.replace(LINE_BREAKS, escape);
}

function escape(character: string): string {
  const code = character.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}
