// Browser tests of trust and devices (alice on one homeserver, bob on another), auto-lock and
// panic wipe: real homeservers, Debian's Chromium driven by playwright-core, one profile per
// device, elements found by role and accessible name only. The `it`s of a `describe` run in
// order and build on each other (one sign-up per suite keeps the run short).
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, button, byLabel, closeBrowsers, consoleLines, logIn, messages,
  openUser, readSafetyNumber, send, shootAll, shot, signUp, startShots, unlock, waitAlert,
  waitMessage, waitStatus,
} from './browser.mjs';

/** `it`, with screenshots of every page when it fails. */
function step(name, fn) {
  it(name, async () => {
    try {
      await fn();
    } catch (err) {
      await shootAll();
      throw err;
    }
  });
}

const settingsDialog = (page) => page.getByRole('dialog', { name: 'Settings', exact: true });

/** This device's id and fingerprint as Settings shows them (the dialog is closed again). */
async function ownDevice(page) {
  await button(page, 'Settings').click();
  const dialog = settingsDialog(page);
  await dialog.waitFor();
  const fingerprint = await dialog.getByRole('textbox', { name: 'Your device fingerprint', exact: true }).inputValue();
  const current = dialog.getByRole('list', { name: 'Your devices' }).getByRole('listitem').filter({ hasText: '— this device' });
  const deviceId = (await current.textContent()).trim().split(/\s/)[0];
  await dialog.getByRole('button', { name: 'Close', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
  return { deviceId, fingerprint };
}

/** The fingerprints the open conversation's Verify dialog lists for the other person's devices
 * ("DEVICE: FINGERPRINT" each); the dialog is closed again. */
async function theirFingerprints(page) {
  const { dialog } = await readSafetyNumber(page);
  const items = await dialog.getByRole('list', { name: 'Their devices' }).getByRole('listitem').allTextContents();
  await dialog.getByRole('button', { name: 'Close', exact: true }).click();
  return items.map((t) => t.trim());
}

async function markVerified(page) {
  const { dialog } = await readSafetyNumber(page);
  await dialog.getByRole('button', { name: 'Mark as verified', exact: true }).click();
  await waitStatus(page, 'marked as verified');
  await dialog.getByRole('button', { name: 'Close', exact: true }).click();
  await page.getByRole('img', { name: 'Verified', exact: true }).waitFor();
}

describe('trust and devices, alice and bob on two homeservers', { skip: SKIP, timeout: 240000 }, () => {
  const ALICE_PASS = 'alice vault passphrase';
  const BOB_PASS = 'bob vault passphrase';
  const BOB2_PASS = 'bob second device passphrase';
  let hs;
  let alice;
  let bob;
  let bob2;
  let bobId;
  let bobFirst; // bob's first device: {deviceId, fingerprint}

  before(async () => {
    startShots('trust');
    consoleLines.length = 0;
    hs = await startWebHomeservers(2);
    const [aliceOrigin, bobOrigin] = hs.origins;
    bobId = `@bob:${hs.servers[1].name}`;
    alice = await openUser('alice', aliceOrigin);
    bob = await openUser('bob', bobOrigin);
    await signUp(alice, 'alice', aliceOrigin, 'alice', 'alice password 1', ALICE_PASS);
    await signUp(bob, 'bob', bobOrigin, 'bob', 'bob password 1', BOB_PASS);
    await byLabel(alice, 'Direct message to').fill(bobId);
    await button(alice, 'New direct message').click();
    await waitStatus(alice, `Direct message with ${bobId} started`);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await send(alice, 'hello bob');
    await waitMessage(bob, 'hello bob');
  });

  after(async () => {
    await closeBrowsers();
    if (hs) await hs.stop();
  });

  step('the own device fingerprint in Settings is the one the other side\'s Verify dialog shows for that device', async () => {
    const aliceDevice = await ownDevice(alice);
    bobFirst = await ownDevice(bob);
    for (const d of [aliceDevice, bobFirst]) {
      assert.match(d.fingerprint, /^([0-9A-F]{4} ){15}[0-9A-F]{4}$/, 'a fingerprint is 16 groups of 4 hex digits');
      assert.match(d.deviceId, /^[A-Za-z0-9]+$/);
    }
    assert.notEqual(aliceDevice.fingerprint, bobFirst.fingerprint);
    assert.deepEqual(await theirFingerprints(bob), [`${aliceDevice.deviceId}: ${aliceDevice.fingerprint}`]);
    assert.deepEqual(await theirFingerprints(alice), [`${bobFirst.deviceId}: ${bobFirst.fingerprint}`]);
    await shot(bob, 'bob', 'fingerprints-compared');
  });

  step('a verified contact\'s new device raises the key-change warning; sending is blocked until "Acknowledge key change", then works, and the verified mark is gone until verified again', async () => {
    await markVerified(alice);
    // Bob signs in on a second browser: his first device adds the new one to the DM.
    bob2 = await openUser('bob2', hs.origins[1]);
    await logIn(bob2, 'bob2', hs.origins[1], 'bob', 'bob password 1', BOB2_PASS);
    const bob2Dm = bob2.getByRole('button', { name: /^alice, direct message/ });
    await bob2Dm.waitFor({ timeout: 60000 });
    await bob2Dm.click();
    const bob2Device = await ownDevice(bob2);

    // Alice: the warning names bob and his new device; Send is blocked, Enter sends nothing.
    const warning = alice.getByRole('alert').filter({ has: button(alice, 'Acknowledge key change') });
    await warning.waitFor();
    const text = await warning.textContent();
    assert.ok(text.includes(`The safety number with ${bobId} changed`), text);
    assert.ok(text.includes(bob2Device.deviceId), text);
    await alice.getByRole('img', { name: 'Key changed', exact: true }).waitFor();
    assert.equal(await alice.getByRole('img', { name: 'Verified', exact: true }).count(), 0);
    assert.equal(await button(alice, 'Send').isDisabled(), true, 'Send is disabled');
    await byLabel(alice, 'Message').fill('sent before acknowledging');
    await byLabel(alice, 'Message').press('Enter');
    await shot(alice, 'alice', 'key-change-warning');

    await button(alice, 'Acknowledge key change').click();
    await waitStatus(alice, 'Key change acknowledged');
    await warning.waitFor({ state: 'hidden' });
    assert.equal(await button(alice, 'Send').isDisabled(), false);
    await send(alice, 'after acknowledging');
    await waitMessage(bob2, 'after acknowledging');
    await waitMessage(bob, 'after acknowledging');
    for (const page of [alice, bob2]) {
      assert.equal(await messages(page).getByRole('listitem').filter({ hasText: 'sent before acknowledging' }).count(), 0, 'nothing was sent while blocked');
    }
    // Not verified any more, nor marked as changed; verifying again brings the mark back.
    assert.equal(await alice.getByRole('img', { name: 'Verified', exact: true }).count(), 0);
    assert.equal(await alice.getByRole('img', { name: 'Key changed', exact: true }).count(), 0);
    await shot(alice, 'alice', 'acknowledged');
    await markVerified(alice);
    assert.equal(await warning.isVisible(), false);
  });

  step('revoking a device in Settings → "Your devices" signs that device out at once', async () => {
    await button(bob2, 'Settings').click();
    const revoke = settingsDialog(bob2).getByRole('button', { name: `Revoke ${bobFirst.deviceId}`, exact: true });
    await revoke.click();
    const revokedAt = Date.now();
    // The revoked device leaves the chat for the sign-in screen with the reason, at once.
    await byLabel(bob, 'Username').waitFor({ timeout: 5000 });
    await waitAlert(bob, 'This device was signed out', 1000);
    assert.ok(Date.now() - revokedAt < 5000, 'signed out within 5 s');
    assert.equal(await button(bob, 'Lock').isVisible(), false);
    assert.equal(await messages(bob).isVisible(), false, 'no conversation left on screen');
    await shot(bob, 'bob', 'revoked');
    await waitStatus(bob2, `Device ${bobFirst.deviceId} revoked`);
    await revoke.waitFor({ state: 'detached' });
    await settingsDialog(bob2).getByRole('button', { name: 'Close', exact: true }).click();
    // The remaining device still chats.
    await send(alice, 'after the revoke');
    await waitMessage(bob2, 'after the revoke');
  });

  it('no plaintext nor passphrase reaches the browser console', () => {
    assertNoSecretsInConsole(['hello bob', 'after acknowledging', 'after the revoke', ALICE_PASS, BOB_PASS, BOB2_PASS]);
  });
});

describe('auto-lock and panic wipe (one homeserver, a clock the test controls)', { skip: SKIP, timeout: 120000 }, () => {
  const PASS = 'carol vault passphrase';
  let hs;
  let page;
  let origin;

  before(async () => {
    startShots('lock');
    hs = await startWebHomeservers(1);
    [origin] = hs.origins;
    page = await openUser('carol', origin, { clock: true });
    await signUp(page, 'carol', origin, 'carol', 'carol password 1', PASS);
  });

  after(async () => {
    await closeBrowsers();
    if (hs) await hs.stop();
  });

  step('auto-lock fires after the configured idle minutes and shows the unlock screen', async () => {
    await button(page, 'Settings').click();
    await byLabel(page, 'Auto-lock after idle minutes').fill('1');
    await button(page, 'Save settings').click();
    await waitStatus(page, 'Auto-lock after 1 minutes of inactivity');
    // Left open on purpose: the lock closes the dialog (it shows the fingerprint).
    await page.clock.fastForward(40000);
    assert.equal(await button(page, 'Lock').isVisible(), true, 'not locked before the idle time');
    await page.clock.fastForward(25000);
    await button(page, 'Unlock').waitFor();
    await byLabel(page, 'Vault passphrase').waitFor();
    await waitStatus(page, 'Locked after inactivity');
    assert.equal(await settingsDialog(page).isVisible(), false, 'dialogs close with the lock');
    await shot(page, 'carol', 'auto-locked');
  });

  step('auto-lock checks the wall clock when the tab becomes visible again', async () => {
    await unlock(page, PASS);
    // Two minutes pass by the wall clock while the tab's timers do not run (a hidden tab is
    // throttled, a sleeping laptop stops them); then the tab becomes visible.
    const now = await page.evaluate(() => Date.now());
    await page.clock.setSystemTime(now + 2 * 60000);
    assert.equal(await button(page, 'Lock').isVisible(), true, 'the idle timeout itself has not run');
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    // Well before the idle timeout itself could run (60 s of the page's own time from now).
    await button(page, 'Unlock').waitFor({ timeout: 15000 });
    await shot(page, 'carol', 'locked-on-visible');
  });

  step('panic wipe warns while another tab keeps the database open, and finishes once it closes it', async () => {
    if (await button(page, 'Unlock').isVisible()) await unlock(page, PASS);
    // Another tab of this origin holds the database open (and ignores requests to close it).
    const other = await page.context().newPage();
    await other.goto(`${origin}/_parley/client/versions`);
    await other.evaluate(() => new Promise((resolve, reject) => {
      const req = indexedDB.open('parley');
      req.onsuccess = () => { window.held = req.result; resolve(); };
      req.onerror = () => reject(req.error);
    }));
    await button(page, 'Panic wipe').click();
    await page.getByRole('dialog', { name: 'Wipe everything?' }).getByRole('button', { name: 'Wipe everything', exact: true }).click();
    await waitAlert(page, 'another Parley tab or window is using');
    await byLabel(page, 'Username').waitFor();
    const status = page.getByRole('status', { name: 'Announcements', exact: true });
    assert.ok(!(await status.textContent()).includes('Everything was wiped'), 'not reported wiped while blocked');
    await shot(page, 'carol', 'wipe-blocked');
    await other.evaluate(() => window.held.close());
    await waitStatus(page, 'Everything was wiped');
    assert.deepEqual(await page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name)), []);
    assert.equal(await page.getByRole('alert').filter({ hasText: 'another Parley tab' }).count(), 0, 'the warning is gone');
    await other.close();
  });
});
