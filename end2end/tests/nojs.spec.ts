import { expect, test } from "@playwright/test";

test("without JavaScript the status check is disabled rather than dead", async ({ page }) => {
  await page.goto("/");
  await expect(page.locator("#status-check")).toBeDisabled();
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "false");
});

test("the welcome panel can be dismissed with a plain form post, and stays dismissed", async ({ page }) => {
  await page.goto("/images");
  await expect(page.locator("#welcome")).toBeVisible();
  await page.locator("#dismiss-welcome").click();
  // The server function answers a form post by redirecting back (leptos appends an empty query,
  // where it would carry an error); the page is rendered anew.
  await expect(page).toHaveURL(/\/images\??$/);
  await expect(page.locator("#welcome")).toHaveCount(0);
  await page.reload();
  await expect(page.locator("#welcome")).toHaveCount(0);
});
