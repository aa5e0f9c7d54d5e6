// Unit tests of Session (the sync/commit glue) with a fake engine and a fake homeserver.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session, welcomeText } from '../app/session.js';
import { emptyAppState } from '../app/logic.js';

const ME = { user_id: '@alice:hs', device_id: 'ADEV' };

function fakeClient() {
  const c = {
    log: [],
    groups: new Set(),
    members: {},
    known: new Set(),
    missingNext: [],
    pending: false,
    takeMissingUsers() { const m = this.missingNext; this.missingNext = []; return JSON.stringify(m); },
    setUserDevices(json) { this.known.add(JSON.parse(json).user_id); },
    signatureKey() { return 'SIGKEY'; },
    generateKeyPackages(n) { this.log.push(`kp${n}`); return JSON.stringify(Array.from({ length: n }, (_, i) => `KP${i}`)); },
    generateLastResortKeyPackage() { return 'LR'; },
    groupIds() { return JSON.stringify([...this.groups]); },
    createGroup(g) { this.groups.add(g); this.members[g] = [{ ...ME }]; },
    // Roles (a group created with them: this user the only admin).
    admins: {},
    createGroupWithRoles(g) { this.createGroup(g); this.admins[g] = [ME.user_id]; },
    roles(g) { return JSON.stringify(this.admins[g] ? { admins: this.admins[g] } : null); },
    isAdmin(g, u) {
      const a = this.admins[g];
      if (!a) return true;
      const users = new Set((this.members[g] || []).map((m) => m.user_id));
      return a.some((x) => users.has(x)) ? a.includes(u) : users.has(u);
    },
    setAdmins(g, json) {
      if (!this.isAdmin(g, ME.user_id)) throw new Error('[NotAdmin] only an admin may change the group\'s roles or settings');
      this.log.push(`admins:${json}`);
      this.pending = true;
      this.nextAdmins = JSON.parse(json);
      return JSON.stringify({ commit: 'C', adds: [], removes: [] });
    },
    members(g) { return JSON.stringify(this.members[g] || []); },
    join(w) {
      if (!this.known.has('@bob:hs')) { this.missingNext = ['@bob:hs']; throw new Error('[CredentialRefused] no key'); }
      this.groups.add('!g:hs');
      this.members['!g:hs'] = [{ ...ME }, { user_id: '@bob:hs', device_id: 'BDEV' }];
      return JSON.stringify({ group_id: '!g:hs', epoch: 1, members: this.members['!g:hs'], events: [] });
    },
    process(g, json) {
      const m = JSON.parse(json);
      this.log.push(`process:${m.seq}`);
      const plaintext = this.plain[m.seq] || JSON.stringify({ type: 'text', body: `msg${m.seq}` });
      if (m.kind === 'application') return JSON.stringify([{ type: 'application', sender: m.sender, plaintext, msg_id: `id${m.seq}`, ts: 1, epoch: 1 }]);
      if (m.kind === 'commit') return JSON.stringify([{ type: 'commit', committer: m.sender, epoch: 2, added: [{ user_id: '@carol:hs', device_id: 'C' }], removed: [], updated: [] }]);
      return '[]';
    },
    addMembers(g, kps) { this.log.push(`add:${JSON.parse(kps).join(',')}`); this.pending = true; return JSON.stringify({ commit: 'C', adds: [{ user_id: '@bob:hs', device_id: 'BDEV' }], removes: [] }); },
    confirmCommit(g) { this.log.push('confirm'); this.pending = false; this.members[g].push({ user_id: '@bob:hs', device_id: 'BDEV' }); return JSON.stringify({ type: 'own_commit', epoch: 2 }); },
    discardCommit() { this.log.push('discard'); if (!this.pending) throw new Error('[NoPendingCommit] none'); this.pending = false; },
    encrypt(g, p, now) { this.sent.push(JSON.parse(p)); return JSON.stringify({ message: 'ENC', msg_id: `mid-${this.sent.length}`, ts: now, epoch: 1 }); },
    removeMembers(g, devs) { this.log.push(`remove:${JSON.parse(devs).map((d) => d.device_id).join(',')}`); this.pending = true; return JSON.stringify({ commit: 'C', adds: [], removes: JSON.parse(devs) }); },
    plain: {},
    sent: [],
    pendingKeyChanges() { return '[]'; },
  };
  return c;
}

function fakeApi(handlers) {
  const calls = [];
  const api = { baseUrl: 'http://hs', session: { access_token: 'T' }, calls };
  for (const [name, fn] of Object.entries(handlers)) {
    api[name] = async (...args) => { calls.push([name, ...args]); return fn(...args); };
  }
  return api;
}

function session(client, api, state = emptyAppState(), opts = {}) {
  state.session = { ...ME, access_token: 'T', refresh_token: 'R' };
  let saves = 0;
  const deferred = [];
  const s = new Session({
    client, api, state, persist: async () => { saves += 1; }, now: () => 1000, defer: (fn, ms) => deferred.push({ fn, ms }), ...opts,
  });
  s.saves = () => saves;
  s.deferred = deferred;
  return s;
}

test('first start binds the signature key and uploads key packages with a last resort', async () => {
  const client = fakeClient();
  const api = fakeApi({
    bindSignatureKey: () => ({}),
    uploadKeys: () => ({ count: 30, last_resort: true }),
  });
  const s = session(client, api);
  await s.ensureKeys();
  assert.deepEqual(api.calls[0], ['bindSignatureKey', 'ADEV', 'SIGKEY']);
  assert.equal(api.calls[1][0], 'uploadKeys');
  assert.equal(api.calls[1][1].length, 30);
  assert.equal(api.calls[1][2], 'LR');
  assert.equal(s.state.keysBound, true);
  await s.ensureKeys();
  assert.equal(api.calls.length, 2, 'only once');
  // Replenish when low; last resort re-uploaded when the server has none.
  await s.replenish({ count: 3, last_resort: false });
  assert.equal(api.calls[2][1].length, 27);
  assert.equal(api.calls[2][2], 'LR');
  await s.replenish({ count: 20, last_resort: true });
  assert.equal(api.calls.length, 3);
});

test('a welcome fetches the sender\'s devices, joins, creates the conversation and is acknowledged', async () => {
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), deleteWelcome: () => ({}) });
  const s = session(client, api);
  await s.handleFrame({ type: 'welcome', id: 'w1', group_id: '!g:hs', sender: { user_id: '@bob:hs', device_id: 'BDEV' }, welcome: 'W', ts: 5, next_batch: 'n1' }, true);
  assert.ok(s.state.convs['!g:hs']);
  assert.equal(s.state.convs['!g:hs'].members.length, 2);
  assert.equal(s.state.since, 'n1');
  assert.deepEqual(api.calls.map((c) => c[0]), ['userDevices', 'deleteWelcome']);
});

test('messages: decrypted ones count as unread, own echoes mark delivered, repeats are skipped', async () => {
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), send: () => ({ seq: 2 }) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  const bob = { user_id: '@bob:hs', device_id: 'BDEV' };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 1, sender: bob, kind: 'application', epoch: 1, message: 'M', ts: 1 }, false);
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 1, sender: bob, kind: 'application', epoch: 1, message: 'M', ts: 1 }, false);
  const conv = s.state.convs['!g:hs'];
  assert.equal(conv.unread, 1);
  assert.equal(client.log.filter((l) => l.startsWith('process')).length, 1);
  await s.sendText('!g:hs', 'secret text');
  const own = conv.messages.find((m) => m.own);
  assert.equal(own.state, 'sent');
  assert.equal(own.body, 'secret text');
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 2, sender: ME, kind: 'application', epoch: 1, message: 'ENC', ts: 1 }, false);
  assert.equal(own.state, 'delivered');
  // A commit that adds carol: carol's devices are fetched first.
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 3, sender: bob, kind: 'commit', epoch: 1, message: 'C', ts: 1, adds: [{ user_id: '@carol:hs', device_id: 'C' }], removes: [] }, false);
  assert.ok(api.calls.some((c) => c[0] === 'userDevices' && c[1] === '@carol:hs'));
  assert.ok(conv.messages.some((m) => m.kind === 'system' && m.body.includes('added @carol:hs')));
  s.openConv = '!g:hs';
  s.markRead('!g:hs');
  assert.equal(conv.unread, 0);
});

test('invite: a 409 is handled by discarding, catching up with /sync and retrying', async () => {
  const client = fakeClient();
  let commits = 0;
  const api = fakeApi({
    userDevices: (u) => ({ user_id: u, devices: [] }),
    claimKeys: () => ({ key_packages: { '@bob:hs': { BDEV: 'BOBKP' } }, failures: {} }),
    commit: () => {
      commits += 1;
      if (commits === 1) { const e = new Error('stale'); e.status = 409; e.errcode = 'P_STALE_EPOCH'; throw e; }
      return { epoch: 2, seq: 5 };
    },
    sync: () => ({ next_batch: 's2', welcomes: [], groups: { '!g:hs': { messages: [{ seq: 4, sender: { user_id: '@carl:hs', device_id: 'X' }, kind: 'commit', epoch: 1, message: 'WIN', ts: 1 }] } }, key_packages: { count: 30, last_resort: true } }),
  });
  const s = session(client, api);
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  await s.invite('!g:hs', '@bob:hs');
  assert.deepEqual(client.log, ['add:BOBKP', 'discard', 'process:4', 'add:BOBKP', 'confirm']);
  assert.equal(s.state.since, 's2');
  assert.ok(s.state.convs['!g:hs'].members.some((m) => m.user_id === '@bob:hs'));
});

test('invite: a user without key packages is a clear error', async () => {
  const client = fakeClient();
  const api = fakeApi({
    userDevices: (u) => ({ user_id: u, devices: [] }),
    claimKeys: () => ({ key_packages: {}, failures: { '@bob:hs/BDEV': { errcode: 'P_KEY_PACKAGES_EXHAUSTED', error: 'no key packages left' } } }),
  });
  const s = session(client, api);
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  await assert.rejects(s.invite('!g:hs', '@bob:hs'), /no key packages left/);
  // Already a member: said so.
  api.claimKeys = async () => ({ key_packages: { '@bob:hs': { BDEV: 'BOBKP' } }, failures: {} });
  client.members['!g:hs'].push({ user_id: '@bob:hs', device_id: 'BDEV' });
  s.refreshMembers(s.state.convs['!g:hs']);
  await assert.rejects(s.invite('!g:hs', '@bob:hs'), /@bob:hs is already in this conversation/);
});

const BOB = { user_id: '@bob:hs', device_id: 'BDEV' };
const app = (gid, seq, sender, ts = 1000) => ({ type: 'message', group_id: gid, seq, sender, kind: 'application', epoch: 1, message: 'M', ts });

test('typing notices, read receipts and DM markers are never bubbles nor unread', async () => {
  let now = 1000;
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), send: () => ({ seq: 9 }) });
  const s = session(client, api, emptyAppState(), { now: () => now });
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB });
  const conv = s.newConv('!g:hs');
  s.refreshMembers(conv);
  client.plain = {
    1: '{"type":"typing"}', 2: '{"type":"dm"}', 3: '{"type":"read","up_to":5}', 9: 'plain old text', 10: '{"type":"typing"}',
    7: '{"type":"read","up_to":"x"}', 8: '{"type":"future-thing"}',
  };
  await s.handleFrame(app('!g:hs', 1, BOB), true);
  assert.deepEqual(s.typingUsers('!g:hs'), ['@bob:hs']);
  assert.equal(s.deferred.at(-1).ms > 5000, true, 'a re-render is scheduled for the expiry');
  await s.handleFrame(app('!g:hs', 2, BOB), true);
  assert.equal(conv.dm, '@bob:hs');
  await s.handleFrame(app('!g:hs', 3, BOB), true);
  assert.deepEqual(conv.reads, { '@bob:hs': 5 });
  for (const seq of [7, 8]) await s.handleFrame(app('!g:hs', seq, BOB), true);
  assert.equal(conv.messages.length, 0);
  assert.equal(conv.unread, 0);
  // Plain text (older clients) is a message, and ends bob's typing.
  await s.handleFrame(app('!g:hs', 9, BOB), true);
  assert.deepEqual(conv.messages.map((m) => m.body), ['plain old text']);
  assert.equal(conv.unread, 1);
  assert.deepEqual(s.typingUsers('!g:hs'), []);
  // Typing expires after 5 s; an old one (catch-up) is not shown at all.
  await s.handleFrame(app('!g:hs', 10, BOB, now), true);
  assert.deepEqual(s.typingUsers('!g:hs'), ['@bob:hs']);
  now += 5001;
  assert.deepEqual(s.typingUsers('!g:hs'), []);
  client.plain[11] = '{"type":"typing"}';
  await s.handleFrame(app('!g:hs', 11, BOB, now - 6000), false);
  assert.deepEqual(s.typingUsers('!g:hs'), []);
});

test('typing is sent at most once per 3 s; read receipts cover the latest incoming seq once', async () => {
  let now = 1000;
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), send: () => ({ seq: 20 }), sendEphemeral: () => ({}) });
  const s = session(client, api, emptyAppState(), { now: () => now });
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  await s.noteTyping('!g:hs');
  assert.deepEqual(api.calls.map((c) => c[0]), ['sendEphemeral'], 'typing goes the ephemeral way, never stored');
  await s.noteTyping('!g:hs');
  now += 2000;
  await s.noteTyping('!g:hs');
  assert.deepEqual(client.sent, [{ type: 'typing' }]);
  now += 1000;
  await s.noteTyping('!g:hs');
  assert.deepEqual(client.sent, [{ type: 'typing' }, { type: 'typing' }]);
  assert.equal(conv.messages.length, 0, 'no local echo for typing');

  // Bob's texts arrive while the conversation is open: a receipt up to the latest is sent, once.
  s.openConv = '!g:hs';
  await s.handleFrame(app('!g:hs', 3, BOB), true);
  await s.handleFrame(app('!g:hs', 4, BOB), true);
  assert.equal(s.deferred.filter((d) => d.ms === 200).length, 2, 'a receipt is scheduled');
  assert.equal(await s.sendReadReceipt('!g:hs'), true);
  assert.equal(await s.sendReadReceipt('!g:hs'), false, 'nothing new');
  assert.deepEqual(client.sent.at(-1), { type: 'read', up_to: 4 });
  assert.equal(client.sent.filter((p) => p.type === 'read').length, 1);
  const receiptCall = api.calls.at(-1);
  assert.equal(receiptCall[0], 'sendEphemeral', 'a receipt is never stored');
  assert.deepEqual(receiptCall.at(-1), { keepLatest: true }, 'kept as the latest for devices away');
  // Not for a conversation in the background or a hidden page.
  s.openConv = null;
  await s.handleFrame(app('!g:hs', 5, BOB), true);
  assert.equal(await s.sendReadReceipt('!g:hs'), false);
  s.openConv = '!g:hs';
  s.isVisible = () => false;
  assert.equal(await s.sendReadReceipt('!g:hs'), false);
  s.isVisible = () => true;
  s.markRead('!g:hs');
  await s.flush();
  assert.deepEqual(client.sent.at(-1), { type: 'read', up_to: 5 });
  assert.equal(conv.unread, 0);
});

test('a read receipt from another device of this user clears the unread count', async () => {
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  await s.handleFrame(app('!g:hs', 1, BOB), true);
  assert.equal(conv.unread, 1);
  client.plain[2] = '{"type":"read","up_to":1}';
  await s.handleFrame(app('!g:hs', 2, { user_id: ME.user_id, device_id: 'OTHER' }), true);
  assert.equal(conv.unread, 0);
  assert.deepEqual(conv.reads || {}, {}, 'own reads are not receipts of others');
  // A text from another own device shows as own, not unread.
  await s.handleFrame(app('!g:hs', 3, { user_id: ME.user_id, device_id: 'OTHER' }), true);
  assert.equal(conv.messages.at(-1).own, true);
  assert.equal(conv.unread, 0);
});

test('startDm: creates a marked two-member group, then reuses it; bad users are clear errors', async () => {
  const client = fakeClient();
  let groups = 0;
  const api = fakeApi({
    userDevices: (u) => {
      if (u === '@nobody:hs') { const e = new Error('no such user'); e.status = 404; throw e; }
      if (u === '@idle:hs') return { user_id: u, devices: [] };
      return { user_id: u, devices: [{ device_id: 'BDEV', signature_key: 'K' }] };
    },
    createGroup: () => { groups += 1; return { group_id: `!dm${groups}:hs` }; },
    claimKeys: () => ({ key_packages: { '@bob:hs': { BDEV: 'BOBKP' } }, failures: {} }),
    commit: () => ({ epoch: 2, seq: 1 }),
    send: () => ({ seq: 2 }),
  });
  const s = session(client, api);
  const r = await s.startDm('@bob:hs');
  assert.deepEqual(r, { group_id: '!dm1:hs', reused: false });
  const conv = s.state.convs['!dm1:hs'];
  assert.equal(conv.dm, '@bob:hs');
  assert.deepEqual([...new Set(conv.members.map((m) => m.user_id))].sort(), ['@alice:hs', '@bob:hs']);
  assert.deepEqual(client.sent, [{ type: 'dm' }], 'the DM marker is the first message');
  assert.deepEqual(await s.startDm('@bob:hs'), { group_id: '!dm1:hs', reused: true });
  assert.equal(groups, 1);
  await assert.rejects(s.startDm('@nobody:hs'), /There is no user @nobody:hs/);
  await assert.rejects(s.startDm('@idle:hs'), /no device that can receive/);
  await assert.rejects(s.startDm(ME.user_id), /someone else/);
  assert.equal(groups, 1, 'no group for a user that cannot be reached');
  // An invite that fails leaves no empty conversation behind.
  api.claimKeys = async () => ({ key_packages: {}, failures: { '@carol:hs/C': { errcode: 'P_KEY_PACKAGES_EXHAUSTED', error: 'no key packages left' } } });
  await assert.rejects(s.startDm('@carol:hs'), /no key packages left/);
  assert.equal(s.state.convs['!dm2:hs'], undefined);
  assert.deepEqual(s.state.order, ['!dm1:hs']);
});

test('syncOwnDevices adds a new device of this user to its groups and removes revoked ones', async () => {
  const client = fakeClient();
  let devices = ['ADEV'];
  const claims = [];
  const api = fakeApi({
    userDevices: (u) => ({ user_id: u, devices: devices.map((d) => ({ device_id: d, signature_key: 'K' })) }),
    claimKeys: (users) => {
      claims.push(users);
      return { key_packages: { [ME.user_id]: { ADEV: 'MYKP', NEWDEV: 'NEWKP' } }, failures: {} };
    },
    commit: () => ({ epoch: 2, seq: 3 }),
    send: () => ({ seq: 4 }),
  });
  const s = session(client, api);
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  conv.dm = '@bob:hs';
  client.members['!g:hs'].push({ ...BOB });
  client.confirmCommit = function confirm(g) {
    this.log.push('confirm');
    this.pending = false;
    this.members[g].push({ user_id: ME.user_id, device_id: 'NEWDEV' });
    return '{}';
  };
  s.refreshMembers(conv);
  assert.equal(await s.syncOwnDevices(), 0, 'nothing to do');
  assert.equal(claims.length, 0);
  devices = ['ADEV', 'NEWDEV'];
  assert.equal(await s.syncOwnDevices(), 1);
  assert.deepEqual(client.log, ['add:NEWKP', 'confirm'], 'only the new device is added');
  assert.deepEqual(claims, [[ME.user_id]]);
  assert.deepEqual(client.sent, [{ type: 'dm' }], 'the DM marker is sent again for the new device');
  assert.ok(conv.members.some((m) => m.device_id === 'NEWDEV'));
  assert.deepEqual(s.state.historyOffers, { NEWDEV: 1000 }, 'the UI offers to send it the history');
  assert.equal(await s.syncOwnDevices(), 0, 'already a member');
  // NEWDEV is revoked: removed from the group.
  devices = ['ADEV'];
  client.confirmCommit = function confirm(g) {
    this.pending = false;
    this.members[g] = this.members[g].filter((m) => m.device_id !== 'NEWDEV');
    return '{}';
  };
  assert.equal(await s.syncOwnDevices(), 1);
  assert.equal(client.log.at(-1), 'remove:NEWDEV');
  // A new device without key packages yet: nothing committed, retried at the next poll.
  devices = ['ADEV', 'LATE'];
  assert.equal(await s.syncOwnDevices(), 0);
  // This device itself revoked: it does nothing.
  devices = ['OTHER'];
  const before = client.log.length;
  assert.equal(await s.syncOwnDevices(), 0);
  assert.equal(client.log.length, before);
});

test('a member\'s leave proposal is committed once; after a 409 whose winner removed them, not again', async () => {
  const client = fakeClient();
  const bobLeaves = () => { client.members['!g:hs'] = client.members['!g:hs'].filter((d) => d.user_id !== BOB.user_id); };
  const baseProcess = client.process.bind(client);
  client.process = (g, json) => {
    const m = JSON.parse(json);
    if (m.kind === 'proposal') return JSON.stringify([{ type: 'proposal', sender: m.sender, kind: 'remove' }]);
    if (m.kind === 'commit') { bobLeaves(); return JSON.stringify([{ type: 'commit', committer: m.sender, epoch: 2, added: [], removed: [BOB], updated: [] }]); }
    return baseProcess(g, json);
  };
  client.commitPendingProposals = () => { client.log.push('commitProposals'); client.pending = true; return JSON.stringify({ commit: 'C', adds: [], removes: [BOB] }); };
  client.confirmCommit = () => { client.pending = false; bobLeaves(); return '{}'; };
  let conflict = false;
  const api = fakeApi({
    userDevices: (u) => ({ user_id: u, devices: [] }),
    commit: () => {
      if (conflict) { const e = new Error('stale'); e.status = 409; throw e; }
      return { epoch: 2, seq: 2 };
    },
    sync: () => ({ next_batch: 's9', welcomes: [], groups: { '!g:hs': { messages: [{ seq: 5, sender: { user_id: '@carol:hs', device_id: 'C' }, kind: 'commit', epoch: 1, message: 'WIN', ts: 1, adds: [], removes: [BOB] }] } }, key_packages: { count: 30, last_resort: true } }),
  });
  const s = session(client, api);
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB });
  const conv = s.newConv('!g:hs');
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 1, sender: BOB, kind: 'proposal', epoch: 1, message: 'P', ts: 1 }, true);
  assert.deepEqual(client.log.filter((l) => l === 'commitProposals').length, 1);
  assert.ok(conv.messages.some((m) => m.body === '@bob:hs left.'));
  assert.ok(!conv.members.some((m) => m.user_id === BOB.user_id));

  // Again, but another member's commit wins the race.
  client.members['!g:hs'].push({ ...BOB });
  client.log.length = 0;
  conflict = true;
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 3, sender: BOB, kind: 'proposal', epoch: 2, message: 'P', ts: 1 }, true);
  assert.deepEqual(client.log.filter((l) => l === 'commitProposals').length, 1, 'not rebuilt after the winner removed bob');
  assert.ok(conv.messages.some((m) => m.body.includes('@bob:hs left or was removed')));
});

test('a member_deactivated notice commits the removal of that user\'s named devices only', async () => {
  const client = fakeClient();
  client.confirmCommit = function confirm(g) {
    this.pending = false;
    this.members[g] = this.members[g].filter((d) => d.user_id !== BOB.user_id);
    return '{}';
  };
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), commit: () => ({ epoch: 2, seq: 6 }) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB });
  const conv = s.newConv('!g:hs');
  const b64 = (o) => btoa(JSON.stringify(o));
  // A notice naming someone else's device under bob's name is not followed for that device.
  const forged = { type: 'member_deactivated', user_id: BOB.user_id, devices: [{ user_id: ME.user_id, device_id: ME.device_id }] };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 4, sender: BOB, kind: 'notice', epoch: 1, message: b64(forged), ts: 1 }, true);
  assert.ok(!client.log.some((l) => l.startsWith('remove:')), 'nothing removed');
  const notice = { type: 'member_deactivated', user_id: BOB.user_id, devices: [{ ...BOB }] };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 5, sender: BOB, kind: 'notice', epoch: 1, message: b64(notice), ts: 1 }, true);
  assert.equal(client.log.filter((l) => l.startsWith('remove:')).join(), `remove:${BOB.device_id}`);
  assert.ok(!client.log.includes('process:5'), 'a notice is not handed to the MLS engine');
  assert.ok(conv.messages.some((x) => x.body === '@bob:hs\'s account was closed by their server.'));
  assert.ok(!conv.members.some((x) => x.user_id === BOB.user_id));
  assert.equal(conv.lastSeq, 5);
});

test('a Welcome names who added this device from the MLS group, never from a forged envelope', async () => {
  const joined = { group_id: '!g:hs', members: [{ ...ME }, { ...BOB }] };
  assert.equal(welcomeText(joined, BOB, ME.user_id).body, '@bob:hs added you.');
  // The server claims someone who is not in the group: the members are named instead.
  const forged = welcomeText(joined, { user_id: '@mallory:evil', device_id: 'M' }, ME.user_id);
  assert.equal(forged.body, 'You were added to a conversation with @bob:hs.');
  assert.ok(!forged.status.includes('mallory'));
  // "Your device X" only if that own device really is a member.
  assert.equal(welcomeText(joined, { user_id: ME.user_id, device_id: 'GHOST' }, ME.user_id).body, 'You were added to a conversation with @bob:hs.');
  const own = { group_id: '!g:hs', members: [{ ...ME }, { user_id: ME.user_id, device_id: 'A2' }] };
  assert.equal(welcomeText(own, { user_id: ME.user_id, device_id: 'A2' }, ME.user_id).body, 'Your device A2 added this device.');
  // The engine's own answer (the Welcome's signer) wins over the envelope.
  const carol = { user_id: '@carol:hs', device_id: 'C' };
  const signed = { ...joined, members: [...joined.members, carol], welcome_sender: carol };
  assert.equal(welcomeText(signed, BOB, ME.user_id).body, '@carol:hs added you.');

  // Through the session: the system message and the announcement.
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), deleteWelcome: () => ({}) });
  const notes = [];
  const s = session(client, api, emptyAppState(), { notify: (kind, text) => notes.push(text) });
  await s.handleFrame({ type: 'welcome', id: 'w1', group_id: '!g:hs', sender: { user_id: '@mallory:evil', device_id: 'M' }, welcome: 'W', ts: 5 }, true);
  const conv = s.state.convs['!g:hs'];
  assert.deepEqual(conv.messages.map((m) => m.body), ['You were added to a conversation with @bob:hs.']);
  assert.ok(notes.every((n) => !n.includes('mallory')));
});

test('a verified contact\'s new device is a key change: sending blocked until acknowledged, which drops the verified mark', async () => {
  const client = fakeClient();
  const trust = { BDEV: 'tofu' };
  client.groups.add('!g:hs');
  client.setUserVerified = (u, v) => { for (const d of Object.keys(trust)) trust[d] = v ? 'verified' : 'tofu'; };
  const acked = [];
  client.acknowledgeKeyChange = (u, d) => acked.push(d);
  client.process = (g, json) => {
    const m = JSON.parse(json);
    trust.BNEW = 'tofu';
    return JSON.stringify([{ type: 'commit', committer: m.sender, epoch: 2, added: [{ user_id: BOB.user_id, device_id: 'BNEW' }], removed: [], updated: [] }]);
  };
  const raw = { '!g:hs': [{ ...ME, trust: 'own' }, { ...BOB }] };
  client.members = (g) => JSON.stringify((raw[g] || []).map((m) => (m.user_id === BOB.user_id ? { ...m, trust: trust[m.device_id] } : m)));
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), send: () => ({ seq: 7 }) });
  const notes = [];
  const s = session(client, api, emptyAppState(), { notify: (kind, text) => notes.push([kind, text]) });
  const conv = s.newConv('!g:hs');
  s.refreshMembers(conv);
  await s.setVerified(BOB.user_id, true);
  assert.equal(trust.BDEV, 'verified');

  // Bob's new device is added by his first one.
  raw['!g:hs'].push({ user_id: BOB.user_id, device_id: 'BNEW' });
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 1, sender: BOB, kind: 'commit', epoch: 1, message: 'C', ts: 1, adds: [{ user_id: BOB.user_id, device_id: 'BNEW' }], removes: [] }, false);
  assert.deepEqual(s.keyChanges('!g:hs'), [{ user_id: BOB.user_id, device_id: 'BNEW', kind: 'new_device' }]);
  assert.ok(notes.some(([kind, text]) => kind === 'alert' && text.includes('safety number with @bob:hs changed')));
  assert.ok(conv.messages.some((m) => m.body === '@bob:hs has a new device BNEW: the safety number changed.'));
  await assert.rejects(s.sendText('!g:hs', 'blocked text'), /acknowledge the key change/);
  assert.equal(await s.signalNow('!g:hs', { type: 'typing' }), false);
  assert.deepEqual(client.sent, [], 'nothing encrypted while a key change is pending');

  await s.acknowledgeKeyChanges('!g:hs');
  assert.deepEqual(s.keyChanges('!g:hs'), []);
  assert.deepEqual(acked, [], 'no engine key change to acknowledge');
  assert.deepEqual(trust, { BDEV: 'tofu', BNEW: 'tofu' }, 'no device of bob stays verified');
  s.noteNewDevices();
  assert.deepEqual(s.keyChanges('!g:hs'), [], 'the warning does not come back by itself');
  await s.sendText('!g:hs', 'after the acknowledgement');
  assert.deepEqual(client.sent.map((p) => p.body), ['after the acknowledgement']);

  // Verified again; a third device is flagged, and stays flagged when the verified ones leave.
  await s.setVerified(BOB.user_id, true);
  assert.deepEqual(trust, { BDEV: 'verified', BNEW: 'verified' });
  raw['!g:hs'].push({ user_id: BOB.user_id, device_id: 'B3' });
  trust.B3 = 'tofu';
  s.refreshMembers(conv);
  s.noteNewDevices();
  assert.deepEqual(s.keyChanges('!g:hs').map((k) => k.device_id), ['B3']);
  raw['!g:hs'] = raw['!g:hs'].filter((m) => m.device_id === 'B3' || m.user_id !== BOB.user_id);
  s.refreshMembers(conv);
  s.noteNewDevices();
  assert.deepEqual(s.keyChanges('!g:hs').map((k) => k.device_id), ['B3']);
  // Verifying again ends it.
  await s.setVerified(BOB.user_id, true);
  assert.deepEqual(s.keyChanges('!g:hs'), []);
});

test('a device whose refresh token is refused stops reconnecting and signs out', async () => {
  const client = fakeClient();
  const api = fakeApi({
    refresh: () => { const e = new Error('revoked'); e.status = 401; e.errcode = 'P_UNKNOWN_TOKEN'; throw e; },
    sync: () => { const e = new Error('revoked'); e.status = 401; e.errcode = 'P_UNKNOWN_TOKEN'; throw e; },
  });
  let signedOut = 0;
  const sockets = [];
  class FakeWs { constructor(url) { this.url = url; sockets.push(this); } send() {} close() {} }
  const s = session(client, api, emptyAppState(), { WebSocketImpl: FakeWs, onSignedOut: () => { signedOut += 1; } });
  s.stopped = false;
  s.connectWs();
  sockets[0].onmessage({ data: JSON.stringify({ type: 'error', errcode: 'P_UNKNOWN_TOKEN' }) });
  sockets[0].onclose();
  await new Promise((r) => { setTimeout(r, 1100); }); // the first reconnect comes within 1 s
  assert.equal(signedOut, 1);
  assert.equal(s.stopped, true);
  assert.equal(sockets.length, 1, 'no reconnect after the session ended');
});

test('a WebSocket says how far the device processed, once per burst of frames', async () => {
  const client = fakeClient();
  const api = fakeApi({});
  const sockets = [];
  class FakeWs {
    constructor(url) { this.url = url; this.sent = []; this.readyState = 1; sockets.push(this); }
    send(data) { this.sent.push(JSON.parse(data)); }
    close() {}
  }
  const s = session(client, api, emptyAppState(), { WebSocketImpl: FakeWs });
  s.stopped = false;
  s.connectWs();
  const ws = sockets[0];
  for (const n of [5, 6, 7]) {
    ws.onmessage({ data: JSON.stringify({ type: 'key_packages', count: 5, last_resort: true, next_batch: `s${n}` }) });
  }
  await new Promise((r) => { setTimeout(r, 2300); });
  const acks = ws.sent.filter((f) => 'received' in f);
  assert.deepEqual(acks, [{ received: 's7' }]);
  s.stop();
});

test('an ephemeral typing notice shows who types; anything else sent ephemerally is dropped', async () => {
  const now = 1000;
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }) });
  const s = session(client, api, emptyAppState(), { now: () => now });
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB });
  const conv = s.newConv('!g:hs');
  s.refreshMembers(conv);
  const frame = { type: 'ephemeral', group_id: '!g:hs', sender: BOB, epoch: 1, message: 'M', ts: now };
  client.plain = { 0: '{"type":"text","body":"sneaked in"}' };
  await s.handleFrame(frame, true);
  assert.equal(conv.messages.length, 0, 'no bubble from an ephemeral message');
  assert.deepEqual(s.typingUsers('!g:hs'), []);
  client.plain = { 0: '{"type":"typing"}' };
  await s.handleFrame(frame, true);
  assert.deepEqual(s.typingUsers('!g:hs'), ['@bob:hs']);
  assert.equal(conv.lastSeq || 0, 0, 'no seq moved');
});

/** A fake engine attachment API: "encrypts" by prefixing a tag; decrypt checks the key. */
function fakeAttachments() {
  let n = 0;
  return {
    freed: 0,
    encrypt(bytes) {
      n += 1;
      const self = this;
      const ct = new Uint8Array(bytes.length + 16);
      ct.set(bytes, 16);
      return {
        ciphertext: ct, key: `K${n}`, noncePrefix: `N${n}`, sha256: `H${n}`, size: ct.length, plaintextSize: bytes.length,
        free() { self.freed += 1; },
      };
    },
    decrypt(ct, key, np, sha) {
      if (sha === 'BAD') throw new Error('[AttachmentHashMismatch] hash mismatch: the file was modified or corrupted');
      return ct.slice(16);
    },
  };
}

test('sendFile: refuses past the advertised limit before uploading; uploads file and thumbnail, names both', async () => {
  const client = fakeClient();
  const uploads = [];
  const api = fakeApi({
    versions: () => ({ limits: { max_upload_bytes: 100 } }),
    uploadMedia: (bytes, { onProgress }) => {
      onProgress(bytes.length, bytes.length);
      uploads.push(bytes.length);
      return { media_id: `m${uploads.length}`, server_name: 'hs', size: bytes.length };
    },
    send: () => ({ seq: 5 }),
  });
  const attachments = fakeAttachments();
  const progress = [];
  const s = session(client, api, undefined, { attachments, onUploadProgress: (u) => progress.push([u.loaded, u.total]) });
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  // 85 bytes → 101 bytes of ciphertext: over the 100-byte limit, nothing uploaded.
  await assert.rejects(s.sendFile('!g:hs', { bytes: new Uint8Array(85), name: 'big.bin', mime: 'application/octet-stream' }),
    /larger than the server's limit/);
  assert.deepEqual(uploads, []);
  assert.equal(s.uploadsOf('!g:hs').length, 0);
  const msg = await s.sendFile('!g:hs', {
    bytes: new Uint8Array(60), name: 'cat.png', mime: 'image/png', width: 640, height: 480,
    thumbnail: { bytes: new Uint8Array(10), mime: 'image/jpeg', width: 320, height: 240 },
  });
  assert.deepEqual(uploads, [76, 26]);
  assert.equal(attachments.freed, 2, 'the engine objects holding keys are freed');
  assert.deepEqual(progress.at(-1), [102, 102]);
  const send = api.calls.find((c) => c[0] === 'send');
  assert.deepEqual(send[4], ['m1', 'm2'], 'the send names the file and its thumbnail');
  const payload = client.sent.at(-1);
  assert.equal(payload.type, 'file');
  assert.deepEqual(payload.file, {
    v: 1, media_id: 'm1', server_name: 'hs', key: 'K1', nonce_prefix: 'N1', sha256: 'H1', size: 76,
    plaintext_size: 60, mime: 'image/png', name: 'cat.png', width: 640, height: 480,
    thumbnail: { media_id: 'm2', server_name: 'hs', key: 'K2', nonce_prefix: 'N2', sha256: 'H2', size: 26, mime: 'image/jpeg', width: 320, height: 240 },
  });
  // The local echo keeps the descriptor (for the vault), never the bytes.
  const conv = s.state.convs['!g:hs'];
  assert.equal(msg, conv.messages.at(-1));
  assert.equal(msg.kind, 'file');
  assert.equal(msg.state, 'sent');
  assert.equal(msg.seq, 5);
  assert.deepEqual(msg.file, payload.file);
  assert.equal(s.uploadsOf('!g:hs').length, 0);
  assert.equal(api.calls.filter((c) => c[0] === 'versions').length, 1, 'the limit is asked once');
});

test('sendFile: a failed or cancelled upload sends nothing and leaves no pending upload', async () => {
  const client = fakeClient();
  let release;
  const api = fakeApi({
    versions: () => ({ limits: { max_upload_bytes: 1000 } }),
    uploadMedia: (bytes, { signal }) => new Promise((resolve, reject) => {
      release = () => reject(Object.assign(new Error('quota'), { errcode: 'P_QUOTA_EXCEEDED', status: 413 }));
      signal.addEventListener('abort', () => reject(Object.assign(new Error('cancelled'), { name: 'AbortError' })));
    }),
    send: () => ({ seq: 1 }),
  });
  const s = session(client, api, undefined, { attachments: fakeAttachments() });
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  const first = s.sendFile('!g:hs', { bytes: new Uint8Array(5), name: 'a', mime: '' });
  await new Promise((r) => { setTimeout(r, 5); });
  assert.equal(s.uploadsOf('!g:hs').length, 1);
  release();
  await assert.rejects(first, (e) => e.errcode === 'P_QUOTA_EXCEEDED');
  const second = s.sendFile('!g:hs', { bytes: new Uint8Array(5), name: 'b', mime: '' });
  await new Promise((r) => { setTimeout(r, 5); });
  s.cancelUpload(s.uploadsOf('!g:hs')[0].id);
  await assert.rejects(second, (e) => e.name === 'AbortError');
  assert.equal(s.uploadsOf('!g:hs').length, 0);
  assert.equal(api.calls.filter((c) => c[0] === 'send').length, 0);
  assert.equal(s.state.convs['!g:hs'].messages.length, 0);
});

test('a received file message keeps its descriptor and counts as unread; a bad one is dropped', async () => {
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }) });
  const s = session(client, api, undefined, { attachments: fakeAttachments() });
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  const file = {
    v: 1, media_id: 'M', server_name: 'hs', key: 'S0VZS0VZ', nonce_prefix: 'Tk9OQ0U=', sha256: 'SEFTSA==',
    size: 26, plaintext_size: 10, mime: 'text/plain', name: 'notes.txt',
  };
  client.plain[1] = JSON.stringify({ type: 'file', file, body: 'the notes' });
  client.plain[2] = JSON.stringify({ type: 'file', file: { ...file, media_id: '../x' } });
  const bob = { user_id: '@bob:hs', device_id: 'BDEV' };
  for (const seq of [1, 2]) {
    await s.handleFrame({ type: 'message', group_id: '!g:hs', seq, sender: bob, kind: 'application', epoch: 1, message: 'M', ts: 1 }, false);
  }
  const conv = s.state.convs['!g:hs'];
  assert.equal(conv.messages.length, 1);
  assert.equal(conv.unread, 1);
  const m = conv.messages[0];
  assert.equal(m.kind, 'file');
  assert.equal(m.body, 'the notes');
  assert.deepEqual(m.file, file);
  // Download: through this homeserver, checked and decrypted; a wrong length is refused.
  api.downloadMedia = async (server, id) => { api.calls.push(['downloadMedia', server, id]); return new Uint8Array(26); };
  assert.equal((await s.fetchAttachment(m.file)).length, 10);
  assert.deepEqual(api.calls.at(-1), ['downloadMedia', 'hs', 'M']);
  await assert.rejects(s.fetchAttachment({ ...m.file, plaintext_size: 11 }), /\[AttachmentFormat\]/);
  await assert.rejects(s.fetchAttachment({ ...m.file, sha256: 'BAD' }), /\[AttachmentHashMismatch\]/);
  // A server sending more than the descriptor says is cut off at once.
  api.downloadMedia = (server, id, { onProgress, signal }) => new Promise((resolve, reject) => {
    signal.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })));
    onProgress(10, 1 << 30);
  });
  await assert.rejects(s.fetchAttachment(m.file), /\[AttachmentFormat\] the server sent more bytes/);
});

test('replies, reactions, edits and deletes: applied by the credential\'s sender user, never bubbles nor unread; a delete drops the content from the sealed state', async () => {
  const client = fakeClient();
  let nextSeq = 8;
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), send: () => ({ seq: nextSeq++ }) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  s.newConv('!g:hs');
  s.newConv('!other:hs'); // the conversation bumped last
  const bob = { user_id: '@bob:hs', device_id: 'BDEV' };
  const bob2 = { user_id: '@bob:hs', device_id: 'BDEV2' };
  const carol = { user_id: '@carol:hs', device_id: 'C' };
  const frames = [
    [1, bob, { type: 'text', body: 'secret one' }],
    [2, carol, { type: 'reaction', target: 1, key: '👍' }],
    [3, carol, { type: 'edit', target: 1, body: 'forged by carol' }],
    [4, bob2, { type: 'edit', target: 1, body: 'secret two' }],
  ];
  const deliver = async ([seq, sender, payload]) => {
    client.plain[seq] = JSON.stringify(payload);
    await s.handleFrame({ type: 'message', group_id: '!g:hs', seq, sender, kind: 'application', epoch: 1, message: 'M', ts: 1 }, false);
  };
  for (const f of frames.slice(0, 1)) await deliver(f);
  const conv = s.state.convs['!g:hs'];
  s.newConv('!later:hs');
  assert.deepEqual(s.state.order[0], '!later:hs');
  for (const f of frames.slice(1)) await deliver(f);
  assert.equal(s.state.order[0], '!later:hs', 'reactions and edits do not bump the conversation');
  assert.equal(conv.unread, 1, 'nor count as unread');
  assert.equal(conv.messages.length, 1);
  const m1 = conv.messages[0];
  assert.equal(m1.body, 'secret two', 'the edit of bob\'s other device, not carol\'s');
  assert.equal(m1.editSeq, 4);
  assert.deepEqual(m1.reactions, [{ key: '👍', users: ['@carol:hs'] }]);
  // A reply (a bubble, unread) keeps the seq it answers.
  await deliver([5, carol, { type: 'text', body: 'about that', reply_to: 1 }]);
  assert.equal(conv.messages[1].replyTo, 1);
  assert.equal(conv.unread, 2);
  assert.equal(s.state.order[0], '!g:hs');
  // Carol cannot delete bob's message; bob can, and nothing of it is left in the vault's state.
  await deliver([6, carol, { type: 'delete', target: 1 }]);
  assert.equal(m1.deleted, undefined);
  const saves = s.saves();
  client.plain[7] = JSON.stringify({ type: 'delete', target: 1 });
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 7, sender: bob, kind: 'application', epoch: 1, message: 'M', ts: 1, next_batch: 'n7' }, true);
  assert.equal(m1.deleted, true);
  assert.ok(!JSON.stringify(s.state).includes('secret'), 'the sealed state holds no deleted text');
  await s.flush();
  assert.ok(s.saves() > saves, 'and it was saved');

  // Own actions: sent as payloads, applied with the seq of the send answer.
  await s.toggleReaction('!g:hs', 5, '❤️');
  assert.deepEqual(client.sent.at(-1), { type: 'reaction', target: 5, key: '❤️' });
  assert.deepEqual(conv.messages[1].reactions, [{ key: '❤️', users: ['@alice:hs'] }]);
  await s.toggleReaction('!g:hs', 5, '❤️');
  assert.deepEqual(client.sent.at(-1), { type: 'reaction', target: 5, key: '❤️', remove: true });
  assert.equal(conv.messages[1].reactions, undefined);
  await assert.rejects(s.toggleReaction('!g:hs', 1, '👍'), /deleted/);
  await assert.rejects(s.editMessage('!g:hs', 5, 'not mine'), /Only the sender/);
  assert.equal(conv.unread, 2);

  const own = await s.sendText('!g:hs', 'my words', { replyTo: 5 });
  assert.deepEqual(client.sent.at(-1), { type: 'text', body: 'my words', reply_to: 5 });
  assert.equal(own.replyTo, 5);
  assert.equal(own.seq, 10);
  await s.editMessage('!g:hs', own.seq, 'my better words');
  assert.deepEqual(client.sent.at(-1), { type: 'edit', target: 10, body: 'my better words' });
  assert.equal(own.body, 'my better words');
  assert.equal(own.editSeq, 11);
  await s.deleteMessage('!g:hs', own.seq);
  assert.deepEqual(client.sent.at(-1), { type: 'delete', target: 10 });
  assert.equal(own.deleted, true);
  assert.ok(!JSON.stringify(s.state).includes('words'));
  // The hub's echo of an own action changes nothing.
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 12, sender: ME, kind: 'application', epoch: 1, message: 'M', ts: 1 }, false);
  assert.equal(conv.messages.length, 3);
});

test('group profile, mentions and unread counts: applied, announced, and kept in the sealed state across a reload', async () => {
  const client = fakeClient();
  let nextSeq = 20;
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), send: () => ({ seq: nextSeq++ }) });
  // The persisted state is what `persist` seals: keep the last snapshot as JSON.
  let sealedJson = null;
  const state = emptyAppState();
  const s = session(client, api, state, { persist: async () => { sealedJson = JSON.stringify(state); } });
  const incoming = [];
  s.onIncoming = (conv, msg) => incoming.push(msg.seq);
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ user_id: '@bob:hs', device_id: 'BDEV' }, { user_id: '@carol:hs', device_id: 'C' });
  const conv = s.newConv('!g:hs');
  s.refreshMembers(conv);
  const bob = { user_id: '@bob:hs', device_id: 'BDEV' };
  const deliver = async (seq, sender, payload) => {
    client.plain[seq] = JSON.stringify(payload);
    await s.handleFrame({ type: 'message', group_id: '!g:hs', seq, sender, kind: 'application', epoch: 1, message: 'M', ts: 1, next_batch: `n${seq}` }, true);
  };
  await deliver(1, bob, { type: 'group_profile', name: 'Zebra Club', topic: 'Stripes only' });
  assert.equal(conv.name, 'Zebra Club');
  assert.equal(conv.topic, 'Stripes only');
  assert.equal(conv.unread, 0, 'a profile change is no unread message');
  assert.equal(conv.messages.at(-1).body, 'bob named the group "Zebra Club" and changed the topic.');
  await deliver(2, bob, { type: 'group_profile', name: 'x'.repeat(129) });
  assert.equal(conv.name, 'Zebra Club', 'a name over 128 characters is ignored');
  await deliver(3, bob, { type: 'text', body: 'hello @alice', mentions: ['@alice:hs'] });
  await deliver(4, bob, { type: 'text', body: 'plain' });
  assert.equal(conv.unread, 2);
  assert.equal(conv.mentioned, 1);
  assert.deepEqual(conv.messages.find((m) => m.seq === 3).mentions, ['@alice:hs']);
  assert.deepEqual(incoming, [3, 4]);
  await s.flush();
  // A reload: the state comes back from the sealed JSON, with name, topic and counts.
  const reloaded = { ...emptyAppState(), ...JSON.parse(sealedJson) };
  const c2 = reloaded.convs['!g:hs'];
  assert.equal(c2.name, 'Zebra Club');
  assert.equal(c2.topic, 'Stripes only');
  assert.equal(c2.unread, 2);
  assert.equal(c2.mentioned, 1);

  // Own changes: only changed fields, '' clears; sent mentions name members by @localpart.
  await s.setGroupProfile('!g:hs', { topic: '' });
  assert.deepEqual(client.sent.at(-1), { type: 'group_profile', topic: null });
  assert.equal(conv.topic, '');
  assert.equal(conv.messages.at(-1).body, 'You removed the topic.');
  await assert.rejects(s.setGroupProfile('!g:hs', { name: 'y'.repeat(129) }), /128/);
  await deliver(5, bob, { type: 'group_profile', name: 'Newer' });
  assert.equal(conv.name, 'Newer');
  assert.equal(conv.profileSeq.name, 5);
  const own = await s.sendText('!g:hs', 'ping @bob and @carol, not @dave or me@bob.org');
  assert.deepEqual(client.sent.at(-1).mentions, ['@bob:hs', '@carol:hs']);
  assert.deepEqual(own.mentions, ['@bob:hs', '@carol:hs']);
  s.openConv = '!g:hs';
  s.markRead('!g:hs');
  assert.equal(conv.unread, 0);
  assert.equal(conv.mentioned, 0);
});

test('setGroupAvatar: encrypts and uploads the picture, names it in group_profile.avatar and the send; null removes it', async () => {
  const client = fakeClient();
  let seq = 30;
  const api = fakeApi({
    versions: () => ({ limits: { max_upload_bytes: 1000 } }),
    uploadMedia: (bytes) => ({ media_id: 'av1', server_name: 'hs', size: bytes.length }),
    send: () => ({ seq: seq++ }),
  });
  const attachments = {
    encrypt: (bytes) => ({
      ciphertext: new Uint8Array(bytes.length + 16), key: 'a2V5a2V5a2V5', noncePrefix: 'bm9uY2U=', sha256: 'c2hhc2hhc2hh',
      size: bytes.length + 16, plaintextSize: bytes.length, free() {},
    }),
    decrypt: () => new Uint8Array(0),
  };
  const s = session(client, api, undefined, { attachments });
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  await s.setGroupAvatar('!g:hs', { bytes: new Uint8Array(20), mime: 'image/jpeg', width: 128, height: 96 });
  const payload = client.sent.at(-1);
  assert.equal(payload.type, 'group_profile');
  assert.deepEqual(Object.keys(payload), ['type', 'avatar'], 'name and topic stay as they were');
  assert.equal(payload.avatar.media_id, 'av1');
  assert.equal(payload.avatar.plaintext_size, 20);
  assert.equal(payload.avatar.width, 128);
  assert.deepEqual(api.calls.find((c) => c[0] === 'send')[4], ['av1'], 'the send names the upload');
  assert.equal(conv.avatar.media_id, 'av1');
  assert.equal(conv.messages.at(-1).body, 'You changed the group picture.');
  await s.setGroupAvatar('!g:hs', null);
  assert.deepEqual(client.sent.at(-1), { type: 'group_profile', avatar: null });
  assert.equal(conv.avatar, undefined);
  assert.equal(conv.messages.at(-1).body, 'You removed the group picture.');
});

test('sendHistory: the archive is encrypted and uploaded, its key sent over MLS only to the new device in a transient group that is left', async () => {
  const client = fakeClient();
  client.leaveGroup = (g) => { client.log.push(`leave:${g}`); return 'PROPOSAL'; };
  const uploads = [];
  const api = fakeApi({
    versions: () => ({ limits: { max_upload_bytes: 1 << 20 } }),
    uploadMedia: (bytes) => { uploads.push(bytes); return { media_id: 'HIST', server_name: 'hs' }; },
    claimKeys: () => ({ key_packages: { '@alice:hs': { ADEV: 'MYKP', NEWDEV: 'NEWKP', OTHER: 'OTHERKP' } } }),
    createGroup: () => ({ group_id: '!t:hs' }),
    commit: () => ({}),
    send: () => ({ seq: 1 }),
  });
  const notes = [];
  const s = session(client, api, undefined, { attachments: fakeAttachments(), notify: (k, t) => notes.push([k, t]) });
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  conv.messages.push({ id: 'm1', kind: 'text', body: 'secret history', sender: '@bob:hs', ts: 1, seq: 1 });
  s.state.historyOffers = { NEWDEV: 5 };
  const counts = await s.sendHistory('NEWDEV');
  assert.deepEqual(counts, { messages: 1, conversations: 1 });
  assert.equal(uploads.length, 1);
  assert.ok(!new TextDecoder().decode(uploads[0]).includes('secret history') || uploads[0][0] === 0, 'uploaded as ciphertext (fake: prefixed)');
  assert.ok(client.log.includes('add:NEWKP'), 'only the new device is added');
  assert.ok(!client.log.some((l) => l.includes('OTHERKP') || l.includes('MYKP')));
  const payload = client.sent.at(-1);
  assert.equal(payload.type, 'history');
  assert.equal(payload.v, 1);
  assert.equal(payload.archive.media_id, 'HIST');
  assert.equal(payload.group_id, undefined);
  const sends = api.calls.filter((c) => c[0] === 'send');
  assert.equal(sends[0][1], '!t:hs');
  assert.deepEqual(sends[0][4], ['HIST'], 'the send names the upload');
  assert.equal(sends[1][3], 'PROPOSAL', 'then the transient group is left');
  assert.ok(client.log.includes('leave:!t:hs'));
  assert.equal(s.state.convs['!t:hs'], undefined, 'never a conversation');
  assert.deepEqual(s.state.order, ['!g:hs']);
  assert.deepEqual(s.state.historyOffers, {}, 'the offer is gone');
  assert.match(notes.at(-1)[1], /Sent your message history \(1 message in 1 conversation\) to your device NEWDEV/);
});

test('a received history: from another own device merged and its group hidden; from another user only for a shared conversation', async () => {
  const archive = {
    type: 'parley.history', v: 1, from_device: 'OLD', created_ts: 1,
    conversations: [{ group_id: '!g:hs', messages: [{ id: 'old1', kind: 'text', body: 'from before', sender: '@bob:hs', ts: 1, seq: 1 }] }],
  };
  const plain = new TextEncoder().encode(JSON.stringify(archive));
  const ct = new Uint8Array(plain.length + 16);
  ct.set(plain, 16);
  const desc = {
    v: 1, media_id: 'HIST', server_name: 'hs', key: 'S0VZS0VZ', nonce_prefix: 'Tk9OQ0U=', sha256: 'SEFTSA==',
    size: ct.length, plaintext_size: plain.length, mime: 'application/json', name: 'history.json',
  };
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }), downloadMedia: () => ct });
  const notes = [];
  const s = session(client, api, undefined, { attachments: fakeAttachments(), notify: (k, t) => notes.push([k, t]) });
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  conv.messages.push({ id: 'new5', kind: 'text', body: 'after joining', sender: '@bob:hs', ts: 5, seq: 5 });
  client.createGroup('!t:hs');
  s.newConv('!t:hs').messages.push({ id: 'w:1', kind: 'system', body: 'Your device OLD added this device.', ts: 1 });
  client.plain[1] = JSON.stringify({ type: 'history', v: 1, archive: desc });
  await s.handleFrame({ type: 'message', group_id: '!t:hs', seq: 1, sender: { user_id: '@alice:hs', device_id: 'OLD' }, kind: 'application', epoch: 1, message: 'M', ts: 1 }, false);
  assert.equal(s.state.convs['!t:hs'], undefined, 'the transient group is hidden');
  assert.ok(!s.state.order.includes('!t:hs'));
  assert.deepEqual(await s.historyImport, { messages: 1, conversations: 1, skipped: 0 });
  assert.deepEqual(conv.messages.map((m) => [m.id, !!m.imported]), [['old1', true], ['new5', false]]);
  assert.deepEqual(notes.at(-1), ['status', 'History from your device OLD: 1 message in 1 conversation.']);

  // Bob shares into !g:hs, but he is not a member of it here: refused, nothing downloaded.
  const downloads = api.calls.filter((c) => c[0] === 'downloadMedia').length;
  client.createGroup('!u:hs');
  s.newConv('!u:hs');
  client.plain[2] = JSON.stringify({ type: 'history', v: 1, archive: desc, group_id: '!g:hs' });
  s.historyImport = null;
  await s.handleFrame({ type: 'message', group_id: '!u:hs', seq: 2, sender: { user_id: '@bob:hs', device_id: 'BDEV' }, kind: 'application', epoch: 1, message: 'M', ts: 2 }, false);
  assert.equal(s.historyImport, null);
  assert.equal(api.calls.filter((c) => c[0] === 'downloadMedia').length, downloads);
  assert.match(notes.at(-1)[1], /Refused a message history from @bob:hs/);
  // Once bob is a member of !g:hs with this device: accepted, marked as shared by bob.
  client.members['!g:hs'].push({ user_id: '@bob:hs', device_id: 'BDEV' });
  archive.conversations[0].messages[0] = { ...archive.conversations[0].messages[0], id: 'old2', seq: 2 };
  const plain2 = new TextEncoder().encode(JSON.stringify(archive));
  ct.set(plain2, 16);
  client.plain[3] = JSON.stringify({ type: 'history', v: 1, archive: desc, group_id: '!g:hs' });
  await s.handleFrame({ type: 'message', group_id: '!u:hs', seq: 3, sender: { user_id: '@bob:hs', device_id: 'BDEV' }, kind: 'application', epoch: 1, message: 'M', ts: 3 }, false);
  assert.equal((await s.historyImport).messages, 1);
  assert.equal(conv.messages.find((m) => m.id === 'old2').via, '@bob:hs');
  // A corrupted archive changes nothing and says so.
  ct[20] = 0x7b;
  ct[21] = 0x7b;
  const before = JSON.stringify(s.state.convs['!g:hs']);
  assert.equal(s.state.convs['!u:hs'], undefined, 'that transient group is hidden too');
  client.createGroup('!v:hs');
  s.newConv('!v:hs');
  client.plain[4] = JSON.stringify({ type: 'history', v: 1, archive: desc, group_id: '!g:hs' });
  await s.handleFrame({ type: 'message', group_id: '!v:hs', seq: 4, sender: { user_id: '@bob:hs', device_id: 'BDEV' }, kind: 'application', epoch: 1, message: 'M', ts: 4 }, false);
  assert.equal(await s.historyImport, null);
  assert.equal(JSON.stringify(s.state.convs['!g:hs']), before);
  assert.match(notes.at(-1)[1], /could not be imported: This is not a history archive/);
});

test('a read receipt arriving ephemerally (kept while this device was away) is honoured, other payloads are not', async () => {
  const client = fakeClient();
  const api = fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  await s.handleFrame(app('!g:hs', 1, BOB), true);
  assert.equal(conv.unread, 1);
  // An ephemeral message has no seq (the fake engine reads plaintexts by seq: 0).
  const frame = { type: 'ephemeral', group_id: '!g:hs', sender: BOB, epoch: 0, message: 'm', ts: 1000, latest: true };
  client.plain[0] = '{"type":"read","up_to":1}';
  await s.handleEphemeral(frame);
  assert.equal((conv.reads || {})[BOB.user_id], 1);
  client.plain[0] = '{"type":"text","body":"smuggled"}';
  await s.handleEphemeral(frame);
  assert.equal(conv.messages.filter((m) => m.body === 'smuggled').length, 0);
});

// ----- group roles -----

test('roles: a new conversation has roles with this user its only admin; promoting and demoting commit the admins', async () => {
  const client = fakeClient();
  client.confirmCommit = function confirm(g) {
    this.log.push('confirm');
    this.pending = false;
    if (this.nextAdmins) this.admins[g] = this.nextAdmins;
    this.nextAdmins = null;
    return JSON.stringify({ type: 'own_commit', epoch: 2 });
  };
  const api = fakeApi({ createGroup: () => ({ group_id: '!r:hs' }), commit: () => ({ epoch: 2, seq: 3 }) });
  const s = session(client, api);
  const gid = await s.createConversation();
  assert.deepEqual(api.calls[0], ['createGroup', { roles: true }], 'the hub is asked to enforce roles');
  const conv = s.state.convs[gid];
  assert.deepEqual(conv.admins, [ME.user_id]);
  assert.equal(s.isAdmin(gid), true);
  client.members[gid].push({ ...BOB });
  s.refreshMembers(conv);
  assert.equal(s.isAdmin(gid, BOB.user_id), false);
  // The last admin can neither leave nor give the role up while bob is there.
  await assert.rejects(s.leave(gid), /Make another member an admin before you leave\./);
  await assert.rejects(s.setAdmin(gid, ME.user_id, false), /Make another member an admin/);
  await s.setAdmin(gid, BOB.user_id, true);
  assert.ok(client.log.includes('admins:["@alice:hs","@bob:hs"]'));
  assert.deepEqual(conv.admins, [ME.user_id, BOB.user_id]);
  assert.equal(conv.messages.at(-1).body, 'You made bob an admin.');
  await s.setAdmin(gid, BOB.user_id, true); // already: nothing committed
  assert.equal(client.log.filter((l) => l.startsWith('admins:')).length, 1);
  await s.setAdmin(gid, BOB.user_id, false);
  assert.deepEqual(conv.admins, [ME.user_id]);
  assert.equal(conv.messages.at(-1).body, 'You removed bob\'s admin role.');
});

test('roles: refusals for lack of the admin role read "Only an admin can do that."', async () => {
  const client = fakeClient();
  client.removeUser = () => { throw new Error('[NotAdmin] only an admin may remove @carol:hs from the group'); };
  const api = fakeApi({ commit: () => ({ epoch: 2, seq: 3 }) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB }, { user_id: '@carol:hs', device_id: 'C' });
  client.admins['!g:hs'] = [BOB.user_id];
  const conv = s.newConv('!g:hs');
  s.refreshMembers(conv);
  assert.deepEqual(conv.admins, [BOB.user_id]);
  assert.equal(s.isAdmin('!g:hs'), false);
  await assert.rejects(s.removeMember('!g:hs', '@carol:hs'), { message: 'Only an admin can do that.' });
  await assert.rejects(s.setAdmin('!g:hs', ME.user_id, true), { message: 'Only an admin can do that.' });
  // The hub's 403 P_NOT_ADMIN (the engine let it through) reads the same.
  client.removeUser = () => { client.pending = true; return JSON.stringify({ commit: 'C', adds: [], removes: [] }); };
  api.commit = async () => { const e = new Error('only an admin may remove (P_NOT_ADMIN)'); e.status = 403; e.errcode = 'P_NOT_ADMIN'; throw e; };
  await assert.rejects(s.removeMember('!g:hs', '@carol:hs'), { message: 'Only an admin can do that.' });
  assert.equal(client.pending, false, 'the refused commit is discarded');
  // A non-admin may leave.
  client.leaveGroup = () => 'PROPOSAL';
  api.send = async () => ({ seq: 9 });
  await s.leave('!g:hs');
  assert.equal(conv.active, false);
});

test('roles: a commit from someone else that changes the admins is a system line', async () => {
  const client = fakeClient();
  const s = session(client, fakeApi({ userDevices: (u) => ({ user_id: u, devices: [] }) }));
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB });
  client.admins['!g:hs'] = [BOB.user_id];
  const conv = s.newConv('!g:hs');
  s.refreshMembers(conv);
  client.process = (g) => {
    client.admins[g] = [ME.user_id, BOB.user_id];
    return JSON.stringify([{ type: 'commit', committer: BOB, epoch: 2, added: [], removed: [], updated: [] }]);
  };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 4, sender: BOB, kind: 'commit', epoch: 1, message: 'C', ts: 7 }, false);
  assert.equal(conv.messages.at(-1).body, 'bob made you an admin.');
  assert.deepEqual(conv.admins, [ME.user_id, BOB.user_id]);
  client.process = (g) => {
    client.admins[g] = [ME.user_id];
    return JSON.stringify([{ type: 'commit', committer: BOB, epoch: 3, added: [], removed: [], updated: [] }]);
  };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 5, sender: BOB, kind: 'commit', epoch: 2, message: 'C', ts: 8 }, false);
  assert.equal(conv.messages.at(-1).body, 'bob gave up their admin role.');
  assert.equal(conv.messages.filter((m) => m.kind === 'system').length, 2, 'nothing else');
});

test('fork recovery: a message of an epoch this device never reached reports it; the Welcome re-adding it is a rejoin', async () => {
  const client = fakeClient();
  client.epoch = () => 1;
  client.process = (g, json) => {
    const m = JSON.parse(json);
    client.log.push(`process:${m.seq}`);
    throw new Error(`[WrongEpoch] message epoch ${m.epoch} is not usable at group epoch 1`);
  };
  client.rejoin = (w) => { client.log.push(`rejoin:${w}`); return JSON.stringify({ group_id: '!g:hs', epoch: 5, members: client.members['!g:hs'], events: [] }); };
  const api = fakeApi({ reportFork: () => ({}), deleteWelcome: () => ({}) });
  const s = session(client, api);
  client.createGroup('!g:hs');
  const conv = s.newConv('!g:hs');
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 7, sender: BOB, kind: 'application', epoch: 4, message: 'X', ts: 1 }, true);
  assert.equal(conv.forked, true);
  assert.deepEqual(api.calls.filter((c) => c[0] === 'reportFork'), [['reportFork', '!g:hs']]);
  assert.ok(conv.messages.some((x) => x.body.startsWith('This device lost step with the conversation')));
  // Until the re-add nothing more is handed to the engine, nor reported again.
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 8, sender: BOB, kind: 'application', epoch: 4, message: 'Y', ts: 1 }, true);
  assert.ok(!client.log.includes('process:8'));
  assert.equal(api.calls.filter((c) => c[0] === 'reportFork').length, 1);
  await s.handleWelcome({ id: 'w1', group_id: '!g:hs', sender: BOB, welcome: 'WELCOME', ts: 2 });
  assert.ok(client.log.includes('rejoin:WELCOME'));
  assert.equal(conv.forked, false);
  assert.ok(conv.messages.some((x) => x.body.startsWith('This device was added to the conversation again')));
});

test('a member_forked notice re-adds that device once; not this device itself', async () => {
  const client = fakeClient();
  client.readdForked = (g, u, d, kp) => { client.log.push(`readd:${u}/${d}:${kp}`); client.pending = true; return JSON.stringify({ commit: 'C', adds: [{ ...BOB }], removes: [{ ...BOB }] }); };
  client.confirmCommit = function confirm() { this.pending = false; return '{}'; };
  const api = fakeApi({
    userDevices: (u) => ({ user_id: u, devices: [] }),
    claimKeys: () => ({ key_packages: { [BOB.user_id]: { [BOB.device_id]: 'BOBKP' } }, failures: {} }),
    commit: () => ({ epoch: 3, seq: 9 }),
  });
  const s = session(client, api);
  client.createGroup('!g:hs');
  client.members['!g:hs'].push({ ...BOB });
  s.newConv('!g:hs');
  const b64 = (o) => btoa(JSON.stringify(o));
  const mine = { type: 'member_forked', user_id: ME.user_id, device_id: ME.device_id };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 4, sender: ME, kind: 'notice', epoch: 2, message: b64(mine), ts: 1 }, true);
  assert.ok(!client.log.some((l) => l.startsWith('readd:')), 'this device does not re-add itself');
  const bobs = { type: 'member_forked', user_id: BOB.user_id, device_id: BOB.device_id };
  await s.handleFrame({ type: 'message', group_id: '!g:hs', seq: 5, sender: BOB, kind: 'notice', epoch: 2, message: b64(bobs), ts: 1 }, true);
  assert.deepEqual(client.log.filter((l) => l.startsWith('readd:')), [`readd:${BOB.user_id}/${BOB.device_id}:BOBKP`]);
});
