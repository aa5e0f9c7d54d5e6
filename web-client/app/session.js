// The logged-in, unlocked session: drives the engine (wasm Client) with the homeserver's
// events, and the user's actions with the homeserver. No DOM here (tested under node).
//
// Every engine call runs inside `this.queue` so commits, processing and sealing never
// interleave. Never log plaintext, keys or tokens.

import { wsUrl } from './api.js';
import {
  Queue, Saver, TYPING_SEND_MS, TYPING_SHOW_MS, Throttle, addChatMessage, applyAction, backoffMs,
  applyGroupProfile, applyPendingFor, bumpOrder, memberUsers, mentionsIn, mentionsUser, profileNotice, commitWithRetry, dmPeer, errorCode, findBySeq, hasReacted, findDm, isDm, keyPackagesToUpload, latestIncomingSeq, localpart, ownDeviceDelta,
  parseNotice, parsePayload, pushMessage, uploadRefusal, withDeviceKeys,
  durationText, stampExpiry, dropExpired,
} from './logic.js';
import { NEW_MEMBER_HISTORY, buildArchive, historyCounts, mergeArchive } from './history.js';

const J = (s) => JSON.parse(s);
const INITIAL_KEY_PACKAGES = 30;
/** How often local copies of disappearing messages are looked at. */
const EXPIRY_SWEEP_MS = 1000;
/** How often the device list of this user is checked for new (or revoked) devices. */
const DEVICE_POLL_MS = 10000;
// Another member's new device: the pause per position among the members before acting (and
// the first retry's wait when it has no key package yet, doubling), and the retries.
const MEMBER_DEVICE_STEP_MS = 2000;
const MEMBER_DEVICE_RETRIES = 4;
// Members past this position among the group's other devices wait MEMBER_DEVICE_LATE_MS more.
const MEMBER_DEVICE_FIRST_RANKS = 3;
const MEMBER_DEVICE_LATE_MS = 30000;

/** Thrown by a commit builder when a concurrent commit already did the work. */
class NothingToDo extends Error {}

/** What a non-admin sees when the engine (`[NotAdmin]`) or the hub (403 `P_NOT_ADMIN`) refuses. */
export const NOT_ADMIN_TEXT = 'Only an admin can do that.';

/** `err` as shown to the user: a refusal for lack of the admin role becomes `NOT_ADMIN_TEXT`. */
export function roleError(err) {
  if (errorCode(err) === 'NotAdmin' || (err && err.errcode === 'P_NOT_ADMIN')) return new Error(NOT_ADMIN_TEXT);
  return err;
}

/**
 * The system lines for a change of a group's admins (`before` and `after`: arrays of user ids,
 * or null for a group without roles) by `committer` ("You" when it is this user).
 */
export function adminChangeLines(before, after, committer, me) {
  if (!after) return [];
  const name = (u) => (u === me ? 'you' : localpart(u));
  const by = committer === me ? 'You' : localpart(committer);
  if (!before) return [`${by} turned on admin roles: ${after.map(name).join(', ')} ${after.length === 1 ? 'is the admin' : 'are admins'}.`];
  const lines = [];
  for (const u of after.filter((a) => !before.includes(a))) lines.push(`${by} made ${name(u)} an admin.`);
  for (const u of before.filter((a) => !after.includes(a))) {
    lines.push(u === committer ? `${by} gave up ${committer === me ? 'your' : 'their'} admin role.`
      : `${by} removed ${u === me ? 'your' : `${localpart(u)}'s`} admin role.`);
  }
  return lines;
}

/**
 * The system line for a change of a group's join link (`before`, `after`: the link, or null
 * when joining by link is off) by `committer`; null when the link did not change.
 */
export function joinLinkLine(before, after, committer, me) {
  if (before === after) return null;
  const by = committer === me ? 'You' : localpart(committer);
  if (!after) return `${by} turned off joining by link.`;
  if (!before) return `${by} turned on joining by link.`;
  return `${by} made a new join link; the old one no longer works.`;
}

/**
 * The system line for a change of a group's disappearing-messages timer (ms, or null when
 * off) by `committer`; null when it did not change.
 */
export function disappearLine(before, after, committer, me) {
  if (before === after) return null;
  const by = committer === me ? 'You' : localpart(committer);
  if (!after) return `${by} turned off disappearing messages.`;
  return `${by} set messages to disappear after ${durationText(after)}.`;
}

/** `err` as shown to someone joining by link: the hub's refusal in plain words. */
export function joinError(err) {
  const code = err && err.errcode;
  if (code === 'P_JOIN_REFUSED' || errorCode(err) === 'JoinRefused') {
    return new Error('This join link does not work: it was turned off or replaced, or you may not join this conversation.');
  }
  if (code === 'P_NOT_FOUND' || code === 'P_UNKNOWN_GROUP') return new Error('This conversation does not exist (any more).');
  return err;
}

/** Engine errors that mean "already handled" when a message is delivered again. */
const BENIGN = new Set(['WrongEpoch', 'Replay', 'UnknownGroup', 'GroupExists']);

/**
 * The system message and announcement for a joined group. Who added this device is named from
 * the MLS group, never from the server's envelope alone: the engine's `welcome_sender` (the
 * Welcome's signer) when it reports one, else the envelope's sender only if that device is a
 * member of the group just joined (its credential validated); otherwise the members are named.
 */
export function welcomeText(joined, envelopeSender, me) {
  const members = joined.members || [];
  const isMember = (d) => !!d && members.some((m) => m.user_id === d.user_id && m.device_id === d.device_id);
  const sender = isMember(joined.welcome_sender) ? joined.welcome_sender
    : (!joined.welcome_sender && isMember(envelopeSender) ? envelopeSender : null);
  if (sender && sender.user_id === me) {
    return { body: `Your device ${sender.device_id} added this device.`, status: 'Your other device added you to a conversation.' };
  }
  if (sender) return { body: `${sender.user_id} added you.`, status: `${sender.user_id} added you to a conversation.` };
  const others = [...new Set(members.map((m) => m.user_id))].filter((u) => u !== me).sort();
  const withWhom = others.length ? ` with ${others.join(', ')}` : '';
  return { body: `You were added to a conversation${withWhom}.`, status: `You were added to a conversation${withWhom}.` };
}

export class Session {
  /**
   * @param {object} deps
   * @param {object} deps.client the wasm `Client`
   * @param {import('./api.js').Api} deps.api
   * @param {object} deps.state app state (logic.emptyAppState shape), sealed with the engine
   * @param {(blobInput: string) => Promise<void>} deps.persist seals and stores the state
   * @param {() => void} deps.onChange UI refresh
   * @param {(kind: 'status'|'alert', text: string) => void} deps.notify announcements
   * @param {() => void} [deps.onSignedOut] the homeserver ended this device's session (revoked
   *   from another device, logged out): the app leaves the chat screen
   * @param {{encrypt: Function, decrypt: Function}} [deps.attachments] the engine's
   *   `encryptAttachment` and `decryptAttachment`
   * @param {(upload: object) => void} [deps.onUploadProgress] an upload's bytes moved (cheaper
   *   than a full `onChange`)
   */
  constructor({
    client, api, state, persist, onChange = () => {}, notify = () => {}, WebSocketImpl, now,
    defer, isVisible, devicePollMs = DEVICE_POLL_MS, onSignedOut, attachments, onUploadProgress,
    onIncoming, parseJoinLink,
  }) {
    // The wasm parser of join links (`{group_id, code}` JSON, or a `[BadLink]` error).
    this.parseJoinLink = parseJoinLink || null;
    // A text or file from someone else was added (the app decides whether to notify).
    this.onIncoming = onIncoming || (() => {});
    this.client = client;
    this.attachments = attachments || null;
    this.onUploadProgress = onUploadProgress || (() => {});
    this.uploads = new Map(); // id → {id, gid, name, size, loaded, total, controller}; in memory
    this.uploadCounter = 0;
    this.maxUploadBytes = null; // limits.max_upload_bytes, once asked
    this.api = api;
    this.state = state;
    this.onChange = onChange;
    this.notify = notify;
    this.WebSocketImpl = WebSocketImpl || globalThis.WebSocket;
    this.now = now || (() => Date.now());
    // Timers are injectable for tests: `defer(fn, ms)` runs fn later.
    this.defer = defer || ((fn, ms) => setTimeout(fn, ms));
    this.isVisible = isVisible || (() => true);
    this.onSignedOut = onSignedOut
      || (() => this.notify('alert', 'This device was signed out by the homeserver. Log in again.'));
    this.devicePollMs = devicePollMs;
    this.deviceTimer = null;
    this.typing = {}; // group id → {user id → expiry ms}; in memory only, never sealed
    this.typingThrottle = new Throttle(TYPING_SEND_MS, this.now);
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
    this.syncOwnDevices().catch(() => {});
    this.deviceTimer = setInterval(() => { this.syncOwnDevices().catch(() => {}); }, this.devicePollMs);
    this.expiryTimer = setInterval(() => { this.sweepExpired(); }, EXPIRY_SWEEP_MS);
  }

  /** Deletes the local copies of messages whose disappearing timer ran out. */
  sweepExpired() {
    const now = this.now();
    let gone = false;
    for (const conv of Object.values(this.state.convs)) gone = dropExpired(conv, now) || gone;
    if (gone) {
      this.save();
      this.onChange();
    }
    return gone;
  }

  /** The conversation's disappearing-messages timer (ms), or null when messages stay. */
  disappearingOf(gid) {
    try {
      const ms = this.client.disappearingAfterMs(gid);
      return typeof ms === 'number' ? ms : null;
    } catch {
      return null;
    }
  }

  /** Stamps the conversation's new messages with their time to disappear (the timer now). */
  stampExpiry(conv) {
    stampExpiry(conv, this.disappearingOf(conv.group_id), this.now());
  }

  /**
   * Sets the conversation's disappearing-messages timer (ms; null turns it off) with one
   * commit (an admin's only, in a group with roles). Messages already here keep theirs.
   */
  setDisappearing(gid, ms) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) throw new Error('This conversation is not active.');
      if (!this.isAdmin(gid)) throw new Error(NOT_ADMIN_TEXT);
      const before = this.disappearingOf(gid);
      if (before === (ms || null)) return before;
      this.stampExpiry(conv);
      try {
        await this.commit(gid, () => this.client.setDisappearing(gid, ms || undefined));
      } catch (err) {
        throw roleError(err);
      }
      const after = this.disappearingOf(gid);
      const line = disappearLine(before, after, this.me, this.me);
      if (line) pushMessage(conv, { id: `dm:${this.now()}`, kind: 'system', body: line, ts: this.now() });
      await this.save();
      this.onChange();
      return after;
    });
  }

  stop() {
    this.stopped = true;
    for (const u of this.uploads.values()) u.controller.abort();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    clearInterval(this.deviceTimer);
    this.deviceTimer = null;
    clearInterval(this.expiryTimer);
    this.expiryTimer = null;
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
          // Even the refresh token was refused: revoked or logged out. Retrying cannot help.
          this.stop();
          this.onSignedOut();
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
    else if (frame.type === 'ephemeral') await this.handleEphemeral(frame);
    if (fromWs && frame.next_batch) {
      this.state.since = frame.next_batch;
      this.save();
      this.ackReceived();
    }
    this.onChange();
  }

  /** Tells the server, at most every 2 s, how far this device has processed its events: the
   *  server keeps messages until every member device has (docs/protocol.md, WebSocket). */
  ackReceived() {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      const ws = this.ws;
      if (ws && ws.readyState === 1 && this.state.since) {
        ws.send(JSON.stringify({ received: this.state.since }));
      }
    }, 2000);
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
    } catch { return; /* group gone */ }
    conv.admins = this.readAdmins(conv.group_id);
  }

  /** The group's admins (user ids, sorted), or null for a group without roles. */
  readAdmins(gid) {
    try {
      const r = J(this.client.roles(gid));
      return r && Array.isArray(r.admins) ? r.admins : null;
    } catch {
      return null;
    }
  }

  /**
   * Whether `userId` (this user by default) may change the conversation's membership and
   * roles: always in a group without roles; false when the group is gone.
   */
  isAdmin(gid, userId = this.me) {
    try {
      return !!this.client.isAdmin(gid, userId);
    } catch {
      return false;
    }
  }

  /**
   * Whether this user is the only admin among the members of a group with roles while others
   * remain (then it may neither leave nor give up the role).
   */
  isLastAdmin(gid) {
    const admins = this.readAdmins(gid);
    if (!admins) return false;
    let users;
    try { users = new Set(J(this.client.members(gid)).map((d) => d.user_id)); } catch { return false; }
    const memberAdmins = admins.filter((a) => users.has(a));
    return memberAdmins.length === 1 && memberAdmins[0] === this.me && users.size > 1;
  }

  /** The conversation's join link, or null when joining by link is off (or the group is gone). */
  joinLinkOf(gid) {
    try {
      return this.client.joinLink(gid) || null;
    } catch {
      return null;
    }
  }

  /**
   * Turns joining the conversation by link on (`on`; when it is on already, makes a new link so
   * that the old one stops working) or off, with one commit (an admin's only). Resolves with
   * the link now in force (null when off).
   */
  setJoinLink(gid, on) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) throw new Error('This conversation is not active.');
      if (!this.isAdmin(gid)) throw new Error(NOT_ADMIN_TEXT);
      const before = this.joinLinkOf(gid);
      if (!on && !before) return null;
      try {
        await this.commit(gid, () => (on ? this.client.openJoinLink(gid) : this.client.closeJoinLink(gid)));
      } catch (err) {
        throw roleError(err);
      }
      const after = this.joinLinkOf(gid);
      const line = joinLinkLine(before, after, this.me, this.me);
      if (line) pushMessage(conv, { id: `jl:${this.now()}`, kind: 'system', body: line, ts: this.now() });
      await this.save();
      this.onChange();
      return after;
    });
  }

  /**
   * Joins the conversation a join link names (docs/protocol.md#join-links): the group's current
   * GroupInfo from the hub (through this homeserver), an external commit, submitted like any
   * commit. A 409 (the group moved on meanwhile) tries again from the new GroupInfo; any other
   * refusal forgets the group. Resolves with `{group_id, already}`.
   */
  joinByLink(link) {
    return this.queue.run(async () => {
      let parsed;
      try {
        if (!this.parseJoinLink) throw new Error('no parser');
        parsed = J(this.parseJoinLink(String(link || '')));
      } catch {
        throw new Error('This is not a join link: it looks like parley:!…?via=…&code=….');
      }
      const { group_id: gid, code } = parsed;
      const held = this.state.convs[gid];
      if (held && held.active) return { group_id: gid, already: true };
      for (let attempt = 0; ; attempt += 1) {
        let info;
        try {
          info = await this.api.joinInfo(gid, code);
        } catch (err) {
          throw joinError(err);
        }
        let joined;
        try {
          joined = J(await withDeviceKeys(() => this.client.joinByLink(gid, info.group_info, code), this.missing, this.fetchUsers));
        } catch (err) {
          throw joinError(err);
        }
        let res;
        try {
          res = await this.api.commit(gid, joined.bundle);
        } catch (err) {
          try { this.client.forgetGroup(gid); } catch { /* never held */ }
          if (err && err.status === 409 && attempt < 3) continue;
          throw joinError(err);
        }
        const conv = held || this.newConv(gid);
        conv.active = true;
        conv.lastSeq = Math.max(conv.lastSeq || 0, (res && res.seq) || 0);
        this.refreshMembers(conv);
        pushMessage(conv, { id: `jb:${this.now()}`, kind: 'system', body: 'You joined with a join link.', ts: this.now() });
        bumpOrder(this.state.order, gid);
        this.noteNewDevices(this.now());
        await this.save();
        this.onChange();
        return { group_id: gid, already: false };
      }
    });
  }

  /**
   * This device lost its state of the conversation (a fork, or an epoch it never reached):
   * tells the user, stops reading the group and asks the hub to have the members add it
   * again (docs/protocol.md#fork-recovery).
   */
  async reportFork(conv, m) {
    if (conv.forked) return;
    conv.forked = true;
    pushMessage(conv, {
      id: `f:${m.seq}`, kind: 'system', ts: m.ts,
      body: 'This device lost step with the conversation (its encryption state no longer matches the others\'). The members were asked to add it again; what is sent until then cannot be read here.',
    });
    try {
      await this.api.reportFork(conv.group_id);
    } catch (err) {
      pushMessage(conv, { id: `f:${m.seq}:x`, kind: 'system', ts: m.ts, body: `Asking the members to add this device again failed: ${err.message}` });
    }
    await this.save();
    this.onChange();
  }

  /**
   * A `member_forked` notice: another device lost its state of the conversation; re-add it
   * with a fresh key package of that device (an admin's commit in a group with roles). After a
   * 409 the winner may have re-added it already: then nothing is left to do.
   */
  async readdForked(conv, notice, m) {
    const gid = conv.group_id;
    if (notice.user_id === this.me && notice.device_id === this.myDevice) return;
    const key = `${notice.user_id}/${notice.device_id}`;
    try {
      await this.commit(gid, async () => {
        if (((conv.readdedAt || {})[key] || 0) > (m.seq || 0)) throw new NothingToDo();
        const present = J(this.client.members(gid)).some((d) => d.user_id === notice.user_id && d.device_id === notice.device_id);
        if (!present || !this.isAdmin(gid)) throw new NothingToDo();
        await this.fetchUsers([notice.user_id]);
        const claim = await this.api.claimKeys([notice.user_id]);
        const kp = ((claim.key_packages || {})[notice.user_id] || {})[notice.device_id];
        if (!kp) throw new NothingToDo();
        return this.client.readdForked(gid, notice.user_id, notice.device_id, kp);
      });
    } catch { /* another member re-added it, or it is gone */ }
    this.refreshMembers(conv);
    this.onChange();
  }

  async handleWelcome(w) {
    const held = this.state.convs[w.group_id];
    if (held && held.forked) {
      // The members added this device again: its new state replaces the one it lost.
      try {
        const joined = J(await withDeviceKeys(() => this.client.rejoin(w.welcome), this.missing, this.fetchUsers));
        held.forked = false;
        held.active = true;
        held.members = joined.members;
        held.admins = this.readAdmins(joined.group_id);
        pushMessage(held, { id: `w:${w.id}`, kind: 'system', body: 'This device was added to the conversation again; new messages can be read from here on.', ts: w.ts });
        await this.save();
        this.onChange();
      } catch (err) {
        this.notify('alert', `Could not join a conversation again: ${err.message.replace(/^\[[A-Za-z]+\]\s*/, '')}`);
        return;
      }
      try { await this.api.deleteWelcome(w.id); } catch { /* acknowledged later */ }
      return;
    }
    const known = J(this.client.groupIds()).includes(w.group_id);
    if (!known) {
      try {
        // A hint only (the devices the join will need first); who added us comes from the group.
        if (w.sender && w.sender.user_id) await this.fetchUsers([w.sender.user_id]).catch(() => {});
        const joined = J(await withDeviceKeys(() => this.client.join(w.welcome), this.missing, this.fetchUsers));
        const conv = this.state.convs[joined.group_id] || this.newConv(joined.group_id);
        conv.active = true;
        conv.members = joined.members;
        conv.admins = this.readAdmins(joined.group_id);
        const { body, status } = welcomeText(joined, w.sender, this.me);
        pushMessage(conv, { id: `w:${w.id}`, kind: 'system', body, ts: w.ts });
        conv.unread = (conv.unread || 0) + 1;
        bumpOrder(this.state.order, joined.group_id);
        this.noteNewDevices(w.ts);
        await this.save();
        this.notify('status', status);
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
    if (conv.forked) {
      // Nothing is readable until the members add this device again (its Welcome).
      conv.lastSeq = m.seq || conv.lastSeq;
      return;
    }
    if (m.kind === 'notice') {
      conv.lastSeq = m.seq || conv.lastSeq;
      await this.handleNotice(conv, m);
      return;
    }
    if (m.kind === 'commit' && Array.isArray(m.adds) && m.adds.length) {
      await this.fetchUsers([...new Set(m.adds.map((d) => d.user_id))]).catch(() => {});
    }
    let events = [];
    // What arrived before this message disappears under the timer then in force.
    this.stampExpiry(conv);
    const adminsBefore = m.kind === 'commit' ? this.readAdmins(gid) : undefined;
    const linkBefore = m.kind === 'commit' ? this.joinLinkOf(gid) : undefined;
    const timerBefore = m.kind === 'commit' ? this.disappearingOf(gid) : undefined;
    try {
      events = J(await withDeviceKeys(() => this.client.process(gid, JSON.stringify(m)), this.missing, this.fetchUsers));
    } catch (err) {
      const code = errorCode(err);
      let epoch = 0;
      try { epoch = this.client.epoch(gid); } catch { /* group gone */ }
      // This device's state of the group is lost: a fork, or an epoch it never reached
      // (docs/protocol.md#fork-recovery).
      if (code === 'ForkDetected' || (code === 'WrongEpoch' && m.epoch > epoch)) {
        conv.lastSeq = m.seq || conv.lastSeq;
        await this.reportFork(conv, m);
        return;
      }
      if (!BENIGN.has(code)) {
        pushMessage(conv, { id: `e:${m.seq}`, kind: 'system', body: 'A message could not be decrypted or was refused.', ts: m.ts });
      }
    }
    conv.lastSeq = m.seq || conv.lastSeq;
    const isOpen = this.openConv === gid;
    const leavers = new Map(); // device key → user id of devices asking to leave (remove proposals)
    let gotText = false;
    for (const ev of events) {
      if (ev.type === 'application') {
        gotText = this.handlePayload(conv, ev, m) || gotText;
      } else if (ev.type === 'commit') {
        const who = (l) => [...new Set(l.map((d) => d.user_id))].join(', ');
        const joinedByLink = ev.added.some((d) => d.user_id === ev.committer.user_id && d.device_id === ev.committer.device_id);
        const readded = ev.added.filter((d) => ev.removed.some((r) => r.user_id === d.user_id && r.device_id === d.device_id));
        for (const d of readded) {
          conv.readdedAt = conv.readdedAt || {};
          conv.readdedAt[`${d.user_id}/${d.device_id}`] = m.seq;
        }
        if (readded.length && readded.length === ev.added.length && readded.length === ev.removed.length) {
          pushMessage(conv, { id: `c:${m.seq}:a`, kind: 'system', body: `${ev.committer.user_id} added ${readded.map((d) => `${d.user_id}'s device ${d.device_id}`).join(', ')} again after it lost step.`, ts: m.ts });
        } else if (joinedByLink) {
          pushMessage(conv, { id: `c:${m.seq}:a`, kind: 'system', body: `${ev.committer.user_id} joined with the join link.`, ts: m.ts });
        } else if (ev.added.length) {
          const own = ev.added.every((d) => d.user_id === ev.committer.user_id);
          const body = own
            ? `${ev.committer.user_id} added their device ${ev.added.map((d) => d.device_id).join(', ')}.`
            : `${ev.committer.user_id} added ${who(ev.added)}.`;
          pushMessage(conv, { id: `c:${m.seq}:a`, kind: 'system', body, ts: m.ts });
        }
        const rejoined = (joinedByLink && ev.removed.every((d) => d.user_id === ev.committer.user_id))
          || (readded.length && readded.length === ev.removed.length);
        if (ev.removed.length && !rejoined) pushMessage(conv, { id: `c:${m.seq}:r`, kind: 'system', body: `${who(ev.removed)} left or was removed.`, ts: m.ts });
      } else if (ev.type === 'removed') {
        conv.active = false;
        pushMessage(conv, { id: `c:${m.seq}:x`, kind: 'system', body: 'You are no longer a member of this conversation.', ts: m.ts });
      } else if (ev.type === 'key_change') {
        pushMessage(conv, { id: `k:${m.seq}:${ev.device.device_id}`, kind: 'system', body: `The safety number with ${ev.device.user_id} changed.`, ts: m.ts });
        this.notify('alert', `The safety number with ${ev.device.user_id} changed. Review it before sending.`);
      } else if (ev.type === 'proposal' && ev.kind === 'remove' && ev.sender.device_id !== this.myDevice) {
        leavers.set(`${ev.sender.user_id}/${ev.sender.device_id}`, ev.sender.user_id);
      }
    }
    this.refreshMembers(conv);
    this.stampExpiry(conv);
    const committed = events.find((ev) => ev.type === 'commit');
    if (committed && adminsBefore !== undefined) {
      const after = this.readAdmins(gid);
      adminChangeLines(adminsBefore, after, committed.committer.user_id, this.me).forEach((body, i) => {
        pushMessage(conv, { id: `c:${m.seq}:adm${i}`, kind: 'system', body, ts: m.ts });
      });
      const linkLine = joinLinkLine(linkBefore, this.joinLinkOf(gid), committed.committer.user_id, this.me);
      if (linkLine) pushMessage(conv, { id: `c:${m.seq}:link`, kind: 'system', body: linkLine, ts: m.ts });
      const timerLine = disappearLine(timerBefore, this.disappearingOf(gid), committed.committer.user_id, this.me);
      if (timerLine) pushMessage(conv, { id: `c:${m.seq}:timer`, kind: 'system', body: timerLine, ts: m.ts });
    }
    if (events.some((ev) => ev.type === 'commit' && ev.added.length)) this.noteNewDevices(m.ts);
    if (gotText && isOpen) this.defer(() => { this.sendReadReceipt(gid).catch(() => {}); }, 200);
    if (leavers.size) {
      // A member asked to leave: commit the proposal (any member may; a 409 means someone did,
      // and that commit then shows as "… left or was removed").
      try {
        await this.commit(gid, () => {
          // After a 409 the winning commit may already have removed them: nothing left to do.
          const present = J(this.client.members(gid)).some((d) => leavers.has(`${d.user_id}/${d.device_id}`));
          if (!present) throw new NothingToDo();
          return this.client.commitPendingProposals(gid);
        });
        pushMessage(conv, { id: `c:${m.seq}:l`, kind: 'system', body: `${[...new Set(leavers.values())].join(', ')} left.`, ts: m.ts });
      } catch { /* another member committed it */ }
    }
  }

  /**
   * A notice written by the hub (not MLS). `member_deactivated`: the user's server closed the
   * account, so its devices cannot leave by themselves; any member commits their removal (a
   * 409 means another member did). `member_devices_changed`: see `followDeviceChange`.
   */
  async handleNotice(conv, m) {
    const gid = conv.group_id;
    const notice = parseNotice(m.message);
    if (notice && notice.type === 'member_devices_changed') {
      this.followDeviceChange(gid, notice);
      return;
    }
    if (notice && notice.type === 'member_forked') {
      await this.readdForked(conv, notice, m);
      return;
    }
    if (!notice || notice.type !== 'member_deactivated') return;
    pushMessage(conv, { id: `n:${m.seq}`, kind: 'system', body: `${notice.user_id}'s account was closed by their server.`, ts: m.ts });
    const named = new Set(notice.devices.map((d) => d.device_id));
    try {
      await this.commit(gid, () => {
        const gone = J(this.client.members(gid)).filter((d) => d.user_id === notice.user_id && named.has(d.device_id));
        if (!gone.length) throw new NothingToDo();
        return this.client.removeMembers(gid, JSON.stringify(gone));
      });
    } catch { /* another member committed it, or nothing was left to remove */ }
    this.refreshMembers(conv);
    this.onChange();
  }

  /**
   * One decrypted application payload (a JSON envelope in the MLS plaintext, docs/protocol.md). Only
   * texts and files become bubbles, bump the conversation or count as unread; reactions, edits
   * and deletes change the message they name (`applyAction`: an edit or delete only from the
   * user who sent it, the sender's user id coming from the MLS credential), typing notices,
   * read receipts and DM markers update state. Returns whether a text or file was added.
   */
  handlePayload(conv, ev, m) {
    const gid = conv.group_id;
    const from = ev.sender.user_id;
    const mine = from === this.me; // another device of this user (own echoes never get here)
    const p = parsePayload(ev.plaintext);
    if (p.type === 'text' || p.type === 'file') {
      this.clearTyping(gid, from);
      // A file keeps its descriptor (where it is, its key), never its bytes.
      const content = p.type === 'text' ? { kind: 'text', body: p.body } : { kind: 'file', file: p.file, body: p.body };
      if (p.reply_to) content.replyTo = p.reply_to;
      if (p.mentions && p.mentions.length) content.mentions = p.mentions;
      const added = addChatMessage(conv, {
        id: ev.msg_id,
        ...content,
        own: mine,
        state: mine ? 'delivered' : undefined,
        sender: from,
        ts: ev.ts,
        seq: m.seq,
      }, { isOpen: this.openConv === gid });
      bumpOrder(this.state.order, gid);
      if (added && !mine) {
        if (this.openConv !== gid && mentionsUser(added, this.me)) conv.mentioned = (conv.mentioned || 0) + 1;
        this.onIncoming(conv, added);
      }
      return true;
    }
    if (p.type === 'group_profile') {
      // Not a bubble: a notice line; the last by seq wins per field (`applyGroupProfile`).
      if (!m.seq) return false;
      const changed = applyGroupProfile(conv, p, m.seq);
      const body = profileNotice(mine ? 'You' : localpart(from), changed, conv);
      if (body) pushMessage(conv, { id: `gp:${m.seq}`, kind: 'system', body, ts: ev.ts });
      return false;
    }
    if (p.type === 'reaction' || p.type === 'edit' || p.type === 'delete') {
      if (m.seq) applyAction(conv, { ...p, from, seq: m.seq });
      return false;
    }
    // A typing notice older than its display time (a catch-up after being offline) is stale;
    // the age is measured against the hub's acceptance time.
    if (p.type === 'typing' && !mine && this.now() - m.ts < TYPING_SHOW_MS) {
      (this.typing[gid] = this.typing[gid] || {})[from] = this.now() + TYPING_SHOW_MS;
      this.defer(() => this.onChange(), TYPING_SHOW_MS + 50);
    } else if (p.type === 'read') {
      if (mine) {
        // Read on another device of this user: nothing left unread here.
        if (p.up_to >= latestIncomingSeq(conv)) {
          conv.unread = 0;
          conv.mentioned = 0;
        }
      } else {
        conv.reads = conv.reads || {};
        conv.reads[from] = Math.max(conv.reads[from] || 0, p.up_to);
      }
    } else if (p.type === 'dm') {
      const peer = dmPeer(conv, this.me);
      if (peer) conv.dm = peer;
    } else if (p.type === 'history' && m.seq) {
      this.receiveHistory(conv, p, ev.sender);
    }
    return false;
  }

  /**
   * An ephemeral message (never stored, no seq): only a typing notice or a read receipt is honoured; anything
   * else sent this way is dropped, so nothing ephemeral ever becomes a bubble or history.
   */
  async handleEphemeral(frame) {
    const conv = this.state.convs[frame.group_id];
    if (!conv || !conv.active) return;
    const m = { seq: 0, sender: frame.sender, kind: 'application', epoch: frame.epoch, message: frame.message, ts: frame.ts };
    let events = [];
    try {
      events = J(await withDeviceKeys(() => this.client.process(frame.group_id, JSON.stringify(m)), this.missing, this.fetchUsers));
    } catch {
      return; // a hint only
    }
    for (const ev of events) {
      if (ev.type !== 'application') continue;
      const type = parsePayload(ev.plaintext).type;
      if (type === 'typing' || type === 'read') this.handlePayload(conv, ev, m);
    }
  }

  /** Users currently typing in a group (expired notices dropped). */
  typingUsers(gid) {
    const t = this.typing[gid] || {};
    const now = this.now();
    for (const [u, until] of Object.entries(t)) if (until <= now) delete t[u];
    return Object.keys(t);
  }

  clearTyping(gid, userId) {
    if (this.typing[gid]) delete this.typing[gid][userId];
  }

  /**
   * Encrypts and sends a non-text payload (typing, read receipt, DM marker): no local echo,
   * never a bubble. Inside the queue. Returns false when it could not be sent (inactive
   * conversation, unacknowledged key change, pending proposals, network) — these are hints.
   */
  async signalNow(gid, payload, { ephemeral = false, keepLatest = false } = {}) {
    const conv = this.state.convs[gid];
    if (!conv || !conv.active) return false;
    // A DM marker says nothing the group does not know; it goes out even while a key change
    // waits (a contact's new device added by this client needs it to show the DM as one).
    if (payload.type !== 'dm' && this.keyChanges(gid).length) return false;
    try {
      const out = J(this.client.encrypt(gid, JSON.stringify(payload), this.now()));
      if (ephemeral) await this.api.sendEphemeral(gid, out.msg_id, out.message, { keepLatest });
      else await this.api.send(gid, out.msg_id, out.message);
      return true;
    } catch {
      return false;
    }
  }

  /** The user typed in a conversation: tells the others, at most once per 3 s. */
  noteTyping(gid) {
    const conv = this.state.convs[gid];
    if (!conv || !conv.active || !this.typingThrottle.ready(gid)) return Promise.resolve(false);
    // Ephemeral: only members online now see it, and the server stores nothing.
    return this.queue.run(() => this.signalNow(gid, { type: 'typing' }, { ephemeral: true }));
  }

  /** Sends a read receipt for the open, visible conversation if it has something new. */
  sendReadReceipt(gid) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || this.openConv !== gid || !this.isVisible()) return false;
      const upTo = latestIncomingSeq(conv);
      if (upTo <= (conv.readSent || 0)) return false;
      // Ephemeral (never stored); the servers keep the latest per device for devices away.
      if (!(await this.signalNow(gid, { type: 'read', up_to: upTo }, { ephemeral: true, keepLatest: true }))) return false;
      conv.readSent = upTo;
      this.save();
      return true;
    });
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
    if (r.bundle && r.bundle.adds && r.bundle.adds.length) this.noteNewDevices(this.now());
    await this.save();
    return r;
  }

  /** A new MLS group on the hub and in the engine (inside the queue): its id. */
  async newGroup() {
    // Every new group has roles: its creator is the only admin (docs/protocol.md#group-roles).
    const { group_id: gid } = await this.api.createGroup({ roles: true });
    this.client.createGroupWithRoles(gid);
    return gid;
  }

  /** Sends this device's leave proposal (inside the queue): a member commits it. */
  async sendLeave(gid) {
    const proposal = this.client.leaveGroup(gid);
    await this.api.send(gid, `leave-${this.now()}`, proposal);
  }

  createConversation() {
    return this.queue.run(async () => {
      const gid = await this.newGroup();
      const conv = this.newConv(gid);
      this.refreshMembers(conv);
      await this.save();
      this.onChange();
      return gid;
    });
  }

  /**
   * Adds every device of `userId` to the conversation. When the conversation shares its
   * history with new members (`conv.shareHistory`, opted in), those devices then get its
   * recent history (`shareWithNewMember`; a failure there is announced, the invite stands).
   */
  async invite(gid, userId) {
    const added = await this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) throw new Error('This conversation is not active.');
      await this.fetchUsers([userId]);
      const claim = await this.api.claimKeys([userId]);
      const failure = Object.entries(claim.failures || {})[0];
      const already = new Set(conv.members.filter((m) => m.user_id === userId).map((m) => m.device_id));
      const kps = Object.entries((claim.key_packages || {})[userId] || {})
        .filter(([dev]) => !already.has(dev));
      if (kps.length === 0) {
        if (failure) throw new Error(`Cannot invite ${userId}: ${failure[1].error || failure[1].errcode}`);
        if (already.size) throw new Error(`${userId} is already in this conversation.`);
        throw new Error(`${userId} has no device that can be added.`);
      }
      try {
        await this.commit(gid, () => this.client.addMembers(gid, JSON.stringify(kps.map(([, kp]) => kp))));
      } catch (err) {
        throw roleError(err);
      }
      pushMessage(conv, { id: `i:${this.now()}:${userId}`, kind: 'system', body: `You added ${userId}.`, ts: this.now() });
      this.onChange();
      return kps.map(([dev]) => dev);
    });
    const conv = this.state.convs[gid];
    if (conv && conv.shareHistory && userId !== this.me) {
      try {
        await this.shareWithNewMember(gid, userId, added);
      } catch (err) {
        this.notify('alert', `${userId} was added, but the recent history could not be shared: ${err.message.replace(/^\[[A-Za-z]+\]\s*/, '')}`);
      }
    }
  }

  removeMember(gid, userId) {
    return this.queue.run(async () => {
      try {
        await this.commit(gid, () => this.client.removeUser(gid, userId));
      } catch (err) {
        throw roleError(err);
      }
      pushMessage(this.state.convs[gid], { id: `r:${this.now()}:${userId}`, kind: 'system', body: `You removed ${userId}.`, ts: this.now() });
      this.onChange();
    });
  }

  /**
   * Makes `userId` an admin of the conversation (`makeAdmin`) or takes the role away, with one
   * commit (an admin's only). The last admin among the members cannot give the role up while
   * others remain. Admins no longer in the group are dropped from the list on the way.
   */
  setAdmin(gid, userId, makeAdmin) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) throw new Error('This conversation is not active.');
      if (!this.readAdmins(gid)) throw new Error('This conversation has no admin roles.');
      if (!this.isAdmin(gid)) throw new Error(NOT_ADMIN_TEXT);
      if (!makeAdmin && userId === this.me && this.isLastAdmin(gid)) {
        throw new Error('Make another member an admin before you give up your admin role.');
      }
      const next = () => {
        const users = new Set(J(this.client.members(gid)).map((d) => d.user_id));
        if (!users.has(userId)) throw new Error(`${userId} is not a member of this conversation.`);
        const current = (this.readAdmins(gid) || []).filter((a) => users.has(a));
        const list = makeAdmin ? [...new Set([...current, userId])].sort() : current.filter((a) => a !== userId);
        if (list.length === current.length && list.every((a, i) => a === current[i])) throw new NothingToDo();
        if (!list.length) throw new Error('A conversation with admin roles needs at least one admin.');
        return list;
      };
      try {
        await this.commit(gid, () => this.client.setAdmins(gid, JSON.stringify(next())));
      } catch (err) {
        if (err instanceof NothingToDo) {
          this.onChange();
          return;
        }
        throw roleError(err);
      }
      const who = userId === this.me ? 'your' : `${localpart(userId)}'s`;
      const body = makeAdmin ? `You made ${userId === this.me ? 'yourself' : localpart(userId)} an admin.` : `You removed ${who} admin role.`;
      pushMessage(conv, { id: `ad:${this.now()}:${userId}:${makeAdmin ? '+' : '-'}`, kind: 'system', body, ts: this.now() });
      this.onChange();
    });
  }

  leave(gid) {
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      // A DM is exempt: the one left behind counts as admin once no member is one.
      if (conv && !conv.dm && this.isLastAdmin(gid)) throw new Error('Make another member an admin before you leave.');
      await this.sendLeave(gid);
      conv.active = false;
      pushMessage(conv, { id: `l:${this.now()}`, kind: 'system', body: 'You left. Others will remove this device at their next commit.', ts: this.now() });
      await this.save();
      this.onChange();
    });
  }

  /** Sends a text; `replyTo`: the seq of the message it answers (quoted when shown). */
  sendText(gid, text, { replyTo } = {}) {
    const payload = { type: 'text', body: text };
    const local = { kind: 'text', body: text };
    if (replyTo) {
      payload.reply_to = replyTo;
      local.replyTo = replyTo;
    }
    // `@localpart` of a member names them (protocol §7.11 `mentions`).
    const conv = this.state.convs[gid];
    const mentions = conv ? mentionsIn(text, memberUsers(conv), this.me) : [];
    if (mentions.length) {
      payload.mentions = mentions;
      local.mentions = mentions;
    }
    return this.queue.run(() => this.sendPayload(gid, payload, local));
  }

  /**
   * Sends a reaction, edit or delete naming the message `target` (a seq), then applies it to
   * the local copy with the seq the hub gave it (the sender cannot decrypt its own message).
   * Not a bubble: it neither bumps the conversation nor counts as unread. Inside the queue.
   */
  async sendAction(gid, payload) {
    this.checkCanSend(gid);
    const conv = this.state.convs[gid];
    const out = J(this.client.encrypt(gid, JSON.stringify(payload), this.now()));
    const r = await this.api.send(gid, out.msg_id, out.message);
    const result = applyAction(conv, { ...payload, from: this.me, seq: r.seq });
    await this.save();
    this.onChange();
    return result;
  }

  /**
   * Sets the group's name and/or topic for every member (`{name?, topic?}`: a string, or ''
   * / null to clear; absent: unchanged) with a `group_profile` payload, then applies it here
   * with the seq the hub gave it. Not a bubble: a notice line ("You named the group …").
   */
  setGroupProfile(gid, fields, media) {
    return this.queue.run(async () => {
      const conv = this.checkCanSend(gid);
      const payload = { type: 'group_profile' };
      for (const k of ['name', 'topic']) {
        if (fields[k] === undefined) continue;
        const v = typeof fields[k] === 'string' ? fields[k].trim() : null;
        payload[k] = v || null;
      }
      if (fields.avatar !== undefined) payload.avatar = fields.avatar || null;
      const p = parsePayload(JSON.stringify(payload));
      if (p.type !== 'group_profile') throw new Error('The group name has at most 128 characters and the topic at most 1,024.');
      if (Object.keys(p).length === 1) return [];
      const out = J(this.client.encrypt(gid, JSON.stringify(p), this.now()));
      const r = await this.api.send(gid, out.msg_id, out.message, media);
      const changed = applyGroupProfile(conv, p, r.seq);
      const body = profileNotice('You', changed, conv);
      if (body) pushMessage(conv, { id: `gp:${r.seq}`, kind: 'system', body, ts: this.now() });
      await this.save();
      this.onChange();
      return changed;
    });
  }

  /**
   * Sets the group's picture: `image` (`{bytes, mime, width, height}`, a small image the app
   * made) is encrypted under a fresh key, uploaded to this homeserver and named by the
   * `group_profile`'s `avatar` descriptor (the message names the media id, so the server keeps
   * it); null removes the picture.
   */
  async setGroupAvatar(gid, image) {
    if (!image) return this.setGroupProfile(gid, { avatar: null });
    if (!this.attachments) throw new Error('This client cannot encrypt files.');
    this.checkCanSend(gid);
    const refusal = uploadRefusal(image.bytes.byteLength, await this.mediaLimit());
    if (refusal) throw new Error(refusal);
    const enc = this.encryptAttachment(image.bytes);
    const stored = await this.api.uploadMedia(enc.ciphertext, {});
    const desc = this.fileDescriptor(stored, enc, image.mime, 'group-picture');
    if (Number.isSafeInteger(image.width) && Number.isSafeInteger(image.height)) {
      desc.width = image.width;
      desc.height = image.height;
    }
    return this.setGroupProfile(gid, { avatar: desc }, [stored.media_id]);
  }

  /** Adds this user's reaction `key` to message `seq`, or withdraws it if already there. */
  toggleReaction(gid, seq, key) {
    return this.queue.run(() => {
      const msg = this.ownTarget(gid, seq, false);
      const payload = { type: 'reaction', target: seq, key };
      if (hasReacted(msg, this.me, key)) payload.remove = true;
      return this.sendAction(gid, payload);
    });
  }

  /** Replaces the text of this user's message `seq` for everyone ("(edited)"). */
  editMessage(gid, seq, body) {
    return this.queue.run(() => {
      this.ownTarget(gid, seq, true);
      return this.sendAction(gid, { type: 'edit', target: seq, body });
    });
  }

  /** Deletes this user's message `seq` for everyone: a tombstone, its content dropped here. */
  deleteMessage(gid, seq) {
    return this.queue.run(() => {
      this.ownTarget(gid, seq, true);
      return this.sendAction(gid, { type: 'delete', target: seq });
    });
  }

  /** The message `seq` an action names (`own`: it must be this user's), or an error. */
  ownTarget(gid, seq, own) {
    const conv = this.state.convs[gid];
    const msg = conv ? findBySeq(conv, seq) : null;
    if (!msg) throw new Error('That message is not here any more.');
    if (msg.deleted) throw new Error('That message was deleted.');
    if (own && msg.sender !== this.me) throw new Error('Only the sender can edit or delete a message.');
    return msg;
  }

  /** Refuses to send into an inactive conversation or past an unacknowledged key change. */
  checkCanSend(gid) {
    const conv = this.state.convs[gid];
    if (!conv || !conv.active) throw new Error('This conversation is not active.');
    if (this.keyChanges(gid).length) {
      throw new Error('A member\'s safety number changed: acknowledge the key change before sending.');
    }
    return conv;
  }

  /**
   * Encrypts and sends a payload shown as a bubble: the local echo is `local` (kind, body,
   * file) as own message. `media`: ids of uploads the message names. Inside the queue.
   */
  async sendPayload(gid, payload, local, media) {
    const conv = this.checkCanSend(gid);
    const out = J(this.client.encrypt(gid, JSON.stringify(payload), this.now()));
    const msg = pushMessage(conv, {
      id: out.msg_id, ...local, own: true, sender: this.me, ts: out.ts, state: 'sending',
    });
    this.stampExpiry(conv);
    bumpOrder(this.state.order, gid);
    this.onChange();
    this.typingThrottle.reset(gid);
    try {
      const r = await this.api.send(gid, out.msg_id, out.message, media);
      msg.state = 'sent';
      msg.seq = r.seq;
      applyPendingFor(conv, r.seq);
    } catch (err) {
      msg.state = 'failed';
      this.onChange();
      throw err;
    }
    this.save();
    this.onChange();
    return msg;
  }

  // ----- attachments -----

  /** `limits.max_upload_bytes` of this homeserver (0: no media repository), asked once. */
  async mediaLimit() {
    if (this.maxUploadBytes === null) {
      const v = await this.api.versions();
      const n = v && v.limits ? v.limits.max_upload_bytes : 0;
      this.maxUploadBytes = Number.isSafeInteger(n) && n > 0 ? n : 0;
    }
    return this.maxUploadBytes;
  }

  /** The uploads running in a conversation, oldest first. */
  uploadsOf(gid) {
    return [...this.uploads.values()].filter((u) => u.gid === gid);
  }

  cancelUpload(id) {
    const u = this.uploads.get(id);
    if (u) u.controller.abort();
  }

  /** Encrypts `bytes` under a fresh key: the ciphertext and the descriptor's secrets. */
  encryptAttachment(bytes) {
    const e = this.attachments.encrypt(bytes);
    try {
      return {
        ciphertext: e.ciphertext, key: e.key, nonce_prefix: e.noncePrefix, sha256: e.sha256,
        size: e.size, plaintext_size: e.plaintextSize,
      };
    } finally {
      e.free();
    }
  }

  /** The descriptor (protocol §7.10) of an upload `stored` of the encrypted `enc`. */
  fileDescriptor(stored, enc, mime, name) {
    return {
      v: 1, media_id: stored.media_id, server_name: stored.server_name, key: enc.key,
      nonce_prefix: enc.nonce_prefix, sha256: enc.sha256, size: enc.size,
      plaintext_size: enc.plaintext_size, mime, name,
    };
  }

  /**
   * Sends a file: encrypts it (and its thumbnail, if any) under fresh keys, uploads the
   * ciphertexts to this homeserver with progress (`this.uploads`, shown as a pending bubble),
   * then sends `{"type":"file","file":DESCRIPTOR}` naming both media ids so the server keeps
   * them. `file`: `{bytes, name, mime, width?, height?, thumbnail?: {bytes, mime, width, height}}`.
   * The upload runs outside the queue (incoming messages keep flowing); the send inside it.
   */
  async sendFile(gid, file) {
    if (!this.attachments) throw new Error('This client cannot encrypt files.');
    this.checkCanSend(gid);
    const limit = await this.mediaLimit();
    const refusal = uploadRefusal(file.bytes.byteLength, limit);
    if (refusal) throw new Error(refusal);
    this.uploadCounter += 1;
    const upload = {
      id: `up-${this.now()}-${this.uploadCounter}`, gid, name: file.name, size: file.bytes.byteLength,
      loaded: 0, total: 0, controller: new AbortController(),
    };
    this.uploads.set(upload.id, upload);
    this.onChange();
    try {
      const main = this.encryptAttachment(file.bytes);
      const thumb = file.thumbnail ? this.encryptAttachment(file.thumbnail.bytes) : null;
      upload.total = main.size + (thumb ? thumb.size : 0);
      this.onUploadProgress(upload);
      const up = async (enc, before) => {
        const r = await this.api.uploadMedia(enc.ciphertext, {
          signal: upload.controller.signal,
          onProgress: (loaded) => {
            upload.loaded = before + Math.min(loaded, enc.size);
            this.onUploadProgress(upload);
          },
        });
        enc.ciphertext = null; // let go of the bytes early
        return r;
      };
      const stored = await up(main, 0);
      const desc = this.fileDescriptor(stored, main, file.mime || 'application/octet-stream', file.name);
      if (Number.isSafeInteger(file.width) && Number.isSafeInteger(file.height)) {
        desc.width = file.width;
        desc.height = file.height;
      }
      const media = [stored.media_id];
      if (thumb) {
        const t = await up(thumb, main.size);
        desc.thumbnail = {
          media_id: t.media_id, server_name: t.server_name, key: thumb.key, nonce_prefix: thumb.nonce_prefix,
          sha256: thumb.sha256, size: thumb.size, mime: file.thumbnail.mime,
          width: file.thumbnail.width, height: file.thumbnail.height,
        };
        media.push(t.media_id);
      }
      upload.loaded = upload.total;
      this.onUploadProgress(upload);
      return await this.queue.run(() => {
        this.uploads.delete(upload.id);
        return this.sendPayload(gid, { type: 'file', file: desc }, { kind: 'file', file: desc }, media);
      });
    } finally {
      if (this.uploads.delete(upload.id)) this.onChange();
    }
  }

  /**
   * Downloads an attachment (a file or a thumbnail descriptor) through this homeserver, checks
   * its SHA-256 and decrypts it: the plaintext. Hash mismatch: `[AttachmentHashMismatch]`.
   */
  async fetchAttachment(desc, { onProgress, signal } = {}) {
    if (!this.attachments) throw new Error('This client cannot decrypt files.');
    // A server sending more than the descriptor's size is stopped there, not read to the end.
    const controller = new AbortController();
    const stop = () => controller.abort();
    if (signal) {
      if (signal.aborted) stop();
      signal.addEventListener('abort', stop, { once: true });
    }
    let oversized = false;
    let ciphertext;
    try {
      ciphertext = await this.api.downloadMedia(desc.server_name, desc.media_id, {
        signal: controller.signal,
        onProgress: (loaded, total) => {
          if (loaded > desc.size || total > desc.size) {
            oversized = true;
            stop();
            return;
          }
          if (onProgress) onProgress(loaded, total);
        },
      });
    } catch (err) {
      if (oversized) throw new Error('[AttachmentFormat] the server sent more bytes than the message says');
      throw err;
    } finally {
      if (signal) signal.removeEventListener('abort', stop);
    }
    const plain = this.attachments.decrypt(ciphertext, desc.key, desc.nonce_prefix, desc.sha256);
    if (desc.plaintext_size !== undefined && plain.length !== desc.plaintext_size) {
      throw new Error(`[AttachmentFormat] the file has ${plain.length} bytes, its message says ${desc.plaintext_size}`);
    }
    return plain;
  }

  /**
   * Unacknowledged key changes among a conversation's members: `{user_id, device_id, kind}`,
   * `kind` "key" for a device whose key changed (the engine's TOFU check, which also refuses to
   * encrypt) or "new_device" for a verified contact's new device (`noteNewDevices`).
   */
  keyChanges(gid) {
    const conv = this.state.convs[gid];
    if (!conv) return [];
    const ids = new Set(conv.members.map((m) => `${m.user_id}/${m.device_id}`));
    const changed = J(this.client.pendingKeyChanges())
      .filter((k) => ids.has(`${k.user_id}/${k.device_id}`))
      .map((k) => ({ user_id: k.user_id, device_id: k.device_id, kind: 'key' }));
    const fresh = Object.entries(this.state.newDevices || {})
      .filter(([id]) => ids.has(id))
      .map(([, d]) => ({ user_id: d.user_id, device_id: d.device_id, kind: 'new_device' }));
    return [...changed, ...fresh];
  }

  /**
   * Flags the devices of verified contacts that are not verified themselves: a device that
   * joined after the user compared safety numbers (a new login, a device replacing a verified
   * one). Their safety number changed as surely as with a changed key, so each is a key change
   * (`state.newDevices`, sealed) until acknowledged or until the contact is verified again.
   * Announces the new ones; called after every change of membership.
   */
  noteNewDevices(ts) {
    const byUser = new Map(); // user id → Map(device id → trust)
    for (const gid of J(this.client.groupIds())) {
      let members;
      try { members = J(this.client.members(gid)); } catch { continue; }
      for (const m of members) {
        if (m.user_id === this.me) continue;
        if (!byUser.has(m.user_id)) byUser.set(m.user_id, new Map());
        byUser.get(m.user_id).set(m.device_id, m.trust);
      }
    }
    const flagged = this.state.newDevices || (this.state.newDevices = {});
    for (const [user, devices] of byUser) {
      if (![...devices.values()].includes('verified')) continue;
      for (const [device, trust] of devices) {
        const id = `${user}/${device}`;
        if (trust !== 'tofu' || flagged[id]) continue;
        flagged[id] = { user_id: user, device_id: device };
        for (const conv of Object.values(this.state.convs)) {
          if (!conv.members.some((m) => m.user_id === user && m.device_id === device)) continue;
          pushMessage(conv, { id: `n:${id}:${ts || this.now()}`, kind: 'system', body: `${user} has a new device ${device}: the safety number changed.`, ts: ts || this.now() });
        }
        this.notify('alert', `The safety number with ${user} changed: a new device (${device}) since you verified them. Review it before sending.`);
      }
    }
  }

  forgetNewDevices(userId) {
    for (const [id, d] of Object.entries(this.state.newDevices || {})) {
      if (d.user_id === userId) delete this.state.newDevices[id];
    }
  }

  /**
   * Accepts the conversation's key changes. As the engine does for a changed key, the
   * verified mark of everyone concerned is dropped: it comes back only by verifying again.
   */
  acknowledgeKeyChanges(gid) {
    return this.queue.run(async () => {
      const users = new Set();
      for (const k of this.keyChanges(gid)) {
        if (k.kind === 'key') this.client.acknowledgeKeyChange(k.user_id, k.device_id);
        users.add(k.user_id);
      }
      for (const u of users) {
        this.client.setUserVerified(u, false);
        this.forgetNewDevices(u);
      }
      for (const conv of Object.values(this.state.convs)) this.refreshMembers(conv);
      await this.save();
      this.onChange();
    });
  }

  setVerified(userId, verified) {
    return this.queue.run(async () => {
      this.client.setUserVerified(userId, verified);
      // Verified again (the new safety number compared) or not verified at all: either way
      // no device is new "since you verified them" any more.
      this.forgetNewDevices(userId);
      for (const conv of Object.values(this.state.convs)) this.refreshMembers(conv);
      await this.save();
      this.onChange();
    });
  }

  markRead(gid) {
    const conv = this.state.convs[gid];
    if (conv && (conv.unread || conv.mentioned)) {
      conv.unread = 0;
      conv.mentioned = 0;
      this.save();
    }
    if (conv) this.sendReadReceipt(gid).catch(() => {});
  }

  // ----- direct messages -----

  /**
   * Opens the direct message with `userId`: an existing one (`findDm`) or a new two-member
   * group, marked as a DM locally and for the contact by an encrypted `{"type":"dm"}` first
   * message. Returns `{group_id, reused}`.
   */
  async startDm(userId) {
    if (userId === this.me) throw new Error('A direct message needs someone else: enter another user id.');
    const existing = findDm(this.state, userId, this.me);
    if (existing) return { group_id: existing, reused: true };
    let devices;
    try {
      devices = await this.api.userDevices(userId);
    } catch (err) {
      if (err && err.status === 404) throw new Error(`There is no user ${userId}.`);
      throw err;
    }
    if (!devices.devices || devices.devices.length === 0) {
      throw new Error(`${userId} has no device that can receive messages yet.`);
    }
    const gid = await this.createConversation();
    this.state.convs[gid].dm = userId;
    try {
      await this.invite(gid, userId);
    } catch (err) {
      // Nothing was shared yet: forget the empty conversation.
      delete this.state.convs[gid];
      this.state.order = this.state.order.filter((g) => g !== gid);
      await this.save();
      this.onChange();
      throw err;
    }
    await this.queue.run(() => this.signalNow(gid, { type: 'dm' }));
    return { group_id: gid, reused: false };
  }

  // ----- history for new devices and new members (protocol §7.11 `history`) -----

  /** Turns "Share recent history with new members" of a conversation on or off (sealed). */
  setShareHistory(gid, on) {
    const conv = this.state.convs[gid];
    if (!conv) return;
    conv.shareHistory = !!on;
    this.save();
    this.onChange();
  }

  /** "Not now": forgets the offer to send the history to this user's device `deviceId`. */
  dismissHistoryOffer(deviceId) {
    if (this.state.historyOffers) delete this.state.historyOffers[deviceId];
    this.save();
    this.onChange();
  }

  /**
   * Sends this device's message history (every active conversation, `buildArchive`) to this
   * user's device `deviceId` (`shareArchive`). Returns `{messages, conversations}`.
   */
  async sendHistory(deviceId) {
    if (deviceId === this.myDevice) throw new Error('This device already has its history.');
    const gids = this.state.order.filter((g) => this.state.convs[g] && this.state.convs[g].active);
    const archive = buildArchive(this.state, gids, { fromDevice: this.myDevice, now: this.now() });
    const counts = {
      messages: archive.conversations.reduce((n, c) => n + c.messages.length, 0),
      conversations: archive.conversations.filter((c) => c.messages.length).length,
    };
    await this.shareArchive(archive, this.me, [deviceId]);
    if (this.state.historyOffers) delete this.state.historyOffers[deviceId];
    await this.save();
    this.onChange();
    this.notify('status', `Sent your message history (${historyCounts(counts)}) to your device ${deviceId}.`);
    return counts;
  }

  /**
   * Shares the newest `NEW_MEMBER_HISTORY` messages of conversation `gid` with the devices
   * `deviceIds` of `userId`, just added (the conversation opted in). Nothing to share: nothing sent.
   */
  async shareWithNewMember(gid, userId, deviceIds) {
    const archive = buildArchive(this.state, [gid], { maxPerConv: NEW_MEMBER_HISTORY, fromDevice: this.myDevice, now: this.now() });
    const n = archive.conversations.length ? archive.conversations[0].messages.length : 0;
    if (!n || !deviceIds.length) return;
    await this.shareArchive(archive, userId, deviceIds, { group_id: gid });
    const conv = this.state.convs[gid];
    if (conv) pushMessage(conv, { id: `h:${this.now()}:${userId}`, kind: 'system', body: `You shared the ${n} most recent messages with ${userId}.`, ts: this.now() });
    await this.save();
    this.onChange();
  }

  /**
   * Encrypts `archive` under a fresh key (as an attachment), uploads it to this homeserver
   * and sends `{"type":"history","v":1,"archive":DESCRIPTOR, ...extra}` (naming the upload, so
   * the server keeps it) in a new transient MLS group holding only this device and the
   * devices `deviceIds` of `userId`; then leaves that group. The archive key travels only
   * inside MLS, to those devices. Never a conversation here.
   */
  async shareArchive(archive, userId, deviceIds, extra = {}) {
    if (!this.attachments) throw new Error('This client cannot encrypt files.');
    const bytes = new TextEncoder().encode(JSON.stringify(archive));
    const limit = await this.mediaLimit();
    if (uploadRefusal(bytes.byteLength, limit)) {
      throw new Error(limit ? `The message history is larger than the server's limit for uploads.` : 'This homeserver does not accept files.');
    }
    const enc = this.encryptAttachment(bytes);
    const stored = await this.api.uploadMedia(enc.ciphertext, {});
    enc.ciphertext = null;
    const desc = this.fileDescriptor(stored, enc, 'application/json', 'history.json');
    return this.queue.run(async () => {
      const claim = await this.api.claimKeys([userId]);
      const kps = Object.entries((claim.key_packages || {})[userId] || {})
        .filter(([d]) => deviceIds.includes(d) && !(userId === this.me && d === this.myDevice));
      if (!kps.length) {
        const who = userId === this.me ? `Your device ${deviceIds.join(', ')}` : userId;
        throw new Error(`${who} has no key package to receive the history; try again later.`);
      }
      const gid = await this.newGroup();
      try {
        await this.commit(gid, () => this.client.addMembers(gid, JSON.stringify(kps.map(([, kp]) => kp))));
        const payload = { type: 'history', v: 1, archive: desc, ...extra };
        const out = J(this.client.encrypt(gid, JSON.stringify(payload), this.now()));
        await this.api.send(gid, out.msg_id, out.message, [stored.media_id]);
      } finally {
        await this.sendLeave(gid).catch(() => {});
      }
    });
  }

  /**
   * A received `history` payload (inside the queue). Accepted only from another device of
   * this user, or from another user naming one conversation (`group_id`) that this device and
   * that user are both members of (a share opted in per group; merged into that conversation
   * only). The group that carried it (a transport, no chat message in it) is hidden at once;
   * the archive is downloaded, checked and merged outside the queue (`importHistory`).
   */
  receiveHistory(conv, p, sender) {
    const mine = sender.user_id === this.me;
    if (!mine || p.group_id !== undefined) {
      const target = p.group_id !== undefined ? this.state.convs[p.group_id] : null;
      let members = [];
      try { members = target && target.active ? J(this.client.members(p.group_id)) : []; } catch { members = []; }
      const ok = target && target !== conv
        && members.some((d) => d.user_id === this.me && d.device_id === this.myDevice)
        && members.some((d) => d.user_id === sender.user_id);
      if (!ok) {
        this.notify('alert', `Refused a message history from ${sender.user_id}: it does not name a conversation you share.`);
        return;
      }
    }
    // Hidden only when it looks like a transport: no chat message, and nobody in it but the
    // sending device and this user's devices.
    let carriers = [];
    try { carriers = J(this.client.members(conv.group_id)); } catch { carriers = []; }
    const transport = carriers.every((d) => d.user_id === this.me
      || (d.user_id === sender.user_id && d.device_id === sender.device_id));
    if (transport && !conv.messages.some((x) => x.kind === 'text' || x.kind === 'file')) {
      delete this.state.convs[conv.group_id];
      const i = this.state.order.indexOf(conv.group_id);
      if (i >= 0) this.state.order.splice(i, 1);
      if (this.openConv === conv.group_id) this.openConv = null;
    }
    this.historyImport = this.importHistory(p, sender);
  }

  /** Downloads (hash checked), decrypts, validates and merges a history archive; announces it. */
  async importHistory(p, sender) {
    const mine = sender.user_id === this.me;
    const who = mine ? `your device ${sender.device_id}` : sender.user_id;
    try {
      const bytes = await this.fetchAttachment(p.archive);
      const counts = await this.queue.run(async () => {
        const c = mergeArchive(this.state, bytes, { me: this.me, via: mine ? undefined : sender.user_id, only: p.group_id });
        await this.save();
        this.onChange();
        return c;
      });
      this.notify('status', mine ? `History from your device ${sender.device_id}: ${historyCounts(counts)}.`
        : `History shared by ${sender.user_id}: ${historyCounts(counts)}.`);
      return counts;
    } catch (err) {
      const why = err && err.message ? err.message.replace(/^\[[A-Za-z]+\]\s*/, '') : String(err);
      this.notify('alert', `The message history from ${who} could not be imported: ${why}`);
      return null;
    }
  }

  // ----- this user's other devices -----

  /**
   * Adds this user's devices that a group lacks (a new login: `GET /users/{me}/devices`
   * lists it once its signature key is bound) to every active group, and removes revoked
   * ones, with one commit per group. A device without key packages yet is retried at the
   * next poll. Returns the number of groups changed.
   */
  async syncOwnDevices() {
    // The poll itself stays outside the queue, so a slow homeserver does not hold up sending.
    const resp = await this.api.userDevices(this.me);
    return this.queue.run(async () => {
      this.client.setUserDevices(JSON.stringify(resp));
      const listed = (resp.devices || []).map((d) => d.device_id);
      if (!listed.includes(this.myDevice)) return 0; // this device was revoked
      let changed = 0;
      const addedTo = new Set();
      for (const gid of [...this.state.order]) {
        const conv = this.state.convs[gid];
        if (!conv || !conv.active) continue;
        const delta = () => ownDeviceDelta(J(this.client.members(gid)), this.me, this.myDevice, listed);
        const { missing, stale } = delta();
        try {
          if (stale.length) {
            await this.commit(gid, () => {
              const now = delta().stale;
              if (!now.length) throw new NothingToDo();
              return this.client.removeMembers(gid, JSON.stringify(now.map((d) => ({ user_id: this.me, device_id: d }))));
            });
            pushMessage(conv, { id: `d:${this.now()}:${gid}:r`, kind: 'system', body: `Removed revoked device ${stale.join(', ')}.`, ts: this.now() });
            changed += 1;
          }
          if (missing.length) {
            const claim = await this.api.claimKeys([this.me]);
            const kps = Object.entries((claim.key_packages || {})[this.me] || {}).filter(([d]) => missing.includes(d));
            if (kps.length === 0) continue;
            await this.commit(gid, () => {
              const now = delta().missing;
              const still = kps.filter(([d]) => now.includes(d)).map(([, kp]) => kp);
              if (!still.length) throw new NothingToDo();
              return this.client.addMembers(gid, JSON.stringify(still));
            });
            kps.forEach(([d]) => addedTo.add(d));
            pushMessage(conv, { id: `d:${this.now()}:${gid}:a`, kind: 'system', body: `Added your device ${kps.map(([d]) => d).join(', ')}.`, ts: this.now() });
            // The new device did not see the DM marker: send it again.
            if (isDm(conv, this.me)) await this.signalNow(gid, { type: 'dm' });
            changed += 1;
          }
        } catch (err) {
          if (!(err instanceof NothingToDo)) this.discardQuietly(gid);
        }
      }
      if (changed) {
        // Offer to send the new device this device's history (the UI asks; `sendHistory`).
        const offers = this.state.historyOffers || (this.state.historyOffers = {});
        for (const d of addedTo) offers[d] = this.now();
        await this.save();
        this.onChange();
        if (addedTo.size) this.notify('status', `Added your new device ${[...addedTo].join(', ')} to your conversations.`);
      }
      return changed;
    });
  }

  // ----- other members' devices -----

  /**
   * Follows a `member_devices_changed` notice: after a pause that grows with this device's
   * position among the members (so one member usually acts and the rest find nothing left),
   * the group gets the user's listed devices it lacks and loses the unlisted ones it holds.
   * This user's own list is left to `syncOwnDevices`, asked to run now.
   */
  followDeviceChange(gid, notice) {
    if (notice.user_id === this.me) {
      this.defer(() => { this.syncOwnDevices().catch(() => {}); }, 0);
      return;
    }
    let others = [];
    try {
      others = J(this.client.members(gid))
        .filter((d) => d.user_id !== notice.user_id)
        .map((d) => `${d.user_id}/${d.device_id}`)
        .sort();
    } catch {
      return; // not (or no longer) a member here
    }
    const rank = Math.max(0, others.indexOf(`${this.me}/${this.myDevice}`));
    const run = (attempt) => this.syncMemberDevices(gid, notice).then((left) => {
      // A new device binds its key a moment before it uploads key packages.
      if (left && attempt < MEMBER_DEVICE_RETRIES) this.defer(() => run(attempt + 1), MEMBER_DEVICE_STEP_MS * 2 ** attempt);
    }).catch(() => {});
    // The first few members act within seconds; the others much later, by when the commit of
    // an earlier one has usually arrived and they find nothing left (each claim spends one of
    // the new device's key packages).
    const wait = rank < MEMBER_DEVICE_FIRST_RANKS
      ? rank * MEMBER_DEVICE_STEP_MS
      : MEMBER_DEVICE_LATE_MS + Math.min(rank, 30) * MEMBER_DEVICE_STEP_MS;
    this.defer(() => run(0), wait);
  }

  /**
   * Adds the devices of `notice.user_id` named as added that the user's list (fetched now)
   * holds and the group lacks, and removes those named as removed that the list no longer
   * holds, one commit each. Returns whether named devices are still missing (no key package
   * yet).
   */
  async syncMemberDevices(gid, notice) {
    const userId = notice.user_id;
    const resp = await this.api.userDevices(userId);
    return this.queue.run(async () => {
      const conv = this.state.convs[gid];
      if (!conv || !conv.active) return false;
      this.client.setUserDevices(JSON.stringify(resp));
      const listed = new Set((resp.devices || []).map((d) => d.device_id));
      const delta = () => {
        const inGroup = new Set(J(this.client.members(gid)).filter((d) => d.user_id === userId).map((d) => d.device_id));
        return {
          missing: notice.added.filter((d) => listed.has(d) && !inGroup.has(d)),
          stale: notice.removed.filter((d) => !listed.has(d) && inGroup.has(d)),
        };
      };
      const { missing, stale } = delta();
      // A list cached before the device appeared: try again later.
      const unlisted = notice.added.some((d) => !listed.has(d));
      if (stale.length) {
        try {
          await this.commit(gid, () => {
            const now = delta().stale;
            if (!now.length) throw new NothingToDo();
            return this.client.removeMembers(gid, JSON.stringify(now.map((d) => ({ user_id: userId, device_id: d }))));
          });
          pushMessage(conv, { id: `md:${this.now()}:${gid}:r`, kind: 'system', body: `Removed ${userId}'s deleted device ${stale.join(', ')}.`, ts: this.now() });
        } catch (err) {
          if (!(err instanceof NothingToDo)) this.discardQuietly(gid);
        }
      }
      if (!missing.length) {
        this.onChange();
        return unlisted;
      }
      const claim = await this.api.claimKeys([userId]);
      const kps = Object.entries((claim.key_packages || {})[userId] || {}).filter(([d]) => missing.includes(d));
      if (kps.length) {
        try {
          await this.commit(gid, () => {
            const now = delta().missing;
            const still = kps.filter(([d]) => now.includes(d)).map(([, kp]) => kp);
            if (!still.length) throw new NothingToDo();
            return this.client.addMembers(gid, JSON.stringify(still));
          });
          pushMessage(conv, { id: `md:${this.now()}:${gid}:a`, kind: 'system', body: `Added ${userId}'s new device ${kps.map(([d]) => d).join(', ')}.`, ts: this.now() });
          // The new device did not see the DM marker: send it again.
          if (isDm(conv, this.me)) await this.signalNow(gid, { type: 'dm' });
        } catch (err) {
          if (!(err instanceof NothingToDo)) this.discardQuietly(gid);
        }
      }
      this.onChange();
      return unlisted || kps.length < missing.length;
    });
  }

  discardQuietly(gid) {
    try { this.client.discardCommit(gid); } catch { /* nothing pending */ }
  }
}
