// History for new devices and new members (protocol §7.11 `history`): the archive of the
// messages this device holds, built for another device of this user (or, opted in per group,
// for a newly invited member), and its strict validation and merge on the receiving side.
// Pure functions, no DOM, no I/O (tested under node).

import {
  MAX_BODY_CHARS, MAX_REACTION_KEY_BYTES, MAX_REACTION_KEYS, applyPendingFor, findBySeq,
  isChatKind, isUserId, parseFileDescriptor, parseMentions,
} from './logic.js';

/** Archive format version. */
export const ARCHIVE_VERSION = 1;
export const ARCHIVE_TYPE = 'parley.history';
/** Newest messages per conversation an archive holds (by default, and at most). */
export const MAX_ARCHIVE_PER_CONV = 1000;
/** Messages per conversation shared with a newly invited member. */
export const NEW_MEMBER_HISTORY = 100;
/** Most conversations in one archive. */
export const MAX_ARCHIVE_CONVERSATIONS = 1000;
/** Largest serialised archive (UTF-8 bytes of its JSON) built or accepted. */
export const MAX_ARCHIVE_BYTES = 64 * 1024 * 1024;
/** Most users listed under one reaction key. */
export const MAX_REACTION_USERS = 1000;
/** Messages kept per conversation (as `pushMessage`). */
const KEEP = 500;

const isSeq = (n) => Number.isSafeInteger(n) && n > 0;
const isTs = (n) => Number.isSafeInteger(n) && n >= 0;
const isObject = (v) => !!v && typeof v === 'object' && !Array.isArray(v);
const isId = (s, max = 256) => typeof s === 'string' && s.length >= 1 && s.length <= max;
const utf8Length = (s) => new TextEncoder().encode(s).length;

/** An archive refused: the message says why (shown to the user). */
export class ArchiveError extends Error {}

/** One stored chat message reduced to what the archive carries (null: not archived). */
function archivedMessage(m) {
  // Only what people sent and the hub accepted: texts and files with a seq (never system
  // lines, failed or unsent own messages).
  if (!m || !isChatKind(m.kind) || !isSeq(m.seq) || !isId(m.id) || !isUserId(m.sender)) return null;
  const out = { id: m.id, kind: m.kind, sender: m.sender, ts: isTs(m.ts) ? m.ts : 0, seq: m.seq };
  if (m.deleted) {
    out.deleted = true;
    return out;
  }
  if (typeof m.body === 'string') out.body = m.body;
  if (m.kind === 'file') {
    if (!m.file) return null;
    out.file = m.file;
  }
  if (m.replyTo) out.replyTo = m.replyTo;
  if (Array.isArray(m.mentions) && m.mentions.length) out.mentions = m.mentions;
  if (Array.isArray(m.reactions) && m.reactions.length) out.reactions = m.reactions.map((r) => ({ key: r.key, users: [...r.users] }));
  if (m.editSeq) out.editSeq = m.editSeq;
  if (m.via) out.via = m.via;
  return out;
}

/**
 * The archive of conversations `groupIds` of `state` (the vault's app state): for each, its
 * name (if any) and its newest `maxPerConv` chat messages in order — texts, file
 * descriptors, replies, mentions, reactions, edits and tombstones of deleted messages.
 * When the JSON would pass `maxBytes`, fewer messages per conversation are taken (the newest
 * kept); an archive that cannot fit at all is an `ArchiveError`.
 */
export function buildArchive(state, groupIds, {
  maxPerConv = MAX_ARCHIVE_PER_CONV, maxBytes = MAX_ARCHIVE_BYTES, fromDevice = '', now = Date.now(),
} = {}) {
  const gids = [...new Set(groupIds)].filter((g) => state.convs && state.convs[g]).slice(0, MAX_ARCHIVE_CONVERSATIONS);
  let per = Math.min(Math.max(0, maxPerConv), MAX_ARCHIVE_PER_CONV);
  for (;;) {
    const conversations = gids.map((gid) => {
      const conv = state.convs[gid];
      const msgs = (conv.messages || []).map(archivedMessage).filter(Boolean);
      const entry = { group_id: gid };
      if (conv.name) entry.name = conv.name;
      entry.messages = per > 0 ? msgs.slice(-per) : [];
      return entry;
    });
    const archive = {
      type: ARCHIVE_TYPE, v: ARCHIVE_VERSION, from_device: fromDevice, created_ts: now, conversations,
    };
    if (utf8Length(JSON.stringify(archive)) <= maxBytes) return archive;
    if (per === 0) throw new ArchiveError('The message history is too large to send.');
    per = Math.floor(per / 2);
  }
}

/** Reactions of an archived message, checked; null when malformed. */
function parseReactions(v) {
  if (!Array.isArray(v) || v.length > MAX_REACTION_KEYS) return null;
  const out = [];
  for (const r of v) {
    if (!isObject(r) || typeof r.key !== 'string') return null;
    const n = utf8Length(r.key);
    if (n < 1 || n > MAX_REACTION_KEY_BYTES) return null;
    if (!Array.isArray(r.users) || r.users.length < 1 || r.users.length > MAX_REACTION_USERS) return null;
    if (!r.users.every(isUserId)) return null;
    out.push({ key: r.key, users: [...new Set(r.users)] });
  }
  return out;
}

/** One archived message, checked and reduced to its known fields; throws `ArchiveError`. */
function parseArchivedMessage(m, where) {
  const bad = (what) => new ArchiveError(`The history archive is malformed (${where}: ${what}).`);
  if (!isObject(m)) throw bad('not an object');
  if (!isId(m.id)) throw bad('id');
  if (m.kind !== 'text' && m.kind !== 'file') throw bad('kind');
  if (!isUserId(m.sender)) throw bad('sender');
  if (!isTs(m.ts)) throw bad('ts');
  if (!isSeq(m.seq)) throw bad('seq');
  const out = { id: m.id, kind: m.kind, sender: m.sender, ts: m.ts, seq: m.seq };
  if (m.via !== undefined) {
    if (!isUserId(m.via)) throw bad('via');
    out.via = m.via;
  }
  if (m.deleted !== undefined) {
    if (m.deleted !== true) throw bad('deleted');
    // A tombstone carries nothing of the deleted message.
    for (const k of ['body', 'file', 'replyTo', 'mentions', 'reactions', 'editSeq']) if (m[k] !== undefined) throw bad('content of a deleted message');
    out.deleted = true;
    return out;
  }
  if (m.body !== undefined) {
    if (typeof m.body !== 'string' || m.body.length > MAX_BODY_CHARS) throw bad('body');
    out.body = m.body;
  } else if (m.kind === 'text') throw bad('body');
  if (m.kind === 'file') {
    const file = parseFileDescriptor(m.file);
    if (!file) throw bad('file');
    out.file = file;
  } else if (m.file !== undefined) throw bad('file');
  if (m.replyTo !== undefined) {
    if (!isSeq(m.replyTo)) throw bad('replyTo');
    out.replyTo = m.replyTo;
  }
  if (m.mentions !== undefined) {
    const mentions = parseMentions(m.mentions);
    if (!mentions) throw bad('mentions');
    if (mentions.length) out.mentions = mentions;
  }
  if (m.reactions !== undefined) {
    const reactions = parseReactions(m.reactions);
    if (!reactions) throw bad('reactions');
    if (reactions.length) out.reactions = reactions;
  }
  if (m.editSeq !== undefined) {
    if (!isSeq(m.editSeq)) throw bad('editSeq');
    out.editSeq = m.editSeq;
  }
  return out;
}

/**
 * Parses an archive (its JSON text, bytes, or the parsed value) strictly: the version, every
 * field's type and every limit. Returns the archive reduced to its known fields; anything
 * else is an `ArchiveError` with a message for the user (never another exception).
 */
export function parseArchive(input) {
  let v = input;
  try {
    if (input instanceof Uint8Array) {
      if (input.length > MAX_ARCHIVE_BYTES) throw new ArchiveError('The history archive is too large.');
      v = new TextDecoder('utf-8', { fatal: true }).decode(input);
    }
    if (typeof v === 'string') {
      if (v.length > MAX_ARCHIVE_BYTES) throw new ArchiveError('The history archive is too large.');
      v = JSON.parse(v);
    }
  } catch (err) {
    if (err instanceof ArchiveError) throw err;
    throw new ArchiveError('The history archive is not readable JSON.');
  }
  if (!isObject(v) || v.type !== ARCHIVE_TYPE) throw new ArchiveError('This is not a history archive.');
  if (v.v !== ARCHIVE_VERSION) throw new ArchiveError(`The history archive has an unknown version (${JSON.stringify(v.v)}); update this app.`);
  if (typeof v.from_device !== 'string' || v.from_device.length > 255) throw new ArchiveError('The history archive is malformed (from_device).');
  if (!isTs(v.created_ts)) throw new ArchiveError('The history archive is malformed (created_ts).');
  if (!Array.isArray(v.conversations)) throw new ArchiveError('The history archive is malformed (conversations).');
  if (v.conversations.length > MAX_ARCHIVE_CONVERSATIONS) throw new ArchiveError('The history archive holds too many conversations.');
  const seen = new Set();
  const conversations = v.conversations.map((c, i) => {
    if (!isObject(c) || !isId(c.group_id, 255)) throw new ArchiveError(`The history archive is malformed (conversation ${i + 1}: group_id).`);
    if (seen.has(c.group_id)) throw new ArchiveError('The history archive lists a conversation twice.');
    seen.add(c.group_id);
    if (c.name !== undefined && !(typeof c.name === 'string' && [...c.name].length <= 128)) {
      throw new ArchiveError(`The history archive is malformed (conversation ${i + 1}: name).`);
    }
    if (!Array.isArray(c.messages)) throw new ArchiveError(`The history archive is malformed (conversation ${i + 1}: messages).`);
    if (c.messages.length > MAX_ARCHIVE_PER_CONV) throw new ArchiveError('The history archive holds too many messages.');
    const out = { group_id: c.group_id };
    if (c.name !== undefined) out.name = c.name;
    out.messages = c.messages.map((m, j) => parseArchivedMessage(m, `conversation ${i + 1}, message ${j + 1}`));
    return out;
  });
  return { type: ARCHIVE_TYPE, v: ARCHIVE_VERSION, from_device: v.from_device, created_ts: v.created_ts, conversations };
}

/** Whether `a` (imported) goes before `e` (already here): by seq, else by time. */
function before(a, e) {
  if (isSeq(e.seq)) return a.seq < e.seq;
  return a.ts < (e.ts || 0);
}

/**
 * Merges an archive into `state`: the messages of each archived conversation this device
 * holds (by group_id; others are skipped) are inserted in order, marked `imported: true` (and
 * `via`, the sharer's user id, when another user shared them), skipping every message already
 * here (same id or same seq) — nothing here is ever overwritten. Imported messages are not
 * unread. `only`: the one group id another user may share into (any other is refused).
 * Validates first (`parseArchive`), so a refused archive changes nothing.
 * Returns `{messages, conversations, skipped}` (messages added, conversations that got some,
 * conversations not held here).
 */
export function mergeArchive(state, input, { via, me, only } = {}) {
  const archive = parseArchive(input);
  if (only !== undefined && archive.conversations.some((c) => c.group_id !== only)) {
    throw new ArchiveError('The shared history names another conversation; it was refused.');
  }
  let messages = 0;
  let conversations = 0;
  let skipped = 0;
  for (const c of archive.conversations) {
    const conv = state.convs && state.convs[c.group_id];
    if (!conv) {
      skipped += 1;
      continue;
    }
    conv.messages = conv.messages || [];
    const ids = new Set(conv.messages.map((m) => m.id));
    // Another user shares what came before this device joined: nothing at or after the
    // first message this device received itself (a sharer cannot plant "future" messages).
    const received = conv.messages.filter((m) => !m.imported && Number.isSafeInteger(m.seq) && m.seq > 0);
    const ceiling = via ? Math.min(Infinity, ...received.map((m) => m.seq)) : Infinity;
    const fresh = [];
    for (const m of c.messages) {
      if (ids.has(m.id) || findBySeq(conv, m.seq) || m.seq >= ceiling) continue;
      ids.add(m.id);
      // Only this user's own devices can vouch for "sent by you".
      const msg = { ...m, imported: true, own: !via && m.sender === me };
      if (msg.own) msg.state = 'delivered';
      if (via) msg.via = via;
      fresh.push(msg);
    }
    if (!fresh.length) continue;
    fresh.sort((a, b) => a.seq - b.seq);
    const merged = [];
    let j = 0;
    for (const e of conv.messages) {
      while (j < fresh.length && before(fresh[j], e)) merged.push(fresh[j++]);
      merged.push(e);
    }
    while (j < fresh.length) merged.push(fresh[j++]);
    if (merged.length > KEEP) merged.splice(0, merged.length - KEEP);
    conv.messages = merged;
    const kept = fresh.filter((m) => merged.includes(m));
    // Actions that arrived before the messages they name apply now.
    for (const m of kept) applyPendingFor(conv, m.seq);
    if (kept.length) {
      messages += kept.length;
      conversations += 1;
    }
  }
  return { messages, conversations, skipped };
}

/** The counted outcome as a sentence part: "3 messages in 1 conversation". */
export function historyCounts({ messages, conversations }) {
  return `${messages} message${messages === 1 ? '' : 's'} in ${conversations} conversation${conversations === 1 ? '' : 's'}`;
}
