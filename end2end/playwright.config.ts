import { defineConfig } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";

/**
 * Hangar's end-to-end tests, in Debian's Chromium (never a downloaded browser).
 *
 * The test command builds the site and the server first; Playwright then starts that server
 * on a free loopback port with a fresh data directory (see `webServer`).
 *   HANGAR_BIN   the server binary (default ../target/debug/hangar)
 *   E2E_PORT     the port (default 3100, so a developer's server on 3000 is left alone)
 */
const root = path.resolve(__dirname, "..");
export const port = Number(process.env.E2E_PORT ?? 3100);
export const hangarBin = process.env.HANGAR_BIN ?? path.join(root, "target/debug/hangar");
const dataDir = path.join(root, "target/e2e/data");
const nfsDir = path.join(root, "target/e2e/nfs");
const configFile = path.join(__dirname, "hangar-e2e.toml");

/** The administrator the test server creates at first start (HANGAR_BOOTSTRAP_ADMIN). */
export const admin = { username: "admin", password: "e2e-admin-password" };

/**
 * A Hangar server for Playwright to start: `bin` on 127.0.0.1:`port` with a fresh `dataDir`
 * (removed first), after the shell command `before` if given, with `config` if given.
 */
export function hangarServer(o: { bin: string; port: number; dataDir: string; before?: string; config?: string }) {
  const before = o.before ? `${o.before} && ` : "";
  const config = o.config ? ` --config '${o.config}'` : "";
  return {
    command: `rm -rf '${o.dataDir}' && ${before}'${o.bin}' --listen 127.0.0.1:${o.port} --data-dir '${o.dataDir}'${config}`,
    url: `http://127.0.0.1:${o.port}/healthz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe" as const,
    stderr: "pipe" as const,
    env: { HANGAR_LOG: "warn", HANGAR_BOOTSTRAP_ADMIN: admin.username, HANGAR_BOOTSTRAP_PASSWORD: admin.password },
  };
}

/**
 * Whether /dev/shm is too small for Chromium's shared memory (containers often give 64 MiB);
 * only then is it told to use /tmp instead, which costs ~15% of its upload throughput here.
 */
function smallDevShm(): boolean {
  try {
    const st = fs.statfsSync("/dev/shm");
    return st.blocks * st.bsize < 1024 * 1024 * 1024;
  } catch {
    return true;
  }
}

export const chromiumArgs = [
  "--no-sandbox",
  "--disable-gpu",
  ...(smallDevShm() ? ["--disable-dev-shm-usage"] : []),
  // Without these Chromium keeps trying to reach Google's hosts, which this network refuses.
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

export default defineConfig({
  testDir: "./tests",
  fullyParallel: false,
  workers: 1,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 10_000 },
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    headless: true,
    launchOptions: { executablePath: "/usr/bin/chromium", args: chromiumArgs },
    trace: "retain-on-failure",
  },
  // One server for all: projects run in the order below and files in name order, so the "fresh
  // install" checks (pages, hydrated) come before everything that creates images (upload,
  // uploaded-images, and the no-JS run of uploaded-images in the last project).
  projects: [
    {
      // Every page must render and navigate from server-side rendering alone.
      name: "no-js",
      use: { javaScriptEnabled: false },
      testMatch: ["pages.spec.ts", "nojs.spec.ts", "accounts.spec.ts", "storage.spec.ts"],
    },
    {
      name: "hydrated",
      use: { javaScriptEnabled: true },
      testMatch: ["pages.spec.ts", "hydrated.spec.ts", "restart.spec.ts", "security.spec.ts", "accounts.spec.ts", "upload.spec.ts", "storage.spec.ts", "uploaded-images.spec.ts"],
    },
    {
      // The catalogue without JavaScript, after the hydrated run (it creates images).
      name: "no-js-catalogue",
      use: { javaScriptEnabled: false },
      testMatch: ["uploaded-images.spec.ts"],
    },
  ],
  webServer: hangarServer({ bin: hangarBin, port, dataDir, before: `rm -rf '${nfsDir}' && mkdir -p '${nfsDir}'`, config: configFile }),
});
