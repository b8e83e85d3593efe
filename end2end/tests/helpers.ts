import { expect, Page } from "@playwright/test";

/** Signs in through the real form (works with and without JavaScript). */
export async function signIn(page: Page, username: string, password: string, base = ""): Promise<void> {
  await page.goto(`${base}/signin`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.locator("#account-link")).toHaveText(username);
}

/** A name no other test (or earlier run against the same server) has used. */
export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}
