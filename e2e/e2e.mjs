// Gavel's browser end-to-end test, run by scripts/e2e against a fresh `gavel dev --no-seed`.
// Sets up through the REST API (PROTOCOL.md) as an admin, then drives the real web client in
// headless Debian Chromium with playwright-core, through the data-testid handles listed at the
// top of crates/edge/web/assets/app.js.
//
// E2E_MODE=test (default): two buyers, one browser context each. A bids; B sees the new high
// and the clock jump back up; the lot is hammered and the lane rotates to the next car; A finds
// the car with its pickup instructions in the Won list. On failure every open page is
// screenshotted (with its console log) into E2E_FAILURES.
// E2E_MODE=screenshots: a 2-lane sale with a few bids placed from the client, then the live
// auction view and the admin monitor as PNGs into E2E_DOCS.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = need('GAVEL_BASE');
const MODE = process.env.E2E_MODE ?? 'test';
const ADMIN = { email: need('E2E_ADMIN_EMAIL'), password: need('E2E_ADMIN_PASSWORD') };
const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
const FAILURES = process.env.E2E_FAILURES ?? 'failures';
const DOCS = process.env.E2E_DOCS ?? 'screenshots';
const PASSWORD = 'e2e-buyer-pass';
/** Whole browser part; scripts/e2e's `timeout` is the backstop. */
const BUDGET_MS = 140_000;
/** One wait for the page, unless a step says otherwise. */
const STEP_MS = 15_000;

const started = Date.now();
const pages = new Map();
const logs = new Map();
let browser;
let step = 'start';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (scripts/e2e sets it)`);
  return v;
}

function say(text) {
  console.log(`e2e: [${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);
}

function begin(name) {
  step = name;
  say(name);
}

function check(cond, message) {
  if (!cond) throw new Error(`${step}: ${message}`);
}

// ----- REST -----

async function api(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(BASE + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Users, a vendor, vehicles and an event with its lots, scheduled (a buyer can open it). */
async function setUp({ lanes, lotSeconds, resetSeconds, cars }) {
  const admin = (await api('POST', '/api/auth/login', ADMIN)).token;
  const run = Date.now().toString(36);
  const buyers = [];
  for (const [key, name] of [['a', 'Ada Buyer'], ['b', 'Ben Buyer']]) {
    const email = `buyer-${key}-${run}@e2e.test`;
    const user = await api('POST', '/api/auth/register', { email, password: PASSWORD, name });
    check(user.verified === false, `a new account is unverified: ${JSON.stringify(user)}`);
    await api('POST', `/api/admin/users/${user.id}/verify`, {}, admin);
    buyers.push({ email, name, id: user.id });
  }
  const vendor = await api('POST', '/api/admin/vendors', { name: 'Northgate Auto Remarketing', contact: 'lot office, +1 555 0142' }, admin);
  const event = await api('POST', '/api/admin/events', {
    name: MODE === 'test' ? 'Northgate weekday sale (e2e)' : 'Northgate weekday sale',
    starts_at: Date.now() + 10 * 60_000,
    lanes,
    lot_seconds: lotSeconds,
    reset_seconds: resetSeconds,
  }, admin);
  const lots = [];
  for (const car of cars) {
    const vehicle = await api('POST', '/api/admin/vehicles', {
      vendor_id: vendor.id,
      vin: car.vin,
      year: car.year,
      make: car.make,
      model: car.model,
      trim: car.trim,
      mileage: car.mileage,
      photos: [`/assets/cars/${car.body}.svg`],
      pickup: car.pickup,
    }, admin);
    const lot = await api('POST', `/api/admin/events/${event.id}/lots`, {
      vehicle_id: vehicle.id, lane: car.lane, position: car.position, starting_price: car.start, reserve: car.reserve ?? 0,
    }, admin);
    lots.push({ ...car, lot_id: lot.lot_id, title: [car.year, car.make, car.model, car.trim].join(' ') });
  }
  await api('POST', `/api/admin/events/${event.id}/schedule`, {}, admin);
  return { admin, buyers, event, lots };
}

// ----- the browser -----

async function newPage(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const log = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.stack ?? e}`));
  // The live feed as the page received it: what a failure's console log needs most.
  page.on('websocket', (ws) => {
    log.push(`[ws] open ${ws.url().replace(/token=[^&]+/, 'token=…')}`);
    ws.on('framereceived', (f) => {
      if (!String(f.payload).includes('"pong"')) log.push(`[ws ${new Date().toISOString().slice(11, 23)}] ← ${f.payload}`);
    });
    ws.on('framesent', (f) => {
      if (!String(f.payload).includes('"ping"')) log.push(`[ws ${new Date().toISOString().slice(11, 23)}] → ${f.payload}`);
    });
    ws.on('close', () => log.push('[ws] closed'));
  });
  page.on('requestfailed', (r) => log.push(`[requestfailed] ${r.method()} ${r.url()} ${r.failure()?.errorText ?? ''}`));
  pages.set(name, page);
  logs.set(name, log);
  return page;
}

async function logIn(page, email, password) {
  await page.goto(`${BASE}/#/login`);
  await page.locator('#login-email').fill(email);
  await page.locator('#login-password').fill(password);
  await page.locator('#login-submit').click();
  await page.locator('#user-name').filter({ hasText: /\S/ }).waitFor();
  await page.locator('[data-testid=conn-status][data-state=live]').waitFor();
}

/** Opens the event from the Available now feed, as a buyer would. */
async function enterFromFeed(page, eventId) {
  await page.locator('#nav-feed').click();
  const card = page.locator(`[data-testid=event-card][data-event-id="${eventId}"]`);
  await card.locator('[data-testid=event-enter]').click();
  await page.waitForURL(`**/#/live/${eventId}`);
  await page.locator('[data-testid=lane-1] [data-testid=car-title]').waitFor();
}

/**
 * A running countdown's text in ms: "1:05", or tenths under ten seconds: "0:07.3". Throws on
 * anything else while the lot is open (once it showed "0:010.0" for 9.9–10 s left).
 */
function clockMs(text) {
  const m = /^(\d+):([0-5]\d)(?:\.(\d))?$/.exec(text ?? '');
  check(m && (m[3] == null) === (Number(m[1]) > 0 || Number(m[2]) >= 10 || text === '0:00'), `a countdown reads "${text}"`);
  return (Number(m[1]) * 60 + Number(m[2])) * 1000 + Number(m[3] ?? 0) * 100;
}

async function countdownMs(lane) {
  return clockMs(await lane.locator('[data-testid=countdown]').textContent());
}

/** Taps Bid, then Confirm, and waits for the client's "accepted" feedback. */
async function bid(page, laneNo, expect) {
  const lane = page.locator(`[data-testid=lane-${laneNo}]`);
  const button = lane.locator('[data-testid=bid-button]:enabled');
  await button.waitFor();
  if (expect) check((await button.textContent()).includes(expect), `the bid button offers ${expect}: ${await button.textContent()}`);
  await button.click();
  const confirm = lane.locator('[data-testid=bid-confirm]');
  await confirm.waitFor({ state: 'visible' });
  await confirm.click();
  await lane.locator('[data-testid=bid-feedback].ok').filter({ hasText: 'Bid accepted' }).waitFor();
}

async function saveFailure(error) {
  mkdirSync(FAILURES, { recursive: true });
  const notes = [`step: ${step}`, `error: ${error?.stack ?? error}`];
  for (const [name, page] of pages) {
    try {
      await page.screenshot({ path: join(FAILURES, `${name}.png`), fullPage: true, timeout: 5000 });
      notes.push(`${name}: ${page.url()} → ${name}.png`);
    } catch (e) {
      notes.push(`${name}: no screenshot (${e.message})`);
    }
    writeFileSync(join(FAILURES, `${name}.console.log`), (logs.get(name) ?? []).join('\n') + '\n');
  }
  writeFileSync(join(FAILURES, 'failure.txt'), notes.join('\n') + '\n');
}

// ----- the two modes -----

const PICKUP = 'Collect from Northgate Auto Remarketing, 1840 Industrial Pkwy, Gate B, bay 12. '
  + 'Mon–Fri 8:00–17:00, within 5 business days. Bring photo ID and the gate pass from your Won list.';

async function buyerFlow() {
  const LOT_S = 10;
  const RESET_S = 8;
  begin('setting up through the REST API');
  const { buyers, event, lots } = await setUp({
    lanes: 1,
    lotSeconds: LOT_S,
    resetSeconds: RESET_S,
    cars: [
      { lane: 1, position: 1, body: 'sedan', vin: '4T1B11HK5KU263514', year: 2019, make: 'Toyota', model: 'Camry', trim: 'SE', mileage: 48210, start: 500_000, pickup: PICKUP },
      { lane: 1, position: 2, body: 'suv', vin: '2HKRW2H83JH512207', year: 2018, make: 'Honda', model: 'CR-V', trim: 'EX-L AWD', mileage: 61540, start: 700_000, pickup: PICKUP },
    ],
  });
  const [first, second] = lots;

  begin('two buyers log in, each in a browser context of their own, and open the event from the feed');
  const a = await newPage('buyer-a');
  const b = await newPage('buyer-b');
  await Promise.all([logIn(a, buyers[0].email, PASSWORD), logIn(b, buyers[1].email, PASSWORD)]);
  await Promise.all([enterFromFeed(a, event.id), enterFromFeed(b, event.id)]);
  const laneA = a.locator('[data-testid=lane-1]');
  const laneB = b.locator('[data-testid=lane-1]');
  for (const lane of [laneA, laneB]) {
    await lane.locator('[data-testid=car-title]').filter({ hasText: first.title }).waitFor();
  }

  begin('the admin starts the event now; both pages show the first lot open with its clock running');
  const admin = (await api('POST', '/api/auth/login', ADMIN)).token;
  await api('POST', `/api/admin/events/${event.id}/start`, {}, admin);
  for (const [page, lane] of [[a, laneA], [b, laneB]]) {
    await lane.locator('[data-testid=lot-state]').filter({ hasText: 'Open' }).waitFor();
    await page.locator('[data-testid=event-status]').filter({ hasText: /^Live · 1 lane$/ }).waitFor({ timeout: 5000 });
    await lane.locator('[data-testid=bid-button]:enabled').filter({ hasText: 'Bid $5,000' }).waitFor();
    await lane.locator('[data-testid=high]').filter({ hasText: 'Opens at $5,000' }).waitFor();
  }

  begin(`buyer B watches the clock run down below ${LOT_S - 4} s`);
  const runDownBy = Date.now() + LOT_S * 1000;
  let before = await countdownMs(laneB);
  while (before > (LOT_S - 4) * 1000) {
    check(Date.now() < runDownBy, `buyer B's countdown does not run down: ${before}`);
    await b.waitForTimeout(100);
    before = await countdownMs(laneB);
  }
  check(before > 1500, `too late to bid safely (${before} ms left); `);
  const openedAt = Date.now();

  begin(`buyer A taps Bid and Confirm with ${(before / 1000).toFixed(1)} s on buyer B's clock`);
  await bid(a, 1, 'Bid $5,000');
  await laneA.locator('[data-testid=leading]').waitFor({ state: 'visible' });
  await laneA.locator('[data-testid=bidder]').filter({ hasText: 'You' }).waitFor();

  begin('buyer B sees the new high and the clock jump back up');
  await laneB.locator('[data-testid=high]').filter({ hasText: '$5,000' }).waitFor({ timeout: 5000 });
  const after = await countdownMs(laneB);
  say(`buyer B's clock: ${before} ms before the bid, ${after} ms once the new high showed (reset ${RESET_S} s)`);
  check(after > before + 1000, `the clock did not jump back up: ${before} → ${after} ms`);
  check(after <= RESET_S * 1000 + 500, `the clock shows more than the reset: ${after} ms`);
  check(await laneB.locator('[data-testid=bid-count]').textContent() === '1 bid', 'buyer B sees 1 bid');
  const alias = (await laneB.locator('[data-testid=bidder]').textContent()).trim();
  check(alias && alias !== 'You' && alias !== 'No bids yet', `buyer B sees the bidder's alias, not "${alias}"`);
  check(!(await laneB.locator('[data-testid=leading]').isVisible()), 'buyer B is not shown as leading');
  await laneB.locator('[data-testid=bid-button]').filter({ hasText: 'Bid $5,050' }).waitFor();

  begin('the hammer falls: the lane rotates to the next car on both pages');
  const hammer = { timeout: (RESET_S + 12) * 1000 };
  await Promise.all([laneA, laneB].map((lane) => lane.locator('[data-testid=car-title]').filter({ hasText: second.title }).waitFor(hammer)));
  say(`rotated ${((Date.now() - openedAt) / 1000).toFixed(1)} s after the bid window opened`);
  for (const lane of [laneA, laneB]) {
    await lane.locator('[data-testid=lot-position]').filter({ hasText: 'Lot 2' }).waitFor();
    await lane.locator('[data-testid=high]').filter({ hasText: 'Opens at $7,000' }).waitFor();
  }

  begin('buyer A gets the won notice and finds the car with its pickup instructions in the Won list');
  await a.locator('[data-testid=won-notice]').filter({ hasText: 'You won' }).waitFor();
  await a.locator('#nav-won').click();
  const item = a.locator(`[data-testid=won-list] [data-testid=won-item][data-lot-id="${first.lot_id}"]`);
  await item.waitFor();
  check((await item.locator('h2').textContent()).includes(first.title), 'the won item names the car');
  check((await item.locator('[data-testid=won-amount]').textContent()) === '$5,000', 'the won item shows the hammer price');
  check((await item.locator('[data-testid=won-pickup]').textContent()) === PICKUP, 'the won item shows the pickup instructions');

  begin("buyer B's Won list stays empty");
  await b.locator('#nav-won').click();
  await b.locator('[data-testid=won-list] li.empty').waitFor();
  check(await b.locator('[data-testid=won-item]').count() === 0, 'buyer B won nothing');
}

async function screenshots() {
  begin('setting up a 2-lane sale through the REST API');
  const cars = [
    { lane: 1, position: 1, body: 'coupe', vin: '1FA6P8TH5L5118604', year: 2020, make: 'Ford', model: 'Mustang', trim: 'EcoBoost Premium', mileage: 31200, start: 1_800_000 },
    { lane: 2, position: 1, body: 'suv', vin: '1C4RJFBG4HC539018', year: 2017, make: 'Jeep', model: 'Grand Cherokee', trim: 'Limited 4x4', mileage: 76100, start: 1_550_000 },
    { lane: 1, position: 2, body: 'pickup', vin: '1FTEW1EP6HF641872', year: 2017, make: 'Ford', model: 'F-150', trim: 'XLT SuperCrew 4x4', mileage: 84300, start: 1_600_000 },
    { lane: 2, position: 2, body: 'van', vin: '2C4RC1BG3KR602915', year: 2019, make: 'Chrysler', model: 'Pacifica', trim: 'Touring L', mileage: 55800, start: 1_400_000 },
    { lane: 1, position: 3, body: 'convertible', vin: 'JM1NDAC70J0214560', year: 2018, make: 'Mazda', model: 'MX-5 Miata', trim: 'Club', mileage: 22650, start: 1_500_000 },
    { lane: 2, position: 3, body: 'wagon', vin: '4S4BSBFC3F3284417', year: 2015, make: 'Subaru', model: 'Outback', trim: '2.5i Premium', mileage: 98400, start: 700_000 },
  ].map((c) => ({ ...c, pickup: PICKUP }));
  const { buyers, event } = await setUp({ lanes: 2, lotSeconds: 90, resetSeconds: 45, cars });

  begin('the admin opens the monitor; two buyers open the event');
  const admin = await newPage('admin');
  await logIn(admin, ADMIN.email, ADMIN.password);
  const a = await newPage('buyer-a');
  const b = await newPage('buyer-b');
  await Promise.all([logIn(a, buyers[0].email, PASSWORD), logIn(b, buyers[1].email, PASSWORD)]);
  await Promise.all([enterFromFeed(a, event.id), enterFromFeed(b, event.id)]);
  const token = (await api('POST', '/api/auth/login', ADMIN)).token;
  await api('POST', `/api/admin/events/${event.id}/start`, {}, token);
  await admin.goto(`${BASE}/#/admin/monitor/${event.id}`);
  await admin.locator('[data-testid=monitor-status]').filter({ hasText: 'live' }).waitFor();
  for (const page of [a, b]) {
    for (const n of [1, 2]) await page.locator(`[data-testid=lane-${n}] [data-testid=bid-button]:enabled`).waitFor();
  }

  begin('a few bids from both buyers, each seen by the other before the next');
  const seen = (page, n, text) => page.locator(`[data-testid=lane-${n}] [data-testid=high]`).filter({ hasText: text }).waitFor();
  await bid(a, 1, '$18,000');
  await seen(b, 1, '$18,000');
  await bid(b, 1, '$18,050');
  await seen(a, 1, '$18,050');
  await bid(a, 1, '$18,100');
  await seen(b, 1, '$18,100');
  await bid(a, 2, '$15,500');
  await seen(b, 2, '$15,500');
  await bid(b, 2, '$15,550');
  await seen(a, 2, '$15,550');
  await a.locator('[data-testid=outbid-banner]').waitFor({ state: 'visible' });
  await admin.locator('[data-testid=monitor-lane-1] [data-testid=high]').filter({ hasText: '$18,100' }).waitFor();
  await admin.locator('[data-testid=monitor-lane-2] [data-testid=high]').filter({ hasText: '$15,550' }).waitFor();
  await admin.locator('[data-testid=monitor-clients]').filter({ hasText: /^[1-9]/ }).waitFor();
  // Let the bid feedback fade and the monitor's 2-second poll catch up.
  await a.waitForTimeout(6500);

  begin('screenshots into docs/screenshots');
  mkdirSync(DOCS, { recursive: true });
  await a.evaluate(() => window.scrollTo(0, 0));
  await a.screenshot({ path: join(DOCS, 'live-auction.png'), fullPage: true });
  await admin.evaluate(() => window.scrollTo(0, 0));
  await admin.screenshot({ path: join(DOCS, 'admin-monitor.png'), fullPage: true });
  say(`wrote ${join(DOCS, 'live-auction.png')} and ${join(DOCS, 'admin-monitor.png')}`);
}

// ----- main -----

const watchdog = setTimeout(() => {
  console.error(`e2e: over the ${BUDGET_MS / 1000} s budget at step "${step}"`);
  saveFailure(new Error('over budget')).finally(() => process.exit(1));
}, BUDGET_MS);
let failed = false;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root there is no sandbox; the rest keeps Chromium off a network this machine lacks.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  await (MODE === 'screenshots' ? screenshots() : buyerFlow());
  say(`${MODE} passed`);
  // The plain closing line CI reads.
  if (MODE === 'test') console.log('e2e: 1 passed, 0 failed');
} catch (e) {
  failed = true;
  console.error(`e2e: FAILED at step "${step}": ${e.stack ?? e}`);
  await saveFailure(e);
  if (MODE === 'test') console.log('e2e: 0 passed, 1 failed');
} finally {
  clearTimeout(watchdog);
  await browser?.close().catch(() => {});
}
process.exit(failed ? 1 : 0);
