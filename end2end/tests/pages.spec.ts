import { expect, test } from "@playwright/test";
import { admin } from "../playwright.config";
import { signIn } from "./helpers";

// Runs twice: without JavaScript (server rendering alone) and hydrated.

test("signed out, the Images page asks to sign in and comes back after", async ({ page }) => {
  await page.goto("/images");
  await expect(page.locator("#signin-prompt")).toContainText("Sign in to see your images");
  await page.locator("#signin-prompt").getByRole("link", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/signin\?next=%2Fimages/);
  await page.getByLabel("Username").fill(admin.username);
  await page.getByLabel("Password").fill(admin.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/images$/);
  await expect(page.locator("#account-link")).toHaveText(admin.username);
});

test("a wrong password is refused with a clear message", async ({ page }) => {
  await page.goto("/signin");
  await page.getByLabel("Username").fill(admin.username);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("The username or password is incorrect.");
  await expect(page.locator("#account-link")).toHaveCount(0);
});

test("the Images page shows a real empty state on a fresh install", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  const response = await page.goto("/");
  expect(response?.status()).toBe(200);
  await expect(page).toHaveTitle("Images · Hangar");
  await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
  const empty = page.locator("#images-empty");
  await expect(empty.getByRole("heading", { name: "No images yet" })).toBeVisible();
  await expect(empty.getByRole("link", { name: "Upload your first image" })).toHaveAttribute("href", "/upload");
});

test("the navigation reaches every section, marking the current one", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  await page.goto("/images");
  const nav = page.getByRole("navigation", { name: "Main" });
  await expect(nav.getByRole("link", { name: "Images" })).toHaveAttribute("aria-current", "page");

  await nav.getByRole("link", { name: "Formats" }).click();
  await expect(page).toHaveURL(/\/formats$/);
  await expect(page.getByRole("heading", { level: 1, name: "Formats" })).toBeVisible();
  await expect(nav.getByRole("link", { name: "Formats" })).toHaveAttribute("aria-current", "page");

  await nav.getByRole("link", { name: "Upload" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Upload" })).toBeVisible();
  await expect(page.locator("#file-input")).toBeAttached();
  await expect(page.getByText("Images go to project default")).toBeVisible();

  await nav.getByRole("link", { name: "Storage matrix" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Storage matrix" })).toBeVisible();
  await expect(page.locator("#storage-matrix")).toBeVisible();
  await nav.getByRole("link", { name: "Admin" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Admin · Users" })).toBeVisible();
});

test("the Formats page presents every format family with its description", async ({ page }) => {
  await page.goto("/formats");
  const expected = ["QCOW2", "RAW", "VDI", "VHD / VHDX", "VMDK", "ISO 9660", "OVF / OVA", "AMI / AKI / ARI", "UEC tarball"];
  const cards = page.locator("article.format-card");
  await expect(cards).toHaveCount(expected.length);
  for (const name of expected) {
    const card = cards.filter({ has: page.getByRole("heading", { level: 2, name, exact: true }) });
    await expect(card).toHaveCount(1);
    await expect(card.locator("dd").first()).not.toBeEmpty();
  }
  await expect(page.locator("#qcow2")).toContainText("backing files");
});

test("an unknown address answers 404 with a way back", async ({ page }) => {
  const response = await page.goto("/no/such/page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
  await page.getByRole("link", { name: "Go to your images" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
});

test("keyboard users can skip straight to the content", async ({ page }) => {
  await page.goto("/formats");
  await page.keyboard.press("Tab");
  const skip = page.getByRole("link", { name: "Skip to content" });
  await expect(skip).toBeFocused();
  await expect(skip).toHaveAttribute("href", "#main");
});
