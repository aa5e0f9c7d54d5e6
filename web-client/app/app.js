// Parley web client: the DOM layer. The engine (wasm) holds every key; this file wires
// screens, forms and dialogs to `Session`. No inline scripts or styles (strict CSP).
// Never log plaintext, keys or tokens: there is no console output here on purpose.

import { Api, normaliseBaseUrl } from './api.js';
import { VaultStore } from './store.js';
import { Session } from './session.js';
import {
  IdleTimer, MAX_THUMBNAIL_BYTES, PREVIEW_MIMES, checkNewPassphrase, conversationLabel,
  conversationTitle, describeError, describeMediaError, emptyAppState, errorCode,
  REACTION_KEYS, findBySeq, formatSafetyNumber, formatTime, hasReacted, humanSize, isPreviewMime,
  lastMessagePreview, localpart, normaliseUserId, ownMessageState, parseAutoLockMinutes,
  reactionSummary, replyQuote, sanitizeFilename, serverOf, thumbnailSize, typingLabel,
  uploadRefusal, mentionsUser, notificationFor, searchMessages, durationText,
} from './logic.js';

const $ = (id) => document.getElementById(id);
const SCREENS = ['screen-loading', 'screen-wasm-error', 'screen-login', 'screen-setvault', 'screen-unlock', 'screen-chat'];
const J = (s) => JSON.parse(s);

const store = new VaultStore();
let wasm = null;
let client = null; // wasm Client, null when locked
let api = null;
let state = null;
let session = null;
let pendingLogin = null; // {base, session} between login and vault creation
let openGid = null;
let idle = null;
let closing = false; // closeSession() in progress
let sealed = Promise.resolve(); // the last closeSession's sealing of the state

// Attachments, in memory only (never sealed): decrypted previews by thumbnail (`previewKey`:
// {state: 'loading'|'ready'|'failed', img}), running downloads and a note per file message
// (saved, or why not), the <progress> elements of the current render by transfer key, and the
// Blob URLs of saved files (revoked after the save, at the latest on lock).
const previews = new Map();
const downloads = new Map(); // message id → {loaded, total, controller}
const fileNotes = new Map(); // message id → {ok, text}
let progressEls = new Map(); // 'up:ID' / 'down:MSGID' → <progress>
const blobUrls = new Set();

// Replies, reactions, edits, deletes (memory only): what the composer is doing
// ({mode: 'reply'|'edit', gid, seq}), the message whose reaction picker is open, the message
// the delete dialog asks about ({gid, seq}), and a control to focus after the next render.
let composeCtx = null;
let pickerFor = null;
let deleteTarget = null;
let focusNext = null;

// ----- small UI helpers -----

function show(id) {
  for (const s of SCREENS) $(s).hidden = s !== id;
  $('topnav').hidden = id !== 'screen-chat';
  if (id !== 'screen-chat') $('whoami').textContent = '';
}

function announce(text) {
  const el = $('status');
  el.textContent = '';
  // A fresh text node makes screen readers announce even a repeated message.
  setTimeout(() => { el.textContent = text; }, 20);
}

function alertMsg(text) { $('alert').textContent = text; }
function clearAlert() { $('alert').textContent = ''; }

function busy(button, on) {
  if (button) button.disabled = on;
}

async function guarded(button, fn) {
  busy(button, true);
  clearAlert();
  try {
    return await fn();
  } catch (err) {
    alertMsg(describeError(err));
    return undefined;
  } finally {
    busy(button, false);
  }
}

const tick = () => new Promise((r) => { setTimeout(r, 30); });

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((r) => { setTimeout(r, ms); })]);
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

// ----- persistence -----

async function persist() {
  if (!client || !state) return;
  const blob = client.seal(JSON.stringify(state));
  await store.save({ user_id: state.session.user_id, homeserver: state.homeserver, blob });
}

// ----- boot -----

async function boot() {
  try {
    wasm = await import('./pkg/parley_web.js');
    await wasm.default();
  } catch (err) {
    show('screen-wasm-error');
    $('wasm-error-detail').textContent = `Details: ${err && err.message ? err.message : err}`;
    return;
  }
  wire();
  const origin = /^https?:$/.test(location.protocol) ? location.origin : '';
  $('login-homeserver').value = origin;
  let rec = null;
  try {
    rec = await store.load();
  } catch (err) {
    alertMsg(`Local storage is unavailable: ${describeError(err)}`);
  }
  if (rec) showUnlock(rec);
  else show('screen-login');
}

function showUnlock(rec) {
  $('unlock-who').textContent = `Vault of ${rec.user_id} on ${rec.homeserver}`;
  $('unlock-pass').value = '';
  show('screen-unlock');
  $('unlock-pass').focus();
}

// ----- login / sign up / vault -----

async function doLogin(register) {
  const button = register ? $('signup-btn') : $('login-btn');
  await guarded(button, async () => {
    const username = $('login-username').value.trim();
    const password = $('login-password').value;
    if (!username || !password) throw new Error('Enter a username and a password.');
    const base = normaliseBaseUrl($('login-homeserver').value, location.origin);
    const a = new Api(base);
    announce(register ? 'Creating the account…' : 'Logging in…');
    const s = register ? await a.register(username, password, 'Parley web') : await a.login(username, password, 'Parley web');
    $('login-password').value = '';
    pendingLogin = { base, session: s };
    show('screen-setvault');
    announce(`Signed in as ${s.user_id}. Choose a vault passphrase.`);
    $('setvault-pass').focus();
  });
}

async function createVault() {
  await guarded($('setvault-btn'), async () => {
    const pass = $('setvault-pass').value;
    const problem = checkNewPassphrase(pass, $('setvault-confirm').value);
    if (problem) throw new Error(problem);
    if (!pendingLogin) throw new Error('Log in first.');
    announce('Creating your keys and sealing the vault…');
    await tick();
    const { base, session: s } = pendingLogin;
    client = new wasm.Client(s.user_id, s.device_id);
    client.setPassphrase(pass);
    $('setvault-pass').value = '';
    $('setvault-confirm').value = '';
    state = emptyAppState();
    state.homeserver = base;
    state.session = { user_id: s.user_id, device_id: s.device_id, access_token: s.access_token, refresh_token: s.refresh_token };
    pendingLogin = null;
    await persist();
    await startSession();
  });
}

async function unlock() {
  await guarded($('unlock-btn'), async () => {
    const pass = $('unlock-pass').value;
    if (!pass) throw new Error('Enter your vault passphrase.');
    await sealed; // a lock still sealing the latest state
    const rec = await store.load();
    if (!rec) {
      show('screen-login');
      throw new Error('There is no vault in this browser.');
    }
    announce('Unlocking…');
    await tick();
    let c;
    try {
      c = wasm.Client.openVault(rec.blob, pass);
    } catch (err) {
      $('unlock-pass').value = '';
      $('unlock-pass').focus();
      if (errorCode(err) === 'VaultDecrypt') throw new Error('Wrong passphrase. The vault stays locked.');
      throw err;
    }
    $('unlock-pass').value = '';
    client = c;
    state = { ...emptyAppState(), ...J(client.takeAppData() || '{}') };
    await startSession();
  });
}

async function startSession() {
  api = new Api(state.homeserver, {
    onSession: (s) => {
      state.session = { ...state.session, access_token: s.access_token, refresh_token: s.refresh_token };
      return session ? session.save() : persist();
    },
    // The refresh token was refused: this device's session is gone (revoked, logged out).
    onSessionEnded: () => { signedOut(); },
  });
  api.setSession(state.session);
  session = new Session({
    client,
    api,
    state,
    persist,
    onChange: render,
    notify: (kind, text) => (kind === 'alert' ? alertMsg(text) : announce(text)),
    isVisible: () => document.visibilityState !== 'hidden',
    onSignedOut: () => { signedOut(); },
    attachments: { encrypt: wasm.encryptAttachment, decrypt: wasm.decryptAttachment },
    parseJoinLink: wasm.parseJoinLink,
    onUploadProgress: (u) => setProgress(`up:${u.id}`, u.loaded, u.total),
    onIncoming: (conv, msg) => { notifyIncoming(conv, msg); },
  });
  openGid = null;
  show('screen-chat');
  render();
  announce(`Unlocked. Signed in as ${state.session.user_id}.`);
  idle = new IdleTimer(state.settings.autoLockMinutes * 60000, () => { lock('Locked after inactivity.'); });
  idle.start();
  $('new-conv-btn').focus();
  try {
    await session.start();
  } catch (err) {
    alertMsg(`Could not reach the homeserver: ${describeError(err)}`);
    session.connectWs();
  }
}

/**
 * Leaves the chat at once: stops the session, hides every conversation and dialog and calls
 * `next(state)` to show what comes instead; then seals the latest state (keys still in memory)
 * and wipes the keys from memory. The sealed vault stays. Resolves false if already locked.
 */
function closeSession(next) {
  // A second caller (idle timer and Lock button at once) finds nothing to do.
  if (!client || closing) return Promise.resolve(false);
  closing = true;
  if (idle) idle.stop();
  const c = client;
  const s = session;
  const last = state;
  session = null;
  openGid = null;
  if (s) s.stop();
  closeDialogs();
  clearChatDom();
  next(last);
  sealed = (async () => {
    try {
      if (s) await withTimeout(s.flush(), 5000);
      try { c.lock(); c.free(); } catch { /* already freed */ }
      client = null;
      state = null;
      api = null;
    } finally {
      closing = false;
    }
  })();
  return sealed.then(() => true);
}

function lock(reason = 'Locked.') {
  return closeSession((last) => {
    showUnlock({ user_id: last.session.user_id, homeserver: last.homeserver });
    announce(reason);
  });
}

/**
 * This device's session ended on the server (revoked from another device, logged out, or its
 * refresh token refused): leave the chat at once for the sign-in screen with the reason, and
 * wipe the keys from memory. The sealed vault stays (its history is the user's; a new login
 * replaces it).
 */
function signedOut() {
  return closeSession(() => {
    show('screen-login');
    announce('This device was signed out.');
    alertMsg('This device was signed out: it was revoked from another device, or the homeserver ended its session. Log in again to use Parley in this browser.');
    $('login-username').focus();
  });
}

async function panicWipe() {
  const dlg = $('panic-dialog');
  if (dlg.open) dlg.close();
  if (idle) idle.stop();
  const s = session;
  session = null;
  if (s) s.stop();
  if (api) {
    try { await withTimeout(api.logout(), 3000); } catch { /* wipe anyway */ }
  }
  try { if (client) { client.lock(); client.free(); } } catch { /* already freed */ }
  client = null;
  state = null;
  api = null;
  pendingLogin = null;
  openGid = null;
  closeDialogs();
  clearChatDom();
  for (const id of ['login-username', 'login-password', 'unlock-pass', 'setvault-pass', 'setvault-confirm', 'message-input', 'invite-user', 'dm-user', 'search-input']) $(id).value = '';
  show('screen-login');
  try {
    await sealed; // a lock still sealing would write the vault again after the deletion
    await store.wipe({
      // Another tab holds the database open: the deletion waits for it, so say so.
      onBlocked: () => alertMsg('Not wiped yet: another Parley tab or window is using this browser\'s storage. Close it to finish the wipe; until then your sealed vault stays on this device.'),
    });
    clearAlert();
    announce('Everything was wiped from this browser.');
  } catch (err) {
    alertMsg(`Wiping the browser storage failed: ${describeError(err)}`);
  }
}

function closeDialogs() {
  for (const id of ['verify-dialog', 'settings-dialog', 'delete-dialog', 'group-dialog']) {
    const d = $(id);
    if (d.open) d.close();
  }
  $('own-fingerprint').value = '';
  $('verify-number').value = '';
  $('verify-own').textContent = '';
  $('verify-devices').replaceChildren();
  $('device-list').replaceChildren();
}

/** Forgets every attachment held in memory: previews, downloads (aborted), Blob URLs. */
function clearAttachments() {
  for (const d of downloads.values()) d.controller.abort();
  downloads.clear();
  fileNotes.clear();
  previews.clear();
  progressEls = new Map();
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls.clear();
}

function clearChatDom() {
  clearAttachments();
  composeCtx = null;
  pickerFor = null;
  deleteTarget = null;
  $('compose-context').hidden = true;
  setAttachError('');
  $('conv-list').replaceChildren();
  $('search-input').value = '';
  $('search-results').replaceChildren();
  $('search-results').hidden = true;
  $('search-summary').textContent = '';
  $('conv-topic').textContent = '';
  $('conv-avatar').replaceChildren();
  $('message-list').replaceChildren();
  $('typing').textContent = '';
  $('member-list').replaceChildren();
  $('conv-body').hidden = true;
  $('conv-empty').hidden = false;
}

// ----- rendering -----

function render() {
  if (!state || !session) return;
  const me = state.session.user_id;
  $('whoami').textContent = `${me} · ${session.connection}`;
  renderConvList(me);
  renderHistoryOffer();
  renderConv(me);
}

/**
 * The offer to send this device's history to a new device of this user (the oldest offer
 * first): "Send history" or "Not now". Focus stays where it is.
 */
function renderHistoryOffer() {
  const offers = Object.entries(state.historyOffers || {}).sort((a, b) => a[1] - b[1]);
  const box = $('history-offer');
  box.hidden = offers.length === 0;
  if (!offers.length) return;
  const [device] = offers[0];
  box.dataset.device = device;
  const text = `Your new device ${device} was added. Send it your message history?`;
  if ($('history-offer-text').textContent !== text) $('history-offer-text').textContent = text;
}

function renderConvList(me) {
  const list = $('conv-list');
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.gid : null;
  list.replaceChildren();
  for (const gid of state.order) {
    const conv = state.convs[gid];
    if (!conv) continue;
    const btn = el('button', {
      type: 'button',
      'aria-label': conversationLabel(conv, me),
      'aria-current': gid === openGid ? 'true' : null,
      onclick: () => openConversation(gid),
    },
    el('span', { class: 'title-row' }, groupAvatar(conv, 24, ''), el('span', { text: conversationTitle(conv, me) })),
    conv.unread > 0 || conv.mentioned > 0 ? el('span', { class: 'badges', 'aria-hidden': 'true' },
      conv.unread > 0 ? el('span', { class: 'badge', text: String(conv.unread) }) : null,
      conv.mentioned > 0 ? el('span', { class: 'badge mention', text: '@', title: 'Mentions you' }) : null) : null,
    el('span', { class: 'preview', text: conv.active ? lastMessagePreview(conv) : 'You are no longer a member' }));
    btn.dataset.gid = gid;
    list.append(el('li', {}, btn));
    if (focused === gid) btn.focus();
  }
}

function renderConv(me) {
  const conv = openGid ? state.convs[openGid] : null;
  $('conv-empty').hidden = !!conv;
  $('conv-body').hidden = !conv;
  if (!conv) return;
  $('conv-title').textContent = conversationTitle(conv, me);
  const avatar = groupAvatar(conv, 40, 'Group picture');
  if (avatar) $('conv-avatar').replaceChildren(avatar);
  else $('conv-avatar').replaceChildren();
  // The topic is another member's words: text only.
  const topic = conv.topic || '';
  if ($('conv-topic').textContent !== topic) $('conv-topic').textContent = topic;
  $('conv-topic').hidden = !topic;

  // Unacknowledged key changes of members (a changed key, or a verified contact's new device).
  let changes = [];
  try { changes = session.keyChanges(conv.group_id); } catch { /* locked */ }
  const changedUsers = new Set(changes.map((c) => c.user_id));

  // Members, one entry per user, with trust badges and (in a group with roles) an "admin"
  // badge. Only an admin gets the controls that change membership and roles.
  const users = [...new Set(conv.members.map((m) => m.user_id))].sort();
  const admins = Array.isArray(conv.admins) ? conv.admins : null;
  const amAdmin = conv.active && session.isAdmin(conv.group_id, me);
  const ml = $('member-list');
  ml.replaceChildren();
  for (const u of users) {
    let trust = 'tofu';
    try { trust = u === me ? 'own' : client.userTrust(u); } catch { /* locked */ }
    if (changedUsers.has(u)) trust = 'key_changed';
    const isAdmin = !!admins && admins.includes(u);
    const li = el('li', {}, el('span', { text: u === me ? `${u} (you)` : u }));
    li.dataset.user = u;
    if (isAdmin) li.append(el('span', { class: 'role-badge', role: 'img', 'aria-label': `${u} is an admin`, text: 'admin' }));
    if (trust === 'verified') li.append(el('span', { role: 'img', 'aria-label': 'Verified', class: 'verified', text: '✓' }));
    if (trust === 'key_changed') li.append(el('span', { role: 'img', 'aria-label': 'Key changed', class: 'changed', text: '⚠' }));
    if (u !== me && amAdmin) {
      if (admins) {
        li.append(el('button', {
          type: 'button', class: 'link', 'aria-label': isAdmin ? `Remove ${u} as admin` : `Make ${u} an admin`,
          text: isAdmin ? 'Remove admin' : 'Make admin',
          onclick: () => guarded(null, async () => {
            await session.setAdmin(conv.group_id, u, !isAdmin);
            announce(isAdmin ? `${u} is no longer an admin.` : `${u} is now an admin.`);
          }),
        }));
      }
      li.append(el('button', {
        type: 'button', class: 'link', 'aria-label': `Remove ${u}`, text: '×',
        onclick: () => guarded(null, async () => { await session.removeMember(conv.group_id, u); announce(`Removed ${u}.`); }),
      }));
    }
    ml.append(li);
  }

  // Messages (and the files still uploading, last). Focus stays on the same control.
  const list = $('message-list');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  let focusKey = list.contains(document.activeElement) && document.activeElement.dataset
    ? document.activeElement.dataset.focus : null;
  if (focusNext) {
    focusKey = focusNext;
    focusNext = null;
  }
  progressEls = new Map();
  list.replaceChildren();
  for (const m of conv.messages) {
    if (m.kind === 'system') {
      list.append(el('li', { class: 'system', text: m.body }));
      continue;
    }
    list.append(chatBubble(m, conv, me));
  }
  for (const u of session.uploadsOf(conv.group_id)) list.append(uploadBubble(u));
  if (focusKey) {
    const again = [...list.querySelectorAll('[data-focus]')].find((e) => e.dataset.focus === focusKey);
    if (again) again.focus();
  }
  if (atBottom) list.scrollTop = list.scrollHeight;

  renderComposeContext(conv, me);

  // "bob is typing…" (its own status region; only rewritten when it changes).
  const typing = typingLabel(session.typingUsers(conv.group_id));
  if ($('typing').textContent !== typing) $('typing').textContent = typing;

  // TOFU warning blocks sending until acknowledged.
  $('tofu-warning').hidden = changes.length === 0;
  $('tofu-text').textContent = changes.length ? keyChangeText(changes) : '';
  $('send-btn').disabled = !conv.active || changes.length > 0;
  $('attach-btn').disabled = !conv.active || changes.length > 0;
  $('message-input').disabled = !conv.active;
  $('invite-btn').disabled = !conv.active;
  $('invite-user').disabled = !conv.active;
  // Inviting someone new is an admin's (the engine and the hub refuse it otherwise).
  $('invite-form').hidden = conv.active && !amAdmin;
  $('admin-note').hidden = !conv.active || amAdmin;
  $('leave-btn').disabled = !conv.active;
  $('group-settings-btn').disabled = !conv.active || changes.length > 0;
  $('share-history').checked = !!conv.shareHistory;
  $('share-history').disabled = !conv.active;
  $('verify-btn').disabled = users.length < 2;
}

// ----- messages: replies, reactions, edits, deletes -----

/** Who a message is from, as shown: "You" or the sender's localpart. */
const senderName = (m) => (m.own ? 'You' : localpart(m.sender));

/**
 * One chat bubble: meta line, the quote of the message it answers, the text (or file, or the
 * tombstone "message deleted"), "(edited)", its reactions and its actions. Everything from
 * other users is set as text, never as markup.
 */
function chatBubble(m, conv, me) {
  const who = senderName(m);
  const stateText = m.own ? ` · ${ownMessageState(m, conv, me)}` : '';
  const isFile = m.kind === 'file' && m.file && !m.deleted;
  const mentioned = mentionsUser(m, me);
  // History from another device or shared by another user (app/history.js): not
  // authenticated by this device, only by the device or user that handed it over.
  const imported = m.imported
    ? el('span', { class: 'imported-tag', text: m.via ? ` · shared by ${localpart(m.via)}` : ' · imported', title: m.via ? `History shared by ${m.via}` : 'History from your other device' })
    : null;
  const li = el('li', { class: `${m.own ? 'own' : 'other'}${isFile ? ' file' : ''}${m.deleted ? ' deleted' : ''}${mentioned ? ' mention' : ''}${m.imported ? ' imported' : ''}`, tabindex: '-1' },
    el('span', { class: 'meta', text: `${who} · ${formatTime(m.ts)}${stateText}` },
      imported,
      mentioned ? el('span', { class: 'mention-tag', text: ' · mentions you' }) : null));
  li.dataset.focus = `msg:${m.id}`;
  if (m.deleted) {
    li.append(el('span', { class: 'body tombstone', text: 'message deleted' }));
    return li;
  }
  if (m.replyTo) {
    const q = replyQuote(conv, m.replyTo);
    const text = q.state === 'ok' ? `${q.sender === me ? 'You' : localpart(q.sender)}: ${q.text}` : q.text;
    li.append(el('span', { class: 'quote', text: `In reply to ${text}` }));
  }
  if (isFile) li.append(...fileParts(m));
  else li.append(el('span', { class: 'body', text: m.body }));
  if (m.editSeq) li.append(el('span', { class: 'edited', text: '(edited)' }));
  const reactions = reactionSummary(m, me);
  if (reactions.length) {
    li.append(el('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' }, ...reactions.map((r) => {
      const b = el('button', {
        type: 'button', text: `${r.key} ${r.count}`, title: r.label, 'aria-label': r.label,
        'aria-pressed': r.mine ? 'true' : 'false',
        onclick: () => react(conv.group_id, m, r.key),
      });
      b.dataset.focus = `rx:${m.id}:${r.key}`;
      return b;
    })));
  }
  // Actions need the message's seq (an own message being sent has none yet).
  if (m.seq && conv.active) li.append(...messageActions(m, conv));
  return li;
}

function messageActions(m, conv) {
  const gid = conv.group_id;
  const mk = (label, focus, onclick, extra = {}) => {
    const b = el('button', { type: 'button', class: 'link', text: label, onclick, ...extra });
    b.dataset.focus = `${focus}:${m.id}`;
    return b;
  };
  const open = pickerFor === m.id;
  const row = el('div', { class: 'msg-actions', role: 'group', 'aria-label': `Actions for the message from ${senderName(m)}` },
    mk('Reply', 'reply', () => startReply(gid, m)),
    mk('React', 'react', () => {
      pickerFor = open ? null : m.id;
      focusNext = pickerFor ? `pick:${m.id}:${REACTION_KEYS[0]}` : `react:${m.id}`;
      render();
    }, { 'aria-expanded': open ? 'true' : 'false' }));
  if (m.sender === state.session.user_id) {
    if (m.kind === 'text') row.append(mk('Edit', 'edit', () => startEdit(gid, m)));
    row.append(mk('Delete', 'delete', () => askDelete(gid, m)));
  }
  if (!open) return [row];
  const picker = el('div', {
    class: 'picker', role: 'group', 'aria-label': 'Choose a reaction',
    onkeydown: (e) => {
      if (e.key !== 'Escape') return;
      e.preventDefault();
      pickerFor = null;
      focusNext = `react:${m.id}`;
      render();
    },
  }, ...REACTION_KEYS.map((key) => {
    const b = el('button', {
      type: 'button', text: key, title: `React ${key}`, 'aria-label': `React ${key}`,
      'aria-pressed': hasReacted(m, state.session.user_id, key) ? 'true' : 'false',
      onclick: () => {
        pickerFor = null;
        focusNext = `react:${m.id}`;
        react(gid, m, key);
      },
    });
    b.dataset.focus = `pick:${m.id}:${key}`;
    return b;
  }));
  return [row, picker];
}

/** Adds this user's reaction `key` to a message, or withdraws it. */
function react(gid, m, key) {
  const had = hasReacted(m, state.session.user_id, key);
  guarded(null, async () => {
    await session.toggleReaction(gid, m.seq, key);
    announce(had ? `Reaction ${key} withdrawn.` : `Reacted ${key}.`);
  }).then(() => render());
}

function startReply(gid, m) {
  composeCtx = { mode: 'reply', gid, seq: m.seq };
  render();
  $('message-input').focus();
}

function startEdit(gid, m) {
  composeCtx = { mode: 'edit', gid, seq: m.seq };
  $('message-input').value = m.body || '';
  render();
  $('message-input').focus();
  announce('Editing your message: change it and send, or press Escape to cancel.');
}

function cancelCompose() {
  if (composeCtx && composeCtx.mode === 'edit') $('message-input').value = '';
  composeCtx = null;
  render();
  $('message-input').focus();
}

function askDelete(gid, m) {
  deleteTarget = { gid, seq: m.seq };
  $('delete-dialog').showModal();
  $('delete-cancel-btn').focus();
}

async function confirmDelete() {
  const t = deleteTarget;
  deleteTarget = null;
  const dlg = $('delete-dialog');
  if (dlg.open) dlg.close();
  if (!t || !session) return;
  if (composeCtx && composeCtx.gid === t.gid && composeCtx.seq === t.seq) {
    if (composeCtx.mode === 'edit') $('message-input').value = '';
    composeCtx = null;
  }
  await guarded(null, async () => {
    await session.deleteMessage(t.gid, t.seq);
    announce('Message deleted.');
  });
  render();
  $('message-input').focus();
}

/** The line above the composer while replying ("Replying to bob: …") or editing. */
function renderComposeContext(conv, me) {
  let ctx = composeCtx && composeCtx.gid === conv.group_id ? composeCtx : null;
  if (ctx) {
    const target = findBySeq(conv, ctx.seq);
    // An edited message deleted meanwhile cannot be edited any more.
    if (ctx.mode === 'edit' && (!target || target.deleted)) {
      composeCtx = null;
      ctx = null;
    }
  }
  $('compose-context').hidden = !ctx;
  if (!ctx) return;
  let text = 'Editing your message';
  if (ctx.mode === 'reply') {
    const q = replyQuote(conv, ctx.seq);
    text = q.state === 'ok' ? `Replying to ${q.sender === me ? 'yourself' : localpart(q.sender)}: ${q.text}` : `Replying to ${q.text}`;
  }
  if ($('compose-context-text').textContent !== text) $('compose-context-text').textContent = text;
  $('compose-cancel-btn').setAttribute('aria-label', ctx.mode === 'reply' ? 'Cancel reply' : 'Cancel edit');
}

// ----- attachments -----

/** A <progress> with an accessible label, registered under `key` for in-place updates. */
function progressBar(key, label, loaded, total) {
  const p = el('progress', { 'aria-label': label, class: 'transfer' });
  if (total > 0) {
    p.max = total;
    p.value = Math.min(loaded, total);
  }
  progressEls.set(key, p);
  return p;
}

/** Moves a transfer's progress bar without rendering everything again. */
function setProgress(key, loaded, total) {
  const p = progressEls.get(key);
  if (!p || !p.isConnected || !(total > 0)) return;
  p.max = total;
  p.value = Math.min(loaded, total);
}

/** The parts of a file message: preview, name, size, caption, download button, progress, note.
 *  The sender's `name` and `mime` are text only; `mime` decides nothing but trying a preview. */
function fileParts(m) {
  const f = m.file;
  const name = sanitizeFilename(f.name);
  const parts = [];
  const img = previewImage(f, name);
  if (img) parts.push(img);
  parts.push(el('span', { class: 'file-info' },
    el('span', { class: 'file-name', text: name }),
    el('span', { class: 'file-size', text: ` · ${humanSize(f.plaintext_size)}` })));
  if (typeof m.body === 'string' && m.body) parts.push(el('span', { class: 'body', text: m.body }));
  const d = downloads.get(m.id);
  const row = el('span', { class: 'file-actions' }, el('button', {
    type: 'button', class: 'small', 'aria-label': `Download ${name}`, text: d ? 'Downloading…' : 'Download',
    'aria-disabled': d ? 'true' : null,
    onclick: () => { downloadFile(m); },
  }));
  row.lastChild.dataset.focus = `down:${m.id}`;
  if (d) row.append(progressBar(`down:${m.id}`, `Downloading ${name}`, d.loaded, d.total));
  parts.push(row);
  const note = fileNotes.get(m.id);
  if (note) parts.push(el('span', { class: `file-note${note.ok ? '' : ' error'}`, text: note.text }));
  return parts;
}

/** The pending bubble of an upload: name, size, progress and a cancel button. */
function uploadBubble(u) {
  const name = sanitizeFilename(u.name);
  const cancel = el('button', {
    type: 'button', class: 'small link', 'aria-label': `Cancel upload of ${name}`, text: 'Cancel',
    onclick: () => { if (session) session.cancelUpload(u.id); },
  });
  cancel.dataset.focus = `cancel:${u.id}`;
  return el('li', { class: 'own file pending' },
    el('span', { class: 'meta', text: u.total ? 'You · uploading' : 'You · encrypting' }),
    el('span', { class: 'file-info' },
      el('span', { class: 'file-name', text: name }),
      el('span', { class: 'file-size', text: ` · ${humanSize(u.size)}` })),
    el('span', { class: 'file-actions' }, progressBar(`up:${u.id}`, `Uploading ${name}`, u.loaded, u.total), cancel));
}

/**
 * The inline preview of an image's thumbnail, or null: only for png/jpeg/gif/webp (both the
 * file and the thumbnail), a thumbnail of at most 1 MiB. Fetched and decrypted once, then the
 * same <img> element is reused by every render.
 */
function previewImage(f, name) {
  const t = f.thumbnail;
  if (!t || !isPreviewMime(f.mime) || !isPreviewMime(t.mime) || t.size > MAX_THUMBNAIL_BYTES) return null;
  const entry = previews.get(previewKey(t));
  if (!entry) {
    previews.set(previewKey(t), { state: 'loading' });
    loadPreview(t, name);
    return null;
  }
  if (entry.state !== 'ready') return null;
  // Two messages naming the same thumbnail each get an <img>.
  return entry.img.isConnected ? entry.img.cloneNode() : entry.img;
}

/**
 * The group picture (`conv.avatar`, an image descriptor from a `group_profile`) as a small
 * round <img> of `size` px, or null while it loads (or if it cannot be shown). Fetched and
 * decrypted once, like previews, and only for png/jpeg/gif/webp up to 1 MiB.
 */
function groupAvatar(conv, size, alt) {
  const a = conv.avatar;
  if (!a || !isPreviewMime(a.mime) || a.size > MAX_THUMBNAIL_BYTES) return null;
  const entry = previews.get(previewKey(a));
  if (!entry) {
    previews.set(previewKey(a), { state: 'loading' });
    loadPreview(a, 'group picture');
    return null;
  }
  if (entry.state !== 'ready') return null;
  const img = entry.img.cloneNode();
  img.className = 'avatar';
  img.alt = alt;
  img.width = size;
  img.height = size;
  return img;
}

/** Previews are cached by where the thumbnail is and its hash (what decrypting it checks). */
const previewKey = (t) => `${t.server_name}/${t.media_id}/${t.sha256}`;

async function loadPreview(t, name) {
  const s = session;
  try {
    const bytes = await s.fetchAttachment(t);
    if (s !== session) return;
    showPreview(t, bytes, name);
  } catch {
    if (s === session) previews.set(previewKey(t), { state: 'failed' });
  }
}

/**
 * Makes the <img> of a decrypted thumbnail. The page's CSP allows images from `'self'` and
 * `data:` only (no `blob:`), so the bytes become a data: URL, typed with our own constant for
 * the thumbnail's (whitelisted) type, never the sender's string.
 */
function showPreview(t, bytes, name) {
  const type = PREVIEW_MIMES.find((x) => x === t.mime.toLowerCase());
  const reader = new FileReader();
  reader.onload = () => {
    if (!previews.has(previewKey(t))) return; // locked meanwhile
    const size = thumbnailSize(t.width || 1, t.height || 1);
    const img = el('img', {
      class: 'preview', alt: `Preview of ${name}`, src: reader.result,
      width: t.width ? String(size.width) : null, height: t.height ? String(size.height) : null,
    });
    previews.set(previewKey(t), { state: 'ready', img });
    render();
  };
  reader.onerror = () => previews.set(previewKey(t), { state: 'failed' });
  reader.readAsDataURL(new Blob([bytes], { type }));
}

/** Downloads a file message's ciphertext through the own homeserver, checks and decrypts it,
 *  and saves it under its sanitised name. */
async function downloadFile(m) {
  const s = session;
  if (!s || downloads.has(m.id)) return;
  const name = sanitizeFilename(m.file.name);
  const d = { loaded: 0, total: m.file.size, controller: new AbortController() };
  downloads.set(m.id, d);
  fileNotes.delete(m.id);
  render();
  announce(`Downloading ${name}…`);
  try {
    const plain = await s.fetchAttachment(m.file, {
      signal: d.controller.signal,
      onProgress: (loaded, total) => {
        d.loaded = loaded;
        d.total = total || m.file.size;
        setProgress(`down:${m.id}`, d.loaded, d.total);
      },
    });
    if (s !== session) return;
    saveFile(plain, name);
    fileNotes.set(m.id, { ok: true, text: `Saved ${name}.` });
    announce(`Saved ${name}.`);
  } catch (err) {
    if (s !== session) return;
    const text = describeMediaError(err, { upload: false });
    fileNotes.set(m.id, { ok: false, text });
    alertMsg(`${name}: ${text}`);
  } finally {
    if (s === session) {
      downloads.delete(m.id);
      render();
    }
  }
}

/** Saves bytes as a download (a Blob URL with a `download` name), typed as opaque bytes. */
function saveFile(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  blobUrls.add(url);
  const a = el('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  // The browser has read the Blob once the download started; a minute is ample.
  setTimeout(() => { URL.revokeObjectURL(url); blobUrls.delete(url); }, 60000);
}

function setAttachError(text) {
  const e = $('attach-error');
  if (e.textContent !== text) e.textContent = text;
}

/**
 * A thumbnail of an image file: longest side at most 320 px, JPEG; and the original's size.
 * Decoded with createImageBitmap (no <img>: the CSP allows no blob: images). Null if the
 * browser cannot decode it (the file is then sent without a preview).
 */
async function makeThumbnail(file, max = undefined) {
  let bmp;
  try {
    bmp = await createImageBitmap(file);
    const { width, height } = thumbnailSize(bmp.width, bmp.height, max);
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff'; // JPEG has no transparency
    ctx.fillRect(0, 0, width, height);
    ctx.drawImage(bmp, 0, 0, width, height);
    const blob = await new Promise((r) => { canvas.toBlob(r, 'image/jpeg', 0.8); });
    if (!blob) return null;
    return {
      bytes: new Uint8Array(await blob.arrayBuffer()), mime: 'image/jpeg', width, height,
      original: { width: bmp.width, height: bmp.height },
    };
  } catch {
    return null;
  } finally {
    if (bmp) bmp.close();
  }
}

/** Sends each file (from the file picker or a drop) into the open conversation, one by one. */
async function attachFiles(files) {
  const gid = openGid;
  if (!session || !gid || $('attach-btn').disabled) return;
  for (const file of [...files]) {
    if (session === null || openGid !== gid) return;
    await attachFile(gid, file);
  }
}

async function attachFile(gid, file) {
  const s = session;
  setAttachError('');
  let limit = 0;
  const name = sanitizeFilename(file.name);
  try {
    limit = await s.mediaLimit();
    const refusal = uploadRefusal(file.size, limit);
    if (refusal) {
      setAttachError(`${name}: ${refusal}`);
      return;
    }
    const isImage = isPreviewMime(file.type);
    const thumb = isImage ? await makeThumbnail(file) : null;
    const bytes = new Uint8Array(await file.arrayBuffer());
    announce(`Uploading ${name}…`);
    const msg = await s.sendFile(gid, {
      bytes,
      name,
      mime: (file.type || 'application/octet-stream').slice(0, 255),
      width: thumb ? thumb.original.width : undefined,
      height: thumb ? thumb.original.height : undefined,
      thumbnail: thumb ? { bytes: thumb.bytes, mime: thumb.mime, width: thumb.width, height: thumb.height } : undefined,
    });
    // The sender's own preview comes from the thumbnail it made, not from the server.
    if (thumb && msg && msg.file && msg.file.thumbnail && s === session) {
      previews.set(previewKey(msg.file.thumbnail), { state: 'loading' });
      showPreview(msg.file.thumbnail, thumb.bytes, name);
    }
    announce(`Sent ${name}.`);
  } catch (err) {
    if (s !== session) return;
    const media = err && (err.errcode || err.name === 'AbortError');
    setAttachError(`${name}: ${media ? describeMediaError(err, { maxUploadBytes: limit }) : describeError(err)}`);
  }
}

/** The warning for unacknowledged key changes: whose safety number changed, and why. */
function keyChangeText(changes) {
  const why = [...new Set(changes.map((c) => (c.kind === 'new_device'
    ? `${c.user_id} has a new device (${c.device_id}) since you verified them`
    : `the key of ${c.user_id}'s device ${c.device_id} changed`)))];
  const users = [...new Set(changes.map((c) => c.user_id))];
  return `The safety number with ${users.join(', ')} changed: ${why.join('; ')}. Sending is blocked until you acknowledge it; verify again to be sure nobody is impersonating them.`;
}

function openConversation(gid, { messageId } = {}) {
  if (composeCtx && composeCtx.gid !== gid) {
    if (composeCtx.mode === 'edit') $('message-input').value = '';
    composeCtx = null;
  }
  pickerFor = null;
  openGid = gid;
  if (session) {
    session.openConv = gid;
    session.markRead(gid);
  }
  render();
  const list = $('message-list');
  list.scrollTop = list.scrollHeight;
  const target = messageId ? [...list.children].find((e) => e.dataset.focus === `msg:${messageId}`) : null;
  if (target) {
    for (const e of list.querySelectorAll('.found')) e.classList.remove('found');
    target.classList.add('found');
    target.scrollIntoView({ block: 'center' });
    target.focus();
    return;
  }
  $('message-input').focus();
}

// ----- search, notifications, group settings -----

/** Lists the messages of every conversation matching the search box (local history only). */
function renderSearch() {
  const q = $('search-input').value;
  const list = $('search-results');
  list.replaceChildren();
  if (!state || !q.trim()) {
    list.hidden = true;
    $('search-summary').textContent = '';
    return;
  }
  const me = state.session.user_id;
  const results = searchMessages(state, q, me);
  for (const r of results) {
    const who = r.sender === me ? 'You' : localpart(r.sender);
    const text = r.text.length > 120 ? `${r.text.slice(0, 119)}…` : r.text;
    list.append(el('li', {}, el('button', {
      type: 'button',
      'aria-label': `${r.title}, ${who}: ${text}`,
      onclick: () => openConversation(r.gid, { messageId: r.id }),
    }, el('span', { class: 'where', text: `${r.title} · ${formatTime(r.ts)}` }),
    el('span', { class: 'snippet', text: `${who}: ${text}` }))));
  }
  list.hidden = results.length === 0;
  $('search-summary').textContent = results.length
    ? `${results.length} message${results.length === 1 ? '' : 's'} found${results.length >= 50 ? ' (the newest 50)' : ''}.`
    : 'No message found.';
}

/** Shows a browser notification for a received message, if `notificationFor` says so. */
function notifyIncoming(conv, msg) {
  if (!state || typeof window.Notification !== 'function') return;
  const n = notificationFor({
    conv, msg, ownUserId: state.session.user_id, settings: state.settings,
    permission: window.Notification.permission, hidden: document.hidden, isOpen: openGid === conv.group_id,
  });
  if (!n) return;
  try {
    const note = new window.Notification(n.title, { body: n.body, tag: n.tag });
    note.onclick = () => {
      window.focus();
      if (state && state.convs[conv.group_id]) openConversation(conv.group_id);
    };
  } catch { /* not allowed here (some browsers need a service worker) */ }
}

/** The "Notifications" setting: asks the browser's permission on the user's action. */
async function toggleNotifications(box) {
  if (!state) return;
  if (!box.checked) {
    state.settings.notifications = false;
    session.save();
    announce('Notifications are off.');
    return;
  }
  if (typeof window.Notification !== 'function') {
    box.checked = false;
    alertMsg('This browser does not support notifications.');
    return;
  }
  let permission = window.Notification.permission;
  if (permission !== 'granted') {
    try { permission = await window.Notification.requestPermission(); } catch { permission = 'denied'; }
  }
  if (!state) return;
  if (permission !== 'granted') {
    box.checked = false;
    state.settings.notifications = false;
    alertMsg('The browser did not allow notifications: allow them in its site settings, then try again.');
    return;
  }
  state.settings.notifications = true;
  session.save();
  announce('Notifications are on.');
}

function openGroupSettings() {
  const conv = state && state.convs[openGid];
  if (!conv) return;
  $('group-name').value = conv.name || '';
  $('group-topic').value = conv.topic || '';
  $('group-error').textContent = '';
  $('group-avatar').value = '';
  $('group-avatar-remove').checked = false;
  $('group-avatar-remove-row').hidden = !conv.avatar;
  renderJoinLink(conv);
  renderDisappearing(conv);
  $('group-dialog').showModal();
  $('group-name').focus();
}

/**
 * The join-link part of the group settings: the link (any member may copy and share it while
 * it is on) and, for an admin only, turning it on, replacing it and turning it off.
 */
function renderJoinLink(conv) {
  const link = session.joinLinkOf(conv.group_id);
  const amAdmin = conv.active && session.isAdmin(conv.group_id, state.session.user_id);
  $('join-link-state').textContent = link
    ? 'Anyone with this link can join this conversation.'
    : (amAdmin ? 'Joining by link is off.' : 'Joining by link is off. An admin can turn it on.');
  $('join-link-row').hidden = !link;
  $('join-link-value').value = link || '';
  $('join-link-admin').hidden = !amAdmin;
  $('join-link-on-btn').textContent = link ? 'Make a new join link' : 'Turn on joining by link';
  $('join-link-off-btn').hidden = !link;
}

/**
 * The disappearing-messages part of the group settings: the timer in force, which only an
 * admin may change (it applies at once, by a commit).
 */
function renderDisappearing(conv) {
  const ms = session.disappearingOf(conv.group_id);
  const amAdmin = conv.active && session.isAdmin(conv.group_id, state.session.user_id);
  const select = $('disappear-select');
  const value = ms ? String(ms) : '';
  if (ms && ![...select.options].some((o) => o.value === value)) {
    select.append(el('option', { value, text: durationText(ms) }));
  }
  select.value = value;
  select.disabled = !amAdmin;
  $('disappear-state').textContent = (ms ? `New messages disappear ${durationText(ms)} after they are sent, for everyone.` : 'Messages stay.')
    + (amAdmin ? '' : ' Only an admin can change this.');
}

/** Applies the timer chosen in the group settings. */
function changeDisappearing() {
  const gid = openGid;
  const conv = state && state.convs[gid];
  if (!conv || !session) return;
  const select = $('disappear-select');
  const ms = select.value ? Number(select.value) : null;
  $('group-error').textContent = '';
  select.disabled = true;
  session.setDisappearing(gid, ms).then((after) => {
    renderDisappearing(conv);
    announce(after ? `Messages now disappear after ${durationText(after)}.` : 'Disappearing messages are off.');
  }, (err) => {
    renderDisappearing(conv);
    $('group-error').textContent = describeError(err);
  });
}

/** Turns joining by link on (or replaces the link) or off, from the group settings. */
function changeJoinLink(btn, on) {
  const gid = openGid;
  const conv = state && state.convs[gid];
  if (!conv || !session) return;
  const replacing = on && !!session.joinLinkOf(gid);
  $('group-error').textContent = '';
  busy(btn, true);
  session.setJoinLink(gid, on).then((link) => {
    renderJoinLink(conv);
    announce(!link ? 'Joining by link is off.' : (replacing ? 'New join link made; the old one no longer works.' : 'Joining by link is on.'));
    (link ? $('join-link-copy-btn') : $('join-link-on-btn')).focus();
  }, (err) => {
    // Shown inside the dialog (the page's alert region is behind it).
    $('group-error').textContent = describeError(err);
  }).finally(() => { busy(btn, false); });
}

/** Copies the join link; where the clipboard is refused, selects it for the user to copy. */
async function copyJoinLink() {
  const input = $('join-link-value');
  try {
    await navigator.clipboard.writeText(input.value);
    announce('Join link copied.');
  } catch {
    input.focus();
    input.select();
    announce('Join link selected: copy it with your keyboard or menu.');
  }
}

async function saveGroupSettings() {
  const gid = openGid;
  const conv = state && state.convs[gid];
  if (!conv || !session) return;
  const name = $('group-name').value.trim();
  const topic = $('group-topic').value.trim();
  const fields = {};
  if (name !== (conv.name || '')) fields.name = name;
  if (topic !== (conv.topic || '')) fields.topic = topic;
  const file = $('group-avatar').files[0] || null;
  const removeAvatar = !file && conv.avatar && $('group-avatar-remove').checked;
  $('group-error').textContent = '';
  if (!Object.keys(fields).length && !file && !removeAvatar) {
    $('group-dialog').close();
    return;
  }
  const btn = $('group-save-btn');
  btn.disabled = true;
  try {
    const s = session;
    if (file) {
      if (!isPreviewMime(file.type)) throw new Error('Choose a PNG, JPEG, GIF or WebP image.');
      const small = await makeThumbnail(file, 128);
      if (!small) throw new Error('This image could not be read.');
      await s.setGroupAvatar(gid, { bytes: small.bytes, mime: small.mime, width: small.width, height: small.height });
    } else if (removeAvatar) {
      await s.setGroupAvatar(gid, null);
    }
    if (Object.keys(fields).length) await s.setGroupProfile(gid, fields);
    $('group-dialog').close();
    announce('Group settings saved.');
    $('group-settings-btn').focus();
  } catch (err) {
    $('group-error').textContent = describeError(err);
  } finally {
    btn.disabled = false;
  }
}

// ----- dialogs -----

function openVerify() {
  const conv = state.convs[openGid];
  if (!conv) return;
  const me = state.session.user_id;
  const sel = $('verify-user');
  sel.replaceChildren();
  for (const u of [...new Set(conv.members.map((m) => m.user_id))].filter((x) => x !== me).sort()) {
    sel.append(el('option', { value: u, text: u }));
  }
  fillVerify();
  $('verify-dialog').showModal();
  sel.focus();
}

function fillVerify() {
  const u = $('verify-user').value;
  const conv = state.convs[openGid];
  if (!u || !conv) return;
  try {
    $('verify-number').value = formatSafetyNumber(client.safetyNumber(u));
    $('verify-own').textContent = `Your device: ${client.fingerprint()}`;
    $('verify-devices').replaceChildren(...conv.members.filter((m) => m.user_id === u)
      .map((m) => el('li', { text: `${m.device_id}: ${m.fingerprint}` })));
  } catch (err) {
    $('verify-number').value = '';
    $('verify-own').textContent = describeError(err);
    $('verify-devices').replaceChildren();
  }
}

async function openSettings() {
  $('own-fingerprint').value = client.fingerprint();
  $('autolock-minutes').value = String(state.settings.autoLockMinutes);
  $('notify-toggle').checked = !!state.settings.notifications
    && typeof window.Notification === 'function' && window.Notification.permission === 'granted';
  $('notify-text').checked = !!state.settings.notifyText;
  $('settings-dialog').showModal();
  await refreshDevices();
}

async function refreshDevices() {
  const list = $('device-list');
  list.replaceChildren(el('li', { text: 'Loading devices…' }));
  try {
    const { devices } = await api.devices();
    list.replaceChildren();
    for (const d of devices) {
      const current = d.device_id === state.session.device_id;
      const li = el('li', {}, el('span', { text: `${d.device_id}${d.display_name ? ` (${d.display_name})` : ''}${current ? ' — this device' : ''} ` }));
      if (!current) {
        li.append(el('button', {
          type: 'button', 'aria-label': `Revoke ${d.device_id}`, text: 'Revoke',
          onclick: (e) => guarded(e.currentTarget, async () => {
            await api.deleteDevice(d.device_id);
            announce(`Device ${d.device_id} revoked.`);
            await refreshDevices();
          }),
        }));
      }
      list.append(li);
    }
  } catch (err) {
    list.replaceChildren(el('li', { text: `Could not load devices: ${describeError(err)}` }));
  }
}

// ----- wiring -----

function wire() {
  $('login-form').addEventListener('submit', (e) => { e.preventDefault(); doLogin(false); });
  $('signup-btn').addEventListener('click', () => doLogin(true));
  $('setvault-form').addEventListener('submit', (e) => { e.preventDefault(); createVault(); });
  $('unlock-form').addEventListener('submit', (e) => { e.preventDefault(); unlock(); });

  const askPanic = () => { $('panic-dialog').showModal(); $('panic-cancel-btn').focus(); };
  $('panic-btn').addEventListener('click', askPanic);
  $('unlock-panic-btn').addEventListener('click', askPanic);
  $('panic-confirm-btn').addEventListener('click', () => { panicWipe(); });
  $('lock-btn').addEventListener('click', () => { lock(); });

  $('new-conv-btn').addEventListener('click', (e) => guarded(e.currentTarget, async () => {
    const gid = await session.createConversation();
    openConversation(gid);
    announce('New conversation created. Invite someone by user id.');
    $('invite-user').focus();
  }));

  $('dm-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded($('dm-btn'), async () => {
      const me = state.session.user_id;
      const uid = normaliseUserId($('dm-user').value, serverOf(me));
      if (!uid) throw new Error('Enter a user id like @name:server for the direct message.');
      if (uid === me) throw new Error('A direct message needs someone else: enter another user id.');
      announce(`Starting a direct message with ${uid}…`);
      const { group_id: gid, reused } = await session.startDm(uid);
      $('dm-user').value = '';
      openConversation(gid);
      announce(reused ? `Opened your direct message with ${uid}.` : `Direct message with ${uid} started.`);
    });
  });

  $('invite-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded($('invite-btn'), async () => {
      const me = state.session.user_id;
      const uid = normaliseUserId($('invite-user').value, serverOf(me));
      if (!uid) throw new Error('Enter a user id like @name:server.');
      if (uid === me) throw new Error('You are already in this conversation.');
      announce(`Inviting ${uid}…`);
      await session.invite(openGid, uid);
      $('invite-user').value = '';
      announce(`${uid} was added.`);
    });
  });

  $('send-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('message-input');
    const text = input.value;
    if (!text.trim() || $('send-btn').disabled) return;
    const gid = openGid;
    const ctx = composeCtx && composeCtx.gid === gid ? composeCtx : null;
    composeCtx = null;
    input.value = '';
    guarded($('send-btn'), async () => {
      if (ctx && ctx.mode === 'edit') {
        const conv = state.convs[gid];
        const target = conv ? findBySeq(conv, ctx.seq) : null;
        if (target && target.body === text) return; // unchanged: nothing to send
        await session.editMessage(gid, ctx.seq, text);
        announce('Message edited.');
      } else {
        await session.sendText(gid, text, { replyTo: ctx ? ctx.seq : undefined });
      }
    }).then(() => { render(); input.focus(); });
  });
  $('attach-btn').addEventListener('click', () => { $('attach-input').click(); });
  $('attach-input').addEventListener('change', (e) => {
    const input = e.currentTarget;
    const files = [...input.files];
    input.value = '';
    attachFiles(files);
  });
  // Drag and drop a file onto the conversation.
  const view = $('conv-view');
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
  view.addEventListener('dragover', (e) => {
    if (!hasFiles(e) || !openGid) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = $('attach-btn').disabled ? 'none' : 'copy';
    view.classList.add('dropping');
  });
  view.addEventListener('dragleave', (e) => {
    if (!view.contains(e.relatedTarget)) view.classList.remove('dropping');
  });
  view.addEventListener('drop', (e) => {
    view.classList.remove('dropping');
    if (!hasFiles(e) || !openGid) return;
    e.preventDefault();
    attachFiles(e.dataTransfer.files);
  });
  // A file dropped anywhere else must not make the browser leave the app to open it.
  document.addEventListener('dragover', (e) => {
    if (!hasFiles(e) || e.defaultPrevented) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'none';
  });
  document.addEventListener('drop', (e) => { if (hasFiles(e)) e.preventDefault(); });
  $('message-input').addEventListener('input', (e) => {
    if (session && openGid && e.currentTarget.value.trim()) session.noteTyping(openGid).catch(() => {});
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    // Timers of hidden tabs are throttled (or stopped while the machine sleeps): compare the
    // wall clock with the last activity before anything else.
    if (idle && client && idle.check()) return;
    if (session && openGid) session.sendReadReceipt(openGid).catch(() => {});
  });
  for (const ev of ['pageshow', 'focus']) window.addEventListener(ev, () => { if (idle && client) idle.check(); });
  $('compose-cancel-btn').addEventListener('click', cancelCompose);
  $('delete-confirm-btn').addEventListener('click', () => { confirmDelete(); });
  $('delete-dialog').addEventListener('close', () => { deleteTarget = null; });
  $('message-input').addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && composeCtx) {
      e.preventDefault();
      cancelCompose();
      return;
    }
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('send-form').requestSubmit();
    }
  });

  $('tofu-ack-btn').addEventListener('click', (e) => guarded(e.currentTarget, async () => {
    await session.acknowledgeKeyChanges(openGid);
    announce('Key change acknowledged. Sending is possible again.');
  }));
  $('leave-btn').addEventListener('click', (e) => guarded(e.currentTarget, async () => {
    await session.leave(openGid);
    announce('You left the conversation.');
  }));

  $('verify-btn').addEventListener('click', openVerify);
  $('verify-user').addEventListener('change', fillVerify);
  $('verify-mark-btn').addEventListener('click', (e) => guarded(e.currentTarget, async () => {
    const u = $('verify-user').value;
    await session.setVerified(u, true);
    announce(`${u} is marked as verified.`);
  }));
  $('verify-unmark-btn').addEventListener('click', (e) => guarded(e.currentTarget, async () => {
    const u = $('verify-user').value;
    await session.setVerified(u, false);
    announce(`${u} is no longer marked as verified.`);
  }));

  $('settings-btn').addEventListener('click', () => { openSettings(); });
  $('notify-toggle').addEventListener('change', (e) => { toggleNotifications(e.currentTarget); });
  $('notify-text').addEventListener('change', (e) => {
    if (!state) return;
    state.settings.notifyText = e.currentTarget.checked;
    session.save();
    announce(e.currentTarget.checked ? 'Notifications show the message text.' : 'Notifications do not show the message text.');
  });
  $('group-settings-btn').addEventListener('click', openGroupSettings);
  $('disappear-select').addEventListener('change', () => { changeDisappearing(); });
  $('join-link-on-btn').addEventListener('click', (e) => { changeJoinLink(e.currentTarget, true); });
  $('join-link-off-btn').addEventListener('click', (e) => { changeJoinLink(e.currentTarget, false); });
  $('join-link-copy-btn').addEventListener('click', () => { copyJoinLink(); });
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded($('join-btn'), async () => {
      const link = $('join-link-input').value.trim();
      if (!link) throw new Error('Paste a join link to join a conversation.');
      announce('Joining…');
      const { group_id: gid, already } = await session.joinByLink(link);
      $('join-link-input').value = '';
      openConversation(gid);
      announce(already ? 'You are already in this conversation.' : 'You joined the conversation.');
    });
  });
  $('share-history').addEventListener('change', (e) => {
    if (!session || !openGid) return;
    session.setShareHistory(openGid, e.currentTarget.checked);
    announce(e.currentTarget.checked
      ? 'New members of this conversation will get its 100 most recent messages.'
      : 'New members of this conversation will see only what is sent after they join.');
  });
  $('history-send-btn').addEventListener('click', (e) => guarded(e.currentTarget, async () => {
    const device = $('history-offer').dataset.device;
    if (!device || !session) return;
    announce(`Sending your message history to your device ${device}…`);
    await session.sendHistory(device);
    $('new-conv-btn').focus(); // the offer is gone
  }));
  $('history-dismiss-btn').addEventListener('click', () => {
    const device = $('history-offer').dataset.device;
    if (device && session) session.dismissHistoryOffer(device);
    announce('The history was not sent.');
    $('new-conv-btn').focus();
  });
  $('group-save-btn').addEventListener('click', () => { saveGroupSettings(); });
  $('group-name').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); saveGroupSettings(); }
  });
  $('search-input').addEventListener('input', renderSearch);
  $('search-form').addEventListener('submit', (e) => { e.preventDefault(); renderSearch(); });
  $('settings-save-btn').addEventListener('click', () => {
    const minutes = parseAutoLockMinutes($('autolock-minutes').value);
    state.settings.autoLockMinutes = minutes;
    $('autolock-minutes').value = String(minutes);
    if (idle) idle.setMs(minutes * 60000);
    session.save();
    announce(`Auto-lock after ${minutes} minutes of inactivity.`);
  });

  for (const ev of ['keydown', 'pointerdown', 'wheel', 'touchstart']) {
    document.addEventListener(ev, () => { if (idle && client) idle.poke(); }, { passive: true });
  }
}

boot();
