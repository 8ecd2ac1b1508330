// My slots through the page: create a slot from an allowed template, share
// it with a viewer, read its embed snippet, stop it, delete it. Every step
// is checked against the API as well as the page.
import {
  assert, env, expectTerminal, launch, newPage, row, run, screenshot, signIn, step, terminalOnline, typeInTerminal, waitFor,
} from "./lib.mjs";

const base = env("SLOTGATE_URL");
const [user, password] = [env("USER_NAME"), env("USER_PASSWORD")];
const viewer = env("VIEWER_NAME");
const id = `${user}-py`;

await run(async (keep) => {
  const browser = keep(await launch());
  const page = await newPage(browser);
  const api = (path) => page.evaluate(async (p) => (await fetch(p)).json(), path);

  await step("signs in to My slots", async () => {
    await signIn(page, base, user, password, "/");
    await page.locator('[data-testid="create-slot"]').waitFor();
  });

  await step("creates a slot from an allowed template", async () => {
    await page.locator('[data-testid="create-slot"]').click();
    await page.locator('[data-testid="create-dialog"]').waitFor();
    await page.fill('[data-testid="create-id"]', id);
    await screenshot(page, "my-slots-create");
    await page.locator('[data-testid="create-submit"]').click();
    await row(page, "slots-table", id).first().waitFor();
    const v = await api(`/api/slots/${id}`);
    assert.equal(v.owner, user);
    assert.equal(v.template, "shell");
  });

  await step("shares it with a viewer", async () => {
    await row(page, "slots-table", id).first().locator('[data-testid="action-share"]').click();
    await page.locator('[data-testid="share-dialog"]').waitFor();
    await page.fill('[data-testid="share-user"]', viewer);
    await page.locator('[data-testid="share-submit"]').click();
    await page.locator('[data-testid="share-viewer"]').filter({ hasText: viewer }).waitFor();
    await screenshot(page, "my-slots-share");
    assert.deepEqual((await api(`/api/slots/${id}/access`)).viewers, [viewer]);
    await page.keyboard.press("Escape");
  });

  await step("shows an embed snippet for a host app", async () => {
    await row(page, "slots-table", id).first().locator('[data-testid="action-embed"]').click();
    await page.locator('[data-testid="embed-dialog"]').waitFor();
    const backend = await page.locator('[data-testid="embed-backend"]').inputValue();
    const iframe = await page.locator('[data-testid="embed-snippet"]').inputValue();
    assert.match(backend, /\/api\/embed-tokens/);
    assert.match(backend, new RegExp(`"slot":\\s*"${id}"`));
    assert.match(iframe, /<iframe/);
    await screenshot(page, "my-slots-embed");
    await page.keyboard.press("Escape");
  });

  await step("stops it", async () => {
    const r = row(page, "slots-table", id).first();
    await waitFor("the slot online", async () => (await api(`/api/slots/${id}`)).status === "online");
    await page.reload();
    await r.locator('[data-testid="action-stop"]').click();
    await waitFor("the slot stopped", async () => (await api(`/api/slots/${id}`)).status === "stopped");
    await r.locator('[data-testid="status-badge"][data-status="stopped"]').waitFor();
  });

  await step("opening the stopped slot starts it and connects", async () => {
    await row(page, "slots-table", id).first().locator('[data-testid="action-open"]').click();
    await waitFor("the terminal URL", () => new URL(page.url()).pathname === `/slot/${id}/`);
    await terminalOnline(page);
    await typeInTerminal(page, page, "echo restarted-$((8*8))\n");
    await expectTerminal(page, "restarted-64");
    assert.equal((await api(`/api/slots/${id}`)).status, "online");
    await page.goto(`${base}/`);
  });

  await step("deletes it", async () => {
    await row(page, "slots-table", id).first().locator('[data-testid="action-delete"]').click();
    await page.locator('[data-testid="confirm-delete"]').click();
    await waitFor("the row to go", async () => (await row(page, "slots-table", id).count()) === 0);
    const list = await api("/api/slots");
    assert.ok(!list.items.some((s) => s.id === id), "the slot is gone");
  });
});
