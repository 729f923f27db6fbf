/** A duration for terminal output, precise when short: 0.4s, 12s, 5m 03s, 2h 07m, 3d 04h; null is "-". */
export function formatAge(seconds: number | null): string {
  if (seconds === null) return "-";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const pad = (n: number) => String(Math.floor(n)).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${pad((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${pad((s % 86_400) / 3600)}h`;
}
