import { existsSync } from "node:fs";
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { chromium, type Browser } from "playwright-core";

/** The Debian chromium package's browser; the browser tests skip (with this reason) without it. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const NO_BROWSER = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (install the chromium package, or set CHROMIUM_PATH)`;

/**
 * Headless Chromium, installed by the system (playwright-core downloads no browser). The
 * flags keep it from reaching out to the network on its own (a closed network refuses it);
 * playwright gives it an empty temporary profile.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** An HTTP server on 127.0.0.1 at a free port; its origin, and a close. */
export async function listen(listener: RequestListener): Promise<{ origin: string; server: Server; close(): Promise<void> }> {
  const server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
