// The admin console against the real activity, usage and recordings APIs:
// a user types in their terminal (an admin's Stats shows it as active now)
// and closes it; slotgate records the session and slotctl ingests it from
// the access log. The admin then sees
// the session in Stats (with the user's Claude Code tokens and cost), sets
// and removes a quota override in Users, finds
// the user's requests in Logs, replays the recording in the browser at
// another speed, shares a link an anonymous browser can open, and revokes
// it. Another user is refused the recording (and setting a quota); its
// owner is not.
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

/// `method` `path` from inside `page` (its cookies, same origin):
/// `{status, body, type, text}`.
async function fetchIn(page, path, method = "GET", json = undefined) {
  return page.evaluate(async ([p, method, json]) => {
    const headers = { accept: "application/json" };
    if (json !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(p, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
    const text = await r.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {}
    return { status: r.status, body, type: r.headers.get("content-type"), text };
  }, [path, method, json]);
}

/// The text the asciinema player shows.
async function playerText(page) {
  return page.locator('[data-testid="player-screen"]').innerText();
}

await run(async (keep) => {
  const browser = keep(await launch());
  const marker = "replayed-42";
  let recording;

  const upage = await newPage(browser);
  await step("the user types a command in their terminal", async () => {
    await signIn(upage, base, user, password, `/slot/${user}/`);
    await waitFor("the terminal URL", () => new URL(upage.url()).pathname === `/slot/${user}/`);
    await terminalOnline(upage);
    await typeInTerminal(upage, upage, "echo replayed-$((6*7))\n");
    await expectTerminal(upage, marker);
  });

  const apage = await newPage(browser);
  await step("Stats shows the user's open terminal as an active session", async () => {
    await signIn(apage, base, admin, adminPassword, "/admin/stats");
    await row(apage, "online-table", user).waitFor();
    assert.equal(await apage.locator('[data-testid="stat-online"] .value').innerText(), "1");
  });

  await step("the user closes the terminal; Stats drops it; the recording is ingested (API, bounded poll)", async () => {
    await upage.context().close();
    // The page polls who is online every 10 s.
    await apage.locator('[data-testid="online-empty"]').waitFor({ timeout: 25_000 });
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
    // The activity columns arrive first; usage (tokens, cost) is a second
    // request, so wait for its columns rather than reading them at once.
    const cells = await waitFor(
      "the per-user row's usage columns",
      async () => {
        const c = await r.locator("td").allInnerTexts();
        return c[4] === `${expectedTokens} out` ? c : undefined;
      },
      15_000,
    ).catch(async () => r.locator("td").allInnerTexts());
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
    // The transcripts' tool calls (a Write among them) in most-used tools.
    const tools = await apage.locator('[data-testid="chart-tools"]').getAttribute("data-labels");
    assert.ok(tools.split("\n").includes("Write"), `chart-tools labels: ${tools}`);
    await screenshot(apage, "admin-stats");
    // Per week: the same session, bucketed by ISO week.
    const week = apage.waitForResponse((r) => r.url().includes("/api/activity/stats") && r.url().includes("period=week"));
    await apage.locator('[data-testid="stats-period"]').getByText("Per week", { exact: true }).click();
    assert.equal((await week).status(), 200);
    await row(apage, "per-user-table", user).waitFor();
  });

  await step("Users: the admin sets a daily token limit (the user is over it), then goes back to defaults", async () => {
    await apage.goto(`${base}/admin/users`);
    const r = row(apage, "users-table", user).first();
    await r.waitFor();
    await waitFor("the quota column", async () => (await r.locator('[data-testid="quota-text"]').innerText()) === "no limit");
    await r.locator('[data-testid="action-quota"]').click();
    const dlg = apage.locator('[data-testid="quota-dialog"]');
    const daily = dlg.locator('[data-testid="quota-daily_tokens"]');
    await daily.locator('[data-testid="quota-mode"]').click();
    await apage.getByRole("option", { name: "limit", exact: true }).click();
    await daily.locator('[data-testid="quota-value"] input').fill("1000");
    await dlg.locator('[data-testid="quota-note"]').fill("spec limit");
    await screenshot(apage, "admin-quota");
    await dlg.locator('[data-testid="quota-save"]').click();
    await dlg.waitFor({ state: "detached" });
    // Today's transcript message alone is 5308 quota tokens.
    await r.getByText("over quota", { exact: true }).waitFor();
    assert.match(await r.locator('[data-testid="quota-text"]').innerText(), /\/1,?000 tok\/day/);
    const q = await fetchIn(apage, `/api/quotas/${user}`);
    assert.equal(q.status, 200, q.text);
    assert.equal(q.body.daily_tokens, 1000, q.text);
    assert.equal(q.body.over, true, q.text);
    assert.deepEqual(q.body.override, { daily_tokens: 1000, note: "spec limit" }, q.text);
    // Reopened, the dialog shows the override; "Back to defaults" removes it.
    await r.locator('[data-testid="action-quota"]').click();
    assert.equal(await daily.locator('[data-testid="quota-value"] input').inputValue(), "1000");
    assert.equal(await dlg.locator('[data-testid="quota-note"]').inputValue(), "spec limit");
    await dlg.locator('[data-testid="quota-reset"]').click();
    await dlg.waitFor({ state: "detached" });
    await waitFor("no limit again", async () => (await r.locator('[data-testid="quota-text"]').innerText()) === "no limit");
    assert.equal(await r.getByText("over quota", { exact: true }).count(), 0);
    const back = await fetchIn(apage, `/api/quotas/${user}`);
    assert.equal(back.body.override, null, back.text);
    assert.equal(back.body.over, false, back.text);
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
    // Kind = WebSocket: only the terminal session's line.
    await apage.locator('[data-testid="filter-kind"]').click();
    await apage.getByRole("option", { name: "WebSocket", exact: true }).click();
    await apage.click('[data-testid="filter-apply"]');
    await waitFor("only WebSocket rows", async () => {
      const rows = await apage.locator('[data-testid="log-row"]').allInnerTexts();
      return rows.length > 0 && rows.every((t) => t.includes(`WS /slot/${user}/ws`));
    });
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
    const link = await fetchIn(opage, `/api/recordings/${recording.id}/links`, "POST", { ttl: "1h" });
    assert.ok(link.status === 403 || link.status === 404, `links: ${link.status} ${link.text}`);
    const quota = await fetchIn(opage, `/api/quotas/${other}`, "PUT", { daily_tokens: null });
    assert.equal(quota.status, 403, `a user set their own quota: ${quota.text}`);
    const asked = await fetchIn(opage, `/api/recordings?user=${user}`);
    assert.equal(asked.status, 403, asked.text);
    const own = await fetchIn(opage, "/api/recordings");
    assert.equal(own.status, 200, own.text);
    assert.ok(!own.body.items.some((x) => x.user === user), own.text);
    await opage.goto(`${base}/admin/recordings`);
    await opage.locator('[data-testid="forbidden"]').waitFor();
    assert.equal(await opage.locator('[data-testid="recording-row"]').count(), 0);
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
