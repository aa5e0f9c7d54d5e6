// The client API over fetch (docs/protocol.md#client-server-api). Methods and paths come from
// endpoints.js, generated from the endpoint declarations in client-api/src/*.rs.

import { ENDPOINTS as E } from './endpoints.js';

export const PREFIX = E.Sync.path.slice(0, E.Sync.path.lastIndexOf('/'));

/** An error answer of the homeserver (or a network failure: status 0). */
export class ApiError extends Error {
  constructor(status, body) {
    const errcode = (body && body.errcode) || (status === 0 ? 'NETWORK' : `HTTP_${status}`);
    const text = (body && body.error) || (status === 0 ? 'The homeserver could not be reached' : `HTTP ${status}`);
    super(`${text} (${errcode})`);
    this.name = 'ApiError';
    this.status = status;
    this.errcode = errcode;
    this.error = text;
    this.body = body || {};
  }
}

/** `example.org` → `https://example.org`; `localhost:8008` → `http://localhost:8008`. */
export function normaliseBaseUrl(input, fallback) {
  let s = String(input || '').trim();
  if (!s) s = String(fallback || '');
  if (!/^https?:\/\//i.test(s)) {
    const local = /^(localhost|127\.|\[::1\])/i.test(s);
    s = `${local ? 'http' : 'https'}://${s}`;
  }
  const u = new URL(s);
  return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

/** `http(s)://host/base` → `ws(s)://host/base/_parley/client/v1/ws`. */
export function wsUrl(baseUrl) {
  return `${baseUrl.replace(/^http/i, 'ws')}${E.WebSocket.path}`;
}

const enc = encodeURIComponent;

/** The path of endpoint `e` with its `{name}` parameters filled from `params`, encoded. */
export function pathOf(e, params = {}) {
  return e.path.replace(/\{(\w+)\}/g, (_, name) => enc(String(params[name])));
}

export class Api {
  /**
   * @param {string} baseUrl homeserver URL
   * @param {{fetchFn?: Function, onSession?: Function, onSessionEnded?: Function}} opts
   *   `onSession(session)` is called whenever tokens change (login, refresh) so the app can
   *   persist them; `onSessionEnded(err)` when the homeserver refuses the refresh token (401):
   *   the device was revoked or its session ended, nothing will work until a new login.
   */
  constructor(baseUrl, { fetchFn, onSession, onSessionEnded } = {}) {
    this.baseUrl = baseUrl;
    this.fetchFn = fetchFn || ((...a) => globalThis.fetch(...a));
    this.onSession = onSession || (() => {});
    this.onSessionEnded = onSessionEnded || (() => {});
    this.session = null;
    this.refreshing = null;
  }

  setSession(session) {
    this.session = session;
  }

  async raw(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await this.fetchFn(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new ApiError(0, null);
    }
    let json = null;
    try {
      json = await res.json();
    } catch {
      json = null;
    }
    if (!res.ok) throw new ApiError(res.status, json);
    return json || {};
  }

  /** An authenticated request; refreshes the access token once on 401 P_UNKNOWN_TOKEN. */
  /** Calls endpoint `e` at its path with `params`, authenticated as it declares. */
  endpoint(e, params, body) {
    const path = pathOf(e, params);
    return e.auth === 'access_token' ? this.call(e.method, path, body) : this.raw(e.method, path, body);
  }

  async call(method, path, body) {
    if (!this.session) throw new ApiError(401, { errcode: 'P_MISSING_TOKEN', error: 'Not logged in' });
    const token = this.session.access_token;
    try {
      return await this.raw(method, path, body, token);
    } catch (err) {
      if (err.status !== 401 || err.errcode !== 'P_UNKNOWN_TOKEN' || !this.session.refresh_token) throw err;
      await this.refresh(token);
      return this.raw(method, path, body, this.session.access_token);
    }
  }

  async refresh(staleToken) {
    if (this.session && this.session.access_token !== staleToken) return; // someone else did
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          let r;
          try {
            r = await this.endpoint(E.Refresh, {}, { refresh_token: this.session.refresh_token });
          } catch (err) {
            if (err.status === 401) this.onSessionEnded(err);
            throw err;
          }
          this.session = { ...this.session, ...r };
          await this.onSession(this.session);
        } finally {
          this.refreshing = null;
        }
      })();
    }
    await this.refreshing;
  }

  async register(username, password, deviceName) {
    const r = await this.endpoint(E.Register, {}, { username, password, device_name: deviceName });
    this.session = r;
    return r;
  }

  async login(username, password, deviceName) {
    const r = await this.endpoint(E.Login, {}, { username, password, device_name: deviceName });
    this.session = r;
    return r;
  }

  logout() { return this.endpoint(E.Logout, {}, {}); }
  whoami() { return this.endpoint(E.WhoAmI); }
  versions() { return this.endpoint(E.GetVersions); }
  devices() { return this.endpoint(E.ListDevices); }
  deleteDevice(id) { return this.endpoint(E.DeleteDevice, { device_id: id }); }
  bindSignatureKey(deviceId, key) {
    return this.endpoint(E.BindSignatureKey, { device_id: deviceId }, { signature_key: key });
  }
  userDevices(userId) { return this.endpoint(E.UserDevices, { user_id: userId }); }
  uploadKeys(keyPackages, lastResort) {
    const body = { key_packages: keyPackages };
    if (lastResort) body.last_resort = lastResort;
    return this.endpoint(E.UploadKeys, {}, body);
  }
  keyCount() { return this.endpoint(E.KeyCount); }
  claimKeys(userIds) { return this.endpoint(E.ClaimKeys, {}, { user_ids: userIds }); }
  createGroup() { return this.endpoint(E.CreateGroup, {}, {}); }
  groups() { return this.endpoint(E.ListGroups); }
  commit(groupId, bundle) {
    const body = { commit: bundle.commit, adds: bundle.adds || [], removes: bundle.removes || [] };
    if (bundle.welcome) body.welcome = bundle.welcome;
    if (bundle.group_info) body.group_info = bundle.group_info;
    return this.endpoint(E.SubmitCommit, { group_id: groupId }, body);
  }
  send(groupId, txnId, message) {
    return this.endpoint(E.SendMessage, { group_id: groupId, txn_id: txnId }, { message });
  }
  /** An ephemeral message: relayed to the members online now, never stored. */
  sendEphemeral(groupId, txnId, message) {
    return this.endpoint(E.SendEphemeral, { group_id: groupId, txn_id: txnId }, { message });
  }
  sync(since, timeoutMs = 0) {
    const q = new URLSearchParams();
    if (since) q.set('since', since);
    q.set('timeout_ms', String(timeoutMs));
    return this.call(E.Sync.method, `${pathOf(E.Sync)}?${q}`);
  }
  deleteWelcome(id) { return this.endpoint(E.DeleteWelcome, { id }); }
}
