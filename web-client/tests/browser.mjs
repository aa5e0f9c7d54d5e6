// Shared helpers of the browser tests: Chromium profiles (one per user and device), elements
// found by role and accessible name only, screenshots under test-artifacts/.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, WEB } from './harness.mjs';

export const SKIP = process.env.PARLEY_E2E === '0';
export const ARTIFACTS = path.join(WEB, 'test-artifacts');
export const TIMEOUT = 20000;
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** Every profile opened (closed by `closeBrowsers`) and every console line of their pages. */
export const browsers = [];
export const consoleLines = [];
let step = 0;
let prefix = '';

/** Screenshots from now on are `PREFIX-NN-who-name.png`, numbered from 1. */
export function startShots(name) {
  prefix = name;
  step = 0;
  fs.mkdirSync(ARTIFACTS, { recursive: true });
}

export async function shot(page, who, name) {
  step += 1;
  const file = path.join(ARTIFACTS, `${prefix}-${String(step).padStart(2, '0')}-${who}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/** Screenshots of every open page (after a failure). */
export async function shootAll(label = 'failure') {
  for (const [i, b] of browsers.entries()) {
    for (const page of b.ctx.pages()) await shot(page, `${label}${i}`, 'state').catch(() => {});
  }
}

/**
 * A new Chromium profile for `who` with the app open at `origin`. `clock: true` installs
 * Playwright's controllable clock first (time flows until the test moves it).
 */
export async function openUser(who, origin, { clock = false, args = [] } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `parley-e2e-${who}-`));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: [...ARGS, ...args], viewport: { width: 1200, height: 800 },
  });
  browsers.push({ ctx, dir });
  if (clock) await ctx.clock.install();
  const page = ctx.pages()[0] || await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => consoleLines.push(`${who}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`${who} pageerror: ${e.message}`));
  await page.goto(origin);
  return page;
}

export async function closeBrowsers() {
  for (const b of browsers.splice(0)) {
    await b.ctx.close().catch(() => {});
    fs.rmSync(b.dir, { recursive: true, force: true });
  }
}

/** Fails if any console line holds one of `secrets`. */
export function assertNoSecretsInConsole(secrets) {
  for (const line of consoleLines) {
    for (const secret of secrets) assert.ok(!line.includes(secret), `console leaked a secret: ${line}`);
  }
}

// Password inputs have no ARIA role: find them by label, among visible elements (each screen
// has its own form; hidden screens are out of the accessibility tree).
export const byLabel = (page, name) => page.getByLabel(name, { exact: true }).filter({ visible: true });
export const button = (page, name) => page.getByRole('button', { name, exact: true });
export const messages = (page) => page.getByRole('list', { name: 'Messages', exact: true });
export const bubble = (page, text) => messages(page).getByRole('listitem').filter({ hasText: text }).first();

/** Polls until `locator`'s text satisfies `pred`. */
export async function waitText(locator, pred, what, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = (await locator.textContent({ timeout: 1000 }).catch(() => '')) || '';
    if (pred(last)) return last;
    await new Promise((r) => { setTimeout(r, 100); });
  }
  throw new Error(`${what}: last text ${JSON.stringify(last)}`);
}

/** Polls until the role=status region contains `text`. */
export async function waitStatus(page, text, timeout = TIMEOUT) {
  const status = page.getByRole('status', { name: 'Announcements', exact: true });
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = (await status.textContent()) || '';
    if (last.includes(text)) return;
    await new Promise((r) => { setTimeout(r, 100); });
  }
  const alert = (await page.getByRole('alert').first().textContent().catch(() => '')) || '';
  throw new Error(`status never said ${JSON.stringify(text)}; last status ${JSON.stringify(last)}, alert ${JSON.stringify(alert)}`);
}

/** Invites `userId` into the open conversation through the invite form, until "… was added". */
export async function invite(page, userId, timeout = TIMEOUT) {
  await byLabel(page, 'User to invite').fill(userId);
  await button(page, 'Invite').click();
  await waitStatus(page, `${userId} was added`, timeout);
}

export async function waitAlert(page, text, timeout = TIMEOUT) {
  await page.getByRole('alert').filter({ hasText: text }).first().waitFor({ timeout });
}

export async function signUp(page, who, origin, username, password, passphrase) {
  await byLabel(page, 'Homeserver').fill(origin);
  await byLabel(page, 'Username').fill(username);
  await byLabel(page, 'Password').fill(password);
  await shot(page, who, 'signup-form');
  await button(page, 'Sign up').click();
  await createVault(page, who, passphrase);
  await waitStatus(page, 'Device keys published');
  await shot(page, who, 'signed-up');
}

/** Logs in as an existing user (a new device) and creates its vault. */
export async function logIn(page, who, origin, username, password, passphrase) {
  await byLabel(page, 'Homeserver').fill(origin);
  await byLabel(page, 'Username').fill(username);
  await byLabel(page, 'Password').fill(password);
  await button(page, 'Log in').click();
  await createVault(page, who, passphrase);
}

async function createVault(page, who, passphrase) {
  await byLabel(page, 'Vault passphrase').fill(passphrase);
  await byLabel(page, 'Confirm vault passphrase').fill(passphrase);
  await shot(page, who, 'vault-passphrase');
  await button(page, 'Create vault').click();
  await button(page, 'Lock').waitFor();
}

export async function waitMessage(page, text, timeout = TIMEOUT) {
  await bubble(page, text).waitFor({ timeout });
}

export async function send(page, text) {
  await byLabel(page, 'Message').fill(text);
  await button(page, 'Send').click();
  await bubble(page, text).waitFor();
}

export async function unlock(page, passphrase) {
  await byLabel(page, 'Vault passphrase').fill(passphrase);
  await button(page, 'Unlock').click();
  await button(page, 'Lock').waitFor();
}

export async function readSafetyNumber(page) {
  await button(page, 'Verify').click();
  const dialog = page.getByRole('dialog', { name: 'Verify safety numbers' });
  await dialog.waitFor();
  const number = await dialog.getByRole('textbox', { name: 'Safety number' }).inputValue();
  return { dialog, number };
}

export async function waitBubbleState(page, text, state) {
  await waitText(bubble(page, text), (t) => t.includes(`· ${state}`), `bubble ${JSON.stringify(text)} never became ${state}`);
}

/** Waits `ms`, then checks that `page`'s open conversation does not show `text`. */
export async function assertNeverArrives(page, text, ms = 2500) {
  await page.waitForTimeout(ms);
  assert.equal(await messages(page).getByRole('listitem').filter({ hasText: text }).count(), 0, `${text} must not arrive`);
}
