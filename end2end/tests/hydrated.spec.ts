import { expect, test } from "@playwright/test";
import { admin } from "../playwright.config";
import { signIn } from "./helpers";

test("the page hydrates and a control calls a server function and shows its answer", async ({ page }) => {
  await page.goto("/");
  const check = page.locator("#status-check");
  // Rendered disabled by the server; only the hydrated app enables it.
  await expect(check).toHaveAttribute("data-hydrated", "true");
  await expect(check).toBeEnabled();
  await check.click();
  // Anonymous callers learn only that the server is up.
  await expect(page.locator("#status-result")).toHaveText(/^Server healthy · SQLite · up \d+ (s|min)$/);

  await signIn(page, admin.username, admin.password);
  await expect(check).toHaveAttribute("data-hydrated", "true");
  await check.click();
  await expect(page.locator("#status-result")).toHaveText(/^Server healthy · SQLite · 0 images · up \d+ (s|min)$/);
});

test("dismissing the welcome panel happens in place, without a page load", async ({ page }) => {
  await page.goto("/images");
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  await expect(page.locator("#welcome")).toBeVisible();
  let documentRequests = 0;
  page.on("request", (r) => {
    if (r.resourceType() === "document") documentRequests++;
  });
  await page.locator("#dismiss-welcome").click();
  await expect(page.locator("#welcome")).toHaveCount(0);
  expect(documentRequests).toBe(0);
});

test("client-side navigation does not reload the document", async ({ page }) => {
  await page.goto("/images");
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Formats" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Formats" })).toBeVisible();
  expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);
});

test("a user creates an API token, sees it once, and revokes it", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  await page.goto("/account");
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  await page.locator("#token-form").getByLabel("Name").fill("e2e laptop");
  await page.locator("#token-form").getByRole("button", { name: "Create token" }).click();
  const secret = (await page.locator("#new-token-secret").textContent()) ?? "";
  expect(secret).toMatch(/^hgr_[0-9a-f]{64}$/);

  // The token works as X-Auth-Token, without any cookie.
  const who = await page.request.fetch("/api/whoami", {
    method: "POST",
    headers: { "X-Auth-Token": secret, Accept: "application/json", Cookie: "" },
  });
  expect(who.status()).toBe(200);
  expect((await who.json()).username).toBe(admin.username);

  const row = page.locator("#tokens-table tr", { hasText: "e2e laptop" });
  await row.getByRole("button", { name: "Revoke" }).click();
  await expect(page.locator("#tokens-table tr", { hasText: "e2e laptop" })).toContainText("revoked");
  const after = await page.request.fetch("/api/whoami", {
    method: "POST",
    headers: { "X-Auth-Token": secret, Accept: "application/json", Cookie: "" },
  });
  expect(after.status()).toBe(401);
});
