// This process's open file descriptors by kind, for leak tests: a bare count cannot tell a leaked
// socket from a pool growing to its working size, a classified one says which of them moved.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/**
 * TCP sockets by the other end's port (e.g. "tcp→5432"), or by this end's when it listens or was
 * accepted by a server of this process; Unix sockets as one kind; other kinds by type.
 */
export function openDescriptors(): Map<string, number> {
  // The links first, then the socket tables: a socket opened in between is then in the tables.
  const targets: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      targets.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // closed while listing (the listing's own descriptor, for one)
    }
  }
  const tcp = tcpSocketsByInode();
  const unix = unixSocketInodes();
  const kinds = new Map<string, number>();
  for (const target of targets) {
    const socket = /^socket:\[(\d+)\]$/.exec(target);
    const inode = socket?.[1];
    const kind = inode
      ? (tcp.get(inode) ?? (unix.has(inode) ? "unix socket" : "other socket (UDP, or TCP already closed)"))
      : (/^(pipe|anon_inode):/.exec(target)?.[0] ?? "file");
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return kinds;
}

export function descriptorCount(kinds: Map<string, number>): number {
  return [...kinds.values()].reduce((sum, count) => sum + count, 0);
}

/** "tcp→5432 8, pipe: 4, …": what a failing leak assertion shows. */
export function describeDescriptors(kinds: Map<string, number>): string {
  return [...kinds].sort(([a], [b]) => a.localeCompare(b)).map(([kind, count]) => `${kind} ${count}`).join(", ");
}

function unixSocketInodes(): Set<string> {
  try {
    return new Set(readFileSync("/proc/net/unix", "utf8").split("\n").slice(1).map((line) => line.trim().split(/\s+/)[6]!).filter(Boolean));
  } catch {
    return new Set();
  }
}

/** The port of an address of /proc/net/tcp ("0100007F:1538": hex). */
const portOf = (address: string) => parseInt(address.split(":")[1]!, 16);

function tcpSocketsByInode(): Map<string, string> {
  const sockets = new Map<string, string>();
  const listening = new Set<number>();
  const rows: { local: number; remote: number; inode: string; listen: boolean }[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      const row = { local: portOf(fields[1]!), remote: portOf(fields[2]!), inode: fields[9]!, listen: fields[3] === "0A" };
      if (row.listen) listening.add(row.local);
      rows.push(row);
    }
  }
  for (const row of rows) {
    if (row.listen) sockets.set(row.inode, `tcp listening ${row.local}`);
    else if (listening.has(row.local)) sockets.set(row.inode, `tcp accepted on ${row.local}`);
    else sockets.set(row.inode, `tcp→${row.remote}`);
  }
  return sockets;
}
