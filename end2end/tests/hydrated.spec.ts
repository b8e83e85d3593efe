import { expect, test } from "@playwright/test";

test("the page hydrates and a control calls a server function and shows its answer", async ({ page }) => {
  await page.goto("/");
  const check = page.locator("#status-check");
  // Rendered disabled by the server; only the hydrated app enables it.
  await expect(check).toHaveAttribute("data-hydrated", "true");
  await expect(check).toBeEnabled();
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
