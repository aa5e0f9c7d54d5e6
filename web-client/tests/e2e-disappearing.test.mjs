// Browser test of disappearing messages (docs/protocol.md#disappearing-messages): alice on one
// homeserver (admin of her conversation) sets messages to disappear after 30 seconds in the
// group settings; bob on the second homeserver sees the notice, cannot change the setting, and
// gets alice's message, which his client deletes once 30 seconds have passed (his page clock is
// run forward). Alice turns the timer off: bob sees the notice, and the next message stays.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, bubble, button, byLabel, closeBrowsers, consoleLines, invite,
  openUser, send, shootAll, shot, signUp, startShots, waitMessage, waitStatus,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

const dialog = (page) => page.getByRole('dialog', { name: 'Group settings', exact: true });

async function openSettings(page) {
  await button(page, 'Group settings').click();
  await dialog(page).waitFor();
}

async function closeSettings(page) {
  await button(page, 'Cancel').click();
  await dialog(page).waitFor({ state: 'hidden' });
}

test('disappearing messages: an admin sets the timer, every member is told and the messages go', { skip: SKIP, timeout: 300000 }, async () => {
  startShots('disappearing');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2);
  cleanups.push(stop);
  const bobId = `@bob:${servers[1].name}`;
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1], { clock: true });
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', 'bob vault passphrase');
    await button(alice, 'New conversation').click();
    await alice.getByRole('heading', { name: 'Only you', exact: true }).waitFor();
    await invite(alice, bobId);
    const bobConv = bob.getByRole('button', { name: /^alice/ });
    await bobConv.waitFor();
    await bobConv.click();

    // 1. Alice (admin) sets 30 seconds; both see the line.
    await openSettings(alice);
    await byLabel(alice, 'Messages disappear after').selectOption({ label: '30 seconds' });
    await waitStatus(alice, 'Messages now disappear after 30 seconds.');
    await dialog(alice).getByText('New messages disappear 30 seconds after they are sent').waitFor();
    await shot(alice, 'alice', 'timer-set');
    await closeSettings(alice);
    await waitMessage(alice, 'You set messages to disappear after 30 seconds.');
    await waitMessage(bob, 'alice set messages to disappear after 30 seconds.');

    // 2. Bob, no admin, sees the setting but cannot change it.
    await openSettings(bob);
    assert.equal(await byLabel(bob, 'Messages disappear after').isDisabled(), true);
    await dialog(bob).getByText('Only an admin can change this.').waitFor();
    await closeSettings(bob);

    // 3. A message arrives, then disappears from bob's client once its time is up.
    await send(alice, 'vanishing words');
    await waitMessage(bob, 'vanishing words');
    await bob.clock.fastForward(31000);
    await bubble(bob, 'vanishing words').waitFor({ state: 'detached' });
    await shot(bob, 'bob', 'gone');

    // 4. Off again: the notice, and the next message stays.
    await openSettings(alice);
    await byLabel(alice, 'Messages disappear after').selectOption({ label: 'Never (off)' });
    await waitStatus(alice, 'Disappearing messages are off.');
    await closeSettings(alice);
    await waitMessage(bob, 'alice turned off disappearing messages.');
    await send(alice, 'words that stay');
    await waitMessage(bob, 'words that stay');
    await bob.clock.fastForward(60000);
    await new Promise((r) => { setTimeout(r, 1500); });
    assert.equal(await bubble(bob, 'words that stay').count(), 1, 'a message sent with the timer off stays');
    assertNoSecretsInConsole(['vanishing words', 'words that stay', 'vault passphrase']);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await closeBrowsers();
    for (const c of cleanups.splice(0)) await c().catch(() => {});
  }
});
