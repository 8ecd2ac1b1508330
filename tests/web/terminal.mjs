// A local user signs in, opens their default slot, types, reloads and finds
// the same terminal (tmux); a viewer watches it and cannot type; an admin
// sees users and slots. Screenshots of each page.
import {
  T, assert, env, expectTerminal, launch, newPage, row, run, screenshot, signIn, step,
  terminalOnline, terminalText, typeInTerminal, waitFor,
} from "./lib.mjs";

const base = env("SLOTGATE_URL");
const [user, password] = [env("USER_NAME"), env("USER_PASSWORD")];
const [viewer, viewerPassword] = [env("VIEWER_NAME"), env("VIEWER_PASSWORD")];
const [admin, adminPassword] = [env("ADMIN_NAME"), env("ADMIN_PASSWORD")];

await run(async (keep) => {
  const browser = keep(await launch());
  const page = await newPage(browser);

  await step("the sign-in page works without script and names a wrong password", async () => {
    await page.goto(`${base}/`);
    await waitFor("redirect to sign-in", () => new URL(page.url()).pathname === "/auth/login");
    await screenshot(page, "signin");
    await page.fill('input[name="user"]', user);
    await page.fill('input[name="password"]', "wrong-password-xyz");
    await page.click('button[type="submit"]');
    await page.locator('[role="alert"]').waitFor();
    assert.match(await page.locator('[role="alert"]').innerText(), /wrong user name or password/i);
    await screenshot(page, "signin-error");
  });

  await step("the sign-in page follows a light system theme", async () => {
    const light = await newPage(browser, { colorScheme: "light" });
    await light.goto(`${base}/auth/login`);
    const bg = await light.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, "rgb(244, 244, 245)");
    await screenshot(light, "signin-light");
    await light.context().close();
  });

  await step("signs in and lands on My slots", async () => {
    await signIn(page, base, user, password, "/");
    assert.equal(new URL(page.url()).pathname, "/");
    await page.locator('[data-testid="whoami"]').waitFor();
    assert.match(await page.locator('[data-testid="whoami"]').innerText(), new RegExp(user));
  });

  await step("opens the default slot (created on first visit) and it comes online", async () => {
    await page.locator('[data-testid="open-default-slot"], [data-testid="slot-link"]').first().click();
    await waitFor("the terminal URL", () => new URL(page.url()).pathname === `/slot/${user}/`);
    await terminalOnline(page);
  });

  await step("types a command and sees its output", async () => {
    await typeInTerminal(page, page, "echo portal-$((6*7))\n");
    await expectTerminal(page, "portal-42");
    await screenshot(page, "terminal");
  });

  await step("reload finds the same terminal (tmux keeps it)", async () => {
    await page.reload();
    await terminalOnline(page);
    await expectTerminal(page, "portal-42");
    await typeInTerminal(page, page, "echo again-$((2*3))\n");
    await expectTerminal(page, "again-6");
  });

  await step("My slots lists the slot with its status", async () => {
    await page.goto(`${base}/`);
    const r = row(page, "slots-table", user);
    await r.waitFor();
    await r.locator('[data-testid="status-badge"][data-status="online"]').waitFor();
    await screenshot(page, "my-slots");
  });

  await step("a viewer watches the slot and cannot type", async () => {
    const vpage = await newPage(browser);
    await signIn(vpage, base, viewer, viewerPassword, `/slot/${user}/`);
    await waitFor("the viewer's terminal URL", () => new URL(vpage.url()).pathname === `/slot/${user}/`);
    await terminalOnline(vpage);
    await vpage.locator('[data-testid="viewer-badge"]').first().waitFor();
    await expectTerminal(vpage, "again-6");
    await typeInTerminal(vpage, vpage, "echo viewer-typed-$((1+2))\n");
    // Past the page: the viewer's own WebSocket speaking ttyd's protocol
    // directly. The gateway drops the input frame.
    await vpage.evaluate(async (id) => {
      const enc = new TextEncoder();
      const token = (await (await fetch(`/slot/${id}/token`)).json()).token;
      const ws = new WebSocket(`wss://${location.host}/slot/${id}/ws`, ["tty"]);
      ws.binaryType = "arraybuffer";
      await new Promise((ok, fail) => ((ws.onopen = ok), (ws.onerror = fail)));
      ws.send(enc.encode(JSON.stringify({ AuthToken: token, columns: 80, rows: 24 })));
      ws.send(enc.encode("0echo bypass-$((3+4))\r"));
      const deadline = Date.now() + 5000;
      while (ws.bufferedAmount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      ws.close();
    }, user);
    // The owner's next command shows up for the viewer; the viewer's never
    // reached the shell (it would have run before the owner's).
    await page.goto(`${base}/slot/${user}/`);
    await terminalOnline(page);
    await typeInTerminal(page, page, "echo owner-after-$((5+5))\n");
    await expectTerminal(page, "owner-after-10");
    await expectTerminal(vpage, "owner-after-10");
    assert.ok(!(await terminalText(page)).includes("viewer-typed-3"), "the viewer's command ran");
    assert.ok(!(await terminalText(vpage)).includes("viewer-typed-3"), "the viewer's command ran");
    assert.ok(!(await terminalText(page)).includes("bypass-7"), "the viewer's raw WebSocket input ran");
    await screenshot(vpage, "terminal-viewer");
    await vpage.context().close();
  });

  await step("an admin sees users and slots", async () => {
    const apage = await newPage(browser);
    await signIn(apage, base, admin, adminPassword, "/admin/users");
    for (const name of [user, viewer, admin]) {
      await row(apage, "users-table", name).first().waitFor();
    }
    await screenshot(apage, "admin-users");
    await apage.goto(`${base}/admin/slots`);
    await row(apage, "admin-slots-table", user).first().waitFor();
    await screenshot(apage, "admin-slots");
    for (const p of ["stats", "logs", "recordings"]) {
      await apage.goto(`${base}/admin/${p}`);
      // Their screenshots come from stats-replay.mjs, which has data.
      await waitFor(`/admin/${p} to finish loading`, async () => (await apage.locator('[data-testid="loading"]').count()) === 0);
    }
    await apage.context().close();
  });

  await step("an admin revokes the user's session; the terminal asks to sign in again and keeps its state", async () => {
    await page.goto(`${base}/slot/${user}/`);
    await terminalOnline(page);
    await expectTerminal(page, "owner-after-10");
    const apage = await newPage(browser);
    await signIn(apage, base, admin, adminPassword, "/admin/users");
    await row(apage, "users-table", user).first().locator('[data-testid="action-sessions"]').click();
    const revoke = apage.locator('[data-testid="sessions-dialog"] [data-testid="action-revoke-session"]');
    await revoke.first().waitFor();
    await screenshot(apage, "admin-sessions");
    await revoke.first().click();
    await page.locator('[data-testid="reauth"]').waitFor();
    await screenshot(page, "terminal-reauth");
    await apage.context().close();
    // Sign in again in the popup; the terminal reconnects by itself.
    const [popup] = await Promise.all([page.waitForEvent("popup"), page.locator('[data-testid="reauth-popup"]').click()]);
    await popup.locator('input[name="user"]').waitFor();
    await popup.fill('input[name="user"]', user);
    await popup.fill('input[name="password"]', password);
    await popup.click('button[type="submit"]');
    await terminalOnline(page);
    await expectTerminal(page, "owner-after-10");
    await typeInTerminal(page, page, "echo back-$((9*9))\n");
    await expectTerminal(page, "back-81");
  });

  await step("a user is refused the admin pages' data", async () => {
    await page.goto(`${base}/admin/users`);
    await page.locator('[data-testid="forbidden"]').waitFor({ timeout: T });
  });
});
