// Popup sign-in for a framed terminal (docs/embedding.md): a host page on
// another origin (a second loopback address) frames /slot/<id>/ WITHOUT an
// embed token, third-party cookies blocked. The frame shows the sign-in
// button and tells the host `slotgate:needs-auth`; the button opens a
// top-level popup where the user signs in with the local form; the popup
// hands the frame a token (to slotgate's own origin only) and closes; the
// frame becomes the terminal and tells the host `slotgate:ready`. Revoking
// the session closes the terminal with 4001 and the host hears
// `slotgate:exited`; "Sign in again" in the frame goes through the popup
// again and reconnects the same terminal.
import http from "node:http";
import { assert, env, expectTerminal, launch, newPage, run, screenshot, step, terminalOnline, typeInTerminal, waitFor } from "./lib.mjs";

const base = env("SLOTGATE_URL");
const hostOrigin = env("HOST_ORIGIN"); // http://127.0.0.2:<port>
const adminToken = env("ADMIN_TOKEN"); // API token (scope api) of an admin
const [user, password, slot] = [env("EMBED_USER"), env("EMBED_PASSWORD"), env("EMBED_SLOT")];

// The host app: frames the terminal and keeps every message its frame
// posts (only from that frame) in `window.slotgateMessages`.
const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><title>Host app</title>
<style>body{margin:0;font:14px system-ui;background:#f4f4f5}header{padding:.5rem 1rem;background:#1e3a8a;color:#fff}iframe{border:0;width:100%;height:calc(100vh - 2.5rem)}</style>
<header>Intranet tools — embedded terminal</header>
<button id="steal" type="button">open slotgate's popup from here</button>
<iframe id="term" src="${base}/slot/${slot}/"></iframe>
<script>
window.slotgateMessages = [];
window.allMessages = [];
const frame = document.getElementById("term");
window.addEventListener("message", (e) => {
  window.allMessages.push({ origin: e.origin, data: e.data });
  if (e.source === frame.contentWindow) window.slotgateMessages.push({ origin: e.origin, data: e.data });
});
document.getElementById("steal").addEventListener("click", () => {
  window.open("${base}/auth/popup?slot=${slot}", "steal", "popup,width=480,height=640");
});
</script>`);
});
const { hostname, port } = new URL(hostOrigin);
await new Promise((ok) => server.listen(Number(port), hostname, ok));

/// The messages the host page received so far.
const received = (page) => page.evaluate(() => window.slotgateMessages);
/// Wait until the host received a message matching `pred`; returns it.
async function heard(page, what, pred) {
  return waitFor(`the host page to receive ${what}`, async () => (await received(page)).find((m) => pred(m.data)));
}
const slotFrame = (page) => page.frames().find((f) => f.url().startsWith(`${base}/slot/${slot}/`));

async function api(method, path) {
  const r = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${adminToken}` } });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

await run(async (keep) => {
  const browser = keep(await launch({ blockThirdPartyCookies: true }));
  const page = await newPage(browser);

  await step("a framed terminal without a session shows the sign-in button and tells the host", async () => {
    await page.goto(`${hostOrigin}/`);
    const frame = await waitFor("the slotgate frame", () => slotFrame(page));
    await frame.locator("#signin").waitFor();
    const m = await heard(page, "slotgate:needs-auth", (d) => d?.type === "slotgate:needs-auth");
    assert.deepEqual(m.data, { type: "slotgate:needs-auth", slot });
    assert.equal(m.origin, new URL(base).origin);
    await screenshot(page, "embed-popup-sign-in");
  });

  let popup;
  await step("the sign-in button opens a top-level popup with the sign-in form", async () => {
    const frame = slotFrame(page);
    [popup] = await Promise.all([page.context().waitForEvent("page"), frame.click("#signin")]);
    await popup.waitForURL((u) => u.pathname === "/auth/login");
    assert.ok(popup.url().includes(encodeURIComponent(`/auth/popup?slot=${slot}`)), popup.url());
    assert.equal(await popup.evaluate(() => window.opener !== null), true, "the popup lost its opener");
  });

  await step("signing in in the popup closes it and the frame becomes the terminal", async () => {
    await popup.fill('input[name="user"]', user);
    await popup.fill('input[name="password"]', password);
    const closed = popup.waitForEvent("close");
    await popup.click('button[type="submit"]');
    await closed;
    const frame = await waitFor("the frame back on /slot/<id>/ without a token", () => {
      const f = slotFrame(page);
      return f && !f.url().includes("embed=") ? f : null;
    });
    await terminalOnline(frame);
    const m = await heard(page, "slotgate:ready", (d) => d?.type === "slotgate:ready");
    assert.deepEqual(m.data, { type: "slotgate:ready", slot });
  });

  await step("typing in the framed terminal shows the command's output", async () => {
    const frame = slotFrame(page);
    await typeInTerminal(page, frame, "echo popup-$((6*7))\n");
    await expectTerminal(frame, "popup-42");
    await screenshot(page, "embed-popup-terminal");
  });

  await step("revoking the session closes the terminal and the host hears exited 4001", async () => {
    const sessions = (await api("GET", `/api/sessions?user=${encodeURIComponent(user)}`)).items;
    assert.ok(sessions.length >= 1, "no session of the user to revoke");
    for (const s of sessions) await api("DELETE", `/api/sessions/${encodeURIComponent(s.id)}`);
    const m = await heard(page, "slotgate:exited", (d) => d?.type === "slotgate:exited");
    assert.equal(m.data.slot, slot);
    assert.equal(m.data.code, 4001, JSON.stringify(m.data));
    assert.equal(m.data.reason, "session revoked");
  });

  await step("signing in again from the frame's overlay reconnects the same terminal", async () => {
    // The frame's partitioned session is gone and a first-party sign-in
    // cannot renew it: "Sign in again" goes through the embed popup.
    const frame = slotFrame(page);
    await frame.locator('[data-testid="reauth"]').waitFor();
    const [again] = await Promise.all([page.context().waitForEvent("page"), frame.locator('[data-testid="reauth-popup"]').click()]);
    await again.waitForURL((u) => u.pathname === "/auth/login");
    await again.fill('input[name="user"]', user);
    await again.fill('input[name="password"]', password);
    const closed = again.waitForEvent("close");
    await again.click('button[type="submit"]');
    await closed;
    await waitFor("a second slotgate:ready", async () => (await received(page)).filter((m) => m.data?.type === "slotgate:ready").length >= 2);
    const back = slotFrame(page);
    await terminalOnline(back);
    // tmux kept the session: the earlier output is still there.
    await expectTerminal(back, "popup-42");
  });

  await step("a foreign page that opens the popup itself never receives the token", async () => {
    // The user is signed in first-party now: the popup mints a token and
    // posts it at once — to slotgate's origin only, which the host's
    // window is not, so the browser drops it — and closes.
    const [stolen] = await Promise.all([page.context().waitForEvent("page"), page.click("#steal")]);
    // It may be gone before a listener could be attached.
    if (!stolen.isClosed()) await stolen.waitForEvent("close");
    const all = await page.evaluate(() => window.allMessages);
    const leaked = all.filter((m) => m.data?.type === "slotgate:signed-in" || (m.data && "token" in m.data));
    assert.deepEqual(leaked, [], "the host page received the popup's token");
    assert.ok(all.every((m) => m.origin === new URL(base).origin), JSON.stringify(all));
  });

  server.close();
});
