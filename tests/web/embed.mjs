// A host app on another origin (a second loopback address) embeds a slot:
// its backend mints a single-use embed token with a service API token, its
// page frames /slot/<id>/?embed=<token>, and with third-party cookies
// blocked the partitioned session cookie still carries the terminal.
import http from "node:http";
import { assert, env, expectTerminal, launch, newPage, run, screenshot, step, terminalOnline, typeInTerminal, waitFor } from "./lib.mjs";

const base = env("SLOTGATE_URL");
const hostOrigin = env("HOST_ORIGIN"); // http://127.0.0.2:<port>
const serviceToken = env("SERVICE_TOKEN");
const [user, slot] = [env("EMBED_USER"), env("EMBED_SLOT")];

// The host app: its backend asks slotgate for a token per page view.
async function mint() {
  const r = await fetch(`${base}/api/embed-tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${serviceToken}`, "content-type": "application/json" },
    body: JSON.stringify({ user, slot, origin: hostOrigin }),
  });
  if (r.status !== 201) throw new Error(`embed token: ${r.status} ${await r.text()}`);
  return (await r.json()).url;
}

const messages = [];
const server = http.createServer(async (req, res) => {
  if (req.url === "/messages") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(messages));
    return;
  }
  try {
    const url = await mint();
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><title>Host app</title>
<style>body{margin:0;font:14px system-ui;background:#f4f4f5}header{padding:.5rem 1rem;background:#1e3a8a;color:#fff}iframe{border:0;width:100%;height:calc(100vh - 2.5rem)}</style>
<header>Intranet tools — embedded terminal</header>
<iframe id="term" src="${base}${url}" allow="clipboard-read; clipboard-write"></iframe>`);
  } catch (e) {
    res.writeHead(500);
    res.end(String(e));
  }
});
const { hostname, port } = new URL(hostOrigin);
await new Promise((ok) => server.listen(Number(port), hostname, ok));

await run(async (keep) => {
  const browser = keep(await launch({ blockThirdPartyCookies: true }));
  const page = await newPage(browser);

  await step("the host page frames the terminal and it comes online", async () => {
    await page.goto(`${hostOrigin}/`);
    const frame = await waitFor("the slotgate frame", () =>
      page.frames().find((f) => f.url().startsWith(`${base}/slot/${slot}/`) && !f.url().includes("embed=")),
    );
    await terminalOnline(frame);
  });

  await step("typing in the embedded terminal works with third-party cookies blocked", async () => {
    const frame = page.frames().find((f) => f.url().startsWith(`${base}/slot/${slot}/`));
    await typeInTerminal(page, frame, "echo embedded-$((7*6))\n");
    await expectTerminal(frame, "embedded-42");
    await screenshot(page, "embed");
  });

  await step("third-party cookies really are blocked for unpartitioned cookies", async () => {
    // A cookie set by slotgate's frame without `Partitioned` is dropped:
    // the frame cannot set one from script either.
    const frame = page.frames().find((f) => f.url().startsWith(`${base}/slot/${slot}/`));
    const kept = await frame.evaluate(() => {
      document.cookie = "probe=1; SameSite=None; Secure; Path=/";
      return document.cookie.includes("probe=1");
    });
    assert.equal(kept, false, "an unpartitioned third-party cookie was stored: the flag did not block them");
  });

  server.close();
});
