// Pure helpers of the web client (no DOM, no network): tested with `node --test`.

/** Error code of an engine error: `[Code] text` → `Code`. */
export function errorCode(err) {
  const msg = err && typeof err.message === 'string' ? err.message : String(err);
  const m = /^\[([A-Za-z]+)\]/.exec(msg);
  return m ? m[1] : null;
}

/** A short, user-facing text for an error (never includes plaintext or keys). */
export function describeError(err) {
  if (!err) return 'Unknown error';
  if (err.errcode) return `${err.error || err.errcode} (${err.errcode})`;
  const code = errorCode(err);
  switch (code) {
    case 'VaultDecrypt': return 'Wrong passphrase.';
    case 'VaultFormat': return 'The stored vault is damaged.';
    case 'KeyChangeUnacknowledged': return 'A member\'s safety number changed: review it before sending.';
    case 'Locked': return 'The client is locked.';
    default: break;
  }
  const msg = typeof err.message === 'string' ? err.message : String(err);
  return msg.replace(/^\[[A-Za-z]+\]\s*/, '');
}

/** Reconnect delay: exponential from 1 s to 30 s, with up to 20 % jitter. */
export function backoffMs(attempt, random = Math.random) {
  const base = Math.min(30000, 1000 * 2 ** Math.max(0, Math.min(attempt, 10)));
  return Math.round(base * (1 - 0.2 * random()));
}

/** Localpart of a user id `@name:server` (or the id itself). */
export function localpart(userId) {
  const m = /^@([^:]+):/.exec(userId || '');
  return m ? m[1] : String(userId || '');
}

/** Server name of a user id. */
export function serverOf(userId) {
  const i = (userId || '').indexOf(':');
  return i >= 0 ? userId.slice(i + 1) : '';
}

/** Completes `bob` → `@bob:server`, keeps a full id, refuses malformed ones (null). */
export function normaliseUserId(input, defaultServer) {
  const s = String(input || '').trim();
  if (!s) return null;
  if (s.startsWith('@')) {
    return /^@[a-z0-9._=-]+:[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^@[a-z0-9._=-]+:\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$/.test(s) ? s : null;
  }
  if (!/^[a-z0-9._=-]+$/.test(s) || !defaultServer) return null;
  return `@${s}:${defaultServer}`;
}

/** The distinct user ids among a conversation's members. */
export function memberUsers(conv) {
  return [...new Set((conv.members || []).map((m) => m.user_id))];
}

/**
 * Whether a conversation is a direct message: marked as one (`conv.dm` = the contact, set by
 * "New direct message" or by a received `{"type":"dm"}` marker) and its members are only this
 * user and the contact (an invited third person turns it into a group).
 */
export function isDm(conv, ownUserId) {
  if (!conv || !conv.dm) return false;
  return memberUsers(conv).every((u) => u === ownUserId || u === conv.dm);
}

/** The group id of an active direct message with `userId` (both present), or null. */
export function findDm(state, userId, ownUserId) {
  for (const gid of state.order) {
    const conv = state.convs[gid];
    if (!conv || !conv.active || conv.dm !== userId || !isDm(conv, ownUserId)) continue;
    const users = memberUsers(conv);
    if (users.includes(userId) && users.includes(ownUserId)) return gid;
  }
  return null;
}

/** The contact of a two-user conversation (for a received DM marker), or null. */
export function dmPeer(conv, ownUserId) {
  const users = memberUsers(conv);
  if (users.length !== 2 || !users.includes(ownUserId)) return null;
  return users.find((u) => u !== ownUserId);
}

/** A conversation's title: the contact of a DM, the other members' localparts, or a stored name. */
export function conversationTitle(conv, ownUserId) {
  if (conv.name) return conv.name;
  if (isDm(conv, ownUserId)) return localpart(conv.dm);
  const others = memberUsers(conv).filter((u) => u !== ownUserId);
  if (others.length === 0) return 'Only you';
  return others.map(localpart).sort().join(', ');
}

/** Accessible name of a conversation button, e.g. "bob, direct message, 2 unread". */
export function conversationLabel(conv, ownUserId) {
  const parts = [conversationTitle(conv, ownUserId)];
  if (isDm(conv, ownUserId)) parts.push('direct message');
  if (conv.unread > 0) parts.push(`${conv.unread} unread`);
  return parts.join(', ');
}

/** "bob is typing…", "alice and bob are typing…", "3 people are typing…", or ''. */
export function typingLabel(userIds) {
  const names = [...new Set(userIds)].map(localpart).sort();
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

/** How long a received typing notice is shown, and the least time between two sent. */
export const TYPING_SHOW_MS = 5000;
export const TYPING_SEND_MS = 3000;

/** Per-key throttle: `ready(key)` is true at most once per `ms` (clock injectable). */
export class Throttle {
  constructor(ms, now = () => Date.now()) {
    this.ms = ms;
    this.now = now;
    this.last = new Map();
  }

  ready(key) {
    const t = this.now();
    const prev = this.last.get(key);
    if (prev !== undefined && t - prev < this.ms) return false;
    this.last.set(key, t);
    return true;
  }

  reset(key) { this.last.delete(key); }
}

/**
 * The state shown on an own message: "read" once every other member has sent a read receipt
 * covering its seq (`conv.reads`: user id → highest seq read), else its delivery state.
 */
export function ownMessageState(msg, conv, ownUserId) {
  if (!msg.own) return '';
  const others = memberUsers(conv).filter((u) => u !== ownUserId);
  const reads = conv.reads || {};
  if (msg.seq && others.length > 0 && others.every((u) => (reads[u] || 0) >= msg.seq)) return 'read';
  return msg.state || 'sent';
}

/** Highest seq of a text from someone else (what a read receipt acknowledges), or 0. */
export function latestIncomingSeq(conv) {
  let max = 0;
  for (const m of conv.messages || []) if (m.kind === 'text' && !m.own && m.seq > max) max = m.seq;
  return max;
}

/**
 * Which of this user's devices a group lacks and which it holds that are no longer listed
 * (revoked). `listed`: device ids of `GET /users/{me}/devices`; this device is never stale.
 */
export function ownDeviceDelta(members, ownUserId, ownDeviceId, listed) {
  const inGroup = new Set((members || []).filter((m) => m.user_id === ownUserId).map((m) => m.device_id));
  const all = new Set(listed);
  return {
    missing: [...all].filter((d) => !inGroup.has(d) && d !== ownDeviceId).sort(),
    stale: [...inGroup].filter((d) => !all.has(d) && d !== ownDeviceId).sort(),
  };
}

/** The last message text of a conversation, shortened. */
export function lastMessagePreview(conv, max = 40) {
  const msgs = conv.messages || [];
  for (let i = msgs.length - 1; i >= 0; i -= 1) {
    if (msgs[i].kind === 'text') {
      const t = msgs[i].body;
      return t.length > max ? `${t.slice(0, max - 1)}…` : t;
    }
  }
  return '';
}

/** Safety number grouped in blocks of five digits, three blocks... per line (12 blocks). */
export function formatSafetyNumber(digits) {
  const blocks = String(digits).match(/.{1,5}/g) || [];
  const lines = [];
  for (let i = 0; i < blocks.length; i += 4) lines.push(blocks.slice(i, i + 4).join(' '));
  return lines.join('\n');
}

/** How many key packages to upload given the server's count (0 if enough). */
export function keyPackagesToUpload(count, { low = 10, target = 30 } = {}) {
  if (typeof count !== 'number' || count >= low) return 0;
  return Math.max(0, target - count);
}

/**
 * Parses an application payload (the JSON envelope inside the MLS plaintext):
 * `{"type":"text","body"}`, `{"type":"typing"}`, `{"type":"read","up_to":SEQ}`, `{"type":"dm"}`.
 * Anything that is not such an object (plain text of older clients) becomes a text message;
 * a known type with bad fields becomes `{type: 'invalid'}`; unknown types pass through (ignored).
 */
export function parsePayload(plaintext) {
  let v;
  try {
    v = JSON.parse(plaintext);
  } catch {
    return { type: 'text', body: String(plaintext) };
  }
  if (!v || typeof v !== 'object' || Array.isArray(v) || typeof v.type !== 'string') {
    return { type: 'text', body: String(plaintext) };
  }
  if (v.type === 'text' && typeof v.body !== 'string') return { type: 'invalid' };
  if (v.type === 'read' && !(Number.isSafeInteger(v.up_to) && v.up_to > 0)) return { type: 'invalid' };
  return v;
}

/**
 * A hub notice (`kind: "notice"`, docs/protocol.md#notices): its base64 JSON object, or null
 * when it does not read as one. Only `member_deactivated` is acted on; its devices are those of
 * `user_id` alone, so a forged notice can at most ask to remove that user's own devices.
 */
export function parseNotice(b64) {
  let v;
  try {
    v = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || typeof v.type !== 'string') return null;
  if (v.type === 'member_deactivated') {
    if (typeof v.user_id !== 'string' || !Array.isArray(v.devices)) return null;
    const devices = v.devices.filter((d) => d && d.user_id === v.user_id && typeof d.device_id === 'string');
    return { type: v.type, user_id: v.user_id, devices };
  }
  return { type: v.type };
}

/** Time of a message as HH:MM (local). */
export function formatTime(ts) {
  const d = new Date(ts);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** Auto-lock minutes from a settings field: an integer 1…1440, default 15. */
export function parseAutoLockMinutes(v) {
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n) || n < 1) return 15;
  return Math.min(n, 1440);
}

/** Whether a passphrase is acceptable for a new vault (returns an error text or null). */
export function checkNewPassphrase(pass, confirm) {
  if (!pass || pass.length < 8) return 'The vault passphrase must have at least 8 characters.';
  if (pass !== confirm) return 'The two passphrases differ.';
  return null;
}

/**
 * Runs `op` and, when it fails because device keys of some users are unknown, fetches them with
 * `fetchUsers(users)` and tries again. `missing()` returns the users the last attempt needed.
 * Gives up when a round finds nothing new to fetch.
 */
export async function withDeviceKeys(op, missing, fetchUsers, maxRounds = 8) {
  const fetched = new Set();
  for (let round = 0; ; round += 1) {
    try {
      return await op();
    } catch (err) {
      const need = missing().filter((u) => !fetched.has(u));
      if (need.length === 0 || round >= maxRounds) throw err;
      need.forEach((u) => fetched.add(u));
      await fetchUsers(need);
    }
  }
}

/**
 * Submits a commit built by `build()` with `submit(bundle)`. On a 409 (stale epoch), calls
 * `discard()` then `catchUp()` (which processes the winning commit) and builds again.
 * On success calls `confirm()`; on another failure `discard()` and rethrows.
 */
export async function commitWithRetry({ build, submit, confirm, discard, catchUp, attempts = 4 }) {
  for (let i = 0; ; i += 1) {
    const bundle = await build();
    try {
      const res = await submit(bundle);
      const event = await confirm();
      return { res, event, bundle };
    } catch (err) {
      await discard();
      if (err && err.status === 409 && i + 1 < attempts) {
        await catchUp();
        continue;
      }
      throw err;
    }
  }
}

/**
 * Idle timer: calls `onIdle` after `ms` without `poke()`. Besides its timeout it compares
 * wall-clock time: browsers throttle or suspend timers of hidden tabs and sleeping machines, so
 * `check()` (called when the tab becomes visible again) and `poke()` fire at once when the idle
 * time has already passed. Clock injectable for tests.
 */
export class IdleTimer {
  constructor(ms, onIdle, {
    setTimeoutFn = (fn, t) => setTimeout(fn, t), clearTimeoutFn = (h) => clearTimeout(h),
    now = () => Date.now(),
  } = {}) {
    this.ms = ms;
    this.onIdle = onIdle;
    this.set = setTimeoutFn;
    this.clear = clearTimeoutFn;
    this.now = now;
    this.handle = null;
    this.last = 0; // time of the last activity
    this.running = false;
  }

  start() { this.running = true; this.arm(); }

  /** Activity: postpones the lock, unless the idle time already passed unnoticed. */
  poke() {
    if (!this.running || this.check()) return;
    this.arm();
  }

  arm() {
    if (this.handle !== null) this.clear(this.handle);
    this.last = this.now();
    this.handle = this.set(() => { this.handle = null; this.fire(); }, this.ms);
  }

  /** Fires now if the idle time has passed by the wall clock; returns whether it fired. */
  check() {
    if (!this.running || this.now() - this.last < this.ms) return false;
    this.fire();
    return true;
  }

  fire() {
    this.stop();
    this.onIdle();
  }

  setMs(ms) { this.ms = ms; if (this.running) this.arm(); }

  stop() {
    if (this.handle !== null) this.clear(this.handle);
    this.handle = null;
    this.running = false;
  }
}

/**
 * Serialises async work: each `run(fn)` starts after the previous finished (engine calls and
 * their persistence must not interleave).
 */
export class Queue {
  constructor() { this.tail = Promise.resolve(); }

  run(fn) {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => {});
    return next;
  }
}

/**
 * Coalescing saver: `request()` schedules a save; while one runs, further requests collapse
 * into one more run after it. `flush()` resolves when everything requested so far is saved.
 */
export class Saver {
  constructor(save, onError = () => {}) {
    this.save = save;
    this.onError = onError;
    this.running = null;
    this.dirty = false;
  }

  request() {
    this.dirty = true;
    if (!this.running) this.running = this.loop();
    return this.running;
  }

  async loop() {
    try {
      while (this.dirty) {
        this.dirty = false;
        try {
          await this.save();
        } catch (err) {
          this.onError(err);
        }
      }
    } finally {
      this.running = null;
    }
  }

  async flush() {
    while (this.running) await this.running;
  }
}

/** The empty app state kept in the vault beside the engine. */
export function emptyAppState() {
  return {
    version: 1,
    homeserver: '',
    session: null, // {user_id, device_id, access_token, refresh_token}
    since: null,
    keysBound: false,
    settings: { autoLockMinutes: 15 },
    // group_id → {group_id, name, members, messages, unread, active, lastSeq,
    //             dm (contact of a direct message), reads (user → seq read), readSent}
    convs: {},
    order: [], // group ids, most recent first
    // "user/device" → {user_id, device_id}: new devices of verified contacts, unacknowledged
    newDevices: {},
  };
}

/** Adds a message to a conversation, keeping at most `keep` messages; returns it. */
export function pushMessage(conv, msg, { isOpen = false, keep = 500 } = {}) {
  conv.messages = conv.messages || [];
  if (msg.id && conv.messages.some((m) => m.id === msg.id)) return null;
  conv.messages.push(msg);
  if (conv.messages.length > keep) conv.messages.splice(0, conv.messages.length - keep);
  if (!msg.own && msg.kind === 'text' && !isOpen) conv.unread = (conv.unread || 0) + 1;
  return msg;
}

/** Moves a group id to the front of the order list. */
export function bumpOrder(order, gid) {
  const i = order.indexOf(gid);
  if (i >= 0) order.splice(i, 1);
  order.unshift(gid);
  return order;
}
