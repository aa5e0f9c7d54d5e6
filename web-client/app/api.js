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
   * @param {{fetchFn?: Function, xhrFn?: Function, onSession?: Function, onSessionEnded?: Function}} opts
   *   `onSession(session)` is called whenever tokens change (login, refresh) so the app can
   *   persist them; `onSessionEnded(err)` when the homeserver refuses the refresh token (401):
   *   the device was revoked or its session ended, nothing will work until a new login.
   *   `xhrFn()` makes the XMLHttpRequest of media transfers (their progress events).
   */
  constructor(baseUrl, { fetchFn, xhrFn, onSession, onSessionEnded } = {}) {
    this.baseUrl = baseUrl;
    this.fetchFn = fetchFn || ((...a) => globalThis.fetch(...a));
    this.xhrFn = xhrFn || (() => new globalThis.XMLHttpRequest());
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

  /** Calls endpoint `e` at its path with `params`, authenticated as it declares. */
  endpoint(e, params, body) {
    const path = pathOf(e, params);
    return e.auth === 'access_token' ? this.call(e.method, path, body) : this.raw(e.method, path, body);
  }

  /** An authenticated request; refreshes the access token once on 401 P_UNKNOWN_TOKEN. */
  call(method, path, body) {
    return this.authed((token) => this.raw(method, path, body, token));
  }

  /** Runs `request(token)`; on 401 P_UNKNOWN_TOKEN refreshes the access token and runs it again. */
  async authed(request) {
    if (!this.session) throw new ApiError(401, { errcode: 'P_MISSING_TOKEN', error: 'Not logged in' });
    const token = this.session.access_token;
    try {
      return await request(token);
    } catch (err) {
      if (err.status !== 401 || err.errcode !== 'P_UNKNOWN_TOKEN' || !this.session.refresh_token) throw err;
      await this.refresh(token);
      return request(this.session.access_token);
    }
  }

  /**
   * One XMLHttpRequest with raw bytes both ways, for media: fetch reports no upload progress.
   * Resolves with the response body (Uint8Array); rejects with ApiError (status 0: network),
   * or an error named `AbortError` when `signal` aborts it. `onProgress(loaded, total)` follows
   * the request body (`upload`) or the response body.
   */
  xhr(method, path, { body, token, upload = false, onProgress, signal } = {}) {
    return new Promise((resolve, reject) => {
      const aborted = () => {
        const err = new Error(upload ? 'The upload was cancelled.' : 'The download was cancelled.');
        err.name = 'AbortError';
        return err;
      };
      if (signal && signal.aborted) {
        reject(aborted());
        return;
      }
      const x = this.xhrFn();
      x.open(method, `${this.baseUrl}${path}`);
      x.responseType = 'arraybuffer';
      if (token) x.setRequestHeader('Authorization', `Bearer ${token}`);
      if (body !== undefined) x.setRequestHeader('Content-Type', 'application/octet-stream');
      const bodyLength = body ? body.byteLength : 0;
      if (onProgress) {
        if (upload && x.upload) {
          x.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : bodyLength);
        } else if (!upload) {
          x.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
        }
      }
      const onAbort = () => x.abort();
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      const done = () => { if (signal) signal.removeEventListener('abort', onAbort); };
      x.onload = () => {
        done();
        const bytes = new Uint8Array(x.response || new ArrayBuffer(0));
        if (x.status >= 200 && x.status < 300) {
          resolve(bytes);
          return;
        }
        let json = null;
        try { json = JSON.parse(new TextDecoder().decode(bytes)); } catch { json = null; }
        reject(new ApiError(x.status, json));
      };
      x.onerror = () => { done(); reject(new ApiError(0, null)); };
      x.ontimeout = x.onerror;
      x.onabort = () => { done(); reject(aborted()); };
      x.send(body === undefined ? null : body);
    });
  }

  /**
   * Uploads an attachment's ciphertext (Uint8Array) to this homeserver's media repository:
   * `{media_id, server_name, size}`. 413 P_TOO_LARGE / P_QUOTA_EXCEEDED, 429 as ApiError.
   */
  async uploadMedia(bytes, { onProgress, signal } = {}) {
    const path = pathOf(E.UploadMedia);
    const res = await this.authed((token) => this.xhr(E.UploadMedia.method, path, {
      body: bytes, token, upload: true, onProgress, signal,
    }));
    let json;
    try {
      json = JSON.parse(new TextDecoder().decode(res));
    } catch {
      throw new ApiError(502, { errcode: 'P_BAD_RESPONSE', error: 'The homeserver answered the upload with something else than JSON' });
    }
    return json;
  }

  /**
   * Downloads media `{server_name, media_id}` through this homeserver (which fetches another
   * server's media over federation): the ciphertext as a Uint8Array.
   */
  downloadMedia(serverName, mediaId, { onProgress, signal } = {}) {
    const path = pathOf(E.DownloadMedia, { server_name: serverName, media_id: mediaId });
    return this.authed((token) => this.xhr(E.DownloadMedia.method, path, { token, onProgress, signal }));
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
  /** A new group on this homeserver's hub; `{roles: true}`: the hub enforces group roles too. */
  createGroup({ roles = false } = {}) { return this.endpoint(E.CreateGroup, {}, roles ? { roles: true } : {}); }
  groups() { return this.endpoint(E.ListGroups); }
  commit(groupId, bundle) {
    const body = { commit: bundle.commit, adds: bundle.adds || [], removes: bundle.removes || [] };
    if (bundle.welcome) body.welcome = bundle.welcome;
    if (bundle.group_info) body.group_info = bundle.group_info;
    return this.endpoint(E.SubmitCommit, { group_id: groupId }, body);
  }
  /** Says this device lost the group's state: the members are asked to add it again. */
  reportFork(groupId) { return this.endpoint(E.GroupForked, { group_id: groupId }, {}); }
  /** The current GroupInfo of a group joinable by link with `code`: `{group_info, epoch}`. */
  joinInfo(groupId, code) { return this.endpoint(E.GroupJoinInfo, { group_id: groupId }, { code }); }
  /** Sends an application message; `media`: ids of this user's uploads that it names. */
  send(groupId, txnId, message, media) {
    const body = { message };
    if (media && media.length) body.media = media;
    return this.endpoint(E.SendMessage, { group_id: groupId, txn_id: txnId }, body);
  }
  /** An ephemeral message: relayed to the members online now, never stored. */
  /** `keepLatest`: a read receipt the servers keep for member devices not connected now. */
  sendEphemeral(groupId, txnId, message, { keepLatest = false } = {}) {
    const body = keepLatest ? { message, keep_latest: true } : { message };
    return this.endpoint(E.SendEphemeral, { group_id: groupId, txn_id: txnId }, body);
  }
  sync(since, timeoutMs = 0) {
    const q = new URLSearchParams();
    if (since) q.set('since', since);
    q.set('timeout_ms', String(timeoutMs));
    return this.call(E.Sync.method, `${pathOf(E.Sync)}?${q}`);
  }
  deleteWelcome(id) { return this.endpoint(E.DeleteWelcome, { id }); }
}
