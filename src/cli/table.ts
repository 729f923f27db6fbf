import { printable } from "./printable.ts";

/** Aligned columns for terminal output; the last column is never padded. Cells are made printable. */
export function formatTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows].map((row) => row.map((cell) => printable(cell)));
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? "").length)));
  return all
    .map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join("  "))
    .join("\n");
}
