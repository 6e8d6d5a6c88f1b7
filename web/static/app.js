// The chat page: sign in, 1:1 conversations with ticks, typing, presence,
// photos and settings, on the JavaScript SDK. Each device keeps its own
// history in localStorage, as a phone keeps its chats: the server hands a
// message to a device once, and the page acks it only once it is stored.
import { Client, newId, validId, ConnectError, CloseError } from '/sdk/switchboard.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'switchboard.token';
const KEEP = 500; // messages kept per conversation
const TICKS = ['pending', 'sent', 'delivered', 'read'];
const GLYPH = { pending: '', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' }; // pending: a clock, in CSS
const TYPING_EVERY = 3000; // ms between our typing frames while typing
const TYPING_SHOWN = 5000; // ms theirs stays on screen

let sb = null; // the SDK client
let me = null; // {user, device}
let store = null; // this device's contacts and history (load, save)
let devTokens = false; // the server hands out development tokens
let open = ''; // the user whose conversation is on screen
const presence = new Map(); // user -> {online, lastSeen, hidden}
const typingUntil = new Map(); // user -> ms until which "typing…" shows
const mediaURLs = new Map(); // media key -> object URL of the verified bytes
let lastTyping = 0;
let settings = null; // this user's settings, once read

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
  store = { contacts: s.contacts ?? [], chats: s.chats ?? {}, read: s.read ?? {}, open: s.open ?? '' };
  store.key = key;
}

function save() {
  const { key, ...s } = store;
  for (const peer of Object.keys(s.chats)) s.chats[peer] = s.chats[peer].slice(-KEEP);
  try {
    localStorage.setItem(key, JSON.stringify(s, (k, v) => (k === 'local' ? undefined : v)));
  } catch (e) {
    banner('This browser could not store the chat: ' + e.message);
  }
}

const chat = (peer) => (store.chats[peer] ??= []);

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
    await start(saved).catch((e) => showSignIn(e.message));
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

async function start(token) {
  const c = claims(token);
  me = { user: c.sub, device: c.dev };
  let current = token;
  sb = new Client({
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
  sb.on('close', ({ error }) => {
    setConn('closed');
    if (error instanceof CloseError) {
      banner(error.replaced ? 'This device signed in somewhere else, so this page stopped. Reload to use it here.'
        : `The server ended the session (${error.code} ${error.closeName}).`);
    }
  });
  load();
  try {
    await sb.start();
  } catch (e) {
    sb = null;
    throw new Error(e instanceof ConnectError && e.status === 401
      ? `The server refused the token (${e.code}).` : `Could not connect: ${e.message}`);
  }
  localStorage.setItem(TOKEN_KEY, current);
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me').textContent = `${me.user} · ${me.device}`;
  setConn('connected');
  if (store.contacts.length) sb.subscribePresence(...store.contacts);
  sb.settings({}).then(showSettings, () => {});
  // Sends from an earlier visit: confirmed ones still waiting for ticks,
  // and those never confirmed, sent again under their ids (in order).
  for (const peer of Object.keys(store.chats)) {
    for (const m of chat(peer)) {
      if (m.from !== me.user) continue;
      if (m.seq && m.tick !== 'read') sb.trackSent(peer, m.id, m.seq);
      if (m.tick === 'pending') {
        if (m.media || m.body !== null) deliver(m);
        else tick(m, 'failed', 'the upload did not finish');
      }
    }
  }
  renderContacts();
  openChat(store.open && store.contacts.includes(store.open) ? store.open : '');
}

// --- events from the SDK ---

function onMessage(m) {
  const list = chat(m.from);
  if (!list.some((x) => x.from === m.from && x.id === m.id)) {
    list.push({ id: m.id, from: m.from, to: me.user, seq: m.seq, ts: m.ts, body: m.body, media: m.media });
    save();
    addContact(m.from);
  }
  sb.ack(m.seq); // stored on this device: now it counts as delivered
  typingUntil.delete(m.from);
  if (m.from === open) {
    appendMessage(list.at(-1));
    renderPeerStatus();
    markRead();
  }
  renderContacts();
}

function onReceipt(r) {
  const m = chat(r.by).find((x) => x.from === me.user && x.id === r.id);
  if (m) tick(m, r.status);
}

function onTyping(t) {
  typingUntil.set(t.from, Date.now() + TYPING_SHOWN);
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
  const el = m.to === open && document.querySelector(`#messages li[data-id="${CSS.escape(m.id)}"]`);
  if (!el) return;
  el.dataset.tick = m.tick;
  const t = el.querySelector('.tick');
  t.textContent = GLYPH[m.tick];
  t.title = m.tick;
  if (m.note) el.append(span('note', m.note));
}

// markRead sends a read receipt for what is on screen: the open
// conversation's newest message, while the page is visible. A read covers
// every earlier message of that user's.
function markRead() {
  if (!open || !sb?.connected || document.visibilityState !== 'visible') return;
  const last = chat(open).findLast((m) => m.from === open);
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
    const s = m.media ? await sb.sendMedia(m.to, m.id, m.media, m.body) : await sb.send(m.to, m.id, m.body);
    m.seq = s.seq;
    tick(m, 'sent');
  } catch (e) {
    if (!(e instanceof CloseError) && e.name !== 'ClosedError') tick(m, 'failed', e.message);
  }
}

function compose(extra) {
  const m = { id: newId(), from: me.user, to: open, ts: Date.now(), body: null, tick: 'pending', ...extra };
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
  sb.typing(open);
});

$('file').addEventListener('change', async () => {
  const file = $('file').files[0];
  $('file').value = '';
  if (!open || !file) return;
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

function renderContacts() {
  const ul = $('contacts');
  ul.replaceChildren(...store.contacts.map((user) => {
    const li = document.createElement('li');
    li.dataset.user = user;
    li.setAttribute('aria-current', String(user === open));
    const dot = span('dot');
    if (presence.get(user)?.online) dot.classList.add('online');
    const read = store.read[user] ?? 0;
    const unread = chat(user).filter((m) => m.from === user && m.seq > read).length;
    li.append(dot, span('name', user), span('badge', unread && user !== open ? String(unread) : ''));
    li.addEventListener('click', () => openChat(user));
    return li;
  }));
}

function openChat(user) {
  open = user;
  store.open = user;
  save();
  $('chat-head').hidden = $('composer').hidden = !user;
  $('empty').hidden = !!user;
  $('peer').textContent = user;
  $('messages').replaceChildren(...(user ? chat(user).map(messageElement) : []));
  scrollDown();
  renderPeerStatus();
  renderContacts();
  markRead();
  if (user) $('text').focus();
}

function appendMessage(m) {
  if (m.from === open || m.to === open) {
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
  const out = m.from === me.user;
  li.className = 'msg ' + (out ? 'out' : 'in');
  li.dataset.id = m.id;
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

function renderPeerStatus() {
  if (!open) return;
  let s = '';
  const p = presence.get(open);
  if ((typingUntil.get(open) ?? 0) > Date.now()) s = 'typing…';
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

const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function when(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? 'today at ' + time(ms) : d.toLocaleDateString() + ' at ' + time(ms);
}

main();
