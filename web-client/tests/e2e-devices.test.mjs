// Browser test of a contact's new device (issue 17 item 6): bob's first device is closed when
// he signs in on a second one; alice's client, told by the hub's `member_devices_changed`
// notice, adds the new device to their DM, which then reads what alice sends. Real homeservers
// (alice on one, bob on another), Debian's Chromium driven by playwright-core.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, button, byLabel, closeBrowsers, consoleLines, logIn, messages,
  openUser, send, shootAll, signUp, startShots, waitMessage, waitStatus,
} from './browser.mjs';

describe('a contact\'s new device, alice and bob on two homeservers', { skip: SKIP, timeout: 240000 }, () => {
  const ALICE_PASS = 'alice vault passphrase';
  const BOB_PASS = 'bob vault passphrase';
  const BOB2_PASS = 'bob laptop passphrase';
  let hs;
  let alice;
  let bob;
  let bobId;

  before(async () => {
    startShots('devices');
    consoleLines.length = 0;
    hs = await startWebHomeservers(2);
    bobId = `@bob:${hs.servers[1].name}`;
    alice = await openUser('alice', hs.origins[0]);
    bob = await openUser('bob', hs.origins[1]);
    await signUp(alice, 'alice', hs.origins[0], 'alice', 'alice password 1', ALICE_PASS);
    await signUp(bob, 'bob', hs.origins[1], 'bob', 'bob password 1', BOB_PASS);
    await byLabel(alice, 'Direct message to').fill(bobId);
    await button(alice, 'New direct message').click();
    await waitStatus(alice, `Direct message with ${bobId} started`);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await send(alice, 'before the laptop');
    await waitMessage(bob, 'before the laptop');
  });

  after(async () => {
    await closeBrowsers();
    if (hs) await hs.stop();
  });

  it('alice\'s client adds bob\'s new device while his first device is offline, and the new device reads the DM', async () => {
    try {
      // Bob's first device is gone (browser closed): only alice can add his laptop.
      await bob.context().close();
      const laptop = await openUser('bob-laptop', hs.origins[1]);
      await logIn(laptop, 'bob-laptop', hs.origins[1], 'bob', 'bob password 1', BOB2_PASS);
      // Alice's conversation tells her what her client did.
      await messages(alice).getByRole('listitem').filter({ hasText: `Added ${bobId}'s new device` }).waitFor({ timeout: 60000 });
      const dm = laptop.getByRole('button', { name: /^alice, direct message/ });
      await dm.waitFor({ timeout: 30000 });
      await dm.click();
      await send(alice, 'hello, laptop');
      await waitMessage(laptop, 'hello, laptop');
      // What the laptop sends reaches alice.
      await send(laptop, 'laptop here');
      await waitMessage(alice, 'laptop here');
      // Messages from before the laptop joined are not readable by it (no history was shared).
      assert.equal(await messages(laptop).getByRole('listitem').filter({ hasText: 'before the laptop' }).count(), 0);
    } catch (err) {
      await shootAll();
      throw err;
    }
  });

  it('no plaintext nor passphrase reaches the browser console', () => {
    assertNoSecretsInConsole(['before the laptop', 'hello, laptop', 'laptop here', ALICE_PASS, BOB_PASS, BOB2_PASS]);
  });
});
