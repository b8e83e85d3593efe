import { expect, test } from "@playwright/test";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { admin } from "../playwright.config";
import { apiImage, apiToken, rawDisk, signIn, unique } from "./helpers";

// Runs without JavaScript and hydrated: the list's filters are a GET form, every action a form.

test("the list filters, sorts and pages, and every view is a URL", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  const token = await apiToken(page);
  const p = unique("cat");
  for (const [i, n] of ["gamma", "alpha", "beta"].entries()) {
    await apiImage(page, token, { name: `${p}-${n}`, bytes: rawDisk(1 << 20, i), tags: n === "alpha" ? "blue,base" : "green" });
  }
  await page.goto("/images");
  const filters = page.locator("#image-filters");
  await filters.getByLabel("Name contains").fill(p);
  await filters.getByLabel("Sort by").selectOption("name");
  await filters.getByLabel("Order").selectOption("asc");
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(page).toHaveURL(new RegExp(`q=${p}.*sort=name`));
  const names = page.locator("#images-table tbody th[scope=row] a");
  await expect(names).toHaveText([`${p}-alpha`, `${p}-beta`, `${p}-gamma`]);
  await expect(page.locator("#images-count")).toContainText("3 images match");

  // Descending, then the tag filter.
  await filters.getByLabel("Order").selectOption("desc");
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(names).toHaveText([`${p}-gamma`, `${p}-beta`, `${p}-alpha`]);
  await filters.getByLabel("Tag").fill("blue");
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(names).toHaveText([`${p}-alpha`]);

  // Marker paging: two per page.
  await page.goto(`/images?q=${p}&sort=name&dir=asc&limit=2`);
  await expect(names).toHaveText([`${p}-alpha`, `${p}-beta`]);
  await page.locator("#next-page").click();
  await expect(names).toHaveText([`${p}-gamma`]);
  await expect(page.locator("#next-page")).toHaveCount(0);
  await page.locator("#first-page").click();
  await expect(names).toHaveText([`${p}-alpha`, `${p}-beta`]);

  // A bad filter says what is wrong.
  await page.goto(`/images?size_min=lots`);
  await expect(page.getByRole("alert")).toContainText("size such as");
});

test("the detail page shows the facts, edits metadata and serves byte ranges", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  const token = await apiToken(page);
  const name = unique("detail");
  const id = await apiImage(page, token, { name, bytes: rawDisk(2 << 20, 7) });
  await page.goto(`/images?q=${name}`);
  await page.getByRole("link", { name }).click();
  await expect(page).toHaveURL(new RegExp(`/images/${id}$`));
  await expect(page.locator("#image-status")).toHaveText("active");
  await expect(page.locator("#image-facts")).toContainText("raw, 2.0 MiB");
  await expect(page.locator("#sum-md5")).toHaveText(/^[0-9a-f]{32}$/);
  await expect(page.locator("#sum-sha512")).toHaveText(/^[0-9a-f]{128}$/);
  await expect(page.locator('#image-storage tr[data-backend="local"]')).toContainText("Stored here as qcow2");
  await expect(page.locator("#jobs-table tr[data-status=succeeded]")).toContainText("raw → qcow2");

  // Edit metadata.
  const form = page.locator("#edit-image-form");
  await form.getByLabel("Name", { exact: true }).fill(`${name}-renamed`);
  await form.getByLabel("Tags (comma-separated)").fill("web, lts");
  await form.getByLabel("Properties (one key=value per line)").fill("os_distro=debian\nos_version=12");
  await form.getByLabel("Minimum disk (GB)").fill("10");
  await form.getByRole("button", { name: "Save changes" }).click();
  await expect(page.locator("#image-name")).toHaveText(`${name}-renamed`);
  await expect(page.locator("#image-tags")).toHaveText(/web\s*lts/);
  await expect(page.locator("#image-properties")).toContainText("debian");
  await expect(page.locator("#image-facts")).toContainText("10 GB");

  // Download: whole, then a range, both the stored qcow2's bytes.
  const whole = await page.request.get(`/images/${id}/file`);
  expect(whole.status()).toBe(200);
  const all = await whole.body();
  expect(all.subarray(0, 4).toString("latin1")).toBe("QFI\xfb");
  expect(whole.headers()["accept-ranges"]).toBe("bytes");
  expect(whole.headers()["content-md5"]).toBe(await page.locator("#sum-md5").innerText());
  const part = await page.request.get(`/images/${id}/file`, { headers: { Range: "bytes=100-1123" } });
  expect(part.status()).toBe(206);
  expect(part.headers()["content-range"]).toBe(`bytes 100-1123/${all.length}`);
  expect(Buffer.compare(await part.body(), all.subarray(100, 1124))).toBe(0);
  const beyond = await page.request.get(`/images/${id}/file`, { headers: { Range: `bytes=${all.length}-` } });
  expect(beyond.status()).toBe(416);

  // Copy to the NFS-backed store: a job, then a second location (qcow2 is native there).
  const nfs = page.locator('#image-storage tr[data-backend="shared-nfs"]');
  await expect(nfs).toContainText("a copy would be kept as qcow2");
  await nfs.getByRole("button", { name: "Copy to shared-nfs" }).click();
  await expect
    .poll(async () => {
      // Without JS the click submits a form; a reload racing that navigation can fail once
      // ("not attached to an active page"): the next poll reloads again.
      if (test.info().project.name !== "hydrated") await page.reload().catch(() => undefined);
      return (await nfs.innerText()).includes("Stored here as qcow2");
    }, { timeout: 30_000 })
    .toBe(true);
  await expect(page.locator("#jobs-table tr[data-status=succeeded]", { hasText: "shared-nfs" })).toContainText("Copied from local to shared-nfs");

  // Deactivate and reactivate.
  await page.locator("#status-button").click();
  await expect(page.locator("#image-status")).toHaveText("deactivated");
  await page.locator("#status-button").click();
  await expect(page.locator("#image-status")).toHaveText("active");
});

test("a protected image cannot be deleted; once unprotected, deletion needs the name", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  const token = await apiToken(page);
  const name = unique("keep");
  const id = await apiImage(page, token, { name, bytes: rawDisk(1 << 20, 3), protected: true });
  await page.goto(`/images/${id}`);
  await expect(page.locator("#protected-badge")).toBeVisible();
  await expect(page.locator("#delete-protected")).toBeVisible();
  const del = page.locator("#delete-image-form");
  await del.getByLabel(`Type ${name} to confirm`).fill(name);
  await del.getByRole("button", { name: "Delete image" }).click();
  await expect(page.getByRole("alert")).toContainText("protected");
  await expect(page.locator("#image-status")).toHaveText("active");

  // Unprotect, then a wrong confirmation is refused and the right one deletes.
  await page.locator("#edit-image-form").getByLabel("Protected (cannot be deleted)").uncheck();
  await page.locator("#edit-image-form").getByRole("button", { name: "Save changes" }).click();
  await expect(page.locator("#protected-badge")).toHaveCount(0);
  await del.getByLabel(`Type ${name} to confirm`).fill("something else");
  await del.getByRole("button", { name: "Delete image" }).click();
  await expect(page.getByRole("alert")).toContainText(`Type the image's name, ${name}`);
  await del.getByLabel(`Type ${name} to confirm`).fill(name);
  await del.getByRole("button", { name: "Delete image" }).click();
  await expect(page).toHaveURL(/\/images\?deleted=/);
  await expect(page.locator("#deleted-notice")).toHaveText(`Deleted the image “${name}” and its stored data.`);
  await expect(page.locator("#images-table tr", { hasText: name })).toHaveCount(0);
  await page.goto(`/images/${id}`);
  await expect(page.locator("#image-error")).toContainText("No such image");
  expect((await page.request.get(`/images/${id}/file`)).status()).toBe(404);
});

test("the jobs view lists imports with their outcome", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  const token = await apiToken(page);
  const name = unique("jobbed");
  await apiImage(page, token, { name, bytes: rawDisk(1 << 20, 9) });
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Jobs" })).toBeVisible();
  const row = page.locator("#jobs-table tr", { hasText: name });
  await expect(row).toHaveAttribute("data-status", "succeeded");
  await expect(row.locator("progress")).toHaveAttribute("value", "100");

  // The storage overview counts it on the local backend, by format, with free space.
  await page.goto("/storage");
  const local = page.locator('#storage-usage article[data-backend="local"]');
  await expect(local).toContainText("default for uploads");
  await expect(local.locator(".legend")).toContainText("qcow2");
  await expect(local.locator(".free")).toContainText(/free of/);
  // The background bar plus at least one format's segment.
  expect(await local.locator("svg.usage-chart rect").count()).toBeGreaterThan(1);
  // The test's data directory shares its disk with the system: what else fills it is drawn
  // too, so the bar is as full as the disk, not only as full as Hangar's images.
  const other = local.locator("svg.usage-chart rect.other");
  await expect(other).toHaveCount(1);
  expect(Number(await other.getAttribute("width"))).toBeGreaterThan(2);
  await expect(local.locator(".usage-line .other")).toContainText("used by everything else");
  await expect(local.locator(".legend li.other")).toContainText("everything else");
  await expect(local.locator(".usage-table")).toContainText("default");
});

test("a project member uploads; a reader of that project sees the image but can neither change nor delete it", async ({ page, browser }) => {
  await signIn(page, admin.username, admin.password);
  const origin = new URL(page.url()).origin;
  const call = async (endpoint: string, form: Record<string, string>) => {
    const r = await page.request.post(`/api/${endpoint}`, { form, headers: { Origin: origin, Accept: "application/json" } });
    expect(r.status(), `${endpoint}: ${await r.text()}`).toBe(200);
    return r.json();
  };
  const project = unique("team");
  const projectId = (await call("admin_create_project", { name: project })) as string;
  const [member, reader, password] = [unique("mia"), unique("rex"), "team-password-1"];
  for (const [user, role] of [[member, "member"], [reader, "reader"]]) {
    await call("admin_create_user", { username: user, password });
    await call("admin_grant_role", { username: user, project_id: projectId, role });
  }

  // The member uploads: with the browser's uploader when JavaScript runs, else over tus.
  const mine = await browser.newContext({ javaScriptEnabled: test.info().project.name === "hydrated" });
  const m = await mine.newPage();
  await signIn(m, member, password);
  const name = unique("team-disk");
  if (test.info().project.name === "hydrated") {
    const file = path.join(os.tmpdir(), `${name}.raw`);
    fs.writeFileSync(file, rawDisk(3 << 20, 5));
    await m.goto("/upload");
    await expect(m.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
    // Stored on the NFS-backed backend, chosen before the upload.
    await m.getByLabel("Store new images on").selectOption("shared-nfs");
    await m.locator("#file-input").setInputFiles(file);
    const c = m.locator(`li.upload-card[data-file="${path.basename(file)}"]`);
    await expect(c.getByLabel("Disk format")).toHaveValue("raw");
    await c.getByLabel("Image name").fill(name);
    await m.locator("#start-all").click();
    await expect(c.locator(".phase")).toHaveText("Active", { timeout: 60_000 });
  } else {
    await apiImage(m, await apiToken(m), { name, bytes: rawDisk(3 << 20, 5) });
  }
  await m.goto(`/images?q=${name}`);
  await expect(m.locator("#images-table tbody tr")).toHaveCount(1);
  await expect(m.locator("#images-table tbody tr")).toContainText(project);
  await m.getByRole("link", { name }).click();
  const imageId = m.url().split("/").pop() as string;
  await expect(m.locator("#delete-image-form")).toBeVisible();
  const where = test.info().project.name === "hydrated" ? "shared-nfs" : "local";
  await expect(m.locator(`#image-storage tr[data-backend="${where}"]`)).toContainText("Stored here as qcow2");
  await mine.close();

  // The reader sees it, without edit or delete controls, and the server refuses both.
  const theirs = await browser.newContext({ javaScriptEnabled: false });
  const r = await theirs.newPage();
  await signIn(r, reader, password);
  // Pages offer a reader no upload: no Upload menu, no Upload button, a welcome for browsing.
  await r.goto("/images");
  await expect(r.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Upload" })).toHaveCount(0);
  await expect(r.locator("#upload-button")).toHaveCount(0);
  await expect(r.locator("#welcome")).toContainText("ask an administrator for the member role");
  await r.goto("/upload");
  await expect(r.locator("#upload-denied")).toContainText("readers can see images but not upload them");
  await r.goto(`/images/${imageId}`);
  await expect(r.locator("#image-status")).toHaveText("active");
  await expect(r.locator("#edit-image-form")).toHaveCount(0);
  await expect(r.locator("#delete-image-form")).toHaveCount(0);
  const headers = { Origin: origin, Accept: "application/json" };
  const del = await r.request.post("/api/delete_image", { form: { image_id: imageId, confirm: name }, headers });
  expect(del.status()).toBe(403);
  expect((await del.json()).code).toBe("forbidden");
  const edit = await r.request.post("/api/update_image", { form: { image_id: imageId, name: "hijacked", visibility: "private" }, headers });
  expect(edit.status()).toBe(403);
  const form = "form[name]=x&form[disk_format]=raw&form[container_format]=bare&form[visibility]=private&form[description]=" +
    "&form[min_disk]=0&form[min_ram]=0&form[architecture]=&form[os_distro]=&form[os_version]=&form[protected]=false&form[tags]=&form[size]=1024";
  const create = await r.request.post("/api/create_image", { data: form, headers: { ...headers, "Content-Type": "application/x-www-form-urlencoded" } });
  expect(create.status(), await create.text()).toBe(403);
  await theirs.close();
  await page.goto(`/images/${imageId}`);
  await expect(page.locator("#image-name")).toHaveText(name);
});

// (Here, not in pages.spec.ts: it creates images, which the fresh-install checks must not see.)
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
