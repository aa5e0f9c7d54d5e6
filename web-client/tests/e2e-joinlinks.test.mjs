// Browser test of join links (docs/protocol.md#join-links): alice on one homeserver creates a
// conversation (she is its admin) and turns on joining by link in its group settings; bob on
// the second homeserver pastes the link into "Join by link" and is in: both see the system
// lines and talk. Bob (no admin) sees the link but no controls. Alice makes a new link: the old
// one is refused for carol; alice turns joining off: the new one is refused too, and a
// malformed link is refused before anything is sent.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, byLabel, button, closeBrowsers, consoleLines,
  openUser, send, shootAll, shot, signUp, startShots, waitAlert, waitMessage, waitStatus,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

const dialog = (page) => page.getByRole('dialog', { name: 'Group settings', exact: true });

/** Opens the group settings and reads the join link shown ('' when off). */
async function readLink(page) {
  await button(page, 'Group settings').click();
  await dialog(page).waitFor();
  const row = byLabel(page, 'Link to share');
  return (await row.count()) ? row.inputValue() : '';
}

async function closeSettings(page) {
  await button(page, 'Cancel').click();
  await dialog(page).waitFor({ state: 'hidden' });
}

async function joinByLink(page, link) {
  await byLabel(page, 'Join by link').fill(link);
  await button(page, 'Join by link').click();
}

test('join links: an admin turns joining on, a user on another server joins; rotated and closed links are refused', { skip: SKIP, timeout: 300000 }, async () => {
  startShots('joinlinks');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2);
  cleanups.push(stop);
  const aliceId = `@alice:${servers[0].name}`;
  const bobId = `@bob:${servers[1].name}`;
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1]);
    const carol = await openUser('carol', origins[0]);
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', 'bob vault passphrase');
    await signUp(carol, 'carol', origins[0], 'carol', 'carol password 1', 'carol vault passphrase');

    // 1. Alice creates a conversation; joining by link is off until she turns it on.
    await button(alice, 'New conversation').click();
    await alice.getByRole('heading', { name: 'Only you', exact: true }).waitFor();
    assert.equal(await readLink(alice), '', 'no link before it is turned on');
    await dialog(alice).getByText('Joining by link is off.').waitFor();
    await button(alice, 'Turn on joining by link').click();
    await waitStatus(alice, 'Joining by link is on.');
    const link = await byLabel(alice, 'Link to share').inputValue();
    assert.match(link, /^parley:!.+\?via=.+&code=[A-Za-z0-9_-]{16,64}$/);
    await shot(alice, 'alice', 'link-on');
    await closeSettings(alice);
    await waitMessage(alice, 'You turned on joining by link.');

    // 2. Bob, on the other server, joins with the link; both see it and talk.
    await joinByLink(bob, link);
    await waitStatus(bob, 'You joined the conversation.');
    await waitMessage(bob, 'You joined with a join link.');
    await waitMessage(alice, `${bobId} joined with the join link.`);
    await send(alice, 'hello bob');
    await waitMessage(bob, 'hello bob');
    await send(bob, 'hi alice');
    await waitMessage(alice, 'hi alice');
    await shot(bob, 'bob', 'joined');

    // 3. Bob sees the link (to share it) but none of the admin's controls.
    assert.equal(await readLink(bob), link);
    assert.equal(await button(bob, 'Make a new join link').count(), 0, 'no controls for a non-admin');
    assert.equal(await button(bob, 'Turn off joining by link').count(), 0);
    await closeSettings(bob);

    // 4. A malformed link is refused at once.
    await joinByLink(carol, 'parley:not a link');
    await waitAlert(carol, 'This is not a join link');

    // 5. Alice makes a new link: the old one is refused for carol, everyone sees the line.
    await readLink(alice);
    await button(alice, 'Make a new join link').click();
    await waitStatus(alice, 'New join link made; the old one no longer works.');
    const rotated = await byLabel(alice, 'Link to share').inputValue();
    assert.notEqual(rotated, link);
    await closeSettings(alice);
    await waitMessage(bob, 'alice made a new join link; the old one no longer works.');
    await joinByLink(carol, link);
    await waitAlert(carol, 'This join link does not work');

    // 6. Alice turns joining off: the new link is refused as well; carol holds no conversation.
    await readLink(alice);
    await button(alice, 'Turn off joining by link').click();
    await waitStatus(alice, 'Joining by link is off.');
    await closeSettings(alice);
    await waitMessage(bob, 'alice turned off joining by link.');
    await joinByLink(carol, rotated);
    await waitAlert(carol, 'This join link does not work');
    assert.equal(await carol.getByRole('button', { name: /^alice/ }).count(), 0, 'carol is in no conversation');
    await shot(carol, 'carol', 'refused');

    // 7. The conversation goes on for the members.
    await send(bob, 'still here');
    await waitMessage(alice, 'still here');
    assert.ok(aliceId);
    assertNoSecretsInConsole(['hello bob', 'hi alice', 'still here', 'vault passphrase', link.split('code=')[1]]);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await closeBrowsers();
    for (const c of cleanups.splice(0)) await c().catch(() => {});
  }
});
