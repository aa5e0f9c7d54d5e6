// Unit tests of the fetch-based client API (node --test, fake fetch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Api, ApiError, PREFIX, normaliseBaseUrl, wsUrl } from '../app/api.js';

function fakeFetch(handler) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url, ...init, body: init.body === undefined ? undefined : JSON.parse(init.body) });
    const [status, body] = await handler(url, init, calls.length);
    return { ok: status >= 200 && status < 300, status, json: async () => body };
  };
  return { fn, calls };
}

test('base URLs and the WebSocket URL', () => {
  assert.equal(normaliseBaseUrl('https://a.example/'), 'https://a.example');
  assert.equal(normaliseBaseUrl('a.example'), 'https://a.example');
  assert.equal(normaliseBaseUrl('localhost:8008'), 'http://localhost:8008');
  assert.equal(normaliseBaseUrl('', 'http://127.0.0.1:5000'), 'http://127.0.0.1:5000');
  assert.equal(wsUrl('https://a.example'), `wss://a.example${PREFIX}/ws`);
  assert.equal(wsUrl('http://127.0.0.1:1'), `ws://127.0.0.1:1${PREFIX}/ws`);
});

test('requests carry JSON, bearer token and percent-encoded ids', async () => {
  const { fn, calls } = fakeFetch(async () => [200, { seq: 3 }]);
  const api = new Api('http://hs', { fetchFn: fn });
  api.setSession({ access_token: 'T', refresh_token: 'R' });
  assert.deepEqual(await api.send('!g/x:hs', 'txn-1', 'AAAA'), { seq: 3 });
  assert.equal(calls[0].url, `http://hs${PREFIX}/groups/!g%2Fx%3Ahs/send/txn-1`);
  assert.equal(calls[0].method, 'PUT');
  assert.equal(calls[0].headers.Authorization, 'Bearer T');
  assert.equal(calls[0].headers['Content-Type'], 'application/json');
  assert.deepEqual(calls[0].body, { message: 'AAAA' });
  await api.sync('s1', 0);
  assert.equal(calls[1].url, `http://hs${PREFIX}/sync?since=s1&timeout_ms=0`);
  assert.equal(calls[1].headers['Content-Type'], undefined);
  await api.commit('!g:hs', { commit: 'C', welcome: null, group_info: 'G', adds: [{ user_id: '@b:hs', device_id: 'D' }] });
  assert.deepEqual(calls[2].body, { commit: 'C', group_info: 'G', adds: [{ user_id: '@b:hs', device_id: 'D' }], removes: [] });
});

test('errors become ApiError with status, errcode and extra fields', async () => {
  const { fn } = fakeFetch(async () => [409, { errcode: 'P_STALE_EPOCH', error: 'stale', current_epoch: 4 }]);
  const api = new Api('http://hs', { fetchFn: fn });
  api.setSession({ access_token: 'T' });
  const err = await api.commit('!g:hs', { commit: 'C' }).catch((e) => e);
  assert.ok(err instanceof ApiError);
  assert.equal(err.status, 409);
  assert.equal(err.errcode, 'P_STALE_EPOCH');
  assert.equal(err.body.current_epoch, 4);
  const down = new Api('http://hs', { fetchFn: async () => { throw new TypeError('failed'); } });
  const e2 = await down.versions().catch((e) => e);
  assert.equal(e2.status, 0);
  assert.equal(e2.errcode, 'NETWORK');
});

test('an expired access token is refreshed once and the request retried', async () => {
  const seen = [];
  const { fn, calls } = fakeFetch(async (url, init) => {
    seen.push(init.headers.Authorization);
    if (url.endsWith('/refresh')) return [200, { access_token: 'T2', refresh_token: 'R2', user_id: '@a:hs', device_id: 'D', expires_in_ms: 1 }];
    if (init.headers.Authorization === 'Bearer T1') return [401, { errcode: 'P_UNKNOWN_TOKEN', error: 'expired' }];
    return [200, { user_id: '@a:hs', device_id: 'D' }];
  });
  const sessions = [];
  const api = new Api('http://hs', { fetchFn: fn, onSession: (s) => { sessions.push(s.refresh_token); } });
  api.setSession({ access_token: 'T1', refresh_token: 'R1' });
  const [a, b] = await Promise.all([api.whoami(), api.whoami()]);
  assert.equal(a.user_id, '@a:hs');
  assert.equal(b.device_id, 'D');
  assert.equal(calls.filter((c) => c.url.endsWith('/refresh')).length, 1, 'one refresh for concurrent 401s');
  assert.deepEqual(sessions, ['R2']);
  assert.equal(api.session.access_token, 'T2');
  // A revoked session: the refresh fails, the error surfaces and the app is told the session
  // ended (once per refused refresh).
  const { fn: fn2 } = fakeFetch(async () => [401, { errcode: 'P_UNKNOWN_TOKEN', error: 'revoked' }]);
  const ended = [];
  const api2 = new Api('http://hs', { fetchFn: fn2, onSessionEnded: (e) => ended.push(e.errcode) });
  api2.setSession({ access_token: 'X', refresh_token: 'Y' });
  const err = await api2.whoami().catch((e) => e);
  assert.equal(err.status, 401);
  assert.deepEqual(ended, ['P_UNKNOWN_TOKEN']);
  // A refresh that fails for another reason (homeserver down) is not the end of the session.
  const api3 = new Api('http://hs', { fetchFn: async () => { throw new TypeError('down'); }, onSessionEnded: (e) => ended.push(e.errcode) });
  api3.setSession({ access_token: 'X', refresh_token: 'Y' });
  await assert.rejects(api3.refresh('X'));
  assert.deepEqual(ended, ['P_UNKNOWN_TOKEN']);
});
