import { expect, test } from "@playwright/test";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { admin } from "../playwright.config";
import { apiImage, apiToken, signIn, unique } from "./helpers";

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

test("the jobs, images and audit pages fit a 1366 px window, with a failed job listed", async ({ page }) => {
  await page.setViewportSize({ width: 1366, height: 800 });
  await signIn(page, admin.username, admin.password);
  // A job that fails with a long reason (a qcow2 that names a backing file), so the jobs table
  // shows an error.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hangar-wide-"));
  const base = path.join(dir, "a-rather-long-name-for-a-backing-file-that-ends-up-in-the-reason.qcow2");
  const top = path.join(dir, "top.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", base, "16M"]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
  const token = await apiToken(page);
  const name = unique("e2e-wide");
  const refused = await apiImage(page, token, { name, bytes: fs.readFileSync(top), diskFormat: "qcow2", expect: "killed" });
  expect(refused).toBeTruthy();
  for (const url of ["/jobs", "/images", "/admin/audit"]) {
    await page.goto(url);
    await expect(page.locator("h1")).toBeVisible();
    const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    expect(scroll, `${url} is ${scroll} px wide in a ${inner} px window`).toBeLessThanOrEqual(inner);
  }
});
