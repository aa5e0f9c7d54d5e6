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
  if (conv.mentioned > 0) parts.push('mentions you');
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
  // Imported history is not something this device received: it never moves receipts.
  for (const m of conv.messages || []) if (isChatKind(m.kind) && !m.own && !m.imported && m.seq > max) max = m.seq;
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

/** The last message text of a conversation (a file: its name), shortened. */
export function lastMessagePreview(conv, max = 40) {
  const msgs = conv.messages || [];
  for (let i = msgs.length - 1; i >= 0; i -= 1) {
    const m = msgs[i];
    if (m.kind === 'text' || m.kind === 'file') {
      if (m.deleted) return 'message deleted';
      const t = m.kind === 'file' ? `File: ${sanitizeFilename(m.file && m.file.name)}` : m.body;
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

/** Whether a stored message kind is something a person sent (a bubble that counts as unread). */
export function isChatKind(kind) {
  return kind === 'text' || kind === 'file';
}

/** Longest `body` (a text, caption or edit) accepted, in UTF-16 code units: the homeserver's
 *  largest message (65,536 bytes of ciphertext) could not carry more anyway. */
export const MAX_BODY_CHARS = 65536;
/** Longest reaction `key`, in UTF-8 bytes (protocol §7.11). */
export const MAX_REACTION_KEY_BYTES = 64;
/** The reactions the UI offers (any key of 1–64 bytes from others is shown). */
export const REACTION_KEYS = Object.freeze(['👍', '❤️', '😂', '😮', '😢']);

const isSeq = (n) => Number.isSafeInteger(n) && n > 0;
const isBody = (s) => typeof s === 'string' && s.length <= MAX_BODY_CHARS;
const utf8Length = (s) => new TextEncoder().encode(s).length;

/** Longest group name and topic, in characters (protocol §7.11 `group_profile`). */
export const MAX_GROUP_NAME = 128;
export const MAX_GROUP_TOPIC = 1024;
/** Most user ids a text's `mentions` may list. */
export const MAX_MENTIONS = 100;
const USER_ID = /^@[a-z0-9._=-]{1,255}:\S{1,255}$/;

/** Whether `s` reads as a user id (`@localpart:server`). */
export function isUserId(s) {
  return typeof s === 'string' && USER_ID.test(s);
}

/** A `mentions` list: distinct user ids (at most 100), or null when malformed. */
export function parseMentions(v) {
  if (!Array.isArray(v) || v.length > MAX_MENTIONS) return null;
  if (!v.every((u) => typeof u === 'string' && USER_ID.test(u))) return null;
  return [...new Set(v)];
}

/**
 * Parses an application payload (the JSON envelope inside the MLS plaintext, protocol §7.11):
 * `{"type":"text","body","reply_to"?:SEQ}`, `{"type":"file","file":DESCRIPTOR,"body"?,"reply_to"?}`
 * (DESCRIPTOR checked by `parseFileDescriptor`), `{"type":"reaction","target":SEQ,"key","remove"?:true}`,
 * `{"type":"edit","target":SEQ,"body"}`, `{"type":"delete","target":SEQ}`, `{"type":"typing"}`,
 * `{"type":"read","up_to":SEQ}`, `{"type":"dm"}`, `{"type":"group_profile","name"?,"topic"?,"avatar"?}`
 * (each a string of at most 128 / 1,024 characters, or a descriptor, or null to clear), a
 * text's `mentions` (user ids) and `{"type":"history","v":1,"archive":DESCRIPTOR,"group_id"?}`. Known types come back reduced to their known
 * fields. Anything that is not such an object (plain text of older clients) becomes a text
 * message; a known type with bad fields becomes `{type: 'invalid'}`; unknown types pass
 * through (ignored). SEQ: a positive safe integer; `body`: a string of at most
 * `MAX_BODY_CHARS`; `key`: a string of 1–64 UTF-8 bytes.
 */
export function parsePayload(plaintext) {
  let v;
  try {
    v = JSON.parse(plaintext);
  } catch {
    return { type: 'text', body: String(plaintext).slice(0, MAX_BODY_CHARS) };
  }
  if (!v || typeof v !== 'object' || Array.isArray(v) || typeof v.type !== 'string') {
    return { type: 'text', body: String(plaintext).slice(0, MAX_BODY_CHARS) };
  }
  const invalid = { type: 'invalid' };
  const withReply = (out) => {
    if (v.reply_to === undefined) return out;
    return isSeq(v.reply_to) ? { ...out, reply_to: v.reply_to } : invalid;
  };
  switch (v.type) {
    case 'text': {
      if (!isBody(v.body)) return invalid;
      const out = withReply({ type: 'text', body: v.body });
      if (out.type === 'invalid' || v.mentions === undefined) return out;
      const mentions = parseMentions(v.mentions);
      return mentions ? { ...out, mentions } : invalid;
    }
    case 'group_profile': {
      const out = { type: 'group_profile' };
      for (const [k, max] of [['name', MAX_GROUP_NAME], ['topic', MAX_GROUP_TOPIC]]) {
        if (v[k] === undefined) continue;
        if (v[k] !== null && !(typeof v[k] === 'string' && [...v[k]].length <= max)) return invalid;
        out[k] = v[k];
      }
      if (v.avatar !== undefined) {
        if (v.avatar === null) out.avatar = null;
        else {
          const avatar = parseFileDescriptor(v.avatar);
          if (!avatar) return invalid;
          out.avatar = avatar;
        }
      }
      return out;
    }
    case 'file': {
      const file = parseFileDescriptor(v.file);
      if (!file || (v.body !== undefined && !isBody(v.body))) return invalid;
      return withReply(v.body ? { type: 'file', file, body: v.body } : { type: 'file', file });
    }
    case 'reaction': {
      if (!isSeq(v.target) || typeof v.key !== 'string') return invalid;
      const n = utf8Length(v.key);
      if (n < 1 || n > MAX_REACTION_KEY_BYTES) return invalid;
      if (v.remove !== undefined && typeof v.remove !== 'boolean') return invalid;
      return v.remove ? { type: 'reaction', target: v.target, key: v.key, remove: true } : { type: 'reaction', target: v.target, key: v.key };
    }
    case 'edit':
      return isSeq(v.target) && isBody(v.body) ? { type: 'edit', target: v.target, body: v.body } : invalid;
    case 'delete':
      return isSeq(v.target) ? { type: 'delete', target: v.target } : invalid;
    case 'read':
      return isSeq(v.up_to) ? { type: 'read', up_to: v.up_to } : invalid;
    case 'typing':
    case 'dm':
      return { type: v.type };
    case 'history': {
      // A history archive (app/history.js): only version 1; `group_id` names the one
      // conversation another user shares (absent between devices of one user).
      const archive = parseFileDescriptor(v.archive);
      if (v.v !== 1 || !archive) return invalid;
      if (v.group_id === undefined) return { type: 'history', v: 1, archive };
      if (typeof v.group_id !== 'string' || v.group_id.length < 1 || v.group_id.length > 255) return invalid;
      return { type: 'history', v: 1, archive, group_id: v.group_id };
    }
    default:
      return v;
  }
}

// ----- replies, reactions, edits, deletes (protocol §7.11) -----

/** Most actions kept per conversation for targets not seen yet, and distinct keys per message. */
export const MAX_PENDING_ACTIONS = 200;
export const MAX_REACTION_KEYS = 20;

/** The chat message (text or file) with hub seq `seq` in a conversation, or null. */
export function findBySeq(conv, seq) {
  if (!isSeq(seq)) return null;
  const msgs = conv.messages || [];
  for (let i = msgs.length - 1; i >= 0; i -= 1) {
    const m = msgs[i];
    if (m.seq === seq && isChatKind(m.kind)) return m;
  }
  return null;
}

/** Drops a message's content: it becomes the tombstone "message deleted". */
function tombstone(msg) {
  for (const k of ['body', 'file', 'reactions', 'editSeq', 'replyTo']) delete msg[k];
  msg.deleted = true;
}

/**
 * Applies one reaction, edit or delete (`action`: `{type, target, from, seq, key?, remove?,
 * body?}`; `from` the sender's user id from the MLS credential, `seq` the action's own seq) to
 * the conversation. Returns what happened: `'applied'`, `'ignored'` (a repeat, an edit or
 * delete from someone else than the target's sender, anything done to a deleted message) or
 * `'pending'` (target not seen yet: kept in `conv.pending` and applied by `addChatMessage`).
 */
export function applyAction(conv, action) {
  const msg = findBySeq(conv, action.target);
  if (!msg) {
    conv.pending = conv.pending || [];
    conv.pending.push({ ...action });
    if (conv.pending.length > MAX_PENDING_ACTIONS) conv.pending.splice(0, conv.pending.length - MAX_PENDING_ACTIONS);
    return 'pending';
  }
  // A deleted message stays a tombstone, whatever comes for it.
  if (msg.deleted) return 'ignored';
  if (action.type === 'reaction') {
    const reactions = msg.reactions || [];
    let entry = reactions.find((r) => r.key === action.key);
    if (action.remove) {
      if (!entry || !entry.users.includes(action.from)) return 'ignored';
      entry.users = entry.users.filter((u) => u !== action.from);
      msg.reactions = reactions.filter((r) => r.users.length > 0);
      if (msg.reactions.length === 0) delete msg.reactions;
      return 'applied';
    }
    if (entry && entry.users.includes(action.from)) return 'ignored';
    if (!entry) {
      if (reactions.length >= MAX_REACTION_KEYS) return 'ignored';
      entry = { key: action.key, users: [] };
      reactions.push(entry);
    }
    entry.users.push(action.from);
    msg.reactions = reactions;
    return 'applied';
  }
  // Edits and deletes: only from the user who sent the target (any of their devices).
  if (action.from !== msg.sender) return 'ignored';
  if (action.type === 'edit') {
    if ((msg.editSeq || 0) >= action.seq) return 'ignored'; // the last edit by seq wins
    msg.body = action.body;
    msg.editSeq = action.seq;
    return 'applied';
  }
  if (action.type === 'delete') {
    tombstone(msg);
    // Its reactions and edits not applied yet go too.
    if (conv.pending) conv.pending = conv.pending.filter((p) => p.target !== msg.seq);
    return 'applied';
  }
  return 'ignored';
}

/**
 * Adds a chat message (text or file, with its `seq` when known) like `pushMessage`, then
 * applies the actions that were waiting for its seq, in seq order. Returns the message or null.
 */
export function addChatMessage(conv, msg, opts) {
  const added = pushMessage(conv, msg, opts);
  if (added) applyPendingFor(conv, added.seq);
  return added;
}

/** Applies the pending actions naming `seq` (the message now known), in seq order. */
export function applyPendingFor(conv, seq) {
  if (!isSeq(seq) || !conv.pending || !conv.pending.length) return;
  const now = conv.pending.filter((p) => p.target === seq).sort((a, b) => a.seq - b.seq);
  if (!now.length) return;
  conv.pending = conv.pending.filter((p) => p.target !== seq);
  for (const a of now) applyAction(conv, a);
}

/** Whether `userId` reacted with `key` to `msg` (clicking it again withdraws it). */
export function hasReacted(msg, userId, key) {
  const entry = (msg.reactions || []).find((r) => r.key === key);
  return !!entry && entry.users.includes(userId);
}

/**
 * A message's reactions for display: `[{key, count, users, mine, label}]`, `label` e.g.
 * "👍 2: alice, bob" (localparts, "you" for this user).
 */
export function reactionSummary(msg, ownUserId) {
  return (msg.reactions || []).filter((r) => r.users.length > 0).map((r) => {
    const names = r.users.map((u) => (u === ownUserId ? 'you' : localpart(u)));
    return {
      key: r.key, count: r.users.length, users: [...r.users], mine: r.users.includes(ownUserId),
      label: `${r.key} ${r.users.length}: ${names.join(', ')}`,
    };
  });
}

/** The text a chat message shows (a file: its caption or its name). */
function messageText(m) {
  if (m.kind === 'file') return m.body || `File: ${sanitizeFilename(m.file && m.file.name)}`;
  return m.body || '';
}

/**
 * The quote of the message a reply names: `{state: 'ok', sender, text}` (text shortened to
 * `max` characters), `{state: 'deleted', text: 'message deleted'}` or, for a seq not seen,
 * `{state: 'unknown', text: 'an earlier message'}`. Computed when shown, so edits and deletes
 * of the original show through.
 */
export function replyQuote(conv, seq, max = 100) {
  const m = findBySeq(conv, seq);
  if (!m) return { state: 'unknown', text: 'an earlier message' };
  if (m.deleted) return { state: 'deleted', text: 'message deleted' };
  const t = messageText(m).replace(/\s+/g, ' ').trim();
  const chars = [...t];
  return { state: 'ok', sender: m.sender, text: chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : t };
}

// ----- attachments (docs/protocol.md#media) -----

/** Plaintext bytes per sealed chunk of an encrypted attachment, and each chunk's tag. */
export const ATTACHMENT_CHUNK = 65536;
export const ATTACHMENT_TAG = 16;
/** Image types the client tries to preview (never anything else, whatever the sender claims). */
export const PREVIEW_MIMES = Object.freeze(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
/** Longest side of a thumbnail made for an image, in pixels. */
export const THUMBNAIL_MAX = 320;
/** Largest thumbnail ciphertext fetched on its own to show a preview. */
export const MAX_THUMBNAIL_BYTES = 1024 * 1024;

/** Ciphertext size of an `n`-byte file: `n` + a 16-byte tag per 64 KiB chunk (at least one). */
export function ciphertextSize(n) {
  return n + ATTACHMENT_TAG * Math.max(1, Math.ceil(n / ATTACHMENT_CHUNK));
}

/** "512 B", "1.5 KB", "20 MB", "1.2 GB" (units of 1024). */
export function humanSize(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  const text = v < 10 ? v.toFixed(1).replace(/\.0$/, '') : String(Math.round(v));
  // 1023.6 KB rounds to "1024 KB": say "1 MB".
  if (text === '1024' && i < units.length - 1) return `1 ${units[i + 1]}`;
  return `${text} ${units[i]}`;
}

/** A byte limit in MB (units of 1 MiB), e.g. 104857600 → "100", 1572864 → "1.5". */
export function limitInMb(bytes) {
  const mb = bytes / (1024 * 1024);
  return mb >= 10 ? String(Math.floor(mb)) : String(Math.floor(mb * 10) / 10);
}

/**
 * Why a file of `plaintextBytes` cannot be uploaded to a server whose largest upload is
 * `maxUploadBytes` (`limits.max_upload_bytes`, 0 without a media repository), or null.
 */
export function uploadRefusal(plaintextBytes, maxUploadBytes) {
  if (!maxUploadBytes) return 'This homeserver does not accept files.';
  if (ciphertextSize(plaintextBytes) > maxUploadBytes) {
    return `This file is larger than the server's limit of ${limitInMb(maxUploadBytes)} MB.`;
  }
  return null;
}

/** A user-facing text for a failed upload or download (ApiError, engine error, abort). */
export function describeMediaError(err, { upload = true, maxUploadBytes = 0 } = {}) {
  const what = upload ? 'upload' : 'download';
  if (err && err.name === 'AbortError') return upload ? 'The upload was cancelled.' : 'The download was cancelled.';
  switch (err && err.errcode) {
    case 'P_TOO_LARGE':
      return maxUploadBytes
        ? `This file is larger than the server's limit of ${limitInMb(maxUploadBytes)} MB.`
        : 'This file is larger than the server accepts.';
    case 'P_QUOTA_EXCEEDED': return 'Your storage quota on the homeserver is used up: the file was not uploaded. Files you sent earlier count towards it.';
    case 'P_LIMIT_EXCEEDED': return `Too many transfers at once: wait a moment and try the ${what} again.`;
    case 'P_NOT_FOUND': return 'The file is no longer available on the server.';
    case 'P_UNREACHABLE_SERVER': return 'The server holding this file could not be reached: try again later.';
    case 'P_TIMEOUT': return `The ${what} took too long and was stopped: try again.`;
    case 'NETWORK': return `The ${what} failed: the homeserver could not be reached. Check the connection and try again.`;
    default: break;
  }
  switch (errorCode(err)) {
    case 'AttachmentHashMismatch': return 'The file was modified or corrupted; it was not saved.';
    case 'AttachmentCorrupt':
    case 'AttachmentFormat': return 'The file could not be decrypted (it is damaged or not in a known format); it was not saved.';
    default: break;
  }
  return `The ${what} failed: ${describeError(err)}`;
}

/**
 * A file name from another user made safe for a `download` attribute and for display: no
 * path separators, control, bidi-override or reserved characters, no leading dots, no device
 * names, at most 200 characters (the extension kept); "file" when nothing is left.
 */
export function sanitizeFilename(name, fallback = 'file') {
  let s = typeof name === 'string' ? name : '';
  s = s.normalize('NFC')
    // Controls, bidi controls and invisible formatting characters (an "exe" spelt backwards).
    .replace(/[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g, '')
    .replace(/[/\\:*?"<>|]/g, '_')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^[.\s]+/, '')
    .replace(/[.\s]+$/, '');
  if (/^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i.test(s)) s = `_${s}`;
  const chars = [...s];
  if (chars.length > 200) {
    const dot = s.lastIndexOf('.');
    const ext = dot > 0 && s.length - dot <= 16 ? s.slice(dot) : '';
    s = chars.slice(0, 200 - [...ext].length).join('').trim() + ext;
  }
  return s || fallback;
}

/** Whether the client tries an inline preview for `mime` (only png, jpeg, gif, webp). */
export function isPreviewMime(mime) {
  return typeof mime === 'string' && PREVIEW_MIMES.includes(mime.toLowerCase());
}

/** Size of a thumbnail of a `width`×`height` image: longest side at most `max`, never larger. */
export function thumbnailSize(width, height, max = THUMBNAIL_MAX) {
  const scale = Math.min(1, max / Math.max(width, height, 1));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

const MEDIA_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SERVER_NAME = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;
const B64 = /^[A-Za-z0-9+/]{4,88}={0,2}$/;
const isSize = (n) => Number.isSafeInteger(n) && n >= 0;
const isPixels = (n) => Number.isSafeInteger(n) && n >= 0 && n <= 0xffffffff;
const isShortString = (s, max) => typeof s === 'string' && s.length <= max;

/** The location and secrets every descriptor (file or thumbnail) carries, checked; or null. */
function mediaFields(d) {
  if (typeof d.media_id !== 'string' || !MEDIA_ID.test(d.media_id)) return null;
  if (typeof d.server_name !== 'string' || !SERVER_NAME.test(d.server_name)) return null;
  for (const k of ['key', 'nonce_prefix', 'sha256']) if (typeof d[k] !== 'string' || !B64.test(d[k])) return null;
  if (!isSize(d.size) || d.size < ATTACHMENT_TAG) return null;
  return {
    media_id: d.media_id, server_name: d.server_name, key: d.key, nonce_prefix: d.nonce_prefix,
    sha256: d.sha256, size: d.size,
  };
}

/**
 * An attachment descriptor from another user (the engine's JSON, snake_case), checked and
 * reduced to its known fields; null when anything is missing or malformed. `mime` and `name`
 * stay untrusted text: display them as text, sanitise the name (`sanitizeFilename`).
 */
export function parseFileDescriptor(d) {
  if (!d || typeof d !== 'object' || Array.isArray(d) || d.v !== 1) return null;
  const base = mediaFields(d);
  if (!base || !isSize(d.plaintext_size) || ciphertextSize(d.plaintext_size) !== d.size) return null;
  if (!isShortString(d.mime, 255) || !isShortString(d.name, 1024)) return null;
  const out = { v: 1, ...base, plaintext_size: d.plaintext_size, mime: d.mime, name: d.name };
  for (const k of ['width', 'height']) {
    if (d[k] === undefined) continue;
    if (!isPixels(d[k])) return null;
    out[k] = d[k];
  }
  if (d.thumbnail !== undefined) {
    const t = d.thumbnail;
    if (!t || typeof t !== 'object' || Array.isArray(t)) return null;
    const tb = mediaFields(t);
    if (!tb || !isShortString(t.mime, 255) || !isPixels(t.width) || !isPixels(t.height)) return null;
    out.thumbnail = { ...tb, mime: t.mime, width: t.width, height: t.height };
  }
  return out;
}

/**
 * A hub notice (`kind: "notice"`, docs/protocol.md#notices): its base64 JSON object, or null
 * when it does not read as one. `member_deactivated` and `member_devices_changed` are acted on;
 * their devices are those of `user_id` alone, so a forged notice can at most ask to remove
 * that user's own devices (and a device change is checked against the user's list first).
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
  if (v.type === 'member_devices_changed') {
    if (typeof v.user_id !== 'string' || !Array.isArray(v.added) || !Array.isArray(v.removed)) return null;
    const own = (list) => list.filter((d) => d && d.user_id === v.user_id && typeof d.device_id === 'string')
      .map((d) => d.device_id);
    return { type: v.type, user_id: v.user_id, added: own(v.added), removed: own(v.removed) };
  }
  if (v.type === 'member_forked') {
    if (typeof v.user_id !== 'string' || typeof v.device_id !== 'string') return null;
    return { type: v.type, user_id: v.user_id, device_id: v.device_id };
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
    settings: { autoLockMinutes: 15, notifications: false, notifyText: false },
    // group_id → {group_id, name, members, messages, unread, active, lastSeq,
    //             dm (contact of a direct message), reads (user → seq read), readSent,
    //             topic, avatar, profileSeq (field → seq), mentioned (unread mentions),
    //             shareHistory (new members get recent history, app/history.js)}
    convs: {},
    order: [], // group ids, most recent first
    // "user/device" → {user_id, device_id}: new devices of verified contacts, unacknowledged
    newDevices: {},
    // device id → ms: this user's new devices that could be sent this device's history
    historyOffers: {},
  };
}

/** Adds a message to a conversation, keeping at most `keep` messages; returns it. */
export function pushMessage(conv, msg, { isOpen = false, keep = 500 } = {}) {
  conv.messages = conv.messages || [];
  if (msg.id && conv.messages.some((m) => m.id === msg.id)) return null;
  // A message received here replaces an imported one claiming its seq (a sharer's forgery).
  if (!msg.imported && Number.isSafeInteger(msg.seq) && msg.seq > 0) {
    conv.messages = conv.messages.filter((m) => !(m.imported && m.seq === msg.seq));
  }
  conv.messages.push(msg);
  if (conv.messages.length > keep) conv.messages.splice(0, conv.messages.length - keep);
  if (!msg.own && isChatKind(msg.kind) && !isOpen) conv.unread = (conv.unread || 0) + 1;
  return msg;
}

/** Moves a group id to the front of the order list. */
export function bumpOrder(order, gid) {
  const i = order.indexOf(gid);
  if (i >= 0) order.splice(i, 1);
  order.unshift(gid);
  return order;
}


// ----- group profile, mentions, notifications, search (protocol §7.11) -----

/**
 * Applies a `group_profile` (parsed) sent at `seq` to the conversation: each field present is
 * set (null clears it) unless a later seq already set that field (the last by seq wins).
 * Returns the fields that changed, e.g. `['name', 'topic']`.
 */
export function applyGroupProfile(conv, profile, seq) {
  const seqs = conv.profileSeq || (conv.profileSeq = {});
  const changed = [];
  for (const k of ['name', 'topic', 'avatar']) {
    if (profile[k] === undefined) continue;
    if ((seqs[k] || 0) >= seq) continue;
    seqs[k] = seq;
    const value = profile[k] === null ? (k === 'avatar' ? null : '') : profile[k];
    const before = conv[k] === undefined || conv[k] === null ? (k === 'avatar' ? null : '') : conv[k];
    if (JSON.stringify(before) === JSON.stringify(value)) continue;
    if (k === 'avatar' && value === null) delete conv.avatar;
    else conv[k] = value;
    changed.push(k);
  }
  return changed;
}

/** The notice line of a group profile change by `who` ("alice", "You"), or ''. */
export function profileNotice(who, changed, conv) {
  const parts = [];
  if (changed.includes('name')) parts.push(conv.name ? `named the group "${conv.name}"` : 'removed the group name');
  if (changed.includes('topic')) parts.push(conv.topic ? 'changed the topic' : 'removed the topic');
  if (changed.includes('avatar')) parts.push(conv.avatar ? 'changed the group picture' : 'removed the group picture');
  if (!parts.length) return '';
  return `${who} ${parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}` : parts[0]}.`;
}

/**
 * The members a text names: `@localpart` (or a full `@localpart:server`) of a member other
 * than this user, as a word of its own (not inside an e-mail address). Sorted user ids.
 */
export function mentionsIn(body, memberIds, ownUserId) {
  const others = [...new Set(memberIds)].filter((u) => u !== ownUserId);
  const found = new Set();
  const re = /(^|[^A-Za-z0-9._=@-])@([a-z0-9._=-]+)(:[A-Za-z0-9.-]+(?::[0-9]{1,5})?)?/g;
  for (let m = re.exec(String(body || '')); m; m = re.exec(String(body || ''))) {
    const local = m[2].replace(/\.+$/, '');
    const full = m[3] ? `@${m[2]}${m[3].replace(/\.+$/, '')}` : null;
    for (const u of others) {
      if (full ? u === full : localpart(u) === local) found.add(u);
    }
  }
  return [...found].sort();
}

/** Whether a chat message from someone else names `userId` in its `mentions`. */
export function mentionsUser(msg, userId) {
  return !!msg && !msg.own && !msg.deleted && Array.isArray(msg.mentions) && msg.mentions.includes(userId);
}

/**
 * Whether and how to notify of a received message (a pure decision; the Notification call is
 * the app's): null, or `{title, body, tag}`. Only when the user turned notifications on and the
 * browser granted them, for a text or file from someone else; a mention always notifies, any
 * other message when the page is hidden or its conversation is not open. The title is the
 * conversation's; the body says "New message" ("You were mentioned") — the message text only
 * when the user turned `notifyText` on.
 */
export function notificationFor({ conv, msg, ownUserId, settings = {}, permission, hidden, isOpen }) {
  if (!settings.notifications || permission !== 'granted') return null;
  if (!conv || !msg || msg.own || !isChatKind(msg.kind) || msg.deleted) return null;
  const mentioned = mentionsUser(msg, ownUserId);
  if (!mentioned && !hidden && isOpen) return null;
  let body = mentioned ? 'You were mentioned' : 'New message';
  if (settings.notifyText) {
    const t = messageText(msg).replace(/\s+/g, ' ').trim();
    body = `${localpart(msg.sender)}: ${t.length > 200 ? `${t.slice(0, 199)}…` : t}`;
  }
  return { title: conversationTitle(conv, ownUserId), body, tag: conv.group_id };
}

/**
 * Searches the decrypted history of every conversation: a case-insensitive substring of a
 * text, caption or file name, deleted messages excluded. Newest first, at most `limit`:
 * `[{gid, id, seq, title, sender, text, ts}]`.
 */
export function searchMessages(state, query, ownUserId, limit = 50) {
  const q = String(query || '').trim().toLowerCase();
  if (!q) return [];
  const out = [];
  for (const gid of state.order || []) {
    const conv = state.convs[gid];
    if (!conv) continue;
    for (const m of conv.messages || []) {
      if (!isChatKind(m.kind) || m.deleted) continue;
      const name = m.kind === 'file' ? sanitizeFilename(m.file && m.file.name) : '';
      const hay = [m.body || '', name].join('\n').toLowerCase();
      if (!hay.includes(q)) continue;
      out.push({
        gid, id: m.id, seq: m.seq, title: conversationTitle(conv, ownUserId), sender: m.sender,
        text: messageText(m), ts: m.ts || 0,
      });
    }
  }
  out.sort((a, b) => b.ts - a.ts);
  return out.slice(0, limit);
}

/** A timer in words: "30 seconds", "1 hour", "2 days". */
export function durationText(ms) {
  const units = [['week', 604800000], ['day', 86400000], ['hour', 3600000], ['minute', 60000], ['second', 1000]];
  for (const [name, size] of units) {
    if (ms >= size && ms % size === 0) {
      const n = ms / size;
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return `${Math.round(ms / 1000)} seconds`;
}

/**
 * Stamps each message of `conv` not stamped yet with when it disappears under the timer in
 * force now (`timerMs`, null: never): from its own `ts`. System lines never disappear.
 */
export function stampExpiry(conv, timerMs, now) {
  for (const m of conv.messages) {
    if (m.kind === 'system' || m.expiresAt !== undefined) continue;
    m.expiresAt = timerMs ? (m.ts || now) + timerMs : null;
  }
}

/** Deletes the messages of `conv` whose time is up at `now`; whether any went. */
export function dropExpired(conv, now) {
  const before = conv.messages.length;
  conv.messages = conv.messages.filter((m) => !(m.expiresAt && m.expiresAt <= now));
  return conv.messages.length !== before;
}
