// Unit tests of Session (the sync/commit glue) with a fake engine and a fake homeserver.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session } from '../app/session.js';
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
      if (m.kind === 'application') return JSON.stringify([{ type: 'application', sender: m.sender, plaintext: JSON.stringify({ type: 'text', body: `msg${m.seq}` }), msg_id: `id${m.seq}`, ts: 1, epoch: 1 }]);
      if (m.kind === 'commit') return JSON.stringify([{ type: 'commit', committer: m.sender, epoch: 2, added: [{ user_id: '@carol:hs', device_id: 'C' }], removed: [], updated: [] }]);
      return '[]';
    },
    addMembers(g, kps) { this.log.push(`add:${JSON.parse(kps).join(',')}`); this.pending = true; return JSON.stringify({ commit: 'C', adds: [{ user_id: '@bob:hs', device_id: 'BDEV' }], removes: [] }); },
    confirmCommit(g) { this.log.push('confirm'); this.pending = false; this.members[g].push({ user_id: '@bob:hs', device_id: 'BDEV' }); return JSON.stringify({ type: 'own_commit', epoch: 2 }); },
    discardCommit() { this.log.push('discard'); if (!this.pending) throw new Error('[NoPendingCommit] none'); this.pending = false; },
    encrypt(g, p, now) { return JSON.stringify({ message: 'ENC', msg_id: 'mid-1', ts: now, epoch: 1 }); },
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

function session(client, api, state = emptyAppState()) {
  state.session = { ...ME, access_token: 'T', refresh_token: 'R' };
  let saves = 0;
  const s = new Session({ client, api, state, persist: async () => { saves += 1; }, now: () => 1000 });
  s.saves = () => saves;
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
});
