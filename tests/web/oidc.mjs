// Sign in through the real OpenID Provider (oidc-provider on loopback):
// the provider's button on slotgate's sign-in page, the provider's own
// login and consent forms, back to the portal, into the terminal.
import { assert, env, expectTerminal, launch, newPage, run, screenshot, step, terminalOnline, typeInTerminal, waitFor } from "./lib.mjs";

const base = env("SLOTGATE_URL");
const login = env("OIDC_LOGIN");
const label = env("OIDC_LABEL");

await run(async (keep) => {
  const browser = keep(await launch());
  const page = await newPage(browser);

  await step("the sign-in page offers the provider", async () => {
    await page.goto(`${base}/auth/login?next=${encodeURIComponent(`/slot/${login}/`)}`);
    await page.getByText(`Sign in with ${label}`).waitFor();
    await screenshot(page, "signin-sso");
  });

  await step("the provider's login and consent lead back to the terminal", async () => {
    await page.getByText(`Sign in with ${label}`).click();
    await page.locator('input[name="login"]').waitFor();
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', "any");
    await page.locator('button[type="submit"]').first().click();
    // Consent (first sign-in of this client), then back to slotgate.
    await waitFor("the consent page or slotgate", async () => {
      const u = new URL(page.url());
      if (u.origin === base) return true;
      const consent = page.locator('button[type="submit"]');
      if ((await consent.count()) > 0 && !(await page.locator('input[name="login"]').count())) {
        await consent.first().click();
      }
      return false;
    });
    await waitFor("the terminal URL", () => new URL(page.url()).pathname === `/slot/${login}/`);
    await terminalOnline(page);
  });

  await step("the single sign-on user types in their terminal", async () => {
    await typeInTerminal(page, page, "echo sso-$((40+2))\n");
    await expectTerminal(page, "sso-42");
  });

  await step("the portal knows who signed in and how", async () => {
    const me = await page.evaluate(async () => (await fetch("/api/me")).json());
    assert.equal(me.user, login);
    assert.equal(me.amr, "oidc:op");
  });
});
