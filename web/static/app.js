// The chat page: sign in, 1:1 conversations with ticks, typing, presence,
// photos and settings, and group chats, on the JavaScript SDK. Each device
// keeps its own history, as a phone keeps its chats: the server hands a
// message to a device once, and the page acks it only once it is stored.
// Conversations, 1:1 and in groups, live in the SDK's local store
// (IndexedDB, one database per user and device): their messages both ways
// with ticks, a group's system messages, read watermarks, and the outbox,
// so a message written while offline, or not yet confirmed when the page
// goes away, is sent once the page is back online, under its id, once.
// Contacts and what this device knows of each group (name, members) are
// kept in localStorage, with the group chats an older page kept there.
//
// A conversation is named by a key: a user id for a 1:1 chat, or 'g:' and
// the group's id for a group (ids never hold a colon). Our group messages
// tick as the group's receipts say: delivered once every other member has
// them, read once every one read them.
import { Client, newId, validId, ConnectError, CloseError, StoreError } from '/sdk/switchboard.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'switchboard.token';
const KEEP = 500; // messages kept per conversation
const TICKS = ['pending', 'sent', 'delivered', 'read'];
const GLYPH = { pending: '', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' }; // pending: a clock, in CSS
const TYPING_EVERY = 3000; // ms between our typing frames while typing
const TYPING_SHOWN = 5000; // ms theirs stays on screen
const RETRY_MAX = 5000; // ms between tries to reach the server when it could not be reached at start

let sb = null; // the SDK client
let me = null; // {user, device}
let store = null; // this device's contacts and history (load, save)
let devTokens = false; // the server hands out development tokens
let open = ''; // the key of the conversation on screen
const presence = new Map(); // user -> {online, lastSeen, hidden}
const typingUntil = new Map(); // conversation key, NUL, user -> ms until which "typing…" shows
const mediaURLs = new Map(); // media key -> object URL of the verified bytes
let lastTyping = 0;
let settings = null; // this user's settings, once read
let membersShown = ''; // what the group info panel's member rows show (renderGroup)

// --- tokens ---

function claims(token) {
  try {
    const p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const c = JSON.parse(atob(p));
    return validId(c.sub) && validId(c.dev) ? c : null;
  } catch {
    return null;
  }
}

const expiresSoon = (token) => (claims(token)?.exp ?? 0) * 1000 < Date.now() + 60000;

async function devToken(user, device) {
  const res = await fetch('/v1/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, device }),
  });
  const b = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(b.message || `the server refused (${res.status})`);
  return b.token;
}

// --- storage ---

function load() {
  const key = `switchboard.v1.${me.user}.${me.device}`;
  let s = {};
  try {
    s = JSON.parse(localStorage.getItem(key)) ?? {};
  } catch {
    s = {};
  }
  // The chats come from the SDK's store (loadHistory); group chats an
  // older page kept here are shown before what the store holds of them.
  const chats = Object.fromEntries(Object.entries(s.chats ?? {}).filter(([k]) => isGroup(k))
    .map(([k, ms]) => [k, ms.map((m) => ({ ...m, legacy: true }))]));
  store = { contacts: s.contacts ?? [], groups: s.groups ?? {}, chats, read: s.read ?? {}, open: s.open ?? '' };
  store.key = key;
}

// loadHistory reads the conversations from the SDK's store: their last
// KEEP messages, read watermarks and peers (as contacts). A group chat
// an older page kept in localStorage keeps its messages the store does
// not hold, first.
async function loadHistory() {
  for (const c of await sb.store.conversations()) {
    const key = c.group ? groupKey(c.group) : c.conv;
    const ms = await (c.group ? sb.store.groupMessages(c.group, KEEP) : sb.store.messages(c.conv, KEEP));
    const kept = ms.map((m) => (m.own
      ? { id: m.id, from: me.user, ...dest(m), seq: m.seq, ts: m.ts, body: m.body, media: m.media, tick: m.status }
      : { id: m.id, from: m.from, ...(m.group ? { group: m.group } : { to: me.user }), seq: m.seq, ts: m.ts, body: m.body, media: m.media, event: m.event ?? undefined }));
    const old = (store.chats[key] ?? []).filter((x) => !kept.some((m) => sameMessage(x, m)));
    store.chats[key] = [...old, ...kept];
    store.read[key] = Math.max(store.read[key] ?? 0, c.readSeq);
    if (c.group) {
      if (!store.groups[c.group]) {
        store.groups[c.group] = { name: '', createdBy: '', members: [], left: false };
        refreshGroup(c.group);
      }
    } else if (!store.contacts.includes(c.conv) && c.conv !== me.user) {
      store.contacts.push(c.conv);
    }
  }
}

// dest is where a stored message of ours went: {group} or {to}.
const dest = (m) => (m.group ? { group: m.group } : { to: m.conv });

// sameMessage says whether two messages of a conversation are one: a
// system message by its id, a message by (from, id).
const sameMessage = (a, b) => (a.event || b.event ? !!a.event && !!b.event && a.id === b.id : a.from === b.from && a.id === b.id);

function save() {
  const { key, ...s } = store;
  for (const k of Object.keys(s.chats)) store.chats[k] = store.chats[k].slice(-KEEP);
  // The SDK's store keeps the chats; group messages an older page kept
  // here stay here.
  s.chats = Object.fromEntries(Object.entries(store.chats).filter(([k]) => isGroup(k))
    .map(([k, ms]) => [k, ms.filter((m) => m.legacy)]).filter(([, ms]) => ms.length));
  try {
    localStorage.setItem(key, JSON.stringify(s, (k, v) => (k === 'local' ? undefined : v)));
  } catch (e) {
    banner('This browser could not store the chat: ' + e.message);
  }
}

const chat = (key) => (store.chats[key] ??= []);

// --- conversation keys ---

const GROUP = 'g:';
const isGroup = (key) => key.startsWith(GROUP);
const groupKey = (group) => GROUP + group;
const groupOf = (key) => (isGroup(key) ? key.slice(GROUP.length) : '');
// keyOf is the conversation a message belongs to.
const keyOf = (m) => (m.group ? groupKey(m.group) : m.from === me.user ? m.to : m.from);
const known = (key) => (isGroup(key) ? !!store.groups[groupOf(key)] : store.contacts.includes(key));

function addContact(user) {
  if (user === me.user || store.contacts.includes(user)) return;
  store.contacts.push(user);
  save();
  sb.subscribePresence(user);
  renderContacts();
  // Last seen shown to contacts only: the server's list follows ours.
  if (settings?.lastSeenPrivacy === 'contacts') sb.settings({ contacts: store.contacts }).then(showSettings, () => {});
}

// --- signing in ---

async function main() {
  devTokens = document.querySelector('meta[name="switchboard-dev-tokens"]')?.content === 'on';
  $('dev-form').hidden = !devTokens;
  $('dev-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    await signIn(() => devToken($('dev-user').value.trim(), $('dev-device').value.trim()));
  });
  $('token-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    await signIn(async () => $('token').value.trim());
  });
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved && claims(saved) && (!expiresSoon(saved) || devTokens)) {
    await start(saved, true).catch((e) => showSignIn(e.message));
  } else {
    showSignIn('');
  }
}

function showSignIn(error) {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = error;
}

async function signIn(getToken) {
  $('signin-error').textContent = '';
  try {
    const token = await getToken();
    if (!claims(token)) throw new Error('that is not a Switchboard token (a JWT with sub and dev)');
    await start(token);
  } catch (e) {
    showSignIn(e.message);
  }
}

// storeProblem says why this device's store could not be opened.
function storeProblem(e) {
  const who = `${me.user} on ${me.device}`;
  switch (e instanceof StoreError ? e.code : '') {
    case 'newer_version':
      return `This browser's chat store for ${who} was written by a newer version of Switchboard (schema ${e.found}; this page knows ${e.known}), and was left as it is. Reload to get the newer page, or clear this site's data to start over.`;
    case 'locked':
      return `${who} is open in another tab of this browser: use that one, or close it and sign in here again.`;
    case 'blocked':
      return `Another tab holds ${who}'s chat store open at an older version: close it and reload.`;
    default:
      return `This browser could not open the chat store for ${who}: ${e.message}`;
  }
}

// start signs in with token: opens this device's store, shows its
// history and sends again what it had not sent, then connects. With a
// token saved by an earlier visit (saved), a server out of reach is not
// a failure: the page works offline, keeps what is written, and keeps
// trying.
async function start(token, saved = false) {
  const c = claims(token);
  me = { user: c.sub, device: c.dev };
  let current = token;
  sb = new Client({
    store: `switchboard.${me.user}.${me.device}`,
    // Each connect asks: an expiring development token is renewed.
    token: async () => {
      if (expiresSoon(current)) {
        if (!devTokens) {
          banner('Your token has expired: sign out, and in with a new one.');
          throw new Error('token expired');
        }
        current = await devToken(me.user, me.device);
        localStorage.setItem(TOKEN_KEY, current);
      }
      return current;
    },
  });
  sb.on('message', onMessage);
  sb.on('receipt', onReceipt);
  sb.on('read_sync', onReadSync);
  sb.on('typing', onTyping);
  sb.on('presence', (p) => {
    presence.set(p.user, p);
    renderContacts();
    renderPeerStatus();
  });
  sb.on('connect', () => {
    setConn('connected');
    banner('');
    markRead();
  });
  sb.on('disconnect', () => setConn('reconnecting'));
  // A message or receipt the store could not keep comes again after a
  // reconnect; the quota being full is worth saying.
  sb.on('error', (e) => {
    if (e.code === 'local_store') banner(`This browser could not store the chat: ${e.message}`);
  });
  sb.on('close', ({ error }) => {
    setConn('closed');
    if (error instanceof CloseError) {
      banner(error.replaced ? 'This device signed in somewhere else, so this page stopped. Reload to use it here.'
        : `The server ended the session (${error.code} ${error.closeName}).`);
    }
  });
  load();
  try {
    await sb.ready();
    await loadHistory();
  } catch (e) {
    sb.close();
    sb = null;
    throw new Error(storeProblem(e));
  }
  // Sends from an earlier visit never confirmed: the SDK's store sends
  // them again under their ids, in order, and these calls join them to
  // learn their outcome; group ones an older page kept in localStorage
  // are sent from here. (The SDK tracks the ticks of the confirmed ones
  // itself.)
  for (const key of Object.keys(store.chats)) {
    for (const m of chat(key)) {
      if (m.from !== me.user || m.event || m.tick !== 'pending') continue;
      if (m.media || m.body !== null) deliver(m);
      else tick(m, 'failed', 'the upload did not finish');
    }
  }
  if (store.contacts.length) sb.subscribePresence(...store.contacts);
  let offline = false;
  try {
    await sb.start();
  } catch (e) {
    if (!saved || !(e instanceof ConnectError) || refused(e)) {
      sb.close();
      sb = null;
      throw new Error(e instanceof ConnectError && e.status === 401 ? `The server refused the token (${e.code}).`
        : e instanceof StoreError ? storeProblem(e) : `Could not connect: ${e.message}`);
    }
    offline = true;
  }
  localStorage.setItem(TOKEN_KEY, current);
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me').textContent = `${me.user} · ${me.device}`;
  setConn(offline ? 'reconnecting' : 'connected');
  if (offline) {
    banner('The server cannot be reached: what you write is kept and sent once it is back.');
    retryStart(sb);
  }
  sb.settings({}).then(showSettings, () => {});
  renderContacts();
  openChat(store.open && known(store.open) ? store.open : '');
}

// refused says a connect failed because the server refused this page or
// its token, which trying again will not change; anything else (out of
// reach, 503 unavailable) may pass.
const refused = (e) => e.status === 401 || e.status === 403;

// retryStart tries to make client's first connection until it is made
// (its 'connect' event shows it), after a growing random wait, or at once
// when the browser is back online.
async function retryStart(client) {
  for (let bound = 250; client === sb; bound = Math.min(bound * 2, RETRY_MAX)) {
    await new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        removeEventListener('online', done);
        resolve();
      };
      const timer = setTimeout(done, bound / 2 + Math.random() * bound / 2);
      addEventListener('online', done);
    });
    if (client !== sb) return;
    try {
      await client.start();
      return;
    } catch (e) {
      if (!(e instanceof ConnectError) || refused(e)) {
        banner(e instanceof ConnectError && e.status === 401 ? `The server refused the token (${e.code}): sign out, and in again.`
          : `Could not connect: ${e.message}`);
        return;
      }
    }
  }
}

// --- events from the SDK ---

function onMessage(m) {
  if (m.group) {
    onGroupMessage(m);
    return;
  }
  // One of this user's own messages, sent from another device, has `to`:
  // it belongs to the chat with its recipient.
  const peer = m.to || m.from;
  const list = chat(peer);
  if (!list.some((x) => x.from === m.from && x.id === m.id)) {
    list.push({ id: m.id, from: m.from, to: m.to || me.user, seq: m.seq, ts: m.ts, body: m.body, media: m.media });
    save();
    addContact(peer);
  }
  sb.ack(m.seq); // stored on this device: now it counts as delivered
  if (!m.to) typingUntil.delete(m.from + '\0' + m.from);
  if (peer === open) {
    appendMessage(list.at(-1));
    renderPeerStatus();
    markRead();
  }
  renderContacts();
}

// onReadSync marks a chat read up to where another device of this user
// read it; with group, a group chat.
function onReadSync(r) {
  const key = r.group ? groupKey(r.group) : r.peer;
  if ((store.read[key] ?? 0) >= r.seq) return;
  store.read[key] = r.seq;
  save();
  renderContacts();
}

function onReceipt(r) {
  const m = chat(r.group ? groupKey(r.group) : r.by).find((x) => x.from === me.user && x.id === r.id);
  if (m) tick(m, r.status);
}

function onTyping(t) {
  typingUntil.set((t.group ? groupKey(t.group) : t.from) + '\0' + t.from, Date.now() + TYPING_SHOWN);
  renderPeerStatus();
  setTimeout(renderPeerStatus, TYPING_SHOWN + 50);
}

// tick moves one of our messages on; ticks never go back.
function tick(m, status, note = '') {
  if (status === 'failed') {
    if (m.tick !== 'pending') return;
    m.note = note;
  } else if (TICKS.indexOf(status) <= TICKS.indexOf(m.tick)) {
    return;
  }
  m.tick = status;
  save();
  const el = keyOf(m) === open && document.querySelector(`#messages li[data-id="${CSS.escape(m.id)}"]`);
  if (!el) return;
  el.dataset.tick = m.tick;
  const t = el.querySelector('.tick');
  t.textContent = GLYPH[m.tick];
  t.title = m.tick;
  if (m.note) el.append(span('note', m.note));
}

// markRead sends a read receipt for what is on screen: the open
// conversation's newest message, while the page is visible. A read covers
// every earlier message of that user's, or, in a group, every earlier
// message of the group's; this user's other devices clear their badge.
function markRead() {
  if (!open || !sb?.connected || document.visibilityState !== 'visible') return;
  const last = chat(open).findLast((m) => (isGroup(open) ? m.from !== me.user && (m.seq || m.gseq) : m.from === open));
  if (last?.gseq) {
    // Read from the group's log: its own watermark, in the log's places.
    store.readLog ??= {};
    if (last.gseq <= (store.readLog[open] ?? 0)) return;
    sb.readGroup(open, last.gseq);
    store.readLog[open] = last.gseq;
    save();
    renderContacts();
    return;
  }
  if (!last || last.seq <= (store.read[open] ?? 0)) return;
  sb.read(last.seq);
  store.read[open] = last.seq;
  save();
  renderContacts();
}

document.addEventListener('visibilitychange', markRead);

// --- sending ---

async function deliver(m) {
  try {
    const s = m.group ? await sb.sendGroup(m.group, m.id, m.body)
      : m.media ? await sb.sendMedia(m.to, m.id, m.media, m.body) : await sb.send(m.to, m.id, m.body);
    m.seq = s.seq;
    tick(m, 'sent');
  } catch (e) {
    if (!(e instanceof CloseError) && e.name !== 'ClosedError') tick(m, 'failed', e.message);
  }
}

function compose(extra) {
  const dest = isGroup(open) ? { group: groupOf(open) } : { to: open };
  const m = { id: newId(), from: me.user, ...dest, ts: Date.now(), body: null, tick: 'pending', ...extra };
  chat(open).push(m);
  save();
  appendMessage(m);
  return m;
}

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (!open || !text.trim()) return;
  $('text').value = '';
  lastTyping = 0;
  deliver(compose({ body: text }));
});

$('text').addEventListener('input', () => {
  if (!open || !$('text').value || Date.now() - lastTyping < TYPING_EVERY) return;
  lastTyping = Date.now();
  if (isGroup(open)) {
    if (!store.groups[groupOf(open)]?.left) sb.typingGroup(groupOf(open));
  } else {
    sb.typing(open);
  }
});

$('file').addEventListener('change', async () => {
  const file = $('file').files[0];
  $('file').value = '';
  if (!open || !file || isGroup(open)) return;
  const local = URL.createObjectURL(file);
  const m = compose({ local });
  try {
    const media = await sb.upload(file);
    const thumb = await thumbnail(file);
    if (thumb) media.thumb = thumb;
    m.media = media;
    mediaURLs.set(media.key, local);
    save();
    deliver(m);
  } catch (e) {
    tick(m, 'failed', 'upload failed: ' + e.message);
  }
});

// thumbnail is a small JPEG preview, base64, sent in the message so the
// photo shows at once (at most 16 KiB; none if it does not fit).
async function thumbnail(file) {
  try {
    const img = await createImageBitmap(file);
    const scale = Math.min(1, 48 / Math.max(img.width, img.height));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(img.width * scale));
    canvas.height = Math.max(1, Math.round(img.height * scale));
    canvas.getContext('2d').drawImage(img, 0, 0, canvas.width, canvas.height);
    const b64 = canvas.toDataURL('image/jpeg', 0.6).split(',')[1];
    return b64.length <= 16384 ? b64 : '';
  } catch {
    return '';
  }
}

// --- contacts, settings, signing out ---

$('add-contact').addEventListener('submit', (e) => {
  e.preventDefault();
  const user = $('contact-id').value.trim();
  if (!validId(user) || user === me.user) return;
  $('contact-id').value = '';
  addContact(user);
  openChat(user);
});

$('settings-toggle').addEventListener('click', async () => {
  const s = $('settings');
  s.hidden = !s.hidden;
  $('settings-toggle').setAttribute('aria-expanded', String(!s.hidden));
  if (!s.hidden) showSettings(await sb.settings({}).catch(() => null));
});

function showSettings(s) {
  if (!s) return;
  settings = s;
  $('set-receipts').checked = s.readReceipts;
  $('set-lastseen').value = s.lastSeenPrivacy || 'everyone';
}

$('set-receipts').addEventListener('change', async () => {
  showSettings(await sb.settings({ readReceipts: $('set-receipts').checked }).catch((e) => banner(e.message)));
});

$('set-lastseen').addEventListener('change', async () => {
  const v = $('set-lastseen').value;
  const change = { lastSeenPrivacy: v, ...(v === 'contacts' ? { contacts: store.contacts } : {}) };
  showSettings(await sb.settings(change).catch((e) => banner(e.message)));
});

$('signout').addEventListener('click', () => {
  sb?.close();
  localStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// --- groups ---

// store.groups: group id -> {name, createdBy, members: [{user, admin}],
// left}: what this device knows of each group it is or was in, from the
// answers to its own operations and the system messages it received.

const groupName = (group) => store.groups[group]?.name || group;

// list joins names as a sentence does: "bob", "bob and carol", "bob, carol and dave".
function list(names) {
  return names.length < 2 ? names.join('') : names.slice(0, -1).join(', ') + ' and ' + names.at(-1);
}

const who = (user) => (user === me.user ? 'you' : user);
const capital = (s) => s.charAt(0).toUpperCase() + s.slice(1);

// noticeText is how a group's system message reads: "alice added carol".
function noticeText(m) {
  const e = m.event;
  const by = who(m.from);
  const users = list((e.users ?? []).map(who));
  let s;
  switch (e.op) {
    case 'create':
      s = `${by} created the group “${e.name ?? ''}”` + (users ? ` with ${users}` : '');
      break;
    case 'rename': s = `${by} renamed the group to “${e.name ?? ''}”`; break;
    case 'add': s = `${by} added ${users}`; break;
    case 'remove': s = `${by} removed ${users}`; break;
    case 'leave': s = `${by} left`; break;
    case 'promote': s = `${by} made ${users} ${e.users?.length > 1 ? 'admins' : 'an admin'}`; break;
    case 'demote': s = `${by} dismissed ${users} as ${e.users?.length > 1 ? 'admins' : 'admin'}`; break;
    default: s = `${by} changed the group (${e.op})`;
  }
  if (e.promoted?.length) {
    s += `; ${list(e.promoted.map(who))} ${e.promoted.length === 1 && e.promoted[0] !== me.user ? 'is' : 'are'} now ${e.promoted.length > 1 ? 'admins' : 'an admin'}`;
  }
  return capital(s);
}

// setGroup keeps a group as an operation's answer gave it.
function setGroup(g) {
  store.groups[g.id] = {
    name: g.name, createdBy: g.createdBy,
    members: g.members.map((x) => ({ user: x.user, admin: !!x.admin })),
    left: !g.members.some((x) => x.user === me.user),
  };
  save();
  renderContacts();
  renderGroup(g.id);
}

// applyEvent changes what this device knows of a group by one of its
// system messages.
function applyEvent(group, from, e) {
  const g = (store.groups[group] ??= { name: '', createdBy: '', members: [], left: false });
  const has = (u) => g.members.some((x) => x.user === u);
  const drop = (users) => { g.members = g.members.filter((x) => !users.includes(x.user)); };
  const admin = (users, on) => { for (const x of g.members) if (users.includes(x.user)) x.admin = on; };
  const users = e.users ?? [];
  switch (e.op) {
    case 'create':
      g.name = e.name ?? g.name;
      g.createdBy = from;
      g.members = [{ user: from, admin: true }, ...users.map((user) => ({ user, admin: false }))];
      break;
    case 'rename': g.name = e.name ?? g.name; break;
    case 'add':
      for (const user of users) if (!has(user)) g.members.push({ user, admin: false });
      break;
    case 'remove': drop(users); break;
    case 'leave': drop([from]); break;
    case 'promote': admin(users, true); break;
    case 'demote': admin(users, false); break;
  }
  admin(e.promoted ?? [], true);
  g.left = !has(me.user);
  // Added to a group made before: its members and name come from the server.
  if (e.op === 'add' && users.includes(me.user)) refreshGroup(group);
}

function refreshGroup(group) {
  sb.group('info', group).then(setGroup, () => {});
}

function onGroupMessage(m) {
  const key = groupKey(m.group);
  const msgs = chat(key);
  // Repeats: a system message by (group, id), a message by (group, from, id).
  const fresh = !msgs.some((x) => sameMessage(x, m));
  if (fresh) {
    const isNew = !store.groups[m.group];
    // Ours from another device is one of ours, at the seq its ticks name
    // (from a group's log: its place there).
    msgs.push(m.from === me.user && !m.event && (m.sentSeq || m.gseq)
      ? { id: m.id, from: m.from, group: m.group, seq: m.sentSeq || m.gseq, ts: m.ts, body: m.body, tick: 'sent' }
      : { id: m.id, from: m.from, group: m.group, seq: m.seq, gseq: m.gseq || undefined, ts: m.ts, body: m.body, event: m.event ?? undefined });
    if (m.event) applyEvent(m.group, m.from, m.event);
    else if (isNew) {
      store.groups[m.group] = { name: '', createdBy: '', members: [], left: false };
      refreshGroup(m.group);
    }
    save();
  }
  // A big group's messages come from its log, with their place there.
  if (m.gseq) sb.ackGroup(m.group, m.gseq);
  else sb.ack(m.seq);
  if (!m.event) typingUntil.delete(key + '\0' + m.from);
  if (fresh && key === open) {
    appendMessage(msgs.at(-1));
    markRead();
  }
  if (key === open) {
    $('peer').textContent = groupName(m.group);
    renderPeerStatus();
    renderComposer();
    if (!$('group-info').hidden) renderGroup(m.group);
  }
  renderContacts();
}

// groupFailed shows why a group operation was refused, in the element
// with id, its code in data-code.
function groupFailed(id, what, e) {
  $(id).dataset.code = e?.code ?? 'failed';
  $(id).textContent = `${what}: ${e?.code === 'unavailable' ? 'groups are not available on this server right now' : e?.serverMessage ?? e?.message ?? e}`;
}

function groupDone(id) {
  $(id).dataset.code = '';
  $(id).textContent = '';
}

const ids = (text) => text.split(/[\s,]+/).filter(Boolean);

$('new-group-toggle').addEventListener('click', () => {
  const f = $('new-group');
  f.hidden = !f.hidden;
  $('new-group-toggle').setAttribute('aria-expanded', String(!f.hidden));
  if (!f.hidden) $('group-id').focus();
});

$('new-group').addEventListener('submit', async (e) => {
  e.preventDefault();
  const group = $('group-id').value.trim();
  const name = $('group-name').value.trim() || group;
  const users = ids($('group-members').value).filter((u) => u !== me.user);
  groupDone('group-error');
  if (!validId(group)) return groupFailed('group-error', 'Not created', { message: 'a group id is 1-64 characters of A-Z a-z 0-9 _ -' });
  const bad = users.find((u) => !validId(u));
  if (bad) return groupFailed('group-error', 'Not created', { message: `"${bad}" is not a user id` });
  $('group-create').disabled = true;
  try {
    setGroup(await sb.group('create', group, { name, users: [...new Set(users)] }));
    $('group-id').value = $('group-name').value = $('group-members').value = '';
    $('new-group').hidden = true;
    $('new-group-toggle').setAttribute('aria-expanded', 'false');
    openChat(groupKey(group));
  } catch (err) {
    groupFailed('group-error', 'Not created', err);
  } finally {
    $('group-create').disabled = false;
  }
});

$('group-info-toggle').addEventListener('click', () => {
  const panel = $('group-info');
  panel.hidden = !panel.hidden;
  $('group-info-toggle').setAttribute('aria-expanded', String(!panel.hidden));
  const group = groupOf(open);
  if (panel.hidden || !group) return;
  groupDone('gi-error');
  renderGroup(group);
  if (!store.groups[group]?.left) refreshGroup(group);
});

// op runs a group operation from the info panel on the open group.
async function op(name, opts = {}) {
  const group = groupOf(open);
  if (!group) return;
  groupDone('gi-error');
  try {
    setGroup(await sb.group(name, group, opts));
    return true;
  } catch (err) {
    groupFailed('gi-error', `Could not ${name}`, err);
    return false;
  } finally {
    renderComposer();
    renderPeerStatus();
  }
}

$('gi-add').addEventListener('submit', async (e) => {
  e.preventDefault();
  const users = ids($('gi-add-users').value);
  if (!users.length) return;
  if (users.some((u) => !validId(u))) return groupFailed('gi-error', 'Could not add', { message: 'user ids are 1-64 characters of A-Z a-z 0-9 _ -' });
  if (await op('add', { users })) $('gi-add-users').value = '';
});

$('gi-rename').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('gi-rename-name').value.trim();
  if (name && (await op('rename', { name }))) $('gi-rename-name').value = '';
});

$('gi-leave').addEventListener('click', () => op('leave'));

// renderGroup fills the info panel of the open group: its members and
// admins, and what this user may do there.
function renderGroup(group) {
  if (groupOf(open) !== group) return;
  $('peer').textContent = groupName(group);
  const g = store.groups[group] ?? { members: [] };
  const admin = !g.left && g.members.some((x) => x.user === me.user && x.admin);
  $('gi-name').textContent = groupName(group);
  $('gi-id').textContent = group;
  $('gi-created').textContent = g.createdBy ? `created by ${who(g.createdBy)}` : '';
  $('gi-count').textContent = `${g.members.length} member${g.members.length === 1 ? '' : 's'}`;
  // The rows are made anew only when what they show changed: this runs on
  // every message of the group while the panel is open, and a button
  // replaced between the press and the release of a click loses it.
  const rows = JSON.stringify([group, me.user, admin, g.members]);
  if (rows !== membersShown) {
    membersShown = rows;
    $('gi-members').replaceChildren(...memberRows(g, admin));
  }
  $('gi-add').hidden = $('gi-rename').hidden = !admin;
  $('gi-leave').hidden = !!g.left;
  renderComposer();
  renderPeerStatus();
}

// memberRows makes the info panel's rows of g's members, with the
// buttons of an admin.
function memberRows(g, admin) {
  return g.members.map((x) => {
    const li = document.createElement('li');
    li.dataset.user = x.user;
    li.dataset.admin = String(x.admin);
    li.append(span('name', x.user === me.user ? `${x.user} (you)` : x.user));
    if (x.admin) li.append(span('role', 'admin'));
    if (admin && x.user !== me.user) {
      li.append(
        button(x.admin ? 'demote' : 'promote', x.admin ? 'Dismiss as admin' : 'Make admin', () => op(x.admin ? 'demote' : 'promote', { users: [x.user] })),
        button('remove', 'Remove', () => op('remove', { users: [x.user] })));
    }
    return li;
  });
}

function button(cls, text, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = cls;
  b.textContent = text;
  b.addEventListener('click', onclick);
  return b;
}

// userColor gives each sender in a group a colour of their own.
function userColor(user) {
  let h = 0;
  for (const c of user) h = (h * 31 + c.codePointAt(0)) % 360;
  return `hsl(${h} 60% 35%)`;
}

// --- rendering ---

function setConn(state) {
  const transport = state === 'connected' ? sb?.transport ?? '' : '';
  $('conn').dataset.state = state;
  $('conn').dataset.transport = transport;
  $('conn').title = transport === 'sse' ? `${state} (HTTP fallback: this network blocks WebSockets)` : state;
}

function banner(text) {
  $('banner').textContent = text;
  $('banner').hidden = !text;
}

// renderContacts lists the groups, then the contacts. While the list
// holds the same conversations in the same order its rows are updated in
// place, not made anew: it is redrawn on every message, and a row replaced
// between the press and the release of a click loses that click.
function renderContacts() {
  const ul = $('contacts');
  const keys = [...Object.keys(store.groups).map(groupKey), ...store.contacts];
  const shown = [...ul.children].map((li) => (li.dataset.group !== undefined ? groupKey(li.dataset.group) : li.dataset.user));
  if (shown.length !== keys.length || shown.some((k, i) => k !== keys[i])) ul.replaceChildren(...keys.map(contactRow));
  keys.forEach((key, i) => fillContactRow(ul.children[i], key));
}

// contactRow makes the row of the conversation with key; fillContactRow
// shows its name, unread count and presence.
function contactRow(key) {
  const li = document.createElement('li');
  const group = groupOf(key);
  if (group) li.dataset.group = group;
  else li.dataset.user = key;
  li.append(group ? span('dot group', '#') : span('dot'), span('name'), span('badge'));
  li.addEventListener('click', () => openChat(key));
  return li;
}

function fillContactRow(li, key) {
  const group = groupOf(key);
  const read = store.read[key] ?? 0;
  const counts = group ? (m) => m.from !== me.user && !m.event : (m) => m.from === key;
  const n = chat(key).filter((m) => counts(m) && m.seq > read).length;
  li.setAttribute('aria-current', String(key === open));
  setText(li.querySelector('.name'), group ? groupName(group) : key);
  setText(li.querySelector('.badge'), n && key !== open ? String(n) : '');
  if (!group) li.querySelector('.dot').classList.toggle('online', !!presence.get(key)?.online);
}

// setText changes an element's text only when it differs, so an
// unchanged element keeps its node.
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function openChat(key) {
  if (key !== open) lastTyping = 0;
  open = key;
  store.open = key;
  save();
  const group = groupOf(key);
  $('chat-head').hidden = !key;
  $('chat-head').dataset.group = group;
  $('empty').hidden = !!key;
  $('peer').textContent = group ? groupName(group) : key;
  $('group-info-toggle').hidden = !group;
  $('attach').hidden = !!group;
  $('group-info').hidden = true;
  $('messages').replaceChildren(...(key ? chat(key).map(messageElement) : []));
  renderComposer();
  scrollDown();
  renderPeerStatus();
  renderContacts();
  markRead();
  if (key && !$('composer').hidden) $('text').focus();
}

// renderComposer shows the composer, or, in a group this user is no
// longer in, why there is none.
function renderComposer() {
  const left = isGroup(open) && !!store.groups[groupOf(open)]?.left;
  $('composer').hidden = !open || left;
  $('left-note').hidden = !left;
}

function appendMessage(m) {
  if (keyOf(m) === open) {
    $('messages').append(messageElement(m));
    scrollDown();
  }
}

function scrollDown() {
  const ol = $('messages');
  ol.scrollTop = ol.scrollHeight;
}

function messageElement(m) {
  const li = document.createElement('li');
  if (m.event) {
    li.className = 'notice';
    li.dataset.id = m.id;
    li.dataset.op = m.event.op;
    li.textContent = noticeText(m);
    li.title = time(m.ts);
    return li;
  }
  const out = m.from === me.user;
  li.className = 'msg ' + (out ? 'out' : 'in');
  li.dataset.id = m.id;
  if (m.group && !out) {
    const from = span('from', m.from);
    from.style.color = userColor(m.from);
    li.append(from);
  }
  if (m.local || m.media) li.append(photo(m));
  const text = typeof m.body === 'string' ? m.body : m.body == null ? '' : JSON.stringify(m.body);
  const meta = span('meta', time(m.ts));
  if (out) {
    li.dataset.tick = m.tick;
    const t = span('tick', GLYPH[m.tick] ?? '');
    t.title = m.tick;
    meta.append(t);
  }
  li.append(meta);
  if (text) li.append(span('text', text));
  if (m.note) li.append(span('note', m.note));
  return li;
}

// photo shows a media message's image: its thumbnail first, then the
// bytes downloaded and checked against the message's sha256.
function photo(m) {
  const img = document.createElement('img');
  img.alt = 'photo';
  const known = m.local ?? (m.media && mediaURLs.get(m.media.key));
  if (known) {
    img.src = known;
    return img;
  }
  if (m.media.thumb) img.src = 'data:image/jpeg;base64,' + m.media.thumb;
  sb.download(m.media).then((blob) => {
    const url = URL.createObjectURL(blob);
    mediaURLs.set(m.media.key, url);
    img.src = url;
    img.dataset.loaded = 'true';
  }, (e) => {
    img.alt = 'the photo could not be loaded: ' + e.message;
    img.dataset.loaded = 'error';
  });
  return img;
}

// typingIn lists who is typing in the conversation with key now.
function typingIn(key) {
  const now = Date.now();
  const who = [];
  for (const [k, until] of typingUntil) {
    const [at, user] = k.split('\0');
    if (until <= now) typingUntil.delete(k);
    else if (at === key) who.push(user);
  }
  return who;
}

function renderPeerStatus() {
  if (!open) return;
  if (isGroup(open)) {
    const g = store.groups[groupOf(open)];
    const who = typingIn(open);
    $('peer-status').textContent = who.length ? `${list(who)} ${who.length === 1 ? 'is' : 'are'} typing…`
      : g?.left ? 'you are no longer a member'
        : (g?.members ?? []).map((x) => (x.user === me.user ? 'you' : x.user)).join(', ');
    return;
  }
  let s = '';
  const p = presence.get(open);
  if (typingIn(open).includes(open)) s = 'typing…';
  else if (p?.online) s = 'online';
  else if (p?.lastSeen) s = 'last seen ' + when(p.lastSeen);
  $('peer-status').textContent = s;
}

function span(cls, text = '') {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}

// time is a message's time of day; '' for one not yet stored by the server.
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');

function when(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? 'today at ' + time(ms) : d.toLocaleDateString() + ' at ' + time(ms);
}

main();
