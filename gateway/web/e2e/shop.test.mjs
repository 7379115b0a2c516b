// Browser end-to-end tests: Debian's Chromium (playwright-core) against the real backend, started
// here: `contoso dev` with in-memory backends, a standalone gateway serving dist/, and an OpenID
// Provider. Every scenario signs in with the dev login but one, which signs in with the provider.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";
import { startBackend, WEB_DIR } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = join(WEB_DIR, "e2e", "screenshots");
const TIMEOUT = 15_000;

let backend;
let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  backend = await startBackend();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Only this machine: a page that tried to load anything from elsewhere fails instead.
    args: ["--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
  });
});

after(async () => {
  await browser?.close();
  await backend?.close();
});

// Each run starts an empty in-memory backend; each test has a user of its own, so orders of one
// test never count in another.
const NAMES = { shopper: "alice", tabs: "bob", reload: "carol", midsubmit: "dave", restart: "erin", double: "frank", delete: "grace", expired: "heidi", idp: "ada.lovelace", buyer: "ivan", learner: "judy" };
const newUser = (what) => NAMES[what] ?? `${what}-${process.pid}`;

async function newPage(context) {
  const ctx = context ?? (await browser.newContext({ viewport: { width: 1280, height: 860 } }));
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (err) => console.error(`[page error] ${err.message}`));
  return page;
}

/** A PNG of the page once the images in view have loaded. */
async function shot(page, name) {
  await page.mouse.move(0, 0); // no hover effect in the picture
  await page
    .waitForFunction(
      () =>
        [...document.images]
          .filter((img) => {
            const r = img.getBoundingClientRect();
            return r.bottom > 0 && r.top < innerHeight && r.width > 0;
          })
          .every((img) => img.complete),
      undefined,
      { timeout: 5000 },
    )
    .catch(() => undefined); // a picture that will not load is no reason to fail the scenario
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

async function login(page, user) {
  await page.goto(`${backend.url}/login`);
  await page.getByLabel("User name").fill(user);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByTestId("user-name").filter({ hasText: user }).waitFor();
  await page.waitForURL(/\/products/);
}

async function addToCart(page, productId, quantity = 1) {
  await page.goto(`${backend.url}/products/${productId}`);
  await page.getByTestId("product-detail").waitFor();
  for (let i = 1; i < quantity; i++) await page.getByRole("button", { name: "Increase quantity" }).click();
  await page.getByRole("button", { name: "Add to cart" }).click();
}

async function placeOrder(page) {
  await page.goto(`${backend.url}/cart`);
  await page.getByTestId("checkout").click();
  await page.waitForURL(/\/orders\/\d+/);
  return page.url().match(/\/orders\/(\d+)/)[1];
}

const status = (page) => page.locator("[data-testid=order-status]");
const waitStatus = (page, s, timeout = TIMEOUT) =>
  page.locator(`[data-testid=order-status][data-status=${s}]`).waitFor({ timeout });

async function orderRows(page) {
  await page.goto(`${backend.url}/orders`);
  await page.locator("[data-testid=order-row], [data-testid=orders-empty]").first().waitFor();
  return page.locator("[data-testid=order-row]");
}

const cents = (text) => Math.round(Number(text.replace(/[^0-9.]/g, "")) * 100);

describe("Contoso Shop in a browser", { concurrency: false }, () => {
  test("log in, search, filter, add two products, check out, see Completed", async () => {
    const page = await newPage();
    await page.goto(`${backend.url}/`);
    await page.waitForURL(/\/login/);
    await page.getByLabel("User name").waitFor();
    await page.getByRole("button", { name: "Sign in with Contoso ID" }).waitFor();
    await shot(page, "login");
    await login(page, newUser("shopper"));

    // Search and filters narrow the grid (and live in the URL).
    const count = page.getByTestId("result-count");
    await count.waitFor();
    const all = await count.textContent();
    await page.getByTestId("product-card").nth(7).waitFor();
    await shot(page, "catalog");
    await page.getByLabel("Search").fill("az-");
    await page.waitForURL(/q=az-/);
    await page.getByLabel("Vendor").selectOption("Microsoft");
    await page.getByLabel("Category").selectOption("Practice Exam");
    await page.waitForURL(/category=Practice/);
    // The URL changes before the filtered page is fetched: wait until the grid shows it (no
    // request in flight and no card left from the vendor-only list), not just for any cards.
    await page.waitForFunction(() => {
      const shown = [...document.querySelectorAll("[data-testid=product-card]")];
      return (
        shown.length > 0 &&
        !document.querySelector("[aria-busy=true]") &&
        shown.every((card) => card.textContent.includes("Practice Exam"))
      );
    });
    const filtered = await count.textContent();
    assert.notEqual(filtered, all);
    const cards = page.getByTestId("product-card");
    const n = await cards.count();
    assert.ok(n > 0 && n <= 12, `${n} cards`);
    for (let i = 0; i < n; i++) {
      const text = await cards.nth(i).textContent();
      assert.match(text, /Microsoft/);
      assert.match(text, /Practice Exam/);
      assert.match(text, /AZ-/i);
    }
    await shot(page, "catalog-filtered");

    // First product from the grid, the second from its detail page with 2 seats.
    const firstId = await cards.nth(0).getAttribute("data-product-id");
    await cards.nth(0).getByRole("button", { name: /Add .* to cart/ }).click();
    await page.getByTestId("cart-count").filter({ hasText: /^1$/ }).waitFor();
    const secondId = await cards.nth(1).getAttribute("data-product-id");
    await cards.nth(1).getByRole("heading").getByRole("link").click();
    await page.getByTestId("product-detail").waitFor();
    assert.ok(page.url().endsWith(`/products/${secondId}`));
    await page.getByRole("button", { name: "Increase quantity" }).click();
    await shot(page, "product-detail");
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.getByTestId("cart-count").filter({ hasText: /^3$/ }).waitFor();

    // The cart adds up.
    await page.getByTestId("cart-button").click();
    await page.waitForURL(/\/cart$/);
    const lines = page.getByTestId("cart-line");
    await lines.nth(1).waitFor();
    assert.deepEqual(await lines.evaluateAll((ls) => ls.map((l) => l.dataset.productId)), [firstId, secondId]);
    const lineTotals = (await page.getByTestId("line-total").allTextContents()).map(cents);
    const total = cents(await page.getByTestId("summary-total").textContent());
    assert.equal(total, lineTotals[0] + lineTotals[1]);
    await shot(page, "cart");

    // Checkout: the accepted order at once, with its correlation id, then Completed live.
    await page.getByTestId("checkout").click();
    await page.waitForURL(/\/orders\/\d+\?placed=1/);
    await page.getByTestId("placed-banner").waitFor();
    assert.match(await page.getByTestId("correlation-id").textContent(), /^[0-9a-f-]{36}$/);
    assert.equal(await page.getByTestId("order-line").count(), 2);
    assert.equal(cents(await page.getByTestId("order-total").textContent()), total);
    await shot(page, "checkout-progress");
    await waitStatus(page, "completed");
    await page.locator("[data-testid=timeline][data-status=completed]").waitFor();
    await page.locator("[data-testid=active-order][data-status=completed]").waitFor();
    await page.getByTestId("toast").filter({ hasText: /is complete/ }).waitFor();
    assert.equal(await page.getByTestId("cart-count").textContent(), "0");
    await shot(page, "order-detail");

    const rows = await orderRows(page);
    assert.equal(await rows.count(), 1);
    await page.locator("[data-testid=order-row][data-status=completed]").waitFor();
    await shot(page, "orders");
    await page.context().close();
  });

  test("a second tab and another device of the same user see the order complete", async () => {
    const user = newUser("tabs");
    const first = await newPage();
    const second = await newPage(first.context()); // same browser: shares localStorage, not sessionStorage
    const device = await newPage(); // another browser: only its own status stream can tell it
    await login(first, user);
    await login(second, user);
    await login(device, user);
    await addToCart(first, "AZ-104");
    await second.getByTestId("cart-count").filter({ hasText: /^1$/ }).waitFor(); // cart synced across tabs
    await second.locator("[data-testid=connection][data-state=connected]").waitFor();
    await device.locator("[data-testid=connection][data-state=connected]").waitFor();

    const orderId = await placeOrder(first);
    await waitStatus(first, "completed");
    for (const page of [second, device]) {
      const pill = page.locator("[data-testid=active-order][data-status=completed]");
      await pill.waitFor();
      assert.match(await pill.textContent(), new RegExp(`#${orderId}\\b`));
      await page.getByTestId("toast").filter({ hasText: `Order #${orderId} is complete` }).waitFor();
    }
    await second.getByTestId("cart-count").filter({ hasText: /^0$/ }).waitFor();
    await first.context().close();
    await device.context().close();
  });

  test("a reload right after checkout keeps the order and sees it complete", async () => {
    const page = await newPage();
    await login(page, newUser("reload"));
    await addToCart(page, "AZ-900", 2);
    const orderId = await placeOrder(page);
    await page.reload();
    await waitStatus(page, "completed");
    assert.ok(page.url().includes(`/orders/${orderId}`));
    await page.locator("[data-testid=active-order][data-status=completed]").waitFor();
    await page.context().close();
  });

  test("a reload while PlaceOrder is answering still makes exactly one order", async () => {
    const page = await newPage();
    await login(page, newUser("midsubmit"));
    await addToCart(page, "AZ-204");
    await page.goto(`${backend.url}/cart`);
    // The first PlaceOrder reaches the server, but the page reloads before it sees the answer.
    let reached;
    const placed = new Promise((resolve) => (reached = resolve));
    let held = false;
    await page.route("**/contoso.orders.v1.OrderService/PlaceOrder", async (route) => {
      if (held) return route.continue();
      held = true;
      await route.fetch();
      reached();
      await new Promise(() => undefined); // never answered: the page goes away first
    });
    await page.getByTestId("checkout").click();
    await placed;
    await page.reload();
    // The app resumes the interrupted checkout with the same idempotency key.
    await page.waitForURL(/\/orders\/\d+/);
    await waitStatus(page, "completed");
    const rows = await orderRows(page);
    await page.getByTestId("orders-count").waitFor();
    assert.equal(await rows.count(), 1);
    await page.unrouteAll({ behavior: "ignoreErrors" });
    await page.context().close();
  });

  test("a gateway restart mid-flow: Reconnecting, then Connected, and the order shows Completed", async () => {
    const page = await newPage();
    await login(page, newUser("restart"));
    await addToCart(page, "AZ-305");
    await page.locator("[data-testid=connection][data-state=connected]").waitFor();
    await page.goto(`${backend.url}/cart`);
    await page.getByTestId("checkout").click();
    await page.waitForURL(/\/orders\/\d+/);
    await backend.killGateway();
    await page.locator("[data-testid=connection][data-state=reconnecting]").waitFor();
    await backend.startGateway();
    await page.locator("[data-testid=connection][data-state=connected]").waitFor({ timeout: 20_000 });
    await page.getByTestId("order-status").waitFor();
    await waitStatus(page, "completed");
    await page.locator("[data-testid=active-order][data-status=completed]").waitFor();
    await page.context().close();
  });

  test("a double click on checkout makes one order", async () => {
    const page = await newPage();
    await login(page, newUser("double"));
    await addToCart(page, "AZ-500", 3);
    await page.goto(`${backend.url}/cart`);
    await page.getByTestId("checkout").dblclick();
    await page.waitForURL(/\/orders\/\d+/);
    await waitStatus(page, "completed");
    const rows = await orderRows(page);
    await page.getByTestId("orders-count").waitFor();
    assert.equal(await rows.count(), 1);
    await page.context().close();
  });

  test("deleting an order from history, with confirmation, removes it from the list", async () => {
    const page = await newPage();
    await login(page, newUser("delete"));
    await addToCart(page, "AZ-104");
    const keep = await placeOrder(page);
    await waitStatus(page, "completed");
    await addToCart(page, "AZ-900");
    const gone = await placeOrder(page);
    await waitStatus(page, "completed");

    const rows = await orderRows(page);
    await rows.nth(1).waitFor();
    assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.orderId)), [gone, keep]); // newest first
    const row = page.locator(`[data-testid=order-row][data-order-id="${gone}"]`);

    // Cancel keeps it.
    await row.getByTestId("delete-order").click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    await shot(page, "delete-confirmation");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await rows.count(), 2);

    // Confirm removes it.
    await row.getByTestId("delete-order").click();
    await dialog.getByRole("button", { name: "Delete order" }).click();
    await row.waitFor({ state: "detached" });
    await page.getByTestId("orders-count").filter({ hasText: /^1 order$/ }).waitFor();
    assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.orderId)), [keep]);
    assert.equal(await page.getByTestId("active-order").count(), 0); // the deleted order is no longer "active"
    await page.goto(`${backend.url}/orders/${gone}`);
    await page.getByTestId("not-found").waitFor();
    await page.context().close();
  });

  test("a refused token sends the user back to login with a message", async () => {
    const page = await newPage();
    const user = newUser("expired");
    await login(page, user);
    await page.evaluate(() => {
      const s = JSON.parse(sessionStorage.getItem("contoso.session.v1"));
      sessionStorage.setItem("contoso.session.v1", JSON.stringify({ ...s, accessToken: "not-a-valid-token" }));
    });
    await page.goto(`${backend.url}/orders`);
    await page.waitForURL(/\/login\?next=%2Forders/);
    assert.match(await page.getByTestId("login-notice").textContent(), /session has expired/i);
    // Signing in again returns to the page the user was on.
    await page.getByRole("button", { name: user, exact: true }).click();
    await page.waitForURL(/\/orders$/);
    await page.context().close();
  });

  test("buy 3 seats, see the subscription appear live, assign a seat, the learner sees it, revoke it", async () => {
    const buyer = newUser("buyer");
    const learner = newUser("learner");
    const page = await newPage();
    const subs = await newPage(page.context()); // a second tab on My subscriptions, left open
    await login(page, buyer);
    await login(subs, buyer);
    await subs.getByRole("link", { name: "My subscriptions" }).click();
    await subs.waitForURL(/\/subscriptions$/);
    await subs.getByTestId("subscriptions-empty").waitFor();
    await subs.locator("[data-testid=connection][data-state=connected]").waitFor();
    await subs.evaluate(() => (window.__notReloaded = true));

    // Buy AZ-104 with 3 seats: when it completes, a toast says what it gave, without a reload.
    await addToCart(page, "AZ-104", 3);
    const orderId = await placeOrder(page);
    await waitStatus(page, "completed");
    await page.getByTestId("toast").filter({ hasText: /You now have AZ-104 \(3 seats\) for \d+ months?/ }).waitFor();
    const granted = page.getByTestId("granted-entitlement");
    await granted.waitFor();

    // The open tab's page filled itself in.
    const card = subs.locator(`[data-testid=entitlement][data-order-id="${orderId}"]`);
    await card.waitFor();
    assert.equal(await subs.evaluate(() => window.__notReloaded), true);
    await subs.getByTestId("toast").filter({ hasText: /You now have AZ-104/ }).waitFor();
    assert.equal(await card.getAttribute("data-product-id"), "AZ-104");
    assert.equal(await card.getAttribute("data-role"), "buyer");
    assert.equal(await card.getAttribute("data-seats"), "3");
    assert.equal(await card.getAttribute("data-seats-used"), "1");
    assert.match(await card.getByTestId("seats").textContent(), /1 of 3 seats used/);
    assert.match(await card.getByTestId("days-left").textContent(), /^\d+ days left$/);
    assert.equal(await subs.getByTestId("expired-entitlements").count(), 0);

    // The order detail links to what it granted.
    await granted.getByRole("link").click();
    await page.waitForURL(/\/subscriptions#ent-\d+$/);
    const mine = page.locator(`[data-testid=entitlement][data-order-id="${orderId}"]`);
    await mine.waitFor();

    // Assigning a seat to oneself is refused next to the field, in plain words.
    const field = mine.getByLabel("Give a seat to (user id)");
    await field.fill(buyer);
    await field.press("Enter");
    const error = mine.getByTestId("assign-error");
    await error.filter({ hasText: /seat of your own/ }).waitFor();
    assert.equal(await field.getAttribute("aria-invalid"), "true");

    // A seat for the learner (typed and submitted with the keyboard): seats used go up.
    await field.fill(learner);
    await field.press("Enter");
    await page.locator(`[data-testid=entitlement][data-order-id="${orderId}"][data-seats-used="2"]`).waitFor();
    await mine.locator(`[data-testid=assignment][data-user-id="${learner}"]`).waitFor();
    assert.match(await mine.getByTestId("seats").textContent(), /2 of 3 seats used/);
    assert.equal(await error.count(), 0);
    // Twice is refused.
    await field.fill(learner);
    await mine.getByRole("button", { name: "Assign seat" }).click();
    await error.filter({ hasText: new RegExp(`${learner} already has a seat`) }).waitFor();
    await field.fill("");
    await page.getByTestId("toast").filter({ hasText: /You now have/ }).first().waitFor({ state: "detached", timeout: 10_000 }).catch(() => undefined);
    await shot(page, "subscriptions");
    copyFileSync(join(SHOTS, "subscriptions.png"), join(WEB_DIR, "..", "..", "docs", "screenshots", "shop-subscriptions.png"));

    // The learner, signed in elsewhere, sees it as theirs, with nothing to manage.
    const other = await newPage();
    await login(other, learner);
    await other.goto(`${backend.url}/subscriptions`);
    const theirs = other.locator("[data-testid=entitlement][data-product-id=AZ-104]");
    await theirs.waitFor();
    assert.equal(await theirs.getAttribute("data-role"), "assignee");
    assert.match(await theirs.getByTestId("entitlement-role").textContent(), new RegExp(`Assigned to you by ${buyer}`));
    assert.equal(await theirs.getByTestId("assign-form").count(), 0);
    assert.equal(await theirs.getByRole("button", { name: /Revoke/ }).count(), 0);

    // The buyer revokes it, after confirming; the learner no longer has it.
    await mine.getByRole("button", { name: `Revoke ${learner}’s seat of AZ-104` }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    await dialog.getByRole("button", { name: "Revoke seat" }).click();
    await dialog.waitFor({ state: "hidden" });
    await page.locator(`[data-testid=entitlement][data-order-id="${orderId}"][data-seats-used="1"]`).waitFor();
    assert.equal(await mine.getByTestId("assignment").count(), 0);
    await other.getByRole("button", { name: "Refresh" }).click();
    await other.getByTestId("subscriptions-empty").waitFor();
    await other.context().close();
    await page.context().close();
  });

  test("sign in with the identity provider, check out to Completed, sign out of both", async () => {
    const page = await newPage();
    const user = newUser("idp");
    const idp = backend.idp.issuer;
    await page.goto(`${backend.url}/orders`);
    await page.waitForURL(/\/login\?next=%2Forders/);
    await page.getByRole("button", { name: "Sign in with Contoso ID" }).click();

    // The provider's own pages: its sign-in form, then its consent.
    await page.waitForURL((u) => u.href.startsWith(`${idp}/interaction/`));
    await page.getByLabel("Account").fill(user);
    await shot(page, "idp-sign-in");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("button", { name: "Allow" }).click();

    // Back on the page asked for, signed in as that account with the provider's token.
    await page.waitForURL(`${backend.url}/orders`);
    await page.getByTestId("user-name").filter({ hasText: user }).waitFor();
    const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem("contoso.session.v1")).accessToken);
    const [header, claims] = token.split(".").slice(0, 2).map((p) => JSON.parse(Buffer.from(p, "base64url")));
    assert.equal(header.alg, "RS256");
    assert.equal(claims.iss, idp);
    assert.equal(claims.sub, user);
    assert.deepEqual([claims.aud].flat(), ["contoso-orders"]);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("contoso.oidc.pending.v1")), null);

    // accept-svc and notify-svc take it: an order goes all the way, live.
    await addToCart(page, "SC-900");
    const orderId = await placeOrder(page);
    await waitStatus(page, "completed");
    await page.locator("[data-testid=active-order][data-status=completed]").waitFor();
    const rows = await orderRows(page);
    assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.orderId)), [orderId]);

    // Signing out ends the provider's session too, and comes back to the shop's login.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((u) => u.href.startsWith(`${idp}/session/end`));
    await page.getByRole("button", { name: "Yes, sign me out" }).click();
    await page.waitForURL(`${backend.url}/login`);
    await page.getByRole("button", { name: "Sign in with Contoso ID" }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("contoso.session.v1")), null);
    // The provider asks who it is again: its session is over.
    await page.getByRole("button", { name: "Sign in with Contoso ID" }).click();
    await page.waitForURL((u) => u.href.startsWith(`${idp}/interaction/`));
    await page.getByLabel("Account").waitFor();
    await page.context().close();
  });
});
