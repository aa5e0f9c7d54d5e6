// Browser test of history for new devices and new members (protocol §7.11 `history`,
// docs/hardening.md "History sharing"): alice on one homeserver, bob and carol on another.
// 1. Alice's second device is added by her first device, which offers to send it her history;
//    "Send history" (by keyboard) makes the second device show the earlier messages, marked
//    imported, and no extra conversation.
// 2. Without the opt-in, a newly added member (dave) sees no earlier message.
// 3. With "Share recent history with new members" on, carol, added next, sees the earlier
//    messages marked "shared by alice".
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNeverArrives, assertNoSecretsInConsole, bubble, button, byLabel, closeBrowsers,
  consoleLines, logIn, openUser, send, shootAll, shot, signUp, startShots, waitMessage, waitStatus,
  waitText,
  invite,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

const conversations = (page) => page.getByRole('list', { name: 'Conversations', exact: true }).getByRole('button');


test('history for a new device of the same user and, opted in, for new members, across two homeservers', { skip: SKIP, timeout: 300000 }, async () => {
  startShots('history');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2);
  cleanups.push(stop);
  const bobId = `@bob:${servers[1].name}`;
  const carolId = `@carol:${servers[1].name}`;
  const daveId = `@dave:${servers[0].name}`;
  const EARLY_ALICE = 'alice said this before the new device';
  const EARLY_BOB = 'bob answered before the new device';
  const alice2Pass = 'alice second device passphrase';
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1]);
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', 'bob vault passphrase');

    // Alice and bob chat across the two homeservers.
    await button(alice, 'New conversation').click();
    await invite(alice, bobId, 60000);
    await send(alice, EARLY_ALICE);
    const bobConv = conversations(bob).first();
    await bobConv.waitFor();
    await bobConv.click();
    await waitMessage(bob, EARLY_ALICE);
    await send(bob, EARLY_BOB);
    await waitMessage(alice, EARLY_BOB);
    await bob.context().close(); // bob's part is done (his device stays a member)

    // 1. Alice logs in on a second device; her first device adds it and offers the history.
    const alice2 = await openUser('alice2', origins[0]);
    await logIn(alice2, 'alice2', origins[0], 'alice', 'alice password 1', alice2Pass);
    const alice2Conv = conversations(alice2).first();
    await alice2Conv.waitFor({ timeout: 60000 });
    await alice2Conv.click();
    await assertNeverArrives(alice2, EARLY_ALICE, 500);
    const offer = alice.getByRole('region', { name: /^Your new device \S+ was added\. Send it your message history\?$/ });
    await offer.waitFor({ timeout: 30000 });
    await shot(alice, 'alice', 'history-offer');
    assert.ok(await offer.getByRole('button', { name: 'Not now', exact: true }).isVisible());
    // Keyboard: the offer's button is focusable and activated by Enter.
    await offer.getByRole('button', { name: 'Send history', exact: true }).focus();
    await alice.keyboard.press('Enter');
    await waitStatus(alice, 'Sent your message history (2 messages in 1 conversation)', 60000);
    await offer.waitFor({ state: 'hidden' });

    await waitStatus(alice2, 'History from your device', 60000);
    await waitMessage(alice2, EARLY_ALICE);
    await waitMessage(alice2, EARLY_BOB);
    await waitText(bubble(alice2, EARLY_ALICE), (t) => t.startsWith('You ·') && t.includes('imported'), 'alice\'s own earlier message, marked imported');
    await waitText(bubble(alice2, EARLY_BOB), (t) => t.startsWith('bob ·') && t.includes('imported'), 'bob\'s earlier message, marked imported');
    // In order, before what was said after the device joined.
    const texts = await alice2.getByRole('list', { name: 'Messages', exact: true }).getByRole('listitem').allTextContents();
    const iA = texts.findIndex((t) => t.includes(EARLY_ALICE));
    const iB = texts.findIndex((t) => t.includes(EARLY_BOB));
    assert.ok(iA >= 0 && iA < iB, `earlier messages in order: ${JSON.stringify(texts)}`);
    await alice2.waitForTimeout(1000);
    assert.equal(await conversations(alice2).count(), 1, 'the group that carried the history is never listed');
    await shot(alice2, 'alice2', 'history-received');
    await alice2.context().close();

    // 2. Without the opt-in, dave (added next) sees nothing from before.
    const dave = await openUser('dave', origins[0]);
    await signUp(dave, 'dave', origins[0], 'dave', 'dave password 1', 'dave vault passphrase');
    const share = alice.getByRole('checkbox', { name: 'Share recent history with new members', exact: true });
    assert.equal(await share.isChecked(), false, 'off by default');
    await invite(alice, daveId, 60000);
    const daveConv = conversations(dave).first();
    await daveConv.waitFor({ timeout: 60000 });
    await daveConv.click();
    await waitMessage(dave, `@alice:${servers[0].name} added you.`);
    await assertNeverArrives(dave, EARLY_ALICE, 4000);
    assert.equal(await alice.getByRole('list', { name: 'Messages', exact: true }).getByRole('listitem').filter({ hasText: 'You shared' }).count(), 0);
    await shot(dave, 'dave', 'no-history');
    await dave.context().close();

    // 3. Opted in: carol, on the other homeserver, gets the recent history, marked as shared.
    const carol = await openUser('carol', origins[1]);
    await signUp(carol, 'carol', origins[1], 'carol', 'carol password 1', 'carol vault passphrase');
    await share.focus();
    await alice.keyboard.press('Space');
    await waitStatus(alice, 'New members of this conversation will get its 100 most recent messages.');
    assert.equal(await share.isChecked(), true);
    await invite(alice, carolId, 60000);
    await waitMessage(alice, `You shared the 2 most recent messages with ${carolId}.`);
    await waitStatus(carol, `History shared by @alice:${servers[0].name}: 2 messages in 1 conversation`, 60000);
    const carolConv = conversations(carol).first();
    await carolConv.click();
    await waitMessage(carol, EARLY_ALICE);
    await waitMessage(carol, EARLY_BOB);
    await waitText(bubble(carol, EARLY_ALICE), (t) => t.startsWith('alice ·') && t.includes('shared by alice'), 'marked shared by alice');
    await waitText(bubble(carol, EARLY_BOB), (t) => t.startsWith('bob ·') && t.includes('shared by alice'), 'marked shared by alice');
    await carol.waitForTimeout(1000);
    assert.equal(await conversations(carol).count(), 1, 'the group that carried the history is never listed');
    await shot(carol, 'carol', 'shared-history');

    assertNoSecretsInConsole([EARLY_ALICE, EARLY_BOB, alice2Pass]);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await closeBrowsers();
    for (const c of cleanups.splice(0)) await c().catch(() => {});
  }
});
