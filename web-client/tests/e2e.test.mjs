// End-to-end: real homeserver(s), Debian's Chromium driven by playwright-core, two users in
// separate browser profiles. Elements are found by role and accessible name only.
//
// Env: PARLEY_BIN (default ../target/debug/parley), CHROMIUM (default /usr/bin/chromium),
// PARLEY_E2E_SERVERS=1,2 (default) runs the scenario on one homeserver, then with bob on a
// second one (federation); e.g. PARLEY_E2E_SERVERS=1 for only the first,
// PARLEY_E2E_FRONT=1 to force the static front server, PARLEY_E2E=0 to skip.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, startHomeservers, webOrigin } from './harness.mjs';
import {
  SKIP, TIMEOUT, assertNeverArrives, assertNoSecretsInConsole, browsers, button, byLabel,
  closeBrowsers, consoleLines, messages, openUser, readSafetyNumber, send, shootAll, shot,
  signUp, startShots, unlock, waitAlert, waitBubbleState, waitMessage, waitStatus, waitText,
  invite,
} from './browser.mjs';

const servers = [];
const fronts = [];

async function vaultBytesContain(page, needle) {
  return page.evaluate(async (n) => new Promise((resolve, reject) => {
    const req = indexedDB.open('parley');
    req.onerror = () => reject(req.error);
    req.onsuccess = () => {
      const db = req.result;
      const get = db.transaction('kv').objectStore('kv').get('vault');
      get.onsuccess = () => {
        const bytes = get.result.blob;
        const hay = Array.from(bytes, (b) => String.fromCharCode(b)).join('');
        db.close();
        resolve({ size: bytes.length, found: hay.includes(n) });
      };
      get.onerror = () => reject(get.error);
    };
  }), needle);
}

async function setUp(count) {
  servers.push(...await startHomeservers(count, { log: process.env.PARLEY_E2E_LOG === '1' }));
  for (const hs of servers) fronts.push(await webOrigin(hs));
}

async function tearDown() {
  await closeBrowsers();
  for (const f of fronts.splice(0)) await f.stop().catch(() => {});
  for (const s of servers.splice(0)) await s.stop().catch(() => {});
}

after(tearDown);

// Both users on one homeserver, then alice and bob on two federating homeservers (docs/protocol.md#server-server-api).
const MODES = (process.env.PARLEY_E2E_SERVERS || '1,2').split(',').map(Number);
for (const count of MODES) {
  const title = count === 1 ? 'one homeserver' : `${count} homeservers`;
  test(`alice and bob chat end to end in the browser (${title})`, { skip: SKIP, timeout: 240000 }, async () => {
    startShots(count === 1 ? 'single' : 'federated');
    consoleLines.length = 0;
    await setUp(count);
    try {
      await scenario();
    } finally {
      await tearDown();
    }
  });
}

// Direct messages, typing, read receipts, a second device, remove and leave — with bob on a
// second homeserver (one when only PARLEY_E2E_SERVERS=1 is asked for).
test('DMs, typing, read receipts, a second device, remove and leave in the browser', { skip: SKIP, timeout: 300000 }, async () => {
  startShots('features');
  consoleLines.length = 0;
  await setUp(MODES.includes(2) ? 2 : 1);
  try {
    await featureScenario();
  } catch (err) {
    await shootAll(); // every page at the failure, for the test artefacts
    throw err;
  } finally {
    await tearDown();
  }
});

test('a page whose WASM cannot load shows a clear error screen', { skip: SKIP, timeout: 60000 }, async () => {
  startShots('nowasm');
  await setUp(1);
  try {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-nowasm-'));
    const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
    browsers.push({ ctx, dir });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(TIMEOUT);
    await page.route('**/*.wasm', (route) => route.fulfill({ status: 404, body: 'gone' }));
    await page.goto(fronts[0].url);
    await page.getByRole('alert').filter({ hasText: 'The encryption engine could not be loaded' }).waitFor();
    assert.equal(await page.getByLabel('Username', { exact: true }).filter({ visible: true }).count(), 0);
    await shot(page, 'visitor', 'wasm-error');
  } finally {
    await tearDown();
  }
});

async function scenario() {
  const aliceOrigin = fronts[0].url;
  const bobOrigin = fronts[fronts.length - 1].url;
  const bobServer = servers[servers.length - 1].name;
  const alicePass = 'alice vault passphrase';
  const bobPass = 'bob vault passphrase';

  const alice = await openUser('alice', aliceOrigin);
  const bob = await openUser('bob', bobOrigin);

  // 1. Sign up, vault passphrase, keys published.
  await signUp(alice, 'alice', aliceOrigin, 'alice', 'alice password 1', alicePass);
  await signUp(bob, 'bob', bobOrigin, 'bob', 'bob password 1', bobPass);

  // 2. Alice creates a group and invites bob.
  await button(alice, 'New conversation').click();
  await byLabel(alice, 'User to invite').waitFor();
  await byLabel(alice, 'User to invite').fill(`@bob:${bobServer}`);
  await button(alice, 'Invite').click();
  await waitStatus(alice, 'was added');
  await shot(alice, 'alice', 'invited-bob');

  // 3. Bob sees the conversation (with an unread marker) and opens it.
  const bobConv = bob.getByRole('button', { name: /^alice/ });
  await bobConv.waitFor();
  await shot(bob, 'bob', 'conversation-appears');
  await bobConv.click();

  // 4. Messages both ways.
  await send(alice, 'hello bob');
  await waitMessage(bob, 'hello bob');
  await shot(bob, 'bob', 'received-hello');
  await send(bob, 'hi alice');
  await waitMessage(alice, 'hi alice');
  await shot(alice, 'alice', 'received-hi');

  // 5. Safety numbers match on both sides; both mark each other verified.
  const a = await readSafetyNumber(alice);
  const b = await readSafetyNumber(bob);
  assert.match(a.number.replace(/\s/g, ''), /^\d{60}$/);
  assert.equal(a.number, b.number, 'safety numbers must be identical on both sides');
  await shot(alice, 'alice', 'verify-dialog');
  await button(alice, 'Mark as verified').click();
  await waitStatus(alice, 'marked as verified');
  await button(bob, 'Mark as verified').click();
  await waitStatus(bob, 'marked as verified');
  await button(alice, 'Close').click();
  await button(bob, 'Close').click();
  await alice.getByRole('img', { name: 'Verified' }).waitFor();
  await bob.getByRole('img', { name: 'Verified' }).waitFor();
  await shot(alice, 'alice', 'verified-badge');

  // 6. The vault in IndexedDB is sealed: no plaintext in it.
  const sealed = await vaultBytesContain(bob, 'hello bob');
  assert.ok(sealed.size > 1000);
  assert.equal(sealed.found, false, 'plaintext must not reach IndexedDB');

  // 7. Bob reloads: locked; a wrong passphrase is refused; the right one restores everything.
  await bob.reload();
  await byLabel(bob, 'Vault passphrase').waitFor();
  await shot(bob, 'bob', 'reload-locked');
  await byLabel(bob, 'Vault passphrase').fill('not the passphrase');
  await button(bob, 'Unlock').click();
  await waitAlert(bob, 'Wrong passphrase');
  await shot(bob, 'bob', 'wrong-passphrase');
  assert.equal(await button(bob, 'Lock').isVisible(), false);
  await unlock(bob, bobPass);
  await bob.getByRole('button', { name: /^alice/ }).click();
  await waitMessage(bob, 'hello bob');
  await waitMessage(bob, 'hi alice');
  await bob.getByRole('img', { name: 'Verified' }).waitFor();
  await shot(bob, 'bob', 'unlocked-after-reload');

  // The group still works after the reload, both ways.
  await send(alice, 'after reload');
  await waitMessage(bob, 'after reload');
  await send(bob, 'still here');
  await waitMessage(alice, 'still here');

  // 8. Lock and unlock.
  await button(bob, 'Lock').click();
  await button(bob, 'Unlock').waitFor();
  assert.equal(await messages(bob).isVisible(), false);
  await shot(bob, 'bob', 'locked');
  await unlock(bob, bobPass);
  await bob.getByRole('button', { name: /^alice/ }).click();
  await waitMessage(bob, 'still here');
  await shot(bob, 'bob', 'unlocked');

  // 9. Panic wipe (with confirmation) leaves nothing in IndexedDB.
  await button(bob, 'Panic wipe').click();
  const confirm = bob.getByRole('dialog', { name: 'Wipe everything?' });
  await confirm.waitFor();
  await shot(bob, 'bob', 'panic-confirm');
  await confirm.getByRole('button', { name: 'Wipe everything', exact: true }).click();
  await byLabel(bob, 'Username').waitFor();
  const dbs = await bob.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
  assert.deepEqual(dbs, [], 'IndexedDB must be empty after a panic wipe');
  await bob.reload();
  await byLabel(bob, 'Username').waitFor();
  assert.deepEqual(await bob.evaluate(async () => (await indexedDB.databases()).length), 0);
  await shot(bob, 'bob', 'wiped');

  // Nothing secret in the console.
  assertNoSecretsInConsole(['hello bob', 'hi alice', alicePass, bobPass]);
}

async function featureScenario() {
  const aliceOrigin = fronts[0].url;
  const bobOrigin = fronts[fronts.length - 1].url;
  const aliceId = `@alice:${servers[0].name}`;
  const bobId = `@bob:${servers[servers.length - 1].name}`;
  const alicePass = 'alice vault passphrase';
  const alice2Pass = 'alice second device passphrase';

  const alice = await openUser('alice', aliceOrigin);
  const bob = await openUser('bob', bobOrigin);
  await signUp(alice, 'alice', aliceOrigin, 'alice', 'alice password 1', alicePass);
  await signUp(bob, 'bob', bobOrigin, 'bob', 'bob password 1', 'bob vault passphrase');

  // 1. Bad input for a DM is a clear message.
  await byLabel(alice, 'Direct message to').fill('not a user id');
  await button(alice, 'New direct message').click();
  await waitAlert(alice, 'Enter a user id like @name:server');
  await byLabel(alice, 'Direct message to').fill(`@nobody:${servers[0].name}`);
  await button(alice, 'New direct message').click();
  await waitAlert(alice, `There is no user @nobody:${servers[0].name}`);
  assert.equal(await alice.getByRole('list', { name: 'Conversations' }).getByRole('button').count(), 0);

  // 2. Alice starts a DM with bob (on the other server): listed under bob's name for her, under
  // alice's for him; bob starting a DM with alice reuses it.
  await byLabel(alice, 'Direct message to').fill(bobId);
  await button(alice, 'New direct message').click();
  await waitStatus(alice, `Direct message with ${bobId} started`);
  await button(alice, 'bob, direct message').waitFor();
  await shot(alice, 'alice', 'dm-started');
  const bobDm = bob.getByRole('button', { name: /^alice, direct message/ });
  await bobDm.waitFor();
  await bobDm.click();
  await byLabel(bob, 'Direct message to').fill(aliceId);
  await button(bob, 'New direct message').click();
  await waitStatus(bob, `Opened your direct message with ${aliceId}`);
  assert.equal(await bob.getByRole('list', { name: 'Conversations' }).getByRole('button').count(), 1, 'the DM is reused');
  await shot(bob, 'bob', 'dm-reused');

  // 3. Typing: "alice is typing…" on bob's side, gone after ~5 s; never a bubble.
  const bobBubbles = await messages(bob).getByRole('listitem').count();
  await byLabel(alice, 'Message').fill('hel');
  const typing = bob.getByRole('status', { name: 'Typing', exact: true });
  await waitText(typing, (t) => t === 'alice is typing…', 'bob never saw alice typing');
  await shot(bob, 'bob', 'alice-typing');
  const shownAt = Date.now();
  await waitText(typing, (t) => t === '', 'the typing notice never expired', 10000);
  assert.ok(Date.now() - shownAt > 3000, 'the typing notice stays for a few seconds');
  assert.equal(await messages(bob).getByRole('listitem').count(), bobBubbles, 'typing is not a chat bubble');

  // 4. Read receipts: bob has the DM open, so alice's message goes to "read", and back.
  await send(alice, 'dm hello');
  await waitMessage(bob, 'dm hello');
  await waitBubbleState(alice, 'dm hello', 'read');
  await shot(alice, 'alice', 'dm-read');
  await button(bob, 'Send').waitFor();
  await send(bob, 'dm reply');
  await waitMessage(alice, 'dm reply');
  await waitBubbleState(bob, 'dm reply', 'read');
  assert.equal(await messages(bob).getByRole('listitem').filter({ hasText: /typing|up_to/ }).count(), 0);

  // 5. A second device of alice: logs in, is added to her conversations by the first device,
  // and receives what bob sends afterwards; what it sends reaches bob.
  const alice2 = await openUser('alice2', aliceOrigin);
  await byLabel(alice2, 'Homeserver').fill(aliceOrigin);
  await byLabel(alice2, 'Username').fill('alice');
  await byLabel(alice2, 'Password').fill('alice password 1');
  await button(alice2, 'Log in').click();
  await byLabel(alice2, 'Vault passphrase').fill(alice2Pass);
  await byLabel(alice2, 'Confirm vault passphrase').fill(alice2Pass);
  await button(alice2, 'Create vault').click();
  await button(alice2, 'Lock').waitFor();
  const alice2Dm = alice2.getByRole('button', { name: /^bob, direct message/ });
  await alice2Dm.waitFor({ timeout: 60000 });
  await shot(alice2, 'alice2', 'added-by-first-device');
  await alice2Dm.click();
  await send(bob, 'to both alice devices');
  await waitMessage(alice2, 'to both alice devices');
  await waitMessage(alice, 'to both alice devices');
  await send(alice2, 'from alice second device');
  await waitMessage(bob, 'from alice second device');
  await waitMessage(alice, 'from alice second device');
  await shot(alice2, 'alice2', 'second-device-chat');

  // 6. Remove a member: alice removes bob from a group; her sends still work, bob gets nothing.
  await button(alice, 'New conversation').click();
  await alice.getByRole('heading', { name: 'Only you', exact: true }).waitFor();
  await invite(alice, bobId);
  const bobGroup = bob.getByRole('button', { name: /^alice(, \d+ unread)?$/ });
  await bobGroup.waitFor();
  await bobGroup.click();
  await send(alice, 'group before removal');
  await waitMessage(bob, 'group before removal');
  await button(alice, `Remove ${bobId}`).click();
  await waitStatus(alice, `Removed ${bobId}`);
  await waitMessage(bob, 'You are no longer a member');
  assert.equal(await button(bob, 'Send').isDisabled(), true);
  await send(alice, 'group after removal');
  await waitBubbleState(alice, 'group after removal', 'delivered');
  await shot(alice, 'alice', 'removed-bob');
  await assertNeverArrives(bob, 'group after removal');
  await shot(bob, 'bob', 'removed');

  // 7. Leave: bob leaves the DM; alice's devices commit his removal, her sends still work and
  // reach her second device, bob gets nothing.
  await bob.getByRole('button', { name: /^alice, direct message/ }).click();
  await button(bob, 'Leave conversation').click();
  await waitStatus(bob, 'You left the conversation');
  await button(alice, 'bob, direct message').click();
  await waitMessage(alice, `${bobId} left`);
  await button(alice, `Remove ${bobId}`).waitFor({ state: 'detached' });
  await send(alice, 'dm after bob left');
  await waitBubbleState(alice, 'dm after bob left', 'delivered');
  await waitMessage(alice2, 'dm after bob left');
  await waitMessage(bob, 'You are no longer a member');
  await shot(bob, 'bob', 'left-dm');
  await assertNeverArrives(bob, 'dm after bob left');

  assertNoSecretsInConsole(['dm hello', 'dm reply', 'to both alice devices', alicePass, alice2Pass]);
}
