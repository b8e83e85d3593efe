import { expect, Page, Response, test } from "@playwright/test";
import { admin } from "../playwright.config";
import { signIn } from "./helpers";

// Runs hydrated (it needs scripts to run to prove that none of the stored ones do): markup stored
// in an image's name and description stays text on every page that shows it, the pages carry a
// nonce-based Content-Security-Policy, and the app still hydrates and works under that policy.

/** Ends the document title early and runs a script. */
const name = `x</title><script>window.__pwned=1</script>`;
/** Ends the edit form's <textarea> and runs a handler. */
const description = `</textarea><img src=x onerror="window.__pwned=2">`;

type Watched = { __pwned?: number; __cspViolations?: string[] };

/**
 * Records what must not happen on `page`: console messages about the Content Security Policy,
 * uncaught errors, and `securitypolicyviolation` events (read with `violations` before leaving
 * each document).
 */
async function watch(page: Page): Promise<string[]> {
  const problems: string[] = [];
  page.on("console", (m) => {
    if (/content security policy/i.test(m.text())) problems.push(`console ${m.type()} on ${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  // Init scripts are injected by the browser's DevTools protocol, not by the page: the policy
  // does not apply to them, so they see every violation.
  await page.addInitScript(() => {
    const w = window as unknown as Watched;
    w.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      w.__cspViolations?.push(
        `${e.effectiveDirective} blocked ${e.blockedURI || "(inline)"} from ${e.sourceFile || "?"}:${e.lineNumber} sample ${JSON.stringify(e.sample)}`,
      );
    });
  });
  return problems;
}

/** The violations the current document has seen, prefixed with its URL. */
async function violations(page: Page): Promise<string[]> {
  const seen = await page.evaluate(() => (window as unknown as Watched).__cspViolations ?? []);
  return seen.map((v) => `CSP violation on ${page.url()}: ${v}`);
}

/** Whether a stored script or handler ran. */
async function pwned(page: Page): Promise<number | undefined> {
  return page.evaluate(() => (window as unknown as Watched).__pwned);
}

/** Checks the security headers of a page's response; returns the policy's nonce. */
async function checkPageHeaders(path: string, res: Response | null): Promise<string> {
  expect(res, `${path}: a response`).not.toBeNull();
  // allHeaders(): every header as received (headers() may leave some out).
  const h = await (res as Response).allHeaders();
  const csp = h["content-security-policy"] ?? "";
  expect(csp, `${path}: Content-Security-Policy`).not.toBe("");
  expect(csp, `${path}: no 'unsafe-inline'`).not.toContain("'unsafe-inline'");
  const scriptSrc = /(?:^|;)\s*script-src\s+([^;]*)/i.exec(csp)?.[1] ?? "";
  expect(scriptSrc, `${path}: script-src`).toContain("'self'");
  expect(scriptSrc, `${path}: script-src`).toContain("'wasm-unsafe-eval'");
  const nonce = /'nonce-([A-Za-z0-9+/=_-]{16,})'/.exec(scriptSrc)?.[1] ?? "";
  expect(nonce, `${path}: a nonce of 16 or more base64 characters in script-src (${csp})`).not.toBe("");
  expect(csp, `${path}: frame-ancestors`).toMatch(/(?:^|;)\s*frame-ancestors\s+'none'\s*(?:;|$)/i);
  expect(csp, `${path}: object-src`).toMatch(/(?:^|;)\s*object-src\s+'none'\s*(?:;|$)/i);
  expect(csp, `${path}: base-uri`).toMatch(/(?:^|;)\s*base-uri\s+'none'\s*(?:;|$)/i);
  expect(h["x-content-type-options"], `${path}: X-Content-Type-Options`).toBe("nosniff");
  expect((h["x-frame-options"] ?? "").toUpperCase(), `${path}: X-Frame-Options`).toBe("DENY");
  expect(h["referrer-policy"], `${path}: Referrer-Policy`).toBe("same-origin");
  expect(h["cache-control"] ?? "", `${path}: Cache-Control`).toContain("no-store");
  return nonce;
}

/** Every inline script of the current document carries `nonce` (read as the DOM property: the
 * attribute is hidden once the document has loaded). */
async function expectInlineScriptsCarry(page: Page, path: string, nonce: string): Promise<void> {
  const nonces = await page.evaluate(() =>
    Array.from(document.querySelectorAll("script:not([src])")).map((s) => (s as HTMLScriptElement).nonce),
  );
  expect(nonces.length, `${path}: the hydration script is inline`).toBeGreaterThan(0);
  for (const n of nonces) expect(n, `${path}: an inline script's nonce`).toBe(nonce);
}

/** Waits until the app has hydrated (the footer's button is enabled only by the browser bundle). */
async function hydrated(page: Page): Promise<void> {
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  await expect(page.locator("#status-check")).toBeEnabled();
}

test("markup in an image's name and description stays text on its pages, under the CSP", async ({ page }) => {
  const problems = await watch(page);
  await signIn(page, admin.username, admin.password);
  problems.push(...(await violations(page)));

  // Created as the Upload form creates it (the dashboard's server function, with the session).
  const fields: Record<string, string> = {
    name, description, disk_format: "qcow2", container_format: "bare", visibility: "private",
    min_disk: "0", min_ram: "0", architecture: "", os_distro: "", os_version: "", protected: "false", tags: "", size: "1024",
  };
  const created = await page.request.post("/api/create_image", {
    headers: { Origin: new URL(page.url()).origin, Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
    data: Object.entries(fields).map(([k, v]) => `form[${k}]=${encodeURIComponent(v)}`).join("&"),
  });
  expect(created.status(), await created.text()).toBe(200);
  const id = (await created.json()) as string;

  // The HTML as the server sends it: the markup is escaped, not merely blocked by the policy.
  const raw = await page.request.get(`/images/${id}`);
  const html = await raw.text();
  for (const marker of ["<script>window.__pwned", "<img src=x onerror", "</title><script>", "</textarea><img"]) {
    expect(html, `the page's HTML holds ${marker} unescaped`).not.toContain(marker);
  }

  // The image page and its edit form, hydrated.
  const path = `/images/${id}`;
  const nonce = await checkPageHeaders(path, await page.goto(path));
  await hydrated(page);
  await expectInlineScriptsCarry(page, path, nonce);
  await expect(page).toHaveTitle(`Image · ${name} · Hangar`);
  await expect(page.locator("#image-name")).toHaveText(name);
  await expect(page.locator("#image-properties")).toContainText(description);
  const form = page.locator("#edit-image-form");
  await expect(form.getByLabel("Name", { exact: true })).toHaveValue(name);
  await expect(form.locator("#e-props")).toHaveValue(`description=${description}`);
  await expect(page.locator('img[src="x"]')).toHaveCount(0);
  await expect(page.locator("script", { hasText: "__pwned" })).toHaveCount(0);
  expect(await pwned(page)).toBeUndefined();

  // The app works under the policy: a control calls a server function and shows its answer.
  await page.locator("#status-check").click();
  await expect(page.locator("#status-result")).toHaveText(/^Server healthy/);

  // Saving the form unchanged keeps the text exactly (the box held it literally), and the page
  // re-renders it in the browser as text too.
  await form.getByRole("button", { name: "Save changes" }).click();
  await expect(page.getByText("Saved.", { exact: true })).toBeVisible();
  await expect(form.locator("#e-props")).toHaveValue(`description=${description}`);
  await expect(form.getByLabel("Name", { exact: true })).toHaveValue(name);
  await expect(page).toHaveTitle(`Image · ${name} · Hangar`);
  await expect(page.locator('img[src="x"]')).toHaveCount(0);
  expect(await pwned(page)).toBeUndefined();
  problems.push(...(await violations(page)));

  // Rendered again by the server after the save.
  await checkPageHeaders(path, await page.reload());
  await hydrated(page);
  await expect(page).toHaveTitle(`Image · ${name} · Hangar`);
  await expect(page.locator("#e-props")).toHaveValue(`description=${description}`);
  expect(await pwned(page)).toBeUndefined();
  problems.push(...(await violations(page)));

  // The list shows the name as the link's text; client-side navigation to the image keeps it so.
  await checkPageHeaders("/images", await page.goto("/images"));
  await hydrated(page);
  const link = page.locator(`#images-table a[href="/images/${id}"]`);
  await expect(link).toHaveText(name);
  expect(await pwned(page)).toBeUndefined();
  await link.click();
  await expect(page).toHaveURL(new RegExp(`/images/${id}$`));
  await expect(page.locator("#image-name")).toHaveText(name);
  await expect(page).toHaveTitle(`Image · ${name} · Hangar`);
  await expect(page.locator("#e-props")).toHaveValue(`description=${description}`);
  await expect(page.locator('img[src="x"]')).toHaveCount(0);
  expect(await pwned(page)).toBeUndefined();
  problems.push(...(await violations(page)));

  expect(problems, problems.join("\n")).toEqual([]);
});

test("every main page sends a nonce-based CSP, and hydrates under it without violations", async ({ page }) => {
  const problems = await watch(page);
  await signIn(page, admin.username, admin.password);
  problems.push(...(await violations(page)));
  // `/admin` is the users page.
  const paths = ["/", "/images", "/upload", "/jobs", "/formats", "/storage", "/account", "/admin", "/admin/projects", "/admin/audit", "/signin"];
  const seen = new Set<string>();
  for (const path of paths) {
    const res = await page.goto(path);
    expect(res?.status(), path).toBe(200);
    const nonce = await checkPageHeaders(path, res);
    expect(seen.has(nonce), `${path}: the nonce ${nonce} was already sent with another page`).toBe(false);
    seen.add(nonce);
    await hydrated(page);
    await expectInlineScriptsCarry(page, path, nonce);
    problems.push(...(await violations(page)));
  }
  // The not-found page is a page too.
  const res = await page.goto("/no/such/page");
  expect(res?.status()).toBe(404);
  await checkPageHeaders("/no/such/page", res);
  await hydrated(page);
  problems.push(...(await violations(page)));

  expect(problems, problems.join("\n")).toEqual([]);
});
