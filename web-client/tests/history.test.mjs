// Unit tests of the history archive (app/history.js): building, strict validation, merging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ArchiveError, MAX_ARCHIVE_PER_CONV, buildArchive, historyCounts, mergeArchive, parseArchive,
} from '../app/history.js';
import { emptyAppState, findBySeq, parsePayload } from '../app/logic.js';

const A = '@alice:hs1';
const B = '@bob:hs2';
const FILE = {
  v: 1, media_id: 'm1', server_name: 'hs1', key: 'a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=',
  nonce_prefix: 'bm9uY2Vub25jZQ==', sha256: 'c2hhc2hhc2hhc2hhc2hhc2hhc2hhc2hhc2hhc2hhc2g=', size: 21,
  plaintext_size: 5, mime: 'text/plain', name: 'a.txt',
};

/** The sharer's state: one conversation with texts, a file, a reply, reactions, an edit, a
 *  tombstone, system lines and a failed own message. */
function sharerState() {
  const st = emptyAppState();
  st.convs['!g:hs1'] = {
    group_id: '!g:hs1', name: 'Zebra Club', members: [], unread: 0, active: true, lastSeq: 9,
    messages: [
      { id: 'w:1', kind: 'system', body: 'bob added you.', ts: 1 },
      { id: 'm2', kind: 'text', body: 'first', sender: B, ts: 2, seq: 2, reactions: [{ key: '👍', users: [A] }] },
      { id: 'm3', kind: 'text', body: 'second (edited)', sender: A, own: true, state: 'read', ts: 3, seq: 3, editSeq: 5, mentions: [B] },
      { id: 'm4', kind: 'file', file: FILE, sender: B, ts: 4, seq: 4 },
      { id: 'm6', kind: 'text', sender: B, ts: 6, seq: 6, deleted: true },
      { id: 'm7', kind: 'text', body: 'reply', sender: B, ts: 7, seq: 7, replyTo: 2 },
      { id: 'x', kind: 'text', body: 'never sent', sender: A, own: true, state: 'failed', ts: 8 },
    ],
    order: [],
  };
  st.convs['!h:hs1'] = { group_id: '!h:hs1', name: '', members: [], unread: 0, active: true, lastSeq: 1, messages: [{ id: 'h1', kind: 'text', body: 'other', sender: B, ts: 1, seq: 1 }] };
  st.order = ['!g:hs1', '!h:hs1'];
  return st;
}

test('buildArchive: versioned, only chat messages with a seq, newest per conversation, tombstones without content', () => {
  const a = buildArchive(sharerState(), ['!g:hs1', '!h:hs1', '!gone:hs1'], { fromDevice: 'DEV1', now: 42 });
  assert.equal(a.type, 'parley.history');
  assert.equal(a.v, 1);
  assert.equal(a.from_device, 'DEV1');
  assert.equal(a.created_ts, 42);
  assert.deepEqual(a.conversations.map((c) => c.group_id), ['!g:hs1', '!h:hs1'], 'unknown conversations are left out');
  const g = a.conversations[0];
  assert.equal(g.name, 'Zebra Club');
  assert.deepEqual(g.messages.map((m) => m.id), ['m2', 'm3', 'm4', 'm6', 'm7'], 'no system line, no unsent message');
  assert.deepEqual(g.messages[0].reactions, [{ key: '👍', users: [A] }]);
  assert.equal(g.messages[1].editSeq, 5);
  assert.deepEqual(g.messages[1].mentions, [B]);
  assert.equal(g.messages[1].own, undefined, 'own/state are the receiver\'s to compute');
  assert.deepEqual(g.messages[2].file, FILE);
  assert.deepEqual(g.messages[3], { id: 'm6', kind: 'text', sender: B, ts: 6, seq: 6, deleted: true });
  assert.equal(g.messages[4].replyTo, 2);
  assert.equal(parseArchive(JSON.stringify(a)).conversations.length, 2, 'what is built parses');

  const newest = buildArchive(sharerState(), ['!g:hs1'], { maxPerConv: 2 });
  assert.deepEqual(newest.conversations[0].messages.map((m) => m.id), ['m6', 'm7'], 'the newest kept');
  // Too large: fewer messages per conversation, then a clear refusal.
  const small = buildArchive(sharerState(), ['!g:hs1'], { maxBytes: 700 });
  assert.ok(small.conversations[0].messages.length < 5);
  assert.throws(() => buildArchive(sharerState(), ['!g:hs1'], { maxBytes: 50 }), ArchiveError);
});

test('parseArchive refuses unknown versions, wrong types, oversized parts — always an ArchiveError', () => {
  const good = buildArchive(sharerState(), ['!g:hs1'], { fromDevice: 'D', now: 1 });
  const variants = [
    'not json',
    new Uint8Array([0xff, 0xfe]),
    '[]',
    JSON.stringify({ ...good, type: 'other' }),
    JSON.stringify({ ...good, v: 2 }),
    JSON.stringify({ ...good, v: '1' }),
    JSON.stringify({ ...good, from_device: 5 }),
    JSON.stringify({ ...good, created_ts: -1 }),
    JSON.stringify({ ...good, conversations: {} }),
    JSON.stringify({ ...good, conversations: [{ group_id: 5, messages: [] }] }),
    JSON.stringify({ ...good, conversations: [{ group_id: '!a', messages: [] }, { group_id: '!a', messages: [] }] }),
    JSON.stringify({ ...good, conversations: [{ group_id: '!a', name: 'x'.repeat(129), messages: [] }] }),
    JSON.stringify({ ...good, conversations: [{ group_id: '!a', messages: Array.from({ length: MAX_ARCHIVE_PER_CONV + 1 }, () => ({})) }] }),
  ];
  const msg = (m) => JSON.stringify({ ...good, conversations: [{ group_id: '!g:hs1', messages: [m] }] });
  const base = { id: 'a', kind: 'text', body: 'x', sender: B, ts: 1, seq: 1 };
  for (const bad of [
    null, 'x', { ...base, id: '' }, { ...base, kind: 'system' }, { ...base, sender: 'bob' }, { ...base, ts: 1.5 },
    { ...base, seq: 0 }, { ...base, body: 5 }, { ...base, body: 'x'.repeat(65537) }, { id: 'a', kind: 'text', sender: B, ts: 1, seq: 1 },
    { ...base, kind: 'file' }, { ...base, kind: 'file', file: { ...FILE, v: 2 } }, { ...base, file: FILE },
    { ...base, replyTo: -1 }, { ...base, mentions: ['nobody'] }, { ...base, reactions: [{ key: '', users: [A] }] },
    { ...base, reactions: [{ key: '👍', users: [] }] }, { ...base, reactions: [{ key: '👍', users: ['x'] }] },
    { ...base, editSeq: 'x' }, { ...base, deleted: false }, { ...base, deleted: true }, { ...base, via: 'x' },
  ]) variants.push(msg(bad));
  for (const v of variants) {
    assert.throws(() => parseArchive(v), (err) => err instanceof ArchiveError && err.message.length > 10, `refused: ${String(v).slice(0, 120)}`);
  }
  // Unknown fields are dropped, known ones kept.
  const ok = parseArchive(msg({ ...base, extra: 'x', replyTo: 2 }));
  assert.deepEqual(ok.conversations[0].messages[0], { ...base, replyTo: 2 });
});

/** The receiver (alice's new device, or carol): joined later, holds the newer messages. */
function receiverState(me) {
  const st = emptyAppState();
  st.convs['!g:hs1'] = {
    group_id: '!g:hs1', name: '', members: [], unread: 1, active: true, lastSeq: 9,
    messages: [
      { id: 'w:9', kind: 'system', body: 'Your device DEV1 added this device.', ts: 5 },
      { id: 'm7', kind: 'text', body: 'reply (mine already)', sender: B, ts: 7, seq: 7, replyTo: 2 },
      { id: 'm9', kind: 'text', body: 'newest', sender: B, ts: 9, seq: 9 },
    ],
    pending: [{ type: 'reaction', target: 4, key: '❤️', from: B, seq: 8 }],
  };
  st.order = ['!g:hs1'];
  st.session = { user_id: me, device_id: 'DEV2' };
  return st;
}

test('mergeArchive inserts in order, marks imported, never overwrites, skips unknown conversations, applies waiting actions', () => {
  const archive = buildArchive(sharerState(), ['!g:hs1', '!h:hs1'], { fromDevice: 'DEV1', now: 1 });
  const st = receiverState(A);
  const counts = mergeArchive(st, JSON.stringify(archive), { me: A });
  assert.deepEqual(counts, { messages: 4, conversations: 1, skipped: 1 });
  const conv = st.convs['!g:hs1'];
  assert.deepEqual(conv.messages.map((m) => m.id), ['m2', 'm3', 'm4', 'w:9', 'm6', 'm7', 'm9'], 'by seq; the system line by time');
  assert.equal(conv.unread, 1, 'imported messages are not unread');
  const m2 = findBySeq(conv, 2);
  assert.equal(m2.imported, true);
  assert.equal(m2.via, undefined);
  assert.equal(m2.own, false);
  const m3 = findBySeq(conv, 3);
  assert.equal(m3.own, true, 'this user\'s own messages are "You"');
  assert.equal(m3.state, 'delivered');
  assert.equal(findBySeq(conv, 7).body, 'reply (mine already)', 'a message already here is never overwritten');
  assert.equal(findBySeq(conv, 7).imported, undefined);
  assert.deepEqual(findBySeq(conv, 4).reactions, [{ key: '❤️', users: [B] }], 'the waiting reaction applied');
  assert.equal(conv.pending.length, 0);
  // Again: nothing new.
  assert.deepEqual(mergeArchive(st, archive, { me: A }), { messages: 0, conversations: 0, skipped: 1 });
  assert.equal(historyCounts({ messages: 4, conversations: 1 }), '4 messages in 1 conversation');
  assert.equal(historyCounts({ messages: 1, conversations: 2 }), '1 message in 2 conversations');
});

test('mergeArchive from another user: marked via the sharer, only the named conversation, a bad archive changes nothing', () => {
  const archive = buildArchive(sharerState(), ['!g:hs1'], { maxPerConv: 100 });
  const carol = receiverState('@carol:hs3');
  const before = JSON.stringify(carol);
  assert.throws(() => mergeArchive(carol, JSON.stringify({ ...archive, v: 9 }), { me: '@carol:hs3', via: A, only: '!g:hs1' }), ArchiveError);
  const two = buildArchive(sharerState(), ['!g:hs1', '!h:hs1']);
  assert.throws(() => mergeArchive(carol, two, { me: '@carol:hs3', via: A, only: '!g:hs1' }), /another conversation/);
  assert.equal(JSON.stringify(carol), before, 'nothing changed');
  const c = mergeArchive(carol, archive, { me: '@carol:hs3', via: A, only: '!g:hs1' });
  assert.equal(c.messages, 4);
  const m3 = findBySeq(carol.convs['!g:hs1'], 3);
  assert.equal(m3.via, A);
  assert.equal(m3.own, false);
});

test('the history payload is validated like every payload', () => {
  assert.deepEqual(parsePayload(JSON.stringify({ type: 'history', v: 1, archive: FILE })), { type: 'history', v: 1, archive: FILE });
  assert.deepEqual(parsePayload(JSON.stringify({ type: 'history', v: 1, archive: FILE, group_id: '!g:hs1' })).group_id, '!g:hs1');
  for (const bad of [{ v: 2, archive: FILE }, { v: 1 }, { v: 1, archive: { ...FILE, size: 3 } }, { v: 1, archive: FILE, group_id: 5 }]) {
    assert.equal(parsePayload(JSON.stringify({ type: 'history', ...bad })).type, 'invalid');
  }
});

test('a share from another user cannot plant messages at or after what this device received, nor speak for it', async () => {
  const { latestIncomingSeq, pushMessage } = await import('../app/logic.js');
  const me = '@carol:hs2';
  const st = emptyAppState();
  st.convs['!g:hs1'] = {
    group_id: '!g:hs1', members: [], unread: 0, active: true, lastSeq: 10,
    messages: [{ id: 'r10', kind: 'text', body: 'received here', sender: B, ts: 10, seq: 10 }],
  };
  const archive = {
    type: 'parley.history', v: 1, from_device: 'ADEV', created_ts: 11,
    conversations: [{ group_id: '!g:hs1', messages: [
      { id: 'e2', kind: 'text', body: 'earlier', sender: A, ts: 2, seq: 2 },
      { id: 'f3', kind: 'text', body: 'forged as carol', sender: me, ts: 3, seq: 3 },
      { id: 'f11', kind: 'text', body: 'planted in the future', sender: B, ts: 11, seq: 11 },
      { id: 'f99', kind: 'text', body: 'far future', sender: B, ts: 99, seq: 9999 },
    ] }],
  };
  const counts = mergeArchive(st, JSON.stringify(archive), { via: A, me, only: '!g:hs1' });
  const conv = st.convs['!g:hs1'];
  assert.deepEqual(conv.messages.map((m) => m.id), ['e2', 'f3', 'r10']);
  assert.equal(counts.messages, 2);
  assert.equal(conv.messages[1].own, false, 'another user cannot vouch for "sent by you"');
  assert.equal(latestIncomingSeq(conv), 10, 'imported messages never move receipts');
  // A message received here takes its seq back from an imported one claiming it.
  pushMessage(conv, { id: 'real3', kind: 'text', body: 'the real seq 3', sender: B, ts: 3, seq: 3 });
  assert.equal(findBySeq(conv, 3).id, 'real3');
  assert.equal(conv.messages.filter((m) => m.seq === 3).length, 1);
});
