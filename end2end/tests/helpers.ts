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

/** An API token of the signed-in user (made once per page's context). */
export async function apiToken(page: Page): Promise<string> {
  const r = await page.request.post("/api/create_token", {
    form: { name: unique("e2e") },
    headers: { Origin: new URL(page.url()).origin, Accept: "application/json" },
  });
  expect(r.status(), await r.text()).toBe(200);
  return (await r.json()).secret as string;
}

/** A raw disk of `size` bytes with some data in it. */
export function rawDisk(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < Math.min(size, 256 * 1024); i++) b[i] = (i * 31 + seed) & 0xff;
  b.fill(0xab, size - 4096);
  return b;
}

/**
 * Creates an image through the API and uploads `bytes` with one tus request; waits until the
 * import job made it active (or `opts.expect`, e.g. `killed`). Returns its id.
 */
export async function apiImage(
  page: Page,
  token: string,
  opts: { name: string; bytes: Buffer; diskFormat?: string; tags?: string; protected?: boolean; visibility?: string; expect?: string },
): Promise<string> {
  const auth = { "X-Auth-Token": token, Accept: "application/json" };
  const fields: Record<string, string> = {
    name: opts.name, disk_format: opts.diskFormat ?? "raw", container_format: "bare", visibility: opts.visibility ?? "private",
    description: "", min_disk: "0", min_ram: "0", architecture: "", os_distro: "", os_version: "",
    protected: String(opts.protected ?? false), tags: opts.tags ?? "", size: String(opts.bytes.length),
  };
  const created = await page.request.post("/api/create_image", {
    headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" },
    data: Object.entries(fields).map(([k, v]) => `form[${k}]=${encodeURIComponent(v)}`).join("&"),
  });
  expect(created.status(), await created.text()).toBe(200);
  const imageId = (await created.json()) as string;
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const post = await page.request.post("/uploads", {
    headers: {
      "X-Auth-Token": token,
      "Tus-Resumable": "1.0.0",
      "Upload-Length": String(opts.bytes.length),
      "Upload-Metadata": `image_id ${b64(imageId)},filename ${b64(opts.name + ".img")}`,
      "Content-Type": "application/offset+octet-stream",
    },
    data: opts.bytes,
  });
  expect(post.status(), await post.text()).toBe(201);
  await expect
    .poll(async () => {
      const r = await page.request.post("/api/image_progress", { headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" }, data: `image_id=${imageId}` });
      return (await r.json()).status as string;
    }, { timeout: 30_000 })
    .toBe(opts.expect ?? "active");
  return imageId;
}
