import { expect, Page, test } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { admin } from "../playwright.config";
import { apiToken, signIn, unique } from "./helpers";

// Real images made at test time with qemu-img (always with -f) and xorriso.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hangar-e2e-"));

function qemuImg(...args: string[]): void {
  execFileSync("qemu-img", args, { stdio: "pipe" });
}

function rawDisk(name: string, mib: number): string {
  const p = path.join(dir, name);
  const buf = Buffer.alloc(mib << 20);
  // Non-zero data spread over the disk so chunks carry real bytes and conversion has work.
  for (let off = 0; off < buf.length; off += 1 << 20) {
    for (let i = 0; i < 4096; i++) buf[off + i] = (off >> 20) + i;
  }
  fs.writeFileSync(p, buf);
  return p;
}

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

const raw = rawDisk("disk.raw", 24);
const qcow2 = path.join(dir, "disk.qcow2");
qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, qcow2);
const vdi = path.join(dir, "disk.vdi");
qemuImg("convert", "-f", "raw", "-O", "vdi", raw, vdi);
const backed = path.join(dir, "backed.qcow2");
qemuImg("create", "-f", "qcow2", "-b", qcow2, "-F", "qcow2", backed);
const iso = path.join(dir, "install.iso");
fs.mkdirSync(path.join(dir, "isoroot"), { recursive: true });
fs.writeFileSync(path.join(dir, "isoroot", "README.TXT"), "hello from hangar\n");
execFileSync("xorriso", ["-as", "mkisofs", "-quiet", "-V", "HANGAR", "-o", iso, path.join(dir, "isoroot")], { stdio: "pipe" });

test.describe.configure({ mode: "serial" });

async function openUpload(page: Page): Promise<void> {
  await signIn(page, admin.username, admin.password);
  await page.goto("/upload");
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  await expect(page.locator("#dropzone")).toBeVisible();
  await expect(page.locator("#upload-needs-js")).toBeHidden();
}

function card(page: Page, file: string) {
  return page.locator(`li.upload-card[data-file="${path.basename(file)}"]`);
}

test("qcow2, VDI, raw and ISO files are identified in the browser, uploaded and become active", async ({ page }) => {
  await openUpload(page);
  await page.locator("#file-input").setInputFiles([qcow2, vdi, raw, iso]);
  const expectations: [string, string, string][] = [
    [qcow2, "qcow2", "QCOW2"],
    [vdi, "vdi", "VDI"],
    [raw, "raw", "RAW"],
    [iso, "iso", "ISO"],
  ];
  for (const [file, format, select] of expectations) {
    const c = card(page, file);
    await expect(c.locator(".sniff")).toHaveAttribute("data-format", format);
    await expect(c.locator(".sniff")).toContainText("Looks like");
    await expect(c.getByLabel("Disk format")).toHaveValue(format);
    expect(select.length).toBeGreaterThan(0);
    await c.getByLabel("Image name").fill(unique(`e2e-${format}`));
  }
  await page.locator("#start-all").click();
  for (const [file] of expectations) {
    const c = card(page, file);
    await expect(c.locator(".phase")).toHaveText("Active", { timeout: 60_000 });
    await expect(c.locator("progress.file-progress")).toHaveAttribute("value", "100.0");
    await expect(c.locator("code.sha256")).toHaveText(sha256(file));
  }
  await expect(page.locator("#overall-progress")).toHaveAttribute("value", String([qcow2, vdi, raw, iso].reduce((n, f) => n + fs.statSync(f).size, 0)));

  // A finished card links to its image.
  const name = await card(page, vdi).getByLabel("Image name").inputValue();
  await card(page, vdi).locator(".open-image a").click();
  await expect(page.locator("#image-name")).toHaveText(name);

  // The images are in the catalogue, active; the VDI and raw ones were converted to qcow2.
  await page.goto("/images");
  const table = page.locator("#images-table");
  await expect(table.locator("tr", { hasText: "e2e-vdi" }).first()).toContainText("active");
  await expect(table.locator("tr", { hasText: "e2e-vdi" }).first()).toContainText("qcow2");
  await expect(table.locator("tr", { hasText: "e2e-iso" }).first()).toContainText("iso");
});

test("a file chosen before the page is interactive is picked up when it hydrates", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  // Hold the browser bundle back: the page is server-rendered and the picker usable, but no
  // handler listens yet (as on a slow link).
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  await page.route("**/pkg/hangar_bg.wasm", async (route) => {
    await held;
    await route.continue();
  });
  await page.goto("/upload", { waitUntil: "domcontentloaded" });
  await page.locator("#file-input").setInputFiles(qcow2);
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "false");
  release();
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  const c = card(page, qcow2);
  await expect(c.locator(".sniff")).toHaveAttribute("data-format", "qcow2");
  await expect(c.locator(".phase")).toContainText("nothing is sent until you press Start upload");
  await expect(c.locator("button.start")).toHaveText("Start upload");
});

test("a disk format that contradicts the file cannot be started; one click takes the detected one", async ({ page }) => {
  await openUpload(page);
  await page.locator("#file-input").setInputFiles(qcow2);
  const c = card(page, qcow2);
  await expect(c.locator(".sniff")).toHaveAttribute("data-format", "qcow2");
  const format = c.getByLabel("Disk format");
  await expect(format).toHaveValue("qcow2");
  await expect(c.locator("button.start")).toBeEnabled();
  await format.selectOption("raw");
  const warning = c.locator(".mismatch");
  await expect(warning).toContainText("You chose RAW but the file is QCOW2");
  await expect(c.locator("button.start")).toBeDisabled();
  await warning.getByRole("button", { name: "Use QCOW2" }).click();
  await expect(format).toHaveValue("qcow2");
  await expect(c.locator(".mismatch")).toHaveCount(0);
  await expect(c.locator("button.start")).toBeEnabled();
  // Nothing was sent: the card still offers to start.
  await expect(c.locator("button.start")).toHaveText("Start upload");
});

test("a qcow2 with a backing file is refused in the browser, and by the server if forced", async ({ page }) => {
  await openUpload(page);
  await page.locator("#file-input").setInputFiles(backed);
  const c = card(page, backed);
  await expect(c.locator(".sniff")).toContainText("Will be refused");
  await expect(c.locator(".findings")).toContainText(/backing/i);
  await expect(c.locator("button.start")).toBeDisabled();

  // Forced through the API: create the image and upload the bytes with a tus request.
  const token = await page.request.post("/api/create_token", {
    form: { name: "force" },
    headers: { Origin: new URL(page.url()).origin, Accept: "application/json" },
  });
  const secret = (await token.json()).secret as string;
  const auth = { "X-Auth-Token": secret, Accept: "application/json" };
  const fields: Record<string, string> = {
    name: unique("forced"), disk_format: "qcow2", container_format: "bare", visibility: "private", description: "",
    min_disk: "0", min_ram: "0", architecture: "", os_distro: "", os_version: "", protected: "false", tags: "",
    size: String(fs.statSync(backed).size),
  };
  const created = await page.request.post("/api/create_image", {
    headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" },
    data: Object.entries(fields).map(([k, v]) => `form[${k}]=${encodeURIComponent(v)}`).join("&"),
  });
  expect(created.status(), await created.text()).toBe(200);
  const imageId = (await created.json()) as string;
  const bytes = fs.readFileSync(backed);
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const post = await page.request.post("/uploads", {
    headers: {
      "X-Auth-Token": secret,
      "Tus-Resumable": "1.0.0",
      "Upload-Length": String(bytes.length),
      "Upload-Metadata": `image_id ${b64(imageId)},filename ${b64("backed.qcow2")}`,
      "Content-Type": "application/offset+octet-stream",
    },
    data: bytes,
  });
  expect(post.status(), await post.text()).toBe(201);
  await expect
    .poll(async () => {
      const r = await page.request.post("/api/image_progress", { headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" }, data: `image_id=${imageId}` });
      const j = await r.json();
      return `${j.status}: ${j.reason}`;
    }, { timeout: 30_000 })
    .toMatch(/^killed: .*backing/i);
});

test("the upload survives a network outage and resumes on its own", async ({ page }) => {
  await openUpload(page);
  await page.getByText("Transfer settings").click();
  await page.locator("#chunk-size").selectOption("4");
  await page.locator("#file-input").setInputFiles(raw);
  const c = card(page, raw);
  const name = unique("flaky");
  await c.getByLabel("Image name").fill(name);
  // Let a few chunks through, then drop every PATCH for a while.
  let patches = 0;
  let outage = true;
  await page.route("**/uploads/**", async (route) => {
    if (route.request().method() === "PATCH" && ++patches > 2 && outage) return route.abort("internetdisconnected");
    return route.continue();
  });
  await c.locator("button.start").click();
  await expect(c.locator(".note")).toContainText("retrying", { timeout: 30_000 });
  // Meanwhile the catalogue shows the image as uploading (its first bytes are on the server).
  // (The first chunks may still be on their way when the first retry is announced: reload.)
  const other = await page.context().newPage();
  await expect
    .poll(async () => {
      await other.goto(`/images?q=${name}`);
      return (await other.locator("#images-table tr", { hasText: name }).textContent()) ?? "";
    }, { timeout: 20_000 })
    .toContain("uploading");
  await other.close();
  outage = false;
  await expect(c.locator(".phase")).toHaveText("Active", { timeout: 90_000 });
  await expect(c.locator("code.sha256")).toHaveText(sha256(raw));
});

test("offline for a while, the upload waits for the network and goes on by itself", async ({ page }) => {
  await openUpload(page);
  await page.getByText("Transfer settings").click();
  await page.locator("#chunk-size").selectOption("4");
  await page.locator("#file-input").setInputFiles(raw);
  const c = card(page, raw);
  await c.getByLabel("Image name").fill(unique("offline"));
  // Let two chunks through, hold the next ones until the browser is offline, then fail them
  // the way Chromium does when the Wi-Fi drops.
  let patches = 0;
  let release = () => {};
  const held = new Promise<void>((r) => (release = r));
  await page.route("**/uploads/**", async (route) => {
    if (route.request().method() === "PATCH" && ++patches > 2) {
      await held;
      return route.abort("internetdisconnected");
    }
    return route.continue();
  });
  await c.locator("button.start").click();
  await expect.poll(() => patches, { timeout: 30_000 }).toBeGreaterThan(2);
  await page.context().setOffline(true);
  release();
  await expect(c.locator(".note")).toContainText("You are offline", { timeout: 30_000 });
  // It waits without giving up or counting down retries, and says so.
  await page.waitForTimeout(3_000);
  await expect(c.locator(".note")).toContainText("You are offline");
  await expect(c.locator(".phase")).toHaveText("Uploading");
  await page.unroute("**/uploads/**");
  await page.context().setOffline(false);
  await expect(c.locator(".phase")).toHaveText("Active", { timeout: 90_000 });
  await expect(c.locator(".note")).toHaveCount(0);
  await expect(c.locator("code.sha256")).toHaveText(sha256(raw));
});

test("a reload mid-upload offers to resume and sends only the rest", async ({ page }) => {
  await openUpload(page);
  await page.getByText("Transfer settings").click();
  await page.locator("#chunk-size").selectOption("4");
  await page.locator("#file-input").setInputFiles(vdi);
  const c = card(page, vdi);
  await c.getByLabel("Image name").fill(unique("reloaded"));
  // Let the first PATCHes through, fail the rest, and reload while the upload is stuck.
  let patches = 0;
  await page.route("**/uploads/**", async (route) => {
    if (route.request().method() === "PATCH" && ++patches > 2) return route.abort("connectionreset");
    return route.continue();
  });
  await c.locator("button.start").click();
  await expect.poll(() => patches, { timeout: 30_000 }).toBeGreaterThan(3);
  await page.reload();
  await page.unroute("**/uploads/**");
  await expect(page.locator("#status-check")).toHaveAttribute("data-hydrated", "true");
  const offsetsAfterReload: number[] = [];
  page.on("request", (r) => {
    if (r.method() === "PATCH") offsetsAfterReload.push(Number(r.headers()["upload-offset"] ?? -1));
  });
  await page.locator("#file-input").setInputFiles(vdi);
  const again = card(page, vdi);
  await expect(again.locator(".resume-offer")).toBeVisible();
  await expect(again.locator("button.start")).toHaveText("Resume upload");
  await again.locator("button.start").click();
  await expect(again.locator(".phase")).toHaveText("Active", { timeout: 60_000 });
  await expect(again.locator("code.sha256")).toHaveText(sha256(vdi));
  // Fewer chunks than the whole file needs, and some part continued from where it was.
  const allChunks = Math.ceil(fs.statSync(vdi).size / (4 << 20));
  expect(offsetsAfterReload.length).toBeGreaterThan(0);
  expect(offsetsAfterReload.length).toBeLessThan(allChunks);
  expect(offsetsAfterReload.some((o) => o > 0)).toBe(true);
});

test("cancelling an upload removes its data", async ({ page }) => {
  await openUpload(page);
  await page.getByText("Transfer settings").click();
  await page.locator("#chunk-size").selectOption("4");
  await page.locator("#file-input").setInputFiles(raw);
  const c = card(page, raw);
  const name = unique("cancelled");
  await c.getByLabel("Image name").fill(name);
  const partUrls = new Set<string>();
  let patches = 0;
  await page.route("**/uploads/**", async (route) => {
    if (route.request().method() === "PATCH") {
      partUrls.add(new URL(route.request().url()).pathname);
      if (++patches > 1) return route.abort("connectionreset");
    }
    return route.continue();
  });
  await c.locator("button.start").click();
  await expect.poll(() => patches, { timeout: 30_000 }).toBeGreaterThan(2);
  await c.locator("button.cancel").click();
  await expect(c.locator(".phase")).toContainText("Cancelled");
  await page.unroute("**/uploads/**");
  for (const url of partUrls) {
    const head = await page.request.fetch(url, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
    expect([404, 410]).toContain(head.status());
  }
  await page.goto("/images");
  await expect(page.locator("#images-table tr", { hasText: name })).toContainText("killed");
});

/** Drops `files` on the Upload page's drop zone, as a user dragging them from a file manager. */
async function dropFiles(page: Page, files: string[]): Promise<void> {
  const items = files.map((f) => ({ name: path.basename(f), b64: fs.readFileSync(f).toString("base64") }));
  const dataTransfer = await page.evaluateHandle((items) => {
    const dt = new DataTransfer();
    for (const it of items) {
      const bytes = Uint8Array.from(atob(it.b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], it.name));
    }
    return dt;
  }, items);
  const zone = page.locator(".dropzone");
  await zone.dispatchEvent("dragover", { dataTransfer });
  await expect(zone).toHaveClass(/dragging/);
  await zone.dispatchEvent("drop", { dataTransfer });
}

/** Builds an archive with Python's tarfile (GNU tar would strip a member name such as `../x`). */
function pyTar(out: string, members: [string, string][], gzip = false): void {
  const script = `import sys, tarfile
out, gz, *pairs = sys.argv[1:]
with tarfile.open(out, "w:gz" if gz == "1" else "w", format=tarfile.USTAR_FORMAT) as t:
    for i in range(0, len(pairs), 2):
        t.add(pairs[i + 1], arcname=pairs[i])`;
  execFileSync("python3", ["-c", script, out, gzip ? "1" : "0", ...members.flat()], { stdio: "pipe" });
}

/** A two-disk appliance: a streamOptimized VMDK and a raw disk, an OVF with OS and hardware
 *  facts, and a SHA256 manifest after the disks (past the browser's 64 KiB head). */
function appliance(name: string, extra: [string, string][] = []): string {
  const pkg = path.join(dir, name);
  fs.mkdirSync(pkg, { recursive: true });
  qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", rawDisk(`${name}-root.raw`, 4), path.join(pkg, "disk1.vmdk"));
  fs.writeFileSync(path.join(pkg, "disk2.img"), Buffer.alloc(2 << 20, 0x5a));
  const so = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
  fs.writeFileSync(
    path.join(pkg, "appliance.ovf"),
    `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="f1" ovf:href="disk1.vmdk"/><File ovf:id="f2" ovf:href="disk2.img"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="root" ovf:fileRef="f1" ovf:capacity="4" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="${so}"/>
    <Disk ovf:diskId="data" ovf:fileRef="f2" ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://en.wikipedia.org/wiki/Byte"/>
  </DiskSection>
  <VirtualSystem ovf:id="app"><Info>vm</Info><Name>E2E appliance</Name>
    <OperatingSystemSection ovf:id="96"><Info>os</Info><Description>Debian GNU/Linux 12 (64-bit)</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><ResourceType>3</ResourceType><VirtualQuantity>2</VirtualQuantity></Item>
      <Item><ResourceType>4</ResourceType><AllocationUnits>byte * 2^20</AllocationUnits><VirtualQuantity>2048</VirtualQuantity></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`,
  );
  const files = ["appliance.ovf", "disk1.vmdk", "disk2.img"];
  const mf = files.map((f) => `SHA256(${f})= ${sha256(path.join(pkg, f))}\n`).join("");
  fs.writeFileSync(path.join(pkg, "appliance.mf"), mf);
  const ova = path.join(dir, `${name}.ova`);
  pyTar(ova, [...[...files, "appliance.mf"].map((f): [string, string] => [f, path.join(pkg, f)]), ...extra]);
  return ova;
}

test("an OVA dropped on the page shows what it holds before sending, and ends as linked images on the card and the image pages", async ({ page }) => {
  const ova = appliance("appliance");
  await openUpload(page);
  await dropFiles(page, [ova]);
  const c = card(page, ova);
  await expect(c.locator(".sniff")).toHaveAttribute("data-format", "ova");
  // Declared as Glance clients declare an OVA: container ova, the disk format of the disk inside.
  await expect(c.getByLabel("Disk format")).toHaveValue("vmdk");
  await expect(c.locator(".package-note")).toContainText("each of its disks becomes an image");
  // Before anything is sent: both disks (the second's header and the manifest lie past the
  // head the browser reads first), the VM's facts and the manifest.
  const contents = c.locator(".package-contents");
  await expect(contents).toContainText("This OVA holds 2 disks");
  await expect(contents.locator('tr[data-disk="root"]')).toContainText("vmdk (streamOptimized)");
  await expect(contents.locator('tr[data-disk="root"]')).toContainText("4.0 MiB");
  await expect(contents.locator('tr[data-disk="data"]')).toContainText("disk2.img");
  await expect(contents.locator('tr[data-disk="data"]')).toContainText("2.0 MiB");
  await expect(contents.locator(".package-vm")).toContainText("E2E appliance");
  await expect(contents.locator(".package-vm")).toContainText("Debian GNU/Linux 12");
  await expect(contents.locator(".package-vm")).toContainText("2.0 GiB");
  await expect(contents.locator(".package-manifest")).toContainText("appliance.mf: SHA256 digests of 3 files");
  await expect(contents.locator(".package-members summary")).toContainText("All 4 files in the OVA");

  const name = unique("e2e-ova");
  await c.getByLabel("Image name").fill(name);
  await page.locator("#start-all").click();
  await expect(c.locator(".phase")).toHaveText("Active", { timeout: 60_000 });
  // The card lists every image the package became, linked.
  const made = c.locator(".package-images li");
  await expect(made).toHaveCount(2);
  await expect(made.nth(0)).toHaveAttribute("data-role", "first disk");
  await expect(made.nth(1)).toHaveAttribute("data-role", "disk data");
  await expect(made.nth(1)).toContainText("active");

  // The second disk's page links back to the first, whose page shows the package's facts.
  await made.nth(1).locator("a").click();
  await expect(page.locator("#image-name")).toHaveText(`${name} (disk 2)`);
  const section = page.locator("#image-package");
  await expect(section.locator("h2")).toHaveText("From an OVA package");
  await expect(section.locator('li[data-role="disk data"]')).toContainText("(this image)");
  await section.locator('li[data-role="first disk"] a').click();
  await expect(page.locator("#image-name")).toHaveText(name);
  await expect(page.locator("#image-facts")).toContainText("qcow2");
  await expect(section.locator(".package-facts")).toContainText("E2E appliance");
  await expect(section.locator(".package-facts")).toContainText("every file's digest verified");
  await expect(section.locator('li[data-role="disk data"] a')).toHaveText(`${name} (disk 2)`);
});

test("a UEC tarball dropped on the page shows its kernel and ramdisk before sending and becomes an AMI linked to its AKI and ARI", async ({ page }) => {
  const uec = path.join(dir, "uec");
  fs.mkdirSync(uec, { recursive: true });
  const img = Buffer.alloc(4 << 20);
  img.write("\x53\xef", 1080, "latin1"); // an ext4 superblock's magic: a raw file system image
  img.fill(0x11, 2 << 20, (2 << 20) + 5000);
  const kernel = Buffer.alloc(8192);
  kernel.write("\x55\xaa", 0x1fe, "latin1");
  kernel.write("HdrS", 0x202, "latin1"); // a bzImage's setup header
  fs.writeFileSync(path.join(uec, "app-vmlinuz-virtual"), kernel);
  fs.writeFileSync(path.join(uec, "app-initrd-virtual"), Buffer.concat([Buffer.from("070701"), Buffer.alloc(200, 0x30)]));
  fs.writeFileSync(path.join(uec, "app.img"), img);
  const tarball = path.join(dir, "app.tar.gz");
  pyTar(tarball, ["app-vmlinuz-virtual", "app-initrd-virtual", "app.img"].map((f): [string, string] => [f, path.join(uec, f)]), true);

  await openUpload(page);
  await dropFiles(page, [tarball]);
  const c = card(page, tarball);
  await expect(c.locator(".sniff")).toHaveAttribute("data-format", "uec");
  await expect(c.getByLabel("Disk format")).toHaveValue("ami");
  await expect(c.locator(".package-note")).toContainText("linked to its kernel and ramdisk");
  const contents = c.locator(".package-contents");
  await expect(contents).toContainText("This UEC tarball holds 3 disks");
  await expect(contents.locator('tr[data-disk="image"]')).toContainText("app.img");
  await expect(contents.locator('tr[data-disk="kernel"]')).toContainText("aki");
  await expect(contents.locator('tr[data-disk="ramdisk"]')).toContainText("ari");

  const name = unique("e2e-uec");
  await c.getByLabel("Image name").fill(name);
  await page.locator("#start-all").click();
  await expect(c.locator(".phase")).toHaveText("Active", { timeout: 60_000 });
  const made = c.locator(".package-images li");
  await expect(made).toHaveCount(3);
  await expect(made.nth(0)).toHaveAttribute("data-role", "machine image");
  await expect(c.locator('.package-images li[data-role="kernel"]')).toContainText("aki");
  await expect(c.locator('.package-images li[data-role="ramdisk"]')).toContainText("ari");

  // The machine image's page: linked to its kernel and ramdisk, which Glance clients see as
  // kernel_id and ramdisk_id.
  await made.nth(0).locator("a").click();
  await expect(page.locator("#image-name")).toHaveText(name);
  const section = page.locator("#image-package");
  await expect(section.locator("h2")).toHaveText("From a UEC tarball");
  const kernelHref = await section.locator('li[data-role="kernel"] a').getAttribute("href");
  const kernelId = kernelHref!.split("/").pop()!;
  await expect(page.locator("#image-properties")).toContainText(kernelId);
  await section.locator('li[data-role="ramdisk"] a').click();
  await expect(page.locator("#image-facts")).toContainText("ari");
});

test("an OVA with a member that climbs out of the package is refused in the browser and by the server", async ({ page }) => {
  const evil = path.join(dir, "evil.txt");
  fs.writeFileSync(evil, "boo\n");
  const ova = appliance("climber", [["../evil.txt", evil]]);
  await openUpload(page);
  await page.locator("#file-input").setInputFiles(ova);
  const c = card(page, ova);
  // The member lies past the head: the browser walks the member headers to find it.
  await expect(c.locator(".sniff")).toHaveClass(/sniff-bad/);
  await expect(c.locator(".sniff .findings")).toContainText("../evil.txt");
  await expect(c.locator(".phase")).toHaveText("Refused before upload");
  await expect(c.locator("button.start")).toBeDisabled();

  // A client that sends it anyway (here: the dashboard's own API, bypassing the page).
  const token = await apiToken(page);
  const auth = { "X-Auth-Token": token, Accept: "application/json" };
  const bytes = fs.readFileSync(ova);
  const fields: Record<string, string> = {
    name: unique("e2e-climber"), disk_format: "vmdk", container_format: "ova", visibility: "private", description: "",
    min_disk: "0", min_ram: "0", architecture: "", os_distro: "", os_version: "", protected: "false", tags: "", size: String(bytes.length),
  };
  const created = await page.request.post("/api/create_image", {
    headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" },
    data: Object.entries(fields).map(([k, v]) => `form[${k}]=${encodeURIComponent(v)}`).join("&"),
  });
  expect(created.status(), await created.text()).toBe(200);
  const imageId = (await created.json()) as string;
  const post = await page.request.post("/uploads", {
    headers: {
      "X-Auth-Token": token, "Tus-Resumable": "1.0.0", "Upload-Length": String(bytes.length),
      "Upload-Metadata": `image_id ${Buffer.from(imageId).toString("base64")}`,
      "Content-Type": "application/offset+octet-stream",
    },
    data: bytes,
  });
  expect(post.status(), await post.text()).toBe(201);
  let reason = "";
  await expect
    .poll(async () => {
      const r = await page.request.post("/api/image_progress", { headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" }, data: `image_id=${imageId}` });
      const state = await r.json();
      reason = state.reason;
      return state.status as string;
    }, { timeout: 30_000 })
    .toBe("killed");
  expect(reason).toContain("../evil.txt");
  // Nothing of it became an image.
  await page.goto(`/images?q=${fields.name}`);
  await expect(page.locator("#images-table tbody tr")).toHaveCount(1);
  await expect(page.locator("#images-table tbody tr")).toContainText("killed");
});
