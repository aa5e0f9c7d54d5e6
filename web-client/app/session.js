// The logged-in, unlocked session: drives the engine (wasm Client) with the homeserver's
// events, and the user's actions with the homeserver. No DOM here (tested under node).
//
// Every engine call runs inside `this.queue` so commits, processing and sealing never
// interleave. Never log plaintext, keys or tokens.

import { wsUrl } from './api.js';
import {
  Queue, Saver, backoffMs, bumpOrder, commitWithRetry, errorCode, keyPackagesToUpload,
  parsePayload, pushMessage, withDeviceKeys,
} from './logic.js';

const J = (s) => JSON.parse(s);
const INITIAL_KEY_PACKAGES = 30;

/** Engine errors that mean "already handled" when a message is delivered again. */
const BENIGN = new Set(['WrongEpoch', 'Replay', 'UnknownGroup', 'GroupExists']);

export class Session {
  /**
   * @param {object} deps
   * @param {object} deps.client the wasm `Client`
   * @param {import('./api.js').Api} deps.api
   * @param {object} deps.state app state (logic.emptyAppState shape), sealed with the engine
   * @param {(blobInput: string) => Promise<void>} deps.persist seals and stores the state
   * @param {() => void} deps.onChange UI refresh
   * @param {(kind: 'status'|'alert', text: string) => void} deps.notify announcements
   */
  constructor({ client, api, state, persist, onChange = () => {}, notify = () => {}, WebSocketImpl, now }) {
    this.client = client;
    this.api = api;
    this.state = state;
    this.onChange = onChange;
    this.notify = notify;
    this.WebSocketImpl = WebSocketImpl || globalThis.WebSocket;
    this.now = now || (() => Date.now());
    this.queue = new Queue();
    this.saver = new Saver(() => persist(), (err) => this.notify('alert', `Saving the vault failed: ${err.message || err}`));
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.reconnectTimer = null;
    this.openConv = null;
    this.connection = 'offline';
    this.fetchUsers = this.fetchUsers.bind(this);
    this.missing = () => J(this.client.takeMissingUsers());
  }

  get me() { return this.state.session.user_id; }
  get myDevice() { return this.state.session.device_id; }

  save() { return this.saver.request(); }

  // ----- start / stop -----

  async start() {
    this.stopped = false;
    await this.queue.run(() => this.ensureKeys());
    await this.queue.run(() => this.catchUp());
    this.connectWs();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(1000); } catch { /* closed */ }
    }
    this.setConnection('offline');
  }

  async flush() {
    await this.queue.run(() => {});
    await this.saver.flush();
  }

  setConnection(c) {
    if (this.connection !== c) {
      this.connection = c;
      this.onChange();
    }
  }

  // ----- keys -----

  /** Binds the signature key and uploads key packages on first login. */
  async ensureKeys() {
    if (!this.state.keysBound) {
      await this.api.bindSignatureKey(this.myDevice, this.client.signatureKey());
      const kps = J(this.client.generateKeyPackages(INITIAL_KEY_PACKAGES));
      const lr = this.client.generateLastResortKeyPackage();
      await this.api.uploadKeys(kps, lr);
      this.state.keysBound = true;
      await this.save();
      this.notify('status', 'Device keys published.');
    }
  }

  /** Tops key packages up when the server's count is low; keeps a last-resort one. */
  async replenish(keyCount) {
    if (!keyCount || !this.state.keysBound) return;
    const n = keyPackagesToUpload(keyCount.count);
    if (n === 0 && keyCount.last_resort) return;
    const kps = n > 0 ? J(this.client.generateKeyPackages(n)) : [];
    const lr = keyCount.last_resort ? undefined : this.client.generateLastResortKeyPackage();
    await this.save(); // private keys first, then publish
    await this.api.uploadKeys(kps, lr);
  }

  async fetchUsers(users) {
    for (const u of users) {
      try {
        const resp = await this.api.userDevices(u);
        this.client.setUserDevices(JSON.stringify(resp));
      } catch (err) {
        if (err.status !== 404) throw err;
      }
    }
  }

  // ----- delivery -----

  /** `/sync` until no events are left (runs inside the queue). */
  async catchUp() {
    for (let i = 0; i < 50; i += 1) {
      const r = await this.api.sync(this.state.since, 0);
      const groups = r.groups || {};
      const frames = [];
      for (const w of r.welcomes || []) frames.push({ type: 'welcome', ...w });
      for (const [gid, g] of Object.entries(groups)) {
        for (const m of g.messages || []) frames.push({ type: 'message', group_id: gid, ...m });
      }
      for (const f of frames) await this.handleFrame(f, false);
      const more = r.next_batch !== this.state.since && frames.length > 0;
      this.state.since = r.next_batch;
      if (r.key_packages) await this.replenish(r.key_packages).catch(() => {});
      this.save();
      if (!more) break;
    }
    this.onChange();
  }

  connectWs() {
    if (this.stopped || this.ws) return;
    let ws;
    try {
      ws = new this.WebSocketImpl(wsUrl(this.api.baseUrl));
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.setConnection('connecting');
    ws.onopen = () => {
      ws.send(JSON.stringify({ access_token: this.api.session.access_token, since: this.state.since || undefined }));
    };
    ws.onmessage = (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      if (frame.type === 'error') {
        this.wsError = frame.errcode;
        return;
      }
      this.attempt = 0;
      this.setConnection('online');
      this.queue.run(() => this.handleFrame(frame, true)).catch((err) => this.reportError(err));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.setConnection('offline');
      this.scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  scheduleReconnect() {
    clearTimeout(this.reconnectTimer);
    const delay = backoffMs(this.attempt);
    this.attempt += 1;
    this.reconnectTimer = setTimeout(async () => {
      if (this.stopped) return;
      try {
        if (this.wsError === 'P_UNKNOWN_TOKEN') await this.api.refresh(this.api.session.access_token);
        this.wsError = null;
        await this.queue.run(() => this.catchUp());
      } catch (err) {
        if (err && err.status === 401) {
          this.notify('alert', 'This device was logged out by the homeserver. Lock and log in again.');
          return;
        }
      }
      this.connectWs();
    }, delay);
  }

  reportError(err) {
    this.notify('alert', err && err.message ? err.message.replace(/^\[[A-Za-z]+\]\s*/, '') : String(err));
  }

  /** One event of `/sync` or `/ws` (inside the queue). */
  async handleFrame(frame, fromWs) {
    if (frame.type === 'welcome') await this.handleWelcome(frame);
    else if (frame.type === 'message') await this.handleMessage(frame.group_id, frame);
    else if (frame.type === 'key_packages') await this.replenish(frame).catch(() => {});
    if (fromWs && frame.next_batch) {
      this.state.since = frame.next_batch;
      this.save();
    }
    this.onChange();
  }

  newConv(gid) {
    const conv = { group_id: gid, name: '', members: [], messages: [], unread: 0, active: true, lastSeq: 0 };
    this.state.convs[gid] = conv;
    bumpOrder(this.state.order, gid);
    return conv;
  }

  refreshMembers(conv) {
    try {
      conv.members = J(this.client.members(conv.group_id));
    } catch { /* group gone */ }
  }

  async handleWelcome(w) {
    const known = J(this.client.groupIds()).includes(w.group_id);
    if (!known) {
      try {
        await this.fetchUsers([w.sender.user_id]);
        const joined = J(await withDeviceKeys(() => this.client.join(w.welcome), this.missing, this.fetchUsers));
        const conv = this.state.convs[joined.group_id] || this.newConv(joined.group_id);
        conv.active = true;
        conv.members = joined.members;
        pushMessage(conv, { id: `w:${w.id}`, kind: 'system', body: `${w.sender.user_id} added you.`, ts: w.ts });
        conv.unread = (conv.unread || 0) + 1;
        bumpOrder(this.state.order, joined.group_id);
        await this.save();
        this.notify('status', `${w.sender.user_id} added you to a conversation.`);
      } catch (err) {
        const code = errorCode(err);
        if (code !== 'GroupExists') {
          this.notify('alert', `Could not join a conversation: ${err.message.replace(/^\[[A-Za-z]+\]\s*/, '')}`);
          return;
        }
      }
    }
    try { await this.api.deleteWelcome(w.id); } catch { /* acknowledged later */ }
  }

  async handleMessage(gid, m) {
    const conv = this.state.convs[gid];
    if (!conv) return;
    if (m.seq && m.seq <= (conv.lastSeq || 0)) return;
    const own = m.sender && m.sender.user_id === this.me && m.sender.device_id === this.myDevice;
    if (own && m.kind === 'application') {
      const local = conv.messages.find((x) => x.own && x.seq === m.seq);
      if (local) local.state = 'delivered';
      conv.lastSeq = m.seq;
      return;
    }
    if (m.kind === 'commit' && Array.isArray(m.adds) && m.adds.length) {
      await this.fetchUsers([...new Set(m.adds.map((d) => d.user_id))]).catch(() => {});
    }
    let events = [];
    try {
      events = J(await withDeviceKeys(() => this.client.process(gid, JSON.stringify(m)), this.missing, this.fetchUsers));
    } catch (err) {
      const code = errorCode(err);
      if (!BENIGN.has(code)) {
        pushMessage(conv, { id: `e:${m.seq}`, kind: 'system', body: 'A message could not be decrypted or was refused.', ts: m.ts });
      }
    }
    conv.lastSeq = m.seq || conv.lastSeq;
    const isOpen = this.openConv === gid;
    let needsCommit = false;
    for (const ev of events) {
      if (ev.type === 'application') {
        const p = parsePayload(ev.plaintext);
        if (p.type === 'text' && typeof p.body === 'string') {
          pushMessage(conv, {
            id: ev.msg_id, kind: 'text', own: false, sender: ev.sender.user_id, body: p.body, ts: ev.ts, seq: m.seq,
          }, { isOpen });
          bumpOrder(this.state.order, gid);
        }
      } else if (ev.type === 'commit') {
        const who = (l) => [...new Set(l.map((d) => d.user_id))].join(', ');
        if (ev.added.length) pushMessage(conv, { id: `c:${m.seq}:a`, kind: 'system', body: `${ev.committer.user_id} added ${who(ev.added)}.`, ts: m.ts });
        if (ev.removed.length) pushMessage(conv, { id: `c:${m.seq}:r`, kind: 'system', body: `${who(ev.removed)} left or was removed.`, ts: m.ts });
      } else if (ev.type === 'removed') {
        conv.active = false;
        pushMessage(conv, { id: `c:${m.seq}:x`, kind: 'system', body: 'You are no longer a member of this conversation.', ts: m.ts });
      } else if (ev.type === 'key_change') {
        pushMessage(conv, { id: `k:${m.seq}:${ev.device.device_id}`, kind: 'system', body: `The safety number with ${ev.device.user_id} changed.`, ts: m.ts });
        this.notify('alert', `The safety number with ${ev.device.user_id} changed. Review it before sending.`);
      } else if (ev.type === 'proposal' && ev.kind === 'remove' && ev.sender.user_id !== this.me) {
        needsCommit = true;
      }
    }
    this.refreshMembers(conv);
    if (needsCommit) {
      // A member asked to leave: commit the proposal (any member may; a 409 means someone did).
      try {
        await this.commit(gid, () => this.client.commitPendingProposals(gid));
      } catch { /* another member committed it */ }
    }
  }

  // ----- actions (each runs in the queue) -----

  /** Submits a commit built by `build` with 409 handling (inside the queue). */
  async commit(gid, build) {
    const r = await commitWithRetry({
      build: async () => J(await withDeviceKeys(build, this.missing, this.fetchUsers)),
      submit: (bundle) => this.api.commit(gid, bundle),
      confirm: () => J(this.client.confirmCommit(gid)),
      discard: () => { try { this.client.discardCommit(gid); } catch { /* nothing pending */ } },
      catchUp: () => this.catchUp(),
    });
    const conv = this.state.convs[gid];
    if (conv) this.refreshMembers(conv);
    await this.save();
    return r;
  }

  createConversation() {
    return this.queue.run(async () => {
      const { group_id: gid } = await this.api.createGroup();
      this.client.createGroup(gid);
      const conv = this.newConv(gid);
      this.refreshMembers(conv);
      await this.save();
      this.onChange();
      return gid;
    });
  }

  invite(gid, userId) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) throw new Error('This conversation is not active.');
      await this.fetchUsers([userId]);
      const claim = await this.api.claimKeys([userId]);
      const failure = Object.entries(claim.failures || {})[0];
      const already = new Set(conv.members.filter((m) => m.user_id === userId).map((m) => m.device_id));
      const kps = Object.entries((claim.key_packages || {})[userId] || {})
        .filter(([dev]) => !already.has(dev)).map(([, kp]) => kp);
      if (kps.length === 0) {
        if (failure) throw new Error(`Cannot invite ${userId}: ${failure[1].error || failure[1].errcode}`);
        throw new Error(`${userId} has no device that can be added.`);
      }
      await this.commit(gid, () => this.client.addMembers(gid, JSON.stringify(kps)));
      pushMessage(conv, { id: `i:${this.now()}:${userId}`, kind: 'system', body: `You added ${userId}.`, ts: this.now() });
      this.onChange();
    });
  }

  removeMember(gid, userId) {
    return this.queue.run(async () => {
      await this.commit(gid, () => this.client.removeUser(gid, userId));
      pushMessage(this.state.convs[gid], { id: `r:${this.now()}:${userId}`, kind: 'system', body: `You removed ${userId}.`, ts: this.now() });
      this.onChange();
    });
  }

  leave(gid) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      const proposal = this.client.leaveGroup(gid);
      await this.api.send(gid, `leave-${this.now()}`, proposal);
      conv.active = false;
      pushMessage(conv, { id: `l:${this.now()}`, kind: 'system', body: 'You left. Others will remove this device at their next commit.', ts: this.now() });
      await this.save();
      this.onChange();
    });
  }

  sendText(gid, text) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) throw new Error('This conversation is not active.');
      const out = J(this.client.encrypt(gid, JSON.stringify({ type: 'text', body: text }), this.now()));
      const local = pushMessage(conv, {
        id: out.msg_id, kind: 'text', own: true, sender: this.me, body: text, ts: out.ts, state: 'sending',
      });
      bumpOrder(this.state.order, gid);
      this.onChange();
      try {
        const r = await this.api.send(gid, out.msg_id, out.message);
        local.state = 'sent';
        local.seq = r.seq;
      } catch (err) {
        local.state = 'failed';
        this.onChange();
        throw err;
      }
      this.save();
      this.onChange();
    });
  }

  /** Conversation's members with an unacknowledged key change. */
  keyChanges(gid) {
    const conv = this.state.convs[gid];
    if (!conv) return [];
    const ids = new Set(conv.members.map((m) => `${m.user_id}/${m.device_id}`));
    return J(this.client.pendingKeyChanges()).filter((k) => ids.has(`${k.user_id}/${k.device_id}`));
  }

  acknowledgeKeyChanges(gid) {
    return this.queue.run(async () => {
      for (const k of this.keyChanges(gid)) this.client.acknowledgeKeyChange(k.user_id, k.device_id);
      const conv = this.state.convs[gid];
      if (conv) this.refreshMembers(conv);
      await this.save();
      this.onChange();
    });
  }

  setVerified(userId, verified) {
    return this.queue.run(async () => {
      this.client.setUserVerified(userId, verified);
      for (const conv of Object.values(this.state.convs)) this.refreshMembers(conv);
      await this.save();
      this.onChange();
    });
  }

  markRead(gid) {
    const conv = this.state.convs[gid];
    if (conv && conv.unread) {
      conv.unread = 0;
      this.save();
    }
  }
}
