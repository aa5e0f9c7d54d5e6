// Unit tests of the JS glue's pure logic (node --test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  durationText, stampExpiry, dropExpired,
  IdleTimer, Queue, Saver, backoffMs, bumpOrder, checkNewPassphrase, commitWithRetry,
  conversationLabel, conversationTitle, describeError, emptyAppState, errorCode,
  formatSafetyNumber, keyPackagesToUpload, lastMessagePreview, localpart, normaliseUserId,
  parseAutoLockMinutes, parsePayload, pushMessage, serverOf, withDeviceKeys,
  parseNotice, Throttle, dmPeer, findDm, isDm, latestIncomingSeq, ownDeviceDelta, ownMessageState, typingLabel,
  ciphertextSize, describeMediaError, humanSize, isPreviewMime, limitInMb, parseFileDescriptor,
  sanitizeFilename, thumbnailSize, uploadRefusal,
  MAX_BODY_CHARS, addChatMessage, applyAction, findBySeq, hasReacted, reactionSummary, replyQuote,
  applyGroupProfile, mentionsIn, mentionsUser, notificationFor, profileNotice, searchMessages,
} from '../app/logic.js';

test('engine error codes are parsed and described without internals', () => {
  assert.equal(errorCode(new Error('[VaultDecrypt] wrong passphrase or tampered vault')), 'VaultDecrypt');
  assert.equal(errorCode(new Error('plain')), null);
  assert.equal(describeError(new Error('[VaultDecrypt] x')), 'Wrong passphrase.');
  assert.equal(describeError(new Error('[UnknownGroup] unknown group')), 'unknown group');
  assert.equal(describeError({ errcode: 'P_FORBIDDEN', error: 'no' }), 'no (P_FORBIDDEN)');
});

test('reconnect backoff grows to 30 s with bounded jitter', () => {
  assert.equal(backoffMs(0, () => 0), 1000);
  assert.equal(backoffMs(1, () => 0), 2000);
  assert.equal(backoffMs(3, () => 0), 8000);
  assert.equal(backoffMs(20, () => 0), 30000);
  assert.equal(backoffMs(20, () => 1), 24000);
});

test('user ids: localpart, server, completion and refusal', () => {
  assert.equal(localpart('@alice:a.example'), 'alice');
  assert.equal(serverOf('@alice:localhost:8448'), 'localhost:8448');
  assert.equal(normaliseUserId('bob', 'localhost:8448'), '@bob:localhost:8448');
  assert.equal(normaliseUserId('@bob:b.example', 'x'), '@bob:b.example');
  assert.equal(normaliseUserId('@bob:b.example:8448', 'x'), '@bob:b.example:8448');
  assert.equal(normaliseUserId('@Bob:b.example', 'x'), null);
  assert.equal(normaliseUserId('bob smith', 'x'), null);
  assert.equal(normaliseUserId('', 'x'), null);
});

test('conversation titles, labels with unread counts, previews', () => {
  const conv = {
    members: [{ user_id: '@me:s' }, { user_id: '@bob:s' }, { user_id: '@alice:s' }, { user_id: '@bob:s' }],
    unread: 2,
    messages: [{ kind: 'text', body: 'first' }, { kind: 'system', body: 'x added y' }],
  };
  assert.equal(conversationTitle(conv, '@me:s'), 'alice, bob');
  assert.equal(conversationLabel(conv, '@me:s'), 'alice, bob, 2 unread');
  assert.equal(conversationTitle({ members: [{ user_id: '@me:s' }] }, '@me:s'), 'Only you');
  assert.equal(lastMessagePreview(conv), 'first');
  assert.equal(lastMessagePreview({ messages: [{ kind: 'text', body: 'x'.repeat(50) }] }, 10), `${'x'.repeat(9)}…`);
});

test('unread counts only for others\' text in closed conversations; duplicates dropped', () => {
  const conv = { messages: [], unread: 0 };
  pushMessage(conv, { id: 'a', kind: 'text', own: false, body: 'x' });
  pushMessage(conv, { id: 'a', kind: 'text', own: false, body: 'x' });
  pushMessage(conv, { id: 'b', kind: 'text', own: true, body: 'y' });
  pushMessage(conv, { id: 'c', kind: 'system', body: 'z' });
  pushMessage(conv, { id: 'd', kind: 'text', own: false, body: 'w' }, { isOpen: true });
  assert.equal(conv.unread, 1);
  assert.equal(conv.messages.length, 4);
  const big = { messages: [] };
  for (let i = 0; i < 10; i += 1) pushMessage(big, { id: String(i), kind: 'text', body: '' }, { keep: 3 });
  assert.deepEqual(big.messages.map((m) => m.id), ['7', '8', '9']);
});

test('order, payloads, safety number layout, settings and passphrase rules', () => {
  assert.deepEqual(bumpOrder(['a', 'b', 'c'], 'c'), ['c', 'a', 'b']);
  assert.deepEqual(bumpOrder(['a'], 'z'), ['z', 'a']);
  assert.deepEqual(parsePayload('{"type":"text","body":"hi"}'), { type: 'text', body: 'hi' });
  assert.deepEqual(parsePayload('not json'), { type: 'text', body: 'not json' });
  const sn = '123456789012345678901234567890123456789012345678901234567890';
  assert.equal(formatSafetyNumber(sn), '12345 67890 12345 67890\n12345 67890 12345 67890\n12345 67890 12345 67890');
  assert.equal(parseAutoLockMinutes('5'), 5);
  assert.equal(parseAutoLockMinutes('0'), 15);
  assert.equal(parseAutoLockMinutes('abc'), 15);
  assert.equal(parseAutoLockMinutes('99999'), 1440);
  assert.match(checkNewPassphrase('short', 'short'), /8 characters/);
  assert.match(checkNewPassphrase('long enough', 'long enougH'), /differ/);
  assert.equal(checkNewPassphrase('long enough', 'long enough'), null);
  assert.equal(emptyAppState().settings.autoLockMinutes, 15);
});

test('key packages are topped up only when the count is low', () => {
  assert.equal(keyPackagesToUpload(30), 0);
  assert.equal(keyPackagesToUpload(10), 0);
  assert.equal(keyPackagesToUpload(9), 21);
  assert.equal(keyPackagesToUpload(0), 30);
  assert.equal(keyPackagesToUpload(undefined), 0);
});

test('withDeviceKeys fetches missing users and retries, then gives up', async () => {
  let known = new Set();
  let missing = [];
  const fetched = [];
  const op = () => {
    for (const u of ['@a:s', '@b:s']) {
      if (!known.has(u)) { missing = [u]; throw new Error('[CredentialRefused] no key'); }
    }
    return 'ok';
  };
  const take = () => { const m = missing; missing = []; return m; };
  const fetchUsers = async (users) => { fetched.push(...users); users.forEach((u) => known.add(u)); };
  assert.equal(await withDeviceKeys(op, take, fetchUsers), 'ok');
  assert.deepEqual(fetched, ['@a:s', '@b:s']);
  // A user whose keys never show up: no endless loop.
  known = new Set();
  const never = async () => {};
  await assert.rejects(withDeviceKeys(op, take, never), /CredentialRefused/);
});

test('commitWithRetry: a 409 discards, catches up and rebuilds; other errors discard and throw', async () => {
  const log = [];
  let submits = 0;
  const r = await commitWithRetry({
    build: async () => { log.push('build'); return { n: submits }; },
    submit: async () => {
      submits += 1;
      log.push('submit');
      if (submits === 1) { const e = new Error('stale'); e.status = 409; throw e; }
      return { epoch: 2 };
    },
    confirm: async () => { log.push('confirm'); return 'confirmed'; },
    discard: async () => { log.push('discard'); },
    catchUp: async () => { log.push('catchUp'); },
  });
  assert.deepEqual(log, ['build', 'submit', 'discard', 'catchUp', 'build', 'submit', 'confirm']);
  assert.equal(r.event, 'confirmed');

  const log2 = [];
  await assert.rejects(commitWithRetry({
    build: async () => ({}),
    submit: async () => { const e = new Error('bad'); e.status = 400; throw e; },
    confirm: async () => log2.push('confirm'),
    discard: async () => log2.push('discard'),
    catchUp: async () => log2.push('catchUp'),
  }), /bad/);
  assert.deepEqual(log2, ['discard']);

  let n = 0;
  await assert.rejects(commitWithRetry({
    build: async () => ({}),
    submit: async () => { n += 1; const e = new Error('stale'); e.status = 409; throw e; },
    confirm: async () => {}, discard: async () => {}, catchUp: async () => {}, attempts: 3,
  }), /stale/);
  assert.equal(n, 3);
});

test('IdleTimer fires after inactivity and poke() postpones it', () => {
  const timers = new Map();
  let id = 0;
  const set = (fn, ms) => { id += 1; timers.set(id, { fn, ms }); return id; };
  const clear = (h) => timers.delete(h);
  let fired = 0;
  const t = new IdleTimer(1000, () => { fired += 1; }, { setTimeoutFn: set, clearTimeoutFn: clear });
  t.start();
  t.poke();
  assert.equal(timers.size, 1);
  t.setMs(5000);
  assert.equal([...timers.values()][0].ms, 5000);
  const [[firedId, due]] = [...timers.entries()];
  timers.delete(firedId);
  due.fn();
  assert.equal(fired, 1);
  t.start();
  t.stop();
  assert.equal(timers.size, 0);
});

test('IdleTimer locks by the wall clock when its timeout was throttled: check() and poke() after the idle time fire', () => {
  let now = 0;
  const timers = new Set();
  const set = (fn) => { const h = { fn }; timers.add(h); return h; };
  const clear = (h) => timers.delete(h);
  let fired = 0;
  const t = new IdleTimer(60000, () => { fired += 1; }, { setTimeoutFn: set, clearTimeoutFn: clear, now: () => now });
  t.start();
  now = 59000;
  assert.equal(t.check(), false, 'not idle long enough');
  t.poke(); // activity at 59 s: idle from there
  now = 59000 + 60000;
  // The tab was hidden: its timeout never ran. Becoming visible checks the clock.
  assert.equal(t.check(), true);
  assert.equal(fired, 1);
  assert.equal(timers.size, 0, 'stopped after firing');
  assert.equal(t.check(), false, 'fires once');
  t.poke();
  assert.equal(fired, 1, 'a stopped timer ignores activity');
  // Activity after the idle time passed unnoticed locks instead of postponing.
  t.start();
  now += 61000;
  t.poke();
  assert.equal(fired, 2);
});

test('Queue runs jobs one at a time, in order, and survives failures', async () => {
  const q = new Queue();
  const order = [];
  const slow = q.run(async () => { await new Promise((r) => setTimeout(r, 20)); order.push(1); });
  const bad = q.run(async () => { order.push(2); throw new Error('x'); });
  const fast = q.run(async () => { order.push(3); return 'done'; });
  await slow;
  await assert.rejects(bad);
  assert.equal(await fast, 'done');
  assert.deepEqual(order, [1, 2, 3]);
});

test('Saver coalesces requests and reports failures', async () => {
  let saves = 0;
  let release;
  const saver = new Saver(async () => { saves += 1; if (saves === 1) await new Promise((r) => { release = r; }); });
  saver.request();
  saver.request();
  saver.request();
  release();
  await saver.flush();
  assert.equal(saves, 2);
  const errors = [];
  const failing = new Saver(async () => { throw new Error('quota'); }, (e) => errors.push(e.message));
  await failing.request();
  assert.deepEqual(errors, ['quota']);
});

test('payload envelopes: text, typing, read, dm; plain text of older clients stays text', () => {
  assert.deepEqual(parsePayload('{"type":"typing"}'), { type: 'typing' });
  assert.deepEqual(parsePayload('{"type":"read","up_to":7}'), { type: 'read', up_to: 7 });
  assert.deepEqual(parsePayload('{"type":"dm"}'), { type: 'dm' });
  assert.deepEqual(parsePayload('{"type":"read","up_to":"7"}'), { type: 'invalid' });
  assert.deepEqual(parsePayload('{"type":"read","up_to":-1}'), { type: 'invalid' });
  assert.deepEqual(parsePayload('{"type":"text","body":5}'), { type: 'invalid' });
  assert.deepEqual(parsePayload('hello there'), { type: 'text', body: 'hello there' });
  assert.deepEqual(parsePayload('42'), { type: 'text', body: '42' });
  assert.deepEqual(parsePayload('["x"]'), { type: 'text', body: '["x"]' });
  assert.deepEqual(parsePayload('{"no":"type"}'), { type: 'text', body: '{"no":"type"}' });
});

test('direct messages: marked, found for reuse, titled by the contact, a third member ends it', () => {
  const me = '@me:a';
  const bob = '@bob:b';
  const dm = { group_id: '!d:a', dm: bob, active: true, members: [{ user_id: me }, { user_id: bob }] };
  const group = { group_id: '!g:a', active: true, members: [{ user_id: me }, { user_id: bob }] };
  const state = { order: ['!g:a', '!d:a'], convs: { '!g:a': group, '!d:a': dm } };
  assert.equal(isDm(dm, me), true);
  assert.equal(isDm(group, me), false, 'two users alone do not make a DM without the mark');
  assert.equal(findDm(state, bob, me), '!d:a');
  assert.equal(findDm(state, '@carol:c', me), null);
  assert.equal(conversationTitle(dm, me), 'bob');
  assert.equal(conversationLabel({ ...dm, unread: 1 }, me), 'bob, direct message, 1 unread');
  // Before the contact joined, the DM is titled by the contact already (but not reusable).
  const pending = { ...dm, members: [{ user_id: me }] };
  assert.equal(conversationTitle(pending, me), 'bob');
  assert.equal(findDm({ order: ['!d:a'], convs: { '!d:a': pending } }, bob, me), null);
  // The contact left: not reused. A third user: a group again.
  assert.equal(findDm({ order: ['!d:a'], convs: { '!d:a': { ...dm, active: false } } }, bob, me), null);
  const three = { ...dm, members: [...dm.members, { user_id: '@carol:c' }] };
  assert.equal(isDm(three, me), false);
  assert.equal(conversationLabel(three, me), 'bob, carol');
  assert.equal(dmPeer(dm, me), bob);
  assert.equal(dmPeer(three, me), null);
  assert.equal(dmPeer({ members: [{ user_id: me }, { user_id: me }] }, me), null);
});

test('typing: label, and a throttle of one notice per interval per conversation', () => {
  assert.equal(typingLabel([]), '');
  assert.equal(typingLabel(['@bob:b']), 'bob is typing…');
  assert.equal(typingLabel(['@carol:c', '@bob:b']), 'bob and carol are typing…');
  assert.equal(typingLabel(['@a:x', '@b:x', '@c:x']), '3 people are typing…');
  let now = 0;
  const t = new Throttle(3000, () => now);
  assert.equal(t.ready('g'), true);
  now = 2999;
  assert.equal(t.ready('g'), false);
  assert.equal(t.ready('h'), true, 'per conversation');
  now = 3000;
  assert.equal(t.ready('g'), true);
  t.reset('g');
  assert.equal(t.ready('g'), true, 'reset allows the next one at once');
});

test('read receipts: own message state goes sent → delivered → read when every other member read it', () => {
  const me = '@me:a';
  const conv = {
    members: [{ user_id: me }, { user_id: '@bob:b' }, { user_id: '@carol:c' }],
    reads: {},
    messages: [
      { kind: 'text', own: false, seq: 3 }, { kind: 'text', own: true, seq: 4 },
      { kind: 'text', own: false, seq: 6 }, { kind: 'system', seq: 9 },
    ],
  };
  const msg = { own: true, state: 'sent', seq: 5 };
  assert.equal(ownMessageState(msg, conv, me), 'sent');
  msg.state = 'delivered';
  assert.equal(ownMessageState(msg, conv, me), 'delivered');
  conv.reads['@bob:b'] = 5;
  assert.equal(ownMessageState(msg, conv, me), 'delivered', 'carol has not read it');
  conv.reads['@carol:c'] = 8;
  assert.equal(ownMessageState(msg, conv, me), 'read');
  assert.equal(ownMessageState({ own: true, state: 'delivered', seq: 6 }, conv, me), 'delivered');
  assert.equal(ownMessageState({ own: true, state: 'sending' }, conv, me), 'sending', 'no seq yet');
  assert.equal(ownMessageState({ own: false, seq: 1 }, conv, me), '');
  assert.equal(latestIncomingSeq(conv), 6);
  assert.equal(latestIncomingSeq({ messages: [] }), 0);
});

test('own devices: missing ones are added, revoked ones removed, this device never', () => {
  const me = '@me:a';
  const members = [
    { user_id: me, device_id: 'ONE' }, { user_id: me, device_id: 'OLD' }, { user_id: '@bob:b', device_id: 'TWO' },
  ];
  assert.deepEqual(ownDeviceDelta(members, me, 'ONE', ['ONE', 'TWO', 'NEW']), { missing: ['NEW', 'TWO'], stale: ['OLD'] });
  assert.deepEqual(ownDeviceDelta(members, me, 'ONE', ['OLD']), { missing: [], stale: [] });
  assert.deepEqual(ownDeviceDelta([], me, 'ONE', ['ONE']), { missing: [], stale: [] });
});

// ----- attachments -----

const KEY = 'q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=';
function descriptor(over = {}) {
  return {
    v: 1, media_id: 'AbC_-0123456789abcdefg', server_name: 'localhost:8448', key: KEY,
    nonce_prefix: 'AAECAwQFBg==', sha256: 'n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=',
    size: 1000 + 16, plaintext_size: 1000, mime: 'image/png', name: 'cat.png', width: 640, height: 480,
    thumbnail: {
      media_id: 'thumb1', server_name: 'localhost:8448', key: KEY, nonce_prefix: 'AAECAwQFBg==',
      sha256: 'n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=', size: 216, mime: 'image/jpeg', width: 320, height: 240,
    },
    ...over,
  };
}
const filePayload = (file, extra = {}) => JSON.stringify({ type: 'file', file, ...extra });

test('file payloads: a valid descriptor is kept (known fields only), with an optional caption', () => {
  const d = descriptor();
  assert.deepEqual(parsePayload(filePayload(d)), { type: 'file', file: d });
  assert.deepEqual(parsePayload(filePayload(d, { body: 'look' })), { type: 'file', file: d, body: 'look' });
  // Without width, height and thumbnail (any file), and with fields nobody knows (dropped).
  const plain = descriptor({ mime: 'application/pdf', name: 'a.pdf' });
  delete plain.width;
  delete plain.height;
  delete plain.thumbnail;
  assert.deepEqual(parsePayload(filePayload({ ...plain, evil: '<img onerror>' })), { type: 'file', file: plain });
  // Empty file: one chunk of only a tag.
  assert.equal(parsePayload(filePayload(descriptor({ size: 16, plaintext_size: 0 }))).type, 'file');
  assert.equal(parseFileDescriptor(descriptor()).thumbnail.media_id, 'thumb1');
});

test('file payloads: missing or malformed fields, bad ids and huge sizes are invalid', () => {
  const invalid = (file, extra) => assert.deepEqual(parsePayload(filePayload(file, extra)), { type: 'invalid' }, JSON.stringify(file));
  for (const k of ['v', 'media_id', 'server_name', 'key', 'nonce_prefix', 'sha256', 'size', 'plaintext_size', 'mime', 'name']) {
    const d = descriptor();
    delete d[k];
    invalid(d);
  }
  invalid(undefined);
  invalid(null);
  invalid([]);
  invalid('descriptor');
  invalid(descriptor({ v: 2 }));
  invalid(descriptor({ media_id: '' }));
  invalid(descriptor({ media_id: '../../admin' }));
  invalid(descriptor({ media_id: 'a/b' }));
  invalid(descriptor({ media_id: 'a'.repeat(65) }));
  invalid(descriptor({ media_id: 7 }));
  invalid(descriptor({ server_name: '' }));
  invalid(descriptor({ server_name: 'evil.example/path' }));
  invalid(descriptor({ server_name: 'a b' }));
  invalid(descriptor({ key: 'not base64!' }));
  invalid(descriptor({ sha256: '' }));
  invalid(descriptor({ size: '1016' }));
  invalid(descriptor({ size: -1 }));
  invalid(descriptor({ size: 1016.5 }));
  invalid(descriptor({ size: 2 ** 60, plaintext_size: 2 ** 60 - 16 * 2 ** 44 }), 'above 2^53');
  invalid(descriptor({ size: Number.MAX_SAFE_INTEGER, plaintext_size: Number.MAX_SAFE_INTEGER }));
  invalid(descriptor({ size: 1e400 }));
  invalid(descriptor({ size: 5000 }), 'size disagrees with plaintext_size');
  invalid(descriptor({ mime: 5 }));
  invalid(descriptor({ mime: 'x'.repeat(256) }));
  invalid(descriptor({ name: null }));
  invalid(descriptor({ width: -1 }));
  invalid(descriptor({ height: 2 ** 32 }));
  invalid(descriptor({ width: '640' }));
  invalid(descriptor({ thumbnail: 'x' }));
  invalid(descriptor({ thumbnail: { ...descriptor().thumbnail, media_id: 'bad id' } }));
  invalid(descriptor({ thumbnail: { ...descriptor().thumbnail, width: undefined } }));
  invalid(descriptor({ thumbnail: { ...descriptor().thumbnail, size: 2 ** 54 } }));
  invalid(descriptor(), { body: 42 });
});

test('attachment helpers: ciphertext size, human sizes, limits and refusals', () => {
  assert.equal(ciphertextSize(0), 16);
  assert.equal(ciphertextSize(1), 17);
  assert.equal(ciphertextSize(65536), 65536 + 16);
  assert.equal(ciphertextSize(65537), 65537 + 32);
  assert.equal(ciphertextSize(20 * 1024 * 1024), 20 * 1024 * 1024 + 16 * 320);
  assert.equal(humanSize(0), '0 B');
  assert.equal(humanSize(1023), '1023 B');
  assert.equal(humanSize(1024), '1 KB');
  assert.equal(humanSize(1536), '1.5 KB');
  assert.equal(humanSize(1024 * 1024 - 1), '1 MB');
  assert.equal(humanSize(20 * 1024 * 1024), '20 MB');
  assert.equal(humanSize(5.25 * 1024 * 1024 * 1024), '5.3 GB');
  assert.equal(humanSize(-1), '');
  assert.equal(limitInMb(100 * 1024 * 1024), '100');
  assert.equal(limitInMb(1024 * 1024), '1');
  assert.equal(limitInMb(1.5 * 1024 * 1024), '1.5');
  const limit = 1024 * 1024;
  assert.equal(uploadRefusal(limit - 16 * 16, limit), null, 'ciphertext exactly at the limit');
  assert.equal(uploadRefusal(limit - 16 * 16 + 1, limit), 'This file is larger than the server\'s limit of 1 MB.');
  assert.equal(uploadRefusal(10, 0), 'This homeserver does not accept files.');
  assert.equal(isPreviewMime('image/png'), true);
  assert.equal(isPreviewMime('IMAGE/JPEG'), true);
  assert.equal(isPreviewMime('image/svg+xml'), false);
  assert.equal(isPreviewMime('text/html'), false);
  assert.equal(isPreviewMime(undefined), false);
  assert.deepEqual(thumbnailSize(640, 480), { width: 320, height: 240 });
  assert.deepEqual(thumbnailSize(100, 4000), { width: 8, height: 320 });
  assert.deepEqual(thumbnailSize(50, 40), { width: 50, height: 40 }, 'never enlarged');
});

test('attachment errors are clear texts', () => {
  const api = (errcode, status = 413) => ({ errcode, status, error: 'x' });
  assert.match(describeMediaError(api('P_TOO_LARGE'), { maxUploadBytes: 1024 * 1024 }), /larger than the server's limit of 1 MB/);
  assert.match(describeMediaError(api('P_QUOTA_EXCEEDED')), /quota/);
  assert.match(describeMediaError(api('P_LIMIT_EXCEEDED', 429)), /Too many transfers/);
  assert.match(describeMediaError({ errcode: 'NETWORK', status: 0 }), /upload failed: the homeserver could not be reached/);
  assert.match(describeMediaError({ errcode: 'NETWORK', status: 0 }, { upload: false }), /download failed/);
  assert.equal(describeMediaError(new Error('[AttachmentHashMismatch] hash mismatch: x'), { upload: false }),
    'The file was modified or corrupted; it was not saved.');
  assert.match(describeMediaError(new Error('[AttachmentCorrupt] tag'), { upload: false }), /could not be decrypted/);
  const abort = new Error('stop');
  abort.name = 'AbortError';
  assert.equal(describeMediaError(abort), 'The upload was cancelled.');
});

test('file names from other users are sanitised for saving and display', () => {
  assert.equal(sanitizeFilename('report.pdf'), 'report.pdf');
  assert.equal(sanitizeFilename('../../etc/passwd'), '_.._etc_passwd');
  assert.equal(sanitizeFilename('C:\\Windows\\evil.bat'), 'C__Windows_evil.bat');
  assert.equal(sanitizeFilename('a\u0000b\nc\u007f.txt'), 'abc.txt');
  assert.equal(sanitizeFilename('invoice\u202Efdp.exe'), 'invoicefdp.exe', 'bidi override removed');
  assert.equal(sanitizeFilename('  .hidden  '), 'hidden');
  assert.equal(sanitizeFilename('name.'), 'name');
  assert.equal(sanitizeFilename('a<b>:"c"|?*.txt'), 'a_b___c____.txt');
  assert.equal(sanitizeFilename('CON'), '_CON');
  assert.equal(sanitizeFilename('lpt1.txt'), '_lpt1.txt');
  assert.equal(sanitizeFilename(''), 'file');
  assert.equal(sanitizeFilename('...'), 'file');
  assert.equal(sanitizeFilename(undefined), 'file');
  assert.equal(sanitizeFilename(42), 'file');
  const long = sanitizeFilename(`${'x'.repeat(300)}.jpeg`);
  assert.equal(long.length, 200);
  assert.ok(long.endsWith('x.jpeg'));
  assert.equal(sanitizeFilename('日本語 ファイル.png'), '日本語 ファイル.png');
});

test('file messages count as unread, are acknowledged by read receipts and previewed by name', () => {
  const conv = { messages: [], unread: 0 };
  pushMessage(conv, { id: 'f', kind: 'file', own: false, seq: 4, file: descriptor({ name: 'a/b.png' }) });
  assert.equal(conv.unread, 1);
  assert.equal(latestIncomingSeq(conv), 4);
  assert.equal(lastMessagePreview(conv), 'File: a_b.png');
});

// ----- replies, reactions, edits, deletes (protocol §7.11) -----

test('parsePayload: replies, reactions, edits and deletes are checked and reduced to their fields', () => {
  const P = (v) => parsePayload(JSON.stringify(v));
  const invalid = { type: 'invalid' };
  assert.deepEqual(P({ type: 'text', body: 'hi', reply_to: 3, extra: 1 }), { type: 'text', body: 'hi', reply_to: 3 });
  assert.deepEqual(P({ type: 'text', body: 'hi', v: 1 }), { type: 'text', body: 'hi' });
  for (const bad of [0, -1, 1.5, '3', null, 2 ** 53, true]) {
    assert.deepEqual(P({ type: 'text', body: 'hi', reply_to: bad }), invalid, `reply_to ${bad}`);
    assert.deepEqual(P({ type: 'reaction', target: bad, key: '👍' }), invalid, `target ${bad}`);
    assert.deepEqual(P({ type: 'edit', target: bad, body: 'x' }), invalid);
    assert.deepEqual(P({ type: 'delete', target: bad }), invalid);
  }
  assert.deepEqual(P({ type: 'text', body: 'x'.repeat(MAX_BODY_CHARS) }).body.length, MAX_BODY_CHARS);
  assert.deepEqual(P({ type: 'text', body: 'x'.repeat(MAX_BODY_CHARS + 1) }), invalid);
  assert.deepEqual(P({ type: 'reaction', target: 7, key: '👍', evil: '<b>' }), { type: 'reaction', target: 7, key: '👍' });
  assert.deepEqual(P({ type: 'reaction', target: 7, key: '👍', remove: true }), { type: 'reaction', target: 7, key: '👍', remove: true });
  assert.deepEqual(P({ type: 'reaction', target: 7, key: '👍', remove: false }), { type: 'reaction', target: 7, key: '👍' });
  assert.deepEqual(P({ type: 'reaction', target: 7, key: '👍', remove: 'yes' }), invalid);
  assert.deepEqual(P({ type: 'reaction', target: 7, key: '' }), invalid);
  assert.deepEqual(P({ type: 'reaction', target: 7, key: 5 }), invalid);
  assert.equal(P({ type: 'reaction', target: 7, key: 'a'.repeat(64) }).type, 'reaction');
  assert.deepEqual(P({ type: 'reaction', target: 7, key: 'a'.repeat(65) }), invalid);
  // 64 bytes, not 64 characters: 17 four-byte emoji are 68 bytes.
  assert.equal(P({ type: 'reaction', target: 7, key: '😂'.repeat(16) }).type, 'reaction');
  assert.deepEqual(P({ type: 'reaction', target: 7, key: '😂'.repeat(17) }), invalid);
  assert.deepEqual(P({ type: 'edit', target: 2, body: 'new' }), { type: 'edit', target: 2, body: 'new' });
  assert.deepEqual(P({ type: 'edit', target: 2 }), invalid);
  assert.deepEqual(P({ type: 'edit', target: 2, body: 'x'.repeat(MAX_BODY_CHARS + 1) }), invalid);
  assert.deepEqual(P({ type: 'delete', target: 2, body: 'x' }), { type: 'delete', target: 2 });
  assert.deepEqual(P({ type: 'future', x: 1 }), { type: 'future', x: 1 }, 'unknown types pass through');
});

const ALICE = '@alice:a';
const ALICE2 = '@alice:a'; // the same user on another device: same user id
const BOB = '@bob:b';
const EVE = '@eve:e';
function richConv() {
  const conv = { messages: [], unread: 0 };
  addChatMessage(conv, { id: 'm1', kind: 'text', body: 'hello', sender: ALICE, own: false, seq: 1 });
  addChatMessage(conv, { id: 'm2', kind: 'text', body: 'reply', sender: BOB, own: false, seq: 2, replyTo: 1 });
  return conv;
}

test('reactions: counted per key, one per user and key, repeats change nothing, remove withdraws', () => {
  const conv = richConv();
  const unread = conv.unread;
  const r = (from, seq, key, remove) => applyAction(conv, { type: 'reaction', target: 1, key, from, seq, ...(remove ? { remove: true } : {}) });
  assert.equal(r(BOB, 3, '👍'), 'applied');
  assert.equal(r(BOB, 4, '👍'), 'ignored', 'a repeat');
  assert.equal(r(EVE, 5, '👍'), 'applied');
  assert.equal(r(EVE, 6, '❤️'), 'applied');
  const m = findBySeq(conv, 1);
  assert.deepEqual(reactionSummary(m, BOB), [
    { key: '👍', count: 2, users: [BOB, EVE], mine: true, label: '👍 2: you, eve' },
    { key: '❤️', count: 1, users: [EVE], mine: false, label: '❤️ 1: eve' },
  ]);
  assert.equal(hasReacted(m, BOB, '👍'), true);
  assert.equal(r(ALICE, 7, '❤️', true), 'ignored', 'withdrawing what one never gave');
  assert.equal(r(EVE, 8, '❤️', true), 'applied');
  assert.equal(r(EVE, 9, '❤️', true), 'ignored');
  assert.deepEqual(reactionSummary(m, ALICE).map((x) => x.label), ['👍 2: bob, eve']);
  assert.equal(r(BOB, 10, '👍', true), 'applied');
  assert.equal(hasReacted(m, BOB, '👍'), false);
  assert.equal(r(BOB, 11, '👍'), 'applied', 'given again after withdrawing');
  assert.deepEqual(reactionSummary(m, ALICE).map((x) => x.label), ['👍 2: eve, bob']);
  // Reactions never count as unread nor add messages.
  assert.equal(conv.messages.length, 2);
  assert.equal(conv.unread, unread);
  // A key named "__proto__" is just a key.
  assert.equal(r(EVE, 12, '__proto__'), 'applied');
  assert.equal(({}).polluted, undefined);
  assert.equal(reactionSummary(m, ALICE).at(-1).key, '__proto__');
});

test('edits: only from the user who sent the target (any device), the last by seq wins', () => {
  const conv = richConv();
  const m = findBySeq(conv, 1);
  assert.equal(applyAction(conv, { type: 'edit', target: 1, body: 'forged', from: BOB, seq: 3 }), 'ignored');
  assert.equal(m.body, 'hello');
  assert.equal(m.editSeq, undefined);
  assert.equal(applyAction(conv, { type: 'edit', target: 1, body: 'hello!', from: ALICE, seq: 4 }), 'applied');
  assert.equal(applyAction(conv, { type: 'edit', target: 1, body: 'hello!!', from: ALICE2, seq: 6 }), 'applied', 'her other device');
  assert.equal(applyAction(conv, { type: 'edit', target: 1, body: 'older', from: ALICE, seq: 5 }), 'ignored', 'an older edit');
  assert.equal(m.body, 'hello!!');
  assert.equal(m.editSeq, 6);
  assert.equal(lastMessagePreview({ messages: [m] }), 'hello!!');
  // The quote of a reply follows the edit.
  assert.deepEqual(replyQuote(conv, 1), { state: 'ok', sender: ALICE, text: 'hello!!' });
  // A delete from someone else is ignored too.
  assert.equal(applyAction(conv, { type: 'delete', target: 1, from: EVE, seq: 7 }), 'ignored');
  assert.equal(m.deleted, undefined);
  // An edit or delete naming something that is not a text or file never matches a message.
  conv.messages.push({ id: 's', kind: 'system', body: 'x', seq: 9 });
  assert.equal(findBySeq(conv, 9), null);
});

test('deletes: a tombstone whose content, edits and reactions are dropped; later actions show the tombstone', () => {
  const conv = richConv();
  const file = { v: 1, media_id: 'M', name: 'secret.pdf' };
  addChatMessage(conv, { id: 'f', kind: 'file', file, body: 'caption', sender: ALICE, seq: 3 });
  applyAction(conv, { type: 'edit', target: 1, body: 'edited secret', from: ALICE, seq: 4 });
  applyAction(conv, { type: 'reaction', target: 1, key: '👍', from: BOB, seq: 5 });
  // Pending for a message not seen yet, dropped with it later.
  assert.equal(applyAction(conv, { type: 'delete', target: 1, from: ALICE, seq: 6 }), 'applied');
  const m = findBySeq(conv, 1);
  assert.deepEqual(m, { id: 'm1', kind: 'text', sender: ALICE, own: false, seq: 1, deleted: true });
  assert.equal(applyAction(conv, { type: 'delete', target: 3, from: ALICE, seq: 7 }), 'applied');
  const f = findBySeq(conv, 3);
  assert.equal(f.file, undefined, 'a file\'s descriptor goes');
  assert.equal(f.body, undefined);
  assert.ok(!JSON.stringify(conv).includes('secret'), 'nothing of the content is left');
  // After the delete: edits, reactions and a second delete change nothing.
  assert.equal(applyAction(conv, { type: 'edit', target: 1, body: 'back', from: ALICE, seq: 8 }), 'ignored');
  assert.equal(applyAction(conv, { type: 'reaction', target: 1, key: '👍', from: BOB, seq: 9 }), 'ignored');
  assert.equal(applyAction(conv, { type: 'delete', target: 1, from: ALICE, seq: 10 }), 'ignored');
  assert.deepEqual(findBySeq(conv, 1), m);
  assert.deepEqual(reactionSummary(m, BOB), []);
  // A reply to it quotes the tombstone; the preview says so.
  assert.deepEqual(replyQuote(conv, 1), { state: 'deleted', text: 'message deleted' });
  assert.equal(lastMessagePreview({ messages: [m] }), 'message deleted');
});

test('actions for a message not seen yet wait for its seq; replies to unknown messages quote "an earlier message"', () => {
  const conv = richConv();
  assert.equal(applyAction(conv, { type: 'reaction', target: 5, key: '👍', from: BOB, seq: 3 }), 'pending');
  assert.equal(applyAction(conv, { type: 'edit', target: 5, body: 'second edit', from: ALICE, seq: 6 }), 'pending');
  assert.equal(applyAction(conv, { type: 'edit', target: 5, body: 'first edit', from: ALICE, seq: 4 }), 'pending');
  assert.equal(applyAction(conv, { type: 'edit', target: 5, body: 'forged', from: EVE, seq: 7 }), 'pending');
  assert.equal(applyAction(conv, { type: 'reaction', target: 8, key: '😂', from: BOB, seq: 5 }), 'pending');
  assert.equal(conv.pending.length, 5);
  assert.deepEqual(replyQuote(conv, 5), { state: 'unknown', text: 'an earlier message' });
  addChatMessage(conv, { id: 'm5', kind: 'text', body: 'late', sender: ALICE, seq: 5 });
  const m = findBySeq(conv, 5);
  assert.equal(m.body, 'second edit', 'applied in seq order, the last edit wins, the forged one ignored');
  assert.equal(m.editSeq, 6);
  assert.deepEqual(reactionSummary(m, ALICE).map((x) => x.label), ['👍 1: bob']);
  assert.deepEqual(conv.pending.map((p) => p.target), [8], 'only the other target still waits');
  // A delete waiting for its target: the target arrives as a tombstone.
  applyAction(conv, { type: 'delete', target: 9, from: BOB, seq: 10 });
  addChatMessage(conv, { id: 'm9', kind: 'text', body: 'gone before seen', sender: BOB, seq: 9 });
  assert.equal(findBySeq(conv, 9).deleted, true);
  assert.ok(!JSON.stringify(conv).includes('gone before seen'));
  // The list of waiting actions is bounded.
  for (let i = 0; i < 300; i += 1) applyAction(conv, { type: 'reaction', target: 1000 + i, key: '👍', from: EVE, seq: 2000 + i });
  assert.equal(conv.pending.length, 200);
  // Quotes are shortened to about 100 characters.
  addChatMessage(conv, { id: 'long', kind: 'text', body: 'y'.repeat(300), sender: BOB, seq: 11 });
  assert.equal(replyQuote(conv, 11).text, `${'y'.repeat(99)}…`);
});


test('group_profile payloads: fields checked (≤128 / ≤1024 characters, null clears), others invalid', () => {
  assert.deepEqual(parsePayload('{"type":"group_profile","name":"Club","topic":null,"extra":1}'), { type: 'group_profile', name: 'Club', topic: null });
  assert.deepEqual(parsePayload('{"type":"group_profile"}'), { type: 'group_profile' });
  assert.deepEqual(parsePayload(JSON.stringify({ type: 'group_profile', name: '😀'.repeat(128) })).name.length, 256, 'characters, not UTF-16 units');
  for (const bad of [{ name: 'x'.repeat(129) }, { topic: 'x'.repeat(1025) }, { name: 5 }, { topic: ['a'] }, { avatar: 'x' }, { avatar: { v: 1 } }]) {
    assert.deepEqual(parsePayload(JSON.stringify({ type: 'group_profile', ...bad })), { type: 'invalid' }, JSON.stringify(bad));
  }
  assert.deepEqual(parsePayload(JSON.stringify({ type: 'group_profile', topic: 'x'.repeat(1024) })).topic.length, 1024);
});

test('text mentions: a list of user ids, deduplicated; anything else makes the text invalid', () => {
  assert.deepEqual(parsePayload('{"type":"text","body":"hi @bob","mentions":["@bob:hs","@bob:hs"]}'), { type: 'text', body: 'hi @bob', mentions: ['@bob:hs'] });
  assert.deepEqual(parsePayload('{"type":"text","body":"hi","mentions":"@bob:hs"}'), { type: 'invalid' });
  assert.deepEqual(parsePayload('{"type":"text","body":"hi","mentions":["bob"]}'), { type: 'invalid' });
  assert.deepEqual(parsePayload('{"type":"text","body":"hi","mentions":[1]}'), { type: 'invalid' });
  assert.deepEqual(parsePayload('{"type":"text","body":"hi","reply_to":3,"mentions":[]}'), { type: 'text', body: 'hi', reply_to: 3, mentions: [] });
});

test('applyGroupProfile: the last by seq wins per field, absent fields stay, null clears', () => {
  const conv = { group_id: '!g', name: '', members: [], messages: [] };
  assert.deepEqual(applyGroupProfile(conv, { name: 'A', topic: 'T' }, 5), ['name', 'topic']);
  assert.deepEqual(applyGroupProfile(conv, { name: 'Old' }, 3), [], 'an earlier seq loses');
  assert.equal(conv.name, 'A');
  assert.deepEqual(applyGroupProfile(conv, { topic: null }, 6), ['topic']);
  assert.equal(conv.name, 'A');
  assert.equal(conv.topic, '');
  assert.deepEqual(applyGroupProfile(conv, { name: 'A' }, 7), [], 'the same name changes nothing');
  assert.equal(profileNotice('alice', ['name'], { name: 'X' }), 'alice named the group "X".');
  assert.equal(profileNotice('You', ['name', 'topic'], { name: '', topic: 'y' }), 'You removed the group name and changed the topic.');
  assert.equal(profileNotice('bob', ['topic'], { topic: '' }), 'bob removed the topic.');
  assert.equal(profileNotice('bob', [], {}), '');
  // The name is the title, also of a DM; without one a DM keeps the contact's name.
  const dm = { group_id: '!d', dm: '@bob:hs', members: [{ user_id: '@a:hs' }, { user_id: '@bob:hs' }], unread: 2, mentioned: 1 };
  assert.equal(conversationTitle(dm, '@a:hs'), 'bob');
  assert.equal(conversationLabel(dm, '@a:hs'), 'bob, direct message, 2 unread, mentions you');
  dm.name = 'Plans';
  assert.equal(conversationTitle(dm, '@a:hs'), 'Plans');
});

test('mentionsIn: @localpart or full ids of other members, as words of their own', () => {
  const members = ['@alice:hs', '@bob:hs', '@bob:other', '@carol:hs'];
  assert.deepEqual(mentionsIn('hey @bob', members, '@alice:hs'), ['@bob:hs', '@bob:other']);
  assert.deepEqual(mentionsIn('hey @bob:other.', members, '@alice:hs'), ['@bob:other']);
  assert.deepEqual(mentionsIn('@carol, @bob. and @alice', members, '@alice:hs'), ['@bob:hs', '@bob:other', '@carol:hs']);
  assert.deepEqual(mentionsIn('mail me@bob.org or @dave', members, '@alice:hs'), []);
  assert.deepEqual(mentionsIn('', members, '@alice:hs'), []);
  assert.equal(mentionsUser({ mentions: ['@a:hs'] }, '@a:hs'), true);
  assert.equal(mentionsUser({ mentions: ['@a:hs'], own: true }, '@a:hs'), false);
  assert.equal(mentionsUser({ mentions: ['@a:hs'], deleted: true }, '@a:hs'), false);
  assert.equal(mentionsUser({ body: '@a' }, '@a:hs'), false);
});

test('notificationFor: only when on and granted; no text unless allowed; mentions always notify', () => {
  const conv = { group_id: '!g', name: 'Club', members: [] };
  const msg = { kind: 'text', body: 'secret words', sender: '@bob:hs', seq: 3 };
  const base = { conv, msg, ownUserId: '@a:hs', settings: { notifications: true }, permission: 'granted', hidden: true, isOpen: true };
  assert.deepEqual(notificationFor(base), { title: 'Club', body: 'New message', tag: '!g' });
  assert.equal(notificationFor({ ...base, settings: { notifications: false } }), null);
  assert.equal(notificationFor({ ...base, permission: 'denied' }), null);
  assert.equal(notificationFor({ ...base, permission: 'default' }), null);
  assert.equal(notificationFor({ ...base, hidden: false }), null, 'looking at it: no notification');
  assert.deepEqual(notificationFor({ ...base, hidden: false, isOpen: false }).body, 'New message');
  assert.equal(notificationFor({ ...base, msg: { ...msg, own: true } }), null);
  assert.equal(notificationFor({ ...base, msg: { kind: 'system', body: 'x' } }), null);
  const mention = { ...msg, mentions: ['@a:hs'] };
  assert.deepEqual(notificationFor({ ...base, msg: mention, hidden: false, isOpen: true }), { title: 'Club', body: 'You were mentioned', tag: '!g' });
  assert.equal(notificationFor({ ...base, msg: mention, permission: 'denied' }), null);
  assert.deepEqual(notificationFor({ ...base, settings: { notifications: true, notifyText: true } }).body, 'bob: secret words');
  for (const n of [notificationFor(base), notificationFor({ ...base, msg: mention })]) {
    assert.ok(!JSON.stringify(n).includes('secret'), 'no plaintext by default');
  }
});

test('searchMessages: case-insensitive over texts, captions and file names of every conversation, deleted excluded', () => {
  const state = emptyAppState();
  state.order = ['!a', '!b'];
  state.convs['!a'] = { group_id: '!a', name: 'Club', members: [], messages: [
    { id: 'm1', kind: 'text', body: 'The Quick zebra', sender: '@bob:hs', seq: 1, ts: 10 },
    { id: 'm2', kind: 'text', body: 'zebra gone', sender: '@bob:hs', seq: 2, ts: 11, deleted: true },
    { id: 'm3', kind: 'system', body: 'zebra system', ts: 12 },
  ] };
  state.convs['!b'] = { group_id: '!b', dm: '@carol:hs', members: [{ user_id: '@me:hs' }, { user_id: '@carol:hs' }], messages: [
    { id: 'm4', kind: 'file', file: { name: 'ZEBRA.png' }, sender: '@carol:hs', seq: 5, ts: 20 },
    { id: 'm5', kind: 'text', body: 'nothing here', sender: '@me:hs', own: true, seq: 6, ts: 21 },
  ] };
  const r = searchMessages(state, '  zeBRA ', '@me:hs');
  assert.deepEqual(r.map((x) => [x.gid, x.id, x.title]), [['!b', 'm4', 'carol'], ['!a', 'm1', 'Club']]);
  assert.equal(r[1].text, 'The Quick zebra');
  assert.equal(r[0].text, 'File: ZEBRA.png');
  assert.deepEqual(searchMessages(state, '', '@me:hs'), []);
  assert.deepEqual(searchMessages(state, 'gone', '@me:hs'), []);
  assert.equal(searchMessages(state, 'e', '@me:hs', 1).length, 1);
});

test('parseNotice reads member_devices_changed and keeps only devices of the named user', () => {
  const b64 = (v) => btoa(JSON.stringify(v));
  const n = parseNotice(b64({
    type: 'member_devices_changed',
    user_id: '@bob:b',
    added: [{ user_id: '@bob:b', device_id: 'NEW' }, { user_id: '@eve:b', device_id: 'EVE' }, null],
    removed: [{ user_id: '@bob:b', device_id: 'OLD' }, { user_id: '@bob:b', device_id: 7 }],
  }));
  assert.deepEqual(n, { type: 'member_devices_changed', user_id: '@bob:b', added: ['NEW'], removed: ['OLD'] });
  assert.equal(parseNotice(b64({ type: 'member_devices_changed', user_id: '@bob:b', added: 'x', removed: [] })), null);
  assert.equal(parseNotice(b64({ type: 'member_devices_changed', added: [], removed: [] })), null);
  assert.equal(parseNotice('not base64!'), null);
  assert.deepEqual(parseNotice(b64({ type: 'something_new' })), { type: 'something_new' });
});

test('disappearing messages: stamped with the timer in force when they arrived, then dropped', () => {
  assert.equal(durationText(30000), '30 seconds');
  assert.equal(durationText(3600000), '1 hour');
  assert.equal(durationText(2 * 86400000), '2 days');
  assert.equal(durationText(604800000), '1 week');
  const conv = { messages: [{ kind: 'text', body: 'old', ts: 1000 }, { kind: 'system', body: 'line', ts: 1000 }] };
  stampExpiry(conv, null, 5000);
  assert.equal(conv.messages[0].expiresAt, null, 'arrived before any timer: stays');
  conv.messages.push({ kind: 'text', body: 'new', ts: 2000 });
  stampExpiry(conv, 30000, 5000);
  assert.equal(conv.messages[2].expiresAt, 32000);
  assert.equal(conv.messages[1].expiresAt, undefined, 'system lines never disappear');
  assert.equal(dropExpired(conv, 31999), false);
  assert.equal(dropExpired(conv, 32000), true);
  assert.deepEqual(conv.messages.map((m) => m.body), ['old', 'line']);
});
