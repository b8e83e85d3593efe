import { expect, test } from "@playwright/test";
import { admin } from "../playwright.config";
import { signIn } from "./helpers";

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

test("without JavaScript the Upload page offers no dead file picker, and says how to upload instead", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  await page.goto("/upload");
  const notice = page.locator("#upload-needs-js");
  await expect(notice).toBeVisible();
  await expect(notice).toContainText("needs JavaScript");
  await expect(notice).toContainText("openstack image create");
  await expect(page.locator("#dropzone")).toBeHidden();
  await expect(page.locator("#file-input")).toBeHidden();
  await expect(page.getByText("Transfer settings")).toBeHidden();
});
