// Browser test of replies, reactions, edits and deletes (protocol §7.11): alice on one
// homeserver and bob on another, in a direct message. Bob replies to alice (she sees the
// quote), alice reacts to the reply (bob sees who), edits her message (bob sees the new text,
// "(edited)"), then deletes it: bob sees the tombstone, also after a reload, and the old text
// is nowhere in his page.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, bubble, button, byLabel, closeBrowsers, consoleLines, messages,
  openUser, send, shootAll, shot, signUp, startShots, unlock, waitMessage, waitStatus, waitText,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

const inBubble = (page, text, name) => bubble(page, text).getByRole('button', { name, exact: true });

test('replies, reactions, edits and deletes across two homeservers', { skip: SKIP, timeout: 240000 }, async () => {
  startShots('rich');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2);
  cleanups.push(stop);
  const bobId = `@bob:${servers[1].name}`;
  const bobPass = 'bob vault passphrase';
  const ORIGINAL = 'original words of alice';
  const EDITED = 'corrected words of alice';
  const REPLY = 'bob answers this';
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1]);
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', bobPass);
    await byLabel(alice, 'Direct message to').fill(bobId);
    await button(alice, 'New direct message').click();
    await waitStatus(alice, `Direct message with ${bobId} started`);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await send(alice, ORIGINAL);
    await waitMessage(bob, ORIGINAL);

    // 1. Bob replies: the composer names what he answers; alice sees the quote.
    await inBubble(bob, ORIGINAL, 'Reply').click();
    await waitText(bob.locator('#compose-context-text'), (t) => t === `Replying to alice: ${ORIGINAL}`, 'bob\'s composer shows the reply');
    await button(bob, 'Cancel reply').waitFor();
    await send(bob, REPLY);
    assert.equal(await bob.locator('#compose-context').isHidden(), true, 'the reply line goes once sent');
    await waitText(bubble(bob, REPLY), (t) => t.includes(`In reply to alice: ${ORIGINAL}`), 'bob\'s reply quotes alice');
    await waitMessage(alice, REPLY);
    await waitText(bubble(alice, REPLY), (t) => t.includes(`In reply to You: ${ORIGINAL}`), 'alice sees the quote');
    await shot(alice, 'alice', 'reply-quoted');

    // 2. Alice reacts 👍 to the reply (keyboard: the picker opens with focus on its first key).
    const reactBtn = inBubble(alice, REPLY, 'React');
    await reactBtn.focus();
    await alice.keyboard.press('Enter');
    await inBubble(alice, REPLY, 'React 👍').waitFor();
    assert.equal(await reactBtn.getAttribute('aria-expanded'), 'true');
    await alice.keyboard.press('Enter'); // the focused "React 👍"
    await inBubble(alice, REPLY, '👍 1: you').waitFor();
    const bobReaction = inBubble(bob, REPLY, '👍 1: alice');
    await bobReaction.waitFor();
    assert.equal(await bobReaction.textContent(), '👍 1');
    assert.equal(await bobReaction.getAttribute('title'), '👍 1: alice');
    assert.equal(await bobReaction.getAttribute('aria-pressed'), 'false');
    await shot(bob, 'bob', 'reaction');
    // Bob adds his own by clicking it; clicking again withdraws it; alice follows both.
    await bobReaction.click();
    await inBubble(bob, REPLY, '👍 2: alice, you').waitFor();
    await inBubble(alice, REPLY, '👍 2: you, bob').waitFor();
    await inBubble(bob, REPLY, '👍 2: alice, you').click();
    await inBubble(bob, REPLY, '👍 1: alice').waitFor();
    await inBubble(alice, REPLY, '👍 1: you').waitFor();

    // 3. Alice edits her message; bob sees the new text and "(edited)", in the quote too.
    assert.equal(await inBubble(bob, ORIGINAL, 'Edit').count(), 0, 'no Edit on someone else\'s message');
    await inBubble(alice, ORIGINAL, 'Edit').click();
    assert.equal(await byLabel(alice, 'Message').inputValue(), ORIGINAL);
    await waitText(alice.locator('#compose-context-text'), (t) => t === 'Editing your message', 'alice\'s composer says she edits');
    await byLabel(alice, 'Message').fill(EDITED);
    await button(alice, 'Send').click();
    await waitText(bubble(alice, EDITED), (t) => t.includes('(edited)'), 'alice\'s bubble is edited');
    await waitText(bubble(bob, EDITED), (t) => t.includes('(edited)') && !t.includes(ORIGINAL), 'bob sees the edit');
    await waitText(bubble(bob, REPLY), (t) => t.includes(`In reply to alice: ${EDITED}`), 'the quote shows the edit');
    await shot(bob, 'bob', 'edited');

    // 4. Alice deletes it, after confirming: a tombstone on both sides.
    await inBubble(alice, EDITED, 'Delete').click();
    const dialog = alice.getByRole('dialog', { name: 'Delete this message?' });
    await dialog.waitFor();
    await dialog.getByRole('button', { name: 'Delete message', exact: true }).click();
    await waitMessage(alice, 'message deleted');
    await waitMessage(bob, 'message deleted');
    await waitText(bubble(bob, REPLY), (t) => t.includes('In reply to message deleted'), 'the quote shows the tombstone');
    const bobPage = await messages(bob).textContent();
    assert.ok(!bobPage.includes(ORIGINAL) && !bobPage.includes(EDITED), 'the deleted text is gone');
    assert.equal(await inBubble(bob, REPLY, '👍 1: alice').count(), 1, 'the reply keeps its reaction');
    await shot(bob, 'bob', 'deleted');

    // 5. After a reload (the vault as sealed), still a tombstone and the text nowhere.
    await bob.waitForTimeout(500);
    await bob.reload();
    await unlock(bob, bobPass);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await waitMessage(bob, REPLY);
    await waitMessage(bob, 'message deleted');
    await inBubble(bob, REPLY, '👍 1: alice').waitFor();
    const html = await bob.content();
    assert.ok(!html.includes(ORIGINAL) && !html.includes(EDITED), 'the deleted text is nowhere in the page');
    await shot(bob, 'bob', 'after-reload');

    assertNoSecretsInConsole([ORIGINAL, EDITED, REPLY, bobPass]);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await closeBrowsers();
    for (const c of cleanups.splice(0)) await c().catch(() => {});
  }
});
