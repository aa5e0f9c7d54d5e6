// Browser test of group roles (docs/protocol.md#group-roles): alice on one homeserver creates a
// group (with roles: she is its only admin) and invites bob (second homeserver) and carol (hers).
// Only an admin sees the controls that change membership and roles: alice sees "Make admin",
// "Remove" and the invite form, bob does not. Alice makes bob an admin: every member sees the
// "admin" badge on bob and the system line, and bob now gets the controls; bob removes carol,
// who sees she is no longer a member, and alice sees carol gone. The last admin cannot leave
// while others remain.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNeverArrives, assertNoSecretsInConsole, byLabel, button, closeBrowsers, consoleLines,
  openUser, send, shootAll, shot, signUp, startShots, waitAlert, waitMessage, waitStatus,
  invite,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

const members = (page) => page.getByRole('list', { name: 'Members', exact: true });
const adminBadge = (page, user) => members(page).getByRole('img', { name: `${user} is an admin`, exact: true });

test('group roles: only admins manage members; a promoted member can remove others', { skip: SKIP, timeout: 300000 }, async () => {
  startShots('roles');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2);
  cleanups.push(stop);
  const aliceId = `@alice:${servers[0].name}`;
  const bobId = `@bob:${servers[1].name}`;
  const carolId = `@carol:${servers[0].name}`;
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1]);
    const carol = await openUser('carol', origins[0]);
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', 'bob vault passphrase');
    await signUp(carol, 'carol', origins[0], 'carol', 'carol password 1', 'carol vault passphrase');

    // 1. Alice creates a group (she is its admin) and invites bob and carol.
    await button(alice, 'New conversation').click();
    await alice.getByRole('heading', { name: 'Only you', exact: true }).waitFor();
    await adminBadge(alice, aliceId).waitFor();
    for (const uid of [bobId, carolId]) await invite(alice, uid);
    await button(alice, `Remove ${bobId}`).waitFor();
    await button(alice, `Make ${bobId} an admin`).waitFor();
    await button(alice, `Make ${carolId} an admin`).waitFor();
    await button(alice, `Remove ${carolId}`).waitFor();
    assert.equal(await adminBadge(alice, bobId).count(), 0, 'bob is no admin yet');
    await shot(alice, 'alice', 'admin-controls');

    // 2. Bob (no admin) sees the badge on alice but none of the controls, nor the invite form.
    const bobConv = bob.getByRole('button', { name: /^alice/ });
    await bobConv.waitFor();
    await bobConv.click();
    await members(bob).getByText(`${carolId}`, { exact: true }).waitFor();
    await adminBadge(bob, aliceId).waitFor();
    assert.equal(await button(bob, `Remove ${carolId}`).count(), 0, 'no Remove for a non-admin');
    assert.equal(await button(bob, `Remove ${aliceId}`).count(), 0);
    assert.equal(await button(bob, `Make ${carolId} an admin`).count(), 0, 'no Make admin for a non-admin');
    assert.equal(await byLabel(bob, 'User to invite').count(), 0, 'no invite form for a non-admin');
    await bob.getByText('Only an admin can invite or remove members.').waitFor();
    await shot(bob, 'bob', 'no-controls');

    const carolConv = carol.getByRole('button', { name: /^alice/ });
    await carolConv.waitFor();
    await carolConv.click();
    await send(alice, 'welcome both');
    await waitMessage(bob, 'welcome both');
    await waitMessage(carol, 'welcome both');

    // 3. The last admin cannot leave while others remain.
    await button(alice, 'Leave conversation').click();
    await waitAlert(alice, 'Make another member an admin before you leave.');

    // 4. Alice makes bob an admin: the badge and the line everywhere; bob gets the controls.
    await button(alice, `Make ${bobId} an admin`).click();
    await waitStatus(alice, `${bobId} is now an admin`);
    await waitMessage(alice, 'You made bob an admin.');
    await adminBadge(alice, bobId).waitFor();
    await button(alice, `Remove ${bobId} as admin`).waitFor();
    await waitMessage(bob, 'alice made you an admin.');
    await adminBadge(bob, bobId).waitFor();
    await button(bob, `Remove ${carolId}`).waitFor();
    await button(bob, `Make ${carolId} an admin`).waitFor();
    await button(bob, `Remove ${aliceId} as admin`).waitFor();
    await byLabel(bob, 'User to invite').waitFor();
    await waitMessage(carol, 'alice made bob an admin.');
    await adminBadge(carol, bobId).waitFor();
    assert.equal(await button(carol, `Remove ${bobId}`).count(), 0, 'carol is still no admin');
    await shot(bob, 'bob', 'promoted');

    // 5. Bob removes carol: she is told, alice sees her gone, and carol gets nothing more.
    await button(bob, `Remove ${carolId}`).click();
    await waitStatus(bob, `Removed ${carolId}`);
    await waitMessage(bob, `You removed ${carolId}.`);
    await waitMessage(carol, 'You are no longer a member');
    assert.equal(await button(carol, 'Send').isDisabled(), true);
    await waitMessage(alice, `${carolId} left or was removed.`);
    await button(alice, `Remove ${carolId}`).waitFor({ state: 'detached' });
    assert.equal(await members(alice).getByText(carolId, { exact: true }).count(), 0, 'carol is gone from alice\'s list');
    await shot(alice, 'alice', 'carol-removed');
    await shot(carol, 'carol', 'removed');
    await send(alice, 'after carol');
    await waitMessage(bob, 'after carol');
    await assertNeverArrives(carol, 'after carol');

    assertNoSecretsInConsole(['welcome both', 'after carol', 'vault passphrase']);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await closeBrowsers();
    for (const c of cleanups.splice(0)) await c().catch(() => {});
  }
});
