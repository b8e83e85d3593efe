import { expect, test } from "@playwright/test";
import { admin } from "../playwright.config";
import { signIn } from "./helpers";

// Runs without JavaScript and hydrated: the matrix and its edit form work both ways.

test("the storage matrix shows every format on Local, NFS, S3 and Ceph RBD with reasons and a legend", async ({ page }) => {
  await signIn(page, admin.username, admin.password);
  await page.goto("/storage");
  const matrix = page.locator("#storage-matrix");
  for (const col of ["Local", "NFS-backed", "S3 object storage", "Ceph RBD"]) {
    await expect(matrix.getByRole("columnheader", { name: new RegExp(`^${col}`) })).toBeVisible();
  }
  await expect(matrix.locator("tbody tr")).toHaveCount(12);
  // The defaults: file backends convert raw to qcow2, RBD converts qcow2 to raw.
  await expect(matrix.locator('[data-cell="local/raw"]')).toHaveText("convert to qcow2");
  await expect(matrix.locator('[data-cell="local/raw"]')).toHaveClass(/cell-convert/);
  await expect(matrix.locator('[data-cell="rbd/qcow2"]')).toHaveText("convert to raw");
  await expect(matrix.locator('[data-cell="rbd/raw"]')).toHaveText("native");
  await expect(matrix.locator('[data-cell="nfs/ova"]')).toHaveText("extract");
  // Each cell's reason is its accessible description, shown on focus.
  const rbdQcow2 = matrix.locator('[data-cell="rbd/qcow2"]');
  const tipId = await rbdQcow2.getAttribute("aria-describedby");
  const tip = page.locator(`#${tipId}`);
  await expect(tip).toContainText("RBD copy-on-write");
  await rbdQcow2.focus();
  await expect(tip).toBeVisible();
  await expect(page.locator("#matrix-legend li")).toHaveCount(4);
  await expect(page.locator("#storage-matrix")).toContainText("configured: local");
});

test("an admin edits a cell and the matrix shows the new rule and reason", async ({ page }) => {
  // Each project (no-js, hydrated) edits its own cell of the shared server.
  const format = test.info().project.name === "no-js" ? "vhd" : "vhdx";
  await signIn(page, admin.username, admin.password);
  await page.goto("/storage");
  await page.locator(`[data-cell="nfs/${format}"]`).click();
  await expect(page).toHaveURL(new RegExp(`kind=nfs&format=${format}$|kind=nfs&format=${format}#`));
  const form = page.locator("#edit-cell-form");
  await expect(form.getByLabel("Backend kind")).toHaveValue("nfs");
  await expect(form.getByLabel("Format", { exact: true })).toHaveValue(format);
  await expect(form.getByLabel("On import")).toHaveValue("convert");
  await form.getByLabel("On import").selectOption("refuse");
  if (test.info().project.name === "no-js") {
    await form.getByLabel("Convert to").selectOption("");
  } else {
    // Hydrated, the target shows only for "convert to …".
    await expect(form.getByLabel("Convert to")).toBeHidden();
  }
  const reason = `Our NFS filer has no room for Hyper-V disks (${test.info().project.name}).`;
  await form.getByLabel("Reason users see").fill(reason);
  await form.getByRole("button", { name: "Save cell" }).click();
  await expect(page.locator(`[data-cell="nfs/${format}"]`)).toHaveText("refused");
  await expect(page.locator(`#tip-nfs-${format}`)).toContainText(reason);
  await expect(page.locator(`#tip-nfs-${format}`)).toContainText(`set by ${admin.username}`);

  // A contradictory cell is refused with a reason.
  await page.goto("/storage?kind=local&format=iso#edit-cell");
  await form.getByLabel("On import").selectOption("convert");
  await form.getByLabel("Convert to").selectOption("qcow2");
  const typed = "Typed before the refusal: kept for the next try.";
  await form.getByLabel("Reason users see").fill(typed);
  await form.getByRole("button", { name: "Save cell" }).click();
  await expect(page.getByRole("alert")).toContainText("iso is not a disk Hangar can convert");
  await expect(page.locator('[data-cell="local/iso"]')).toHaveText("native");
  if (test.info().project.name !== "no-js") {
    // Hydrated, a refused save leaves the form as it was typed.
    await expect(form.getByLabel("Reason users see")).toHaveValue(typed);
    await expect(form.getByLabel("On import")).toHaveValue("convert");
    await expect(form.getByLabel("Convert to")).toHaveValue("qcow2");
  }

  // The change is audited.
  await page.goto("/admin/audit");
  await expect(page.locator("body")).toContainText("storage.matrix");
});

test("anonymous visitors are asked to sign in, and the server refuses their edits", async ({ page }) => {
  await page.goto("/storage");
  await expect(page.locator("#signin-prompt")).toBeVisible();
  const direct = await page.request.post("/api/set_matrix_cell", {
    form: { kind: "local", format: "raw", action: "native", reason: "sneaky" },
    headers: { Origin: new URL(page.url()).origin, Accept: "application/json" },
  });
  expect(direct.status()).toBe(401);
});
