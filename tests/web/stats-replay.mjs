// The admin console against the real activity, usage and recordings APIs:
// a user types in their terminal and closes it; slotgate records the
// session and slotctl ingests it from the access log. An admin then sees
// the session in Stats (with the user's Claude Code tokens and cost), finds
// the user's requests in Logs, replays the recording in the browser at
// another speed, shares a link an anonymous browser can open, and revokes
// it. Another user is refused the recording; its owner is not.
import {
  T, assert, env, expectTerminal, launch, newPage, row, run, screenshot, signIn, step,
  terminalOnline, typeInTerminal, waitFor,
} from "./lib.mjs";

const base = env("SLOTGATE_URL");
const [user, password] = [env("USER_NAME"), env("USER_PASSWORD")];
const [other, otherPassword] = [env("OTHER_NAME"), env("OTHER_PASSWORD")];
const [admin, adminPassword] = [env("ADMIN_NAME"), env("ADMIN_PASSWORD")];
const expectedTokens = env("USER_TOKENS");
const expectedCost = env("USER_COST");

/// GET `path` from inside `page` (its cookies): `{status, body}`.
async function fetchIn(page, path) {
  return page.evaluate(async (p) => {
    const r = await fetch(p, { headers: { accept: "application/json" } });
    const text = await r.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {}
    return { status: r.status, body, type: r.headers.get("content-type"), text };
  }, path);
}

/// The text the asciinema player shows.
async function playerText(page) {
  return page.locator('[data-testid="player-screen"]').innerText();
}

await run(async (keep) => {
  const browser = keep(await launch());
  const marker = "replayed-42";
  let recording;

  await step("the user types a command in their terminal and closes it", async () => {
    const page = await newPage(browser);
    await signIn(page, base, user, password, `/slot/${user}/`);
    await waitFor("the terminal URL", () => new URL(page.url()).pathname === `/slot/${user}/`);
    await terminalOnline(page);
    await typeInTerminal(page, page, "echo replayed-$((6*7))\n");
    await expectTerminal(page, marker);
    await page.context().close();
  });

  const apage = await newPage(browser);
  await step("the admin signs in; the recording is ingested (API, bounded poll)", async () => {
    await signIn(apage, base, admin, adminPassword, "/admin/stats");
    recording = await waitFor(
      "the user's recording in /api/recordings",
      async () => {
        const r = await fetchIn(apage, `/api/recordings?user=${user}`);
        assert.equal(r.status, 200, r.text);
        return r.body.items.find((x) => x.user === user && x.available);
      },
      30_000,
    );
    assert.equal(recording.slot, user);
  });

  await step("Stats counts the user's session and shows their tokens and cost", async () => {
    await apage.goto(`${base}/admin/stats`);
    const r = row(apage, "per-user-table", user);
    await r.waitFor();
    const cells = await r.locator("td").allInnerTexts();
    // User, Sessions, Time, Requests, Tokens, Cost.
    assert.ok(Number(cells[1]) >= 1, `sessions cell: ${cells}`);
    assert.ok(Number(cells[3]) >= 1, `requests cell: ${cells}`);
    assert.equal(cells[4], `${expectedTokens} out`, `tokens cell: ${cells}`);
    assert.equal(cells[5], expectedCost, `cost cell: ${cells}`);
    const sessions = await apage.locator('[data-testid="stat-sessions"] .value').innerText();
    assert.ok(Number(sessions) >= 1, `sessions card: ${sessions}`);
    for (const chart of ["chart-tokens-user", "chart-cost-user"]) {
      const labels = await apage.locator(`[data-testid="${chart}"]`).getAttribute("data-labels");
      assert.ok(labels.split("\n").includes(user), `${chart} labels: ${labels}`);
    }
    await apage.locator('[data-testid="chart-sessions"]').waitFor();
    assert.notEqual(await apage.locator('[data-testid="stat-cost"] .value').innerText(), "—");
    await screenshot(apage, "admin-stats");
  });

  await step("Logs finds the user's requests with the user filter", async () => {
    await apage.goto(`${base}/admin/logs`);
    await apage.locator('[data-testid="log-row"]').first().waitFor();
    await apage.fill('[data-testid="filter-user"]', user);
    await apage.click('[data-testid="filter-apply"]');
    await waitFor("only the user's rows", async () => {
      const rows = await apage.locator('[data-testid="log-row"]').allInnerTexts();
      return rows.length > 0 && rows.every((t) => t.split("\t").includes(user)) && rows.some((t) => t.includes(`/slot/${user}/`));
    });
    await screenshot(apage, "admin-logs");
  });

  let linkUrl;
  await step("Recordings lists the recording and plays it, at another speed too", async () => {
    await apage.goto(`${base}/admin/recordings`);
    const r = apage.locator(`[data-testid="recording-row"][data-recording="${recording.id}"]`);
    await r.waitFor();
    await r.locator('[data-testid="action-replay"]').click();
    await apage.locator('[data-testid="replay-panel"]').waitFor();
    await waitFor(`"${marker}" in the player`, async () => (await playerText(apage)).includes(marker));
    await apage.locator('[data-testid="player-speed"]').getByText("4×", { exact: true }).click();
    await waitFor("the player re-created at 4x", async () => (await apage.locator('[data-testid="player"]').getAttribute("data-speed")) === "4");
    await waitFor(`"${marker}" in the player at 4x`, async () => (await playerText(apage)).includes(marker));
    assert.equal(await apage.locator('[data-testid="player-error"]').count(), 0);
    await screenshot(apage, "admin-recordings");
  });

  await step("a shareable link is created", async () => {
    const r = apage.locator(`[data-testid="recording-row"][data-recording="${recording.id}"]`);
    await r.locator('[data-testid="action-link"]').click();
    await apage.locator('[data-testid="link-create"]').click();
    linkUrl = await waitFor("the link", async () => apage.locator('[data-testid="link-url"]').inputValue());
    assert.match(linkUrl, new RegExp(`^${base.replace(/[.]/g, "\\.")}/replay/[A-Za-z0-9_-]{43}$`));
  });

  const anon = await newPage(browser);
  await step("an anonymous browser (no cookies) opens the link and sees the output", async () => {
    assert.deepEqual(await anon.context().cookies(), []);
    await anon.goto(linkUrl);
    await anon.locator('[data-testid="replay-title"]').waitFor();
    assert.match(await anon.locator('[data-testid="replay-title"]').innerText(), new RegExp(user));
    await waitFor(`"${marker}" in the anonymous player`, async () => (await playerText(anon)).includes(marker));
    assert.equal(new URL(anon.url()).pathname, new URL(linkUrl).pathname, "the replay page bounced to sign-in");
    await screenshot(anon, "replay");
  });

  await step("revoking the link makes it fail", async () => {
    await apage.locator('[data-testid="link-revoke"]').click();
    await apage.locator('[data-testid="link-url"]').waitFor({ state: "detached" });
    await anon.reload();
    await anon.locator('[data-testid="replay-error"]').waitFor();
    assert.match(await anon.locator('[data-testid="replay-error"]').innerText(), /expired or was revoked/);
    const cast = await fetchIn(anon, `${new URL(linkUrl).pathname}/cast`);
    assert.equal(cast.status, 410, cast.text);
    assert.equal(cast.body.code, "gone");
  });

  await step("another user is refused the recording; its owner may fetch it", async () => {
    const opage = await newPage(browser);
    await signIn(opage, base, other, otherPassword, "/");
    for (const p of [`/api/recordings/${recording.id}`, `/api/recordings/${recording.id}/cast`]) {
      const r = await fetchIn(opage, p);
      assert.ok(r.status === 403 || r.status === 404, `${p}: ${r.status} ${r.text}`);
      assert.ok(!r.text.includes(marker), `${p} leaked the recording`);
    }
    const asked = await fetchIn(opage, `/api/recordings?user=${user}`);
    assert.equal(asked.status, 403, asked.text);
    const own = await fetchIn(opage, "/api/recordings");
    assert.equal(own.status, 200, own.text);
    assert.ok(!own.body.items.some((x) => x.user === user), own.text);
    await opage.context().close();

    const upage = await newPage(browser);
    await signIn(upage, base, user, password, "/");
    const meta = await fetchIn(upage, `/api/recordings/${recording.id}`);
    assert.equal(meta.status, 200, meta.text);
    assert.equal(meta.body.user, user);
    const cast = await fetchIn(upage, `/api/recordings/${recording.id}/cast`);
    assert.equal(cast.status, 200);
    assert.ok(cast.text.includes(marker), "the owner's cast lacks the output");
    await upage.context().close();
  });
});
