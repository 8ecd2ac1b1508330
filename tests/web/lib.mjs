// Shared launcher and helpers for the portal's browser tests: Debian's
// chromium driven by playwright-core (no browser download). The Rust test
// (tests/tests/portal.rs) starts the real stack and runs one spec file with
// the base URL and credentials in the environment; a spec exits 0 when
// every step passed and prints the failing step otherwise.
//
// Environment:
//   SLOTGATE_URL        https://127.0.0.1:<port> (self-signed: accepted here)
//   SCREENSHOT_DIR      where page screenshots go (docs/screenshots)
//   CHROMIUM            browser binary (default /usr/bin/chromium)
//   STEP_TIMEOUT_MS     bound of every wait (default 20000)

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const T = Number(process.env.STEP_TIMEOUT_MS || 20000);

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (the Rust test passes it)`);
  return v;
}

/// Flags chromium needs here: headless, no GPU, no user namespace sandbox
/// when running as root (a container), the gateway's self-signed
/// certificate, and optionally third-party cookies blocked.
export async function launch({ blockThirdPartyCookies = false } = {}) {
  const args = [
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--ignore-certificate-errors",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-features=Translate,MediaRouter",
  ];
  if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
  if (blockThirdPartyCookies) {
    // Chrome's own switch for the third-party cookie phase-out: cookies
    // that are not partitioned are not sent to or set by cross-site frames.
    args.push("--test-third-party-cookie-phaseout");
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args,
    timeout: T,
  });
  return browser;
}

export async function newPage(browser, opts = {}) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
    colorScheme: "dark",
    ...opts,
  });
  context.setDefaultTimeout(T);
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`  page error: ${e.message}`));
  // Every Content-Security-Policy violation fails the spec at its end: the
  // portal must run under slotgate's policy (no inline script).
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) cspViolations.push(`${page.url()}: ${m.text()}`);
  });
  return page;
}

let current = "";
const cspViolations = [];
/// Run one named step; the name is printed when it fails.
export async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

/// Run a spec: exit 0 when `fn` finishes, 1 with the failing step.
export async function run(fn) {
  let browser;
  const watchdog = setTimeout(() => {
    console.error(`FAIL ${current}: the spec did not finish within 300 s`);
    process.exit(1);
  }, 300_000);
  try {
    await fn((b) => (browser = b));
    current = "no Content-Security-Policy violations";
    assert.deepEqual(cspViolations, [], "the pages broke slotgate's CSP");
    clearTimeout(watchdog);
    await browser?.close();
    process.exit(0);
  } catch (e) {
    console.error(`FAIL ${current}: ${e.stack || e}`);
    await describePages(browser);
    try {
      await browser?.close();
    } catch {}
    process.exit(1);
  }
}

/// What every open page showed when a step failed (text, and a screenshot
/// under the system's temporary directory).
async function describePages(browser) {
  if (!browser) return;
  let n = 0;
  for (const ctx of browser.contexts()) {
    for (const page of ctx.pages()) {
      n += 1;
      try {
        const path = join(tmpdir(), `slotgate-web-failed-${process.pid}-${n}.png`);
        await page.screenshot({ path, timeout: 5000 });
        const text = (await page.locator("body").innerText({ timeout: 5000 })).slice(0, 800);
        console.error(`  page ${n} ${page.url()} (screenshot ${path}):\n${text.replace(/^/gm, "    | ")}`);
      } catch (e) {
        console.error(`  page ${n} ${page.url()}: ${e.message}`);
      }
    }
  }
}

/// Save a screenshot as <SCREENSHOT_DIR>/<name>.png.
export async function screenshot(page, name) {
  const dir = process.env.SCREENSHOT_DIR;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), animations: "disabled" });
}

/// Poll `cond` until it returns a truthy value, at most `ms`.
export async function waitFor(what, cond, ms = T) {
  const deadline = Date.now() + ms;
  let last;
  for (let i = 0; i < 10_000; i++) {
    try {
      last = await cond();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
}

/// Sign in with the server-rendered local form.
export async function signIn(page, base, user, password, next = "/") {
  await page.goto(`${base}/auth/login?next=${encodeURIComponent(next)}`);
  await page.fill('input[name="user"]', user);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith("/auth/")), page.click('button[type="submit"]')]);
}

/// The row of table `[data-testid=<table>]` that has a cell reading exactly
/// `text`.
export function row(page, table, text) {
  return page
    .locator(`[data-testid="${table}"] tbody tr`)
    .filter({ has: page.getByText(text, { exact: true }) });
}

/// The text xterm.js shows (its DOM renderer's rows).
export async function terminalText(frame) {
  return frame.locator(".xterm-rows").innerText();
}

/// Wait until the terminal shows `needle`.
export async function expectTerminal(frame, needle, ms = T) {
  await waitFor(`"${needle}" in the terminal`, async () => (await terminalText(frame)).includes(needle), ms);
}

/// Wait for the portal's terminal view to be connected.
export async function terminalOnline(frame) {
  await frame.locator('[data-testid="terminal-page"][data-phase="online"]').waitFor({ timeout: T });
  await frame.locator(".xterm-rows").waitFor({ timeout: T });
}

/// Type into the terminal (focus it first).
export async function typeInTerminal(page, frame, text) {
  await frame.locator('[data-testid="terminal"]').click();
  await page.keyboard.type(text, { delay: 5 });
}

export { assert };
