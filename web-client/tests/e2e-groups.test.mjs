// Browser test of "groups people can recognise" (protocol §7.11 `group_profile`, `mentions`):
// alice on one homeserver and bob on another. Alice names the group and sets a topic (bob sees
// the name in his list and header, and the topic), mentions bob (highlighted, "mentions you" in
// his list); bob's browser notifications (a stubbed Notification API) name the conversation
// but never show the text; after a reload name, topic and unread count are still there; bob
// finds an earlier message by searching his local history and lands on it.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, bubble, button, byLabel, closeBrowsers, consoleLines, openUser,
  send, shootAll, shot, signUp, startShots, unlock, waitMessage, waitStatus, waitText,
  invite,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

/** Replaces window.Notification by a recorder (permission granted on request). */
function stubNotifications() {
  window.__notes = [];
  class FakeNotification {
    constructor(title, opts = {}) { window.__notes.push({ title, body: opts.body, tag: opts.tag }); }
  }
  FakeNotification.permission = 'default';
  FakeNotification.requestPermission = async () => {
    FakeNotification.permission = 'granted';
    return 'granted';
  };
  window.Notification = FakeNotification;
}

/** A `w`×`h` orange PNG (the group picture). */
function png(w, h) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) raw.set([242, 140, 40], y * (w * 3 + 1) + 1 + x * 3);
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const notes = (page) => page.evaluate(() => window.__notes || []);

async function waitNotes(page, n, what) {
  const deadline = Date.now() + 20000;
  let last = [];
  while (Date.now() < deadline) {
    last = await notes(page);
    if (last.length >= n) return last;
    await page.waitForTimeout(100);
  }
  throw new Error(`${what}: notifications ${JSON.stringify(last)}`);
}

test('group name, topic, mentions, notifications, search and unread counts across two homeservers', { skip: SKIP, timeout: 240000 }, async () => {
  startShots('groups');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2);
  cleanups.push(stop);
  const bobId = `@bob:${servers[1].name}`;
  const bobPass = 'bob vault passphrase';
  const EARLY = 'the quick zebra crossing';
  const MENTION = 'hello @bob, look at this';
  const NAME = 'Zebra Club';
  const TOPIC = 'Stripes only, <b>no</b> spots';
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1]);
    await bob.addInitScript(stubNotifications);
    await bob.reload();
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', bobPass);

    // Bob turns notifications on (the permission is asked on his action).
    await button(bob, 'Settings').click();
    const settings = bob.getByRole('dialog', { name: 'Settings' });
    await settings.getByRole('checkbox', { name: 'Notifications', exact: true }).check();
    await waitStatus(bob, 'Notifications are on.');
    assert.equal(await settings.getByRole('checkbox', { name: 'Show message text in notifications' }).isChecked(), false, 'text off by default');
    await settings.getByRole('button', { name: 'Close', exact: true }).click();

    // Alice starts a group with bob and writes while bob looks elsewhere.
    await button(alice, 'New conversation').click();
    await invite(alice, bobId);
    await bob.getByRole('button', { name: /^alice, 1 unread/ }).waitFor();
    await send(alice, EARLY);
    await bob.getByRole('button', { name: /^alice, 2 unread/ }).waitFor();
    const first = await waitNotes(bob, 1, 'a notification for the text');
    assert.deepEqual(first[0], { title: 'alice', body: 'New message', tag: first[0].tag }, 'no plaintext by default');

    // 1. Alice names the group and sets a topic (keyboard: the control is a button).
    await button(alice, 'Group settings').focus();
    await alice.keyboard.press('Enter');
    const gs = alice.getByRole('dialog', { name: 'Group settings' });
    await gs.waitFor();
    await gs.getByRole('textbox', { name: 'Group name' }).fill(NAME);
    await gs.getByRole('textbox', { name: 'Topic' }).fill(TOPIC);
    await gs.getByLabel('Group picture', { exact: true }).setInputFiles({ name: 'club.png', mimeType: 'image/png', buffer: png(200, 150) });
    await gs.getByRole('button', { name: 'Save group settings' }).click();
    await waitMessage(alice, `You named the group "${NAME}" and changed the topic.`);
    await waitMessage(alice, 'You changed the group picture.');
    await alice.getByRole('heading', { name: NAME, exact: true }).waitFor();
    await alice.getByRole('img', { name: 'Group picture' }).waitFor();
    await shot(alice, 'alice', 'named');

    const bobConv = bob.getByRole('button', { name: /^Zebra Club, 2 unread$/ });
    await bobConv.waitFor();
    await bobConv.click();
    await bob.getByRole('heading', { name: NAME, exact: true }).waitFor();
    await waitText(bob.locator('#conv-topic'), (t) => t === TOPIC, 'bob sees the topic as text');
    assert.equal(await bob.locator('#conv-topic b').count(), 0, 'the topic is never markup');
    await waitMessage(bob, `alice named the group "${NAME}" and changed the topic.`);
    await waitMessage(bob, 'alice changed the group picture.');
    const pic = bob.getByRole('img', { name: 'Group picture' });
    await pic.waitFor();
    assert.match(await pic.getAttribute('src'), /^data:image\/jpeg;base64,/);
    await shot(bob, 'bob', 'named');

    // 2. Bob looks elsewhere; alice mentions him.
    await button(bob, 'New conversation').click();
    await waitStatus(bob, 'New conversation created');
    await send(alice, MENTION);
    await bob.getByRole('button', { name: /^Zebra Club, 1 unread, mentions you$/ }).waitFor();
    const all = await waitNotes(bob, 2, 'a notification for the mention');
    assert.deepEqual(all.at(-1), { title: NAME, body: 'You were mentioned', tag: all.at(-1).tag });
    for (const n of all) assert.ok(!JSON.stringify(n).includes('zebra crossing') && !JSON.stringify(n).includes('look at this'), 'no plaintext in notifications');

    // 3. After a reload: name, topic, unread count and mention are still there.
    await bob.waitForTimeout(500);
    await bob.reload();
    await unlock(bob, bobPass);
    const again = bob.getByRole('button', { name: /^Zebra Club, 1 unread, mentions you$/ });
    await again.waitFor();
    await shot(bob, 'bob', 'after-reload');
    await again.click();
    await bob.getByRole('heading', { name: NAME, exact: true }).waitFor();
    await waitText(bob.locator('#conv-topic'), (t) => t === TOPIC, 'the topic after a reload');
    const mentioned = bubble(bob, MENTION);
    await waitText(mentioned, (t) => t.includes('mentions you'), 'the mention is marked');
    assert.match(await mentioned.getAttribute('class'), /\bmention\b/);
    await bob.getByRole('button', { name: /^Zebra Club$/ }).waitFor(); // read now
    await shot(bob, 'bob', 'mention');

    // 4. Bob searches his history from elsewhere and lands on the earlier message.
    await button(bob, 'New conversation').click();
    await waitStatus(bob, 'New conversation created');
    await byLabel(bob, 'Search messages').fill('QUICK zebra');
    const results = bob.getByRole('list', { name: 'Search results' });
    const hit = results.getByRole('button', { name: new RegExp(`^${NAME}, alice: ${EARLY}$`) });
    await hit.waitFor();
    assert.equal(await results.getByRole('button').count(), 1);
    await hit.click();
    await bob.getByRole('heading', { name: NAME, exact: true }).waitFor();
    const focused = await bob.evaluate(() => document.activeElement && document.activeElement.textContent);
    assert.ok(focused && focused.includes(EARLY), `the found message has focus: ${focused}`);
    await shot(bob, 'bob', 'search');

    assertNoSecretsInConsole([EARLY, MENTION, bobPass]);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await closeBrowsers();
    for (const c of cleanups.splice(0)) await c().catch(() => {});
  }
});
