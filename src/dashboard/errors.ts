import { randomBytes } from "node:crypto";

/** A short id for a failure: the page shows it, the server's log has the detail under it. */
export function errorId(): string {
  return randomBytes(4).toString("hex");
}
