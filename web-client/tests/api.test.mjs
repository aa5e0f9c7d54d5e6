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

/** A fake XMLHttpRequest: `respond(x)` decides the outcome once `send` is called. */
function fakeXhr(respond) {
  const made = [];
  const fn = () => {
    const x = {
      headers: {},
      upload: {},
      open(method, url) { this.method = method; this.url = url; },
      setRequestHeader(k, v) { this.headers[k] = v; },
      send(body) { this.body = body; setTimeout(() => respond(this, made.length), 0); },
      abort() { this.aborted = true; if (this.onabort) this.onabort(); },
    };
    made.push(x);
    return x;
  };
  const reply = (x, status, body) => {
    x.status = status;
    x.response = typeof body === 'string' ? new TextEncoder().encode(body).buffer : body;
    x.onload();
  };
  return { fn, made, reply };
}

test('media: upload sends raw bytes with progress, download returns bytes, ids are encoded', async () => {
  const { fn, made, reply } = fakeXhr((x) => {
    if (x.method === 'POST') {
      x.upload.onprogress({ loaded: 2, total: 4, lengthComputable: true });
      x.upload.onprogress({ loaded: 4, total: 4, lengthComputable: true });
      reply(x, 200, JSON.stringify({ media_id: 'M1', server_name: 'hs', size: 4 }));
    } else {
      x.onprogress({ loaded: 3, total: 0, lengthComputable: false });
      reply(x, 200, new Uint8Array([9, 8, 7]).buffer);
    }
  });
  const api = new Api('http://hs', { xhrFn: fn });
  api.setSession({ access_token: 'T', refresh_token: 'R' });
  const progress = [];
  const r = await api.uploadMedia(new Uint8Array([1, 2, 3, 4]), { onProgress: (l, t) => progress.push([l, t]) });
  assert.deepEqual(r, { media_id: 'M1', server_name: 'hs', size: 4 });
  assert.equal(made[0].url, `http://hs${PREFIX}/media`);
  assert.equal(made[0].headers.Authorization, 'Bearer T');
  assert.equal(made[0].headers['Content-Type'], 'application/octet-stream');
  assert.deepEqual([...made[0].body], [1, 2, 3, 4]);
  assert.deepEqual(progress, [[2, 4], [4, 4]]);
  const down = [];
  const bytes = await api.downloadMedia('localhost:8448', 'A_b-1', { onProgress: (l, t) => down.push([l, t]) });
  assert.deepEqual([...bytes], [9, 8, 7]);
  assert.equal(made[1].method, 'GET');
  assert.equal(made[1].url, `http://hs${PREFIX}/media/localhost%3A8448/A_b-1`);
  assert.equal(made[1].headers['Content-Type'], undefined);
  assert.deepEqual(down, [[3, 0]]);
});

test('media: errors carry the errcode, a 401 refreshes once, network and abort are distinct', async () => {
  const fetchCalls = [];
  const fetchFn = async (url, init) => {
    fetchCalls.push(url);
    return { ok: true, status: 200, json: async () => ({ access_token: 'T2', refresh_token: 'R2' }) };
  };
  const { fn, made, reply } = fakeXhr((x) => {
    if (x.headers.Authorization === 'Bearer T1') reply(x, 401, JSON.stringify({ errcode: 'P_UNKNOWN_TOKEN', error: 'expired' }));
    else if (x.url.endsWith('/big')) reply(x, 413, JSON.stringify({ errcode: 'P_QUOTA_EXCEEDED', error: 'quota' }));
    else if (x.url.endsWith('/gone')) x.onerror();
    else if (x.url.endsWith('/slow')) { /* never answers */ } else reply(x, 200, new Uint8Array([1]).buffer);
  });
  const api = new Api('http://hs', { fetchFn, xhrFn: fn });
  api.setSession({ access_token: 'T1', refresh_token: 'R1' });
  assert.deepEqual([...await api.downloadMedia('hs', 'ok')], [1]);
  assert.equal(fetchCalls.filter((u) => u.endsWith('/refresh')).length, 1);
  assert.deepEqual(made.map((x) => x.headers.Authorization), ['Bearer T1', 'Bearer T2']);
  const quota = await api.downloadMedia('hs', 'big').catch((e) => e);
  assert.ok(quota instanceof ApiError);
  assert.equal(quota.status, 413);
  assert.equal(quota.errcode, 'P_QUOTA_EXCEEDED');
  const net = await api.downloadMedia('hs', 'gone').catch((e) => e);
  assert.equal(net.errcode, 'NETWORK');
  const ctl = new AbortController();
  const pending = api.downloadMedia('hs', 'slow', { signal: ctl.signal }).catch((e) => e);
  await new Promise((r) => { setTimeout(r, 10); });
  ctl.abort();
  const aborted = await pending;
  assert.equal(aborted.name, 'AbortError');
  assert.equal(made.at(-1).aborted, true);
});

test('a send names the media its message refers to', async () => {
  const { fn, calls } = fakeFetch(async () => [200, { seq: 1 }]);
  const api = new Api('http://hs', { fetchFn: fn });
  api.setSession({ access_token: 'T' });
  await api.send('!g:hs', 't1', 'AAAA', ['M1', 'M2']);
  await api.send('!g:hs', 't2', 'AAAA', []);
  assert.deepEqual(calls[0].body, { message: 'AAAA', media: ['M1', 'M2'] });
  assert.deepEqual(calls[1].body, { message: 'AAAA' });
});
