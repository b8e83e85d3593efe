import { expect, test } from "@playwright/test";
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { hangarBin } from "../playwright.config";
import { signIn } from "./helpers";

// A server of this test's own (not the shared webServer), so it can be stopped and restarted.
const port = Number(process.env.E2E_RESTART_PORT ?? 3101);
const base = `http://127.0.0.1:${port}`;
const dataDir = path.resolve(__dirname, "../../target/e2e/restart-data");

function start(): ChildProcess {
  const child = spawn(hangarBin, ["--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
    env: { ...process.env, HANGAR_LOG: "warn", HANGAR_BOOTSTRAP_ADMIN: "root", HANGAR_BOOTSTRAP_PASSWORD: "restart-password" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  return child;
}

async function waitHealthy(): Promise<void> {
  await expect
    .poll(
      async () => {
        try {
          const r = await fetch(`${base}/healthz`);
          return r.status;
        } catch {
          return 0;
        }
      },
      { timeout: 30_000, intervals: [100, 200, 500] },
    )
    .toBe(200);
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("server did not stop within 10 s of SIGTERM"));
    }, 10_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill("SIGTERM");
  });
}

test("a restart keeps the database and the browser's session", async ({ page }) => {
  fs.rmSync(dataDir, { recursive: true, force: true });
  let server = start();
  try {
    await waitHealthy();
    expect(fs.existsSync(path.join(dataDir, "hangar.db"))).toBe(true);

    await signIn(page, "root", "restart-password", base);
    await page.goto(`${base}/images`);
    await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
    await page.locator("#dismiss-welcome").click();
    await expect(page.locator("#welcome")).toHaveCount(0);

    // SIGTERM: graceful shutdown, exit status 0.
    expect(await stop(server)).toBe(0);

    server = start();
    await waitHealthy();
    await page.reload();
    await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
    await expect(page.locator("#welcome")).toHaveCount(0);
    // Still signed in, in the project the first start created.
    await expect(page.locator("#account-link")).toHaveText("root");
    await expect(page.locator("#project-select")).toContainText("default · administrator");

    // A browser without that session still sees the panel: the state really is per session.
    const other = await page.context().browser()!.newContext();
    const fresh = await other.newPage();
    await fresh.goto(`${base}/images`);
    await expect(fresh.locator("#welcome")).toBeVisible();
    await other.close();
  } finally {
    if (server.exitCode === null) await stop(server);
  }
});
