import { defineConfig } from "@playwright/test";
import * as path from "node:path";
import { chromiumArgs, hangarServer } from "./playwright.config";

/**
 * Benchmarks (not tests): `scripts/bench-browser-upload.sh` runs them against the optimised
 * server (target/release/hangar with the release site) on its own port and data directory.
 *   BENCH_PORT   the port (default 3190)
 *   HANGAR_BIN   the server binary (default ../target/release/hangar)
 */
const root = path.resolve(__dirname, "..");
const port = Number(process.env.BENCH_PORT ?? 3190);
const hangarBin = process.env.HANGAR_BIN ?? path.join(root, "target/release/hangar");
const dataDir = path.join(root, "target/bench-e2e/data");

export default defineConfig({
  testDir: "./bench",
  testMatch: ["*.bench.ts"],
  workers: 1,
  retries: 0,
  timeout: 3_600_000,
  expect: { timeout: 600_000 },
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    headless: true,
    launchOptions: { executablePath: "/usr/bin/chromium", args: chromiumArgs },
  },
  webServer: hangarServer({ bin: hangarBin, port, dataDir }),
});
