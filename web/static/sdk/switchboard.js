/**
 * switchboard.js: the JavaScript SDK for Switchboard's WebSocket protocol
 * (switchboard.v1.json, protocol/PROTOCOL.md). A plain ES module with no
 * dependencies: import it from a gateway (/sdk/switchboard.js) or copy it.
 * It behaves as the Go SDK (package client) does.
 *
 *   import { connect, newId } from '/sdk/switchboard.js';
 *
 *   const sb = await connect({ token: () => fetchMyToken() });
 *   sb.on('message', (m) => { show(m); sb.ack(m.seq); });   // ack once stored
 *   sb.on('receipt', (r) => tick(r.id, r.status));          // 'delivered', 'read'
 *   const sent = await sb.send('bob', newId(), 'hello');    // resolves on "sent"
 *   sb.read(lastShownSeq);                                  // when it is on screen
 *
 * Connecting. `connect(options)` resolves once the gateway's welcome
 * arrives and rejects if that first connection fails (a ConnectError,
 * whose `status` and `code` say why when the gateway could tell: 401
 * bad_token, 403 bad_origin, ...). Options:
 *   url         ws(s)://host/v1/ws; default: this page's host.
 *   token       a JWT, or a function (may be async) that returns one; it is
 *               asked again for every connect, so an expiring token can be
 *               refreshed. Browsers send it as ?access_token=.
 *   httpURL     base of the media API; default: url's origin over http(s).
 *   minBackoff, maxBackoff   reconnect waits in ms (100, 5000).
 *   transport   how frames travel (default: fallbackTransport(): a
 *               WebSocket, or the HTTP fallback where one cannot get
 *               through); see below.
 *   store       the name of an IndexedDB database to keep this device's
 *               state in across page loads (or a Store from openStore());
 *               see Local store below. One per user and device, say
 *               'switchboard.alice.laptop'.
 * Or make `new Client(options)`, add listeners with on(), then await
 * start(), which connect() does: no event can come before its listener.
 * After that the client reconnects by itself, after a random wait up to a
 * bound that starts at minBackoff and doubles up to maxBackoff ("full
 * jitter"), reset by each connect; a browser coming back online cuts the
 * wait short. Unlike the Go SDK it keeps no read timeout: a browser
 * answers the gateway's pings itself, out of the page's sight, so a quiet
 * connection is not a dead one. A close whose code says not to
 * reconnect (1000, 1003, 1007, 4002 replaced: CLOSES) stops it for good:
 * 'close' is emitted with a CloseError, and pending and later calls
 * reject with it.
 *
 * Sending. `send(to, id, body, {signal})` stores any JSON value but null
 * for user `to` under the message id `id` (newId() makes one) and
 * resolves with {id, seq, ts, dup, tick} once it is stored ("sent"); tick
 * is 'delivered' or 'read' when that tick came before the "sent" (show it
 * rather than "sent": its 'receipt' event is emitted before the promise's
 * continuation runs), else absent. It rejects
 * with a ServerError for an error resending cannot fix (bad_media, ...).
 * Sends are written at once, many in flight, and stored in call order:
 *   - one answered with a retryable error (store_failed, rate_limited,
 *     internal, unavailable, shutting_down, or a code this SDK does not
 *     know) is resent under the same id after a wait (the server's
 *     retry_ms, or a backoff), alone, and no newer send is written until
 *     it is stored; then the others follow in order;
 *   - after a reconnect every unconfirmed send is written again, in order,
 *     under its id, so the server stores it once;
 *   - aborting `signal` withdraws a send (when every call waiting for that
 *     id has aborted): it is written no more and the ones behind it go
 *     ahead. A frame already written may still be stored; send again with
 *     the same id to learn whether it was (dup) or to store it now.
 * `sendMedia(to, id, media, body)` sends a media message: media is what
 * upload() returns (plus an optional base64 `thumb`), body an optional
 * caption. `sendGroup(group, id, body, {signal})` stores a message in a
 * group's log, for its members, in the same order and outbox as send();
 * its seq is its place in the group's log, and its receipts are the
 * group's: 'delivered' once every other member has it, 'read' once every
 * one read it (not_member and unknown_group reject it).
 *
 * Groups. `group(op, group, {name, users, history, timeout})` asks for a
 * group operation (create, rename, history, add, remove, promote, demote,
 * leave, info) and resolves with the group as it then is: {id, name,
 * createdBy, created, members: [{user, admin}], history}, members in the
 * order they joined; history is how many of the group's latest messages
 * a member added gets (0 to 100; 0, a new group's, none), set by
 * `group('history', group, {history: n})` (admins).
 * It rejects with a ServerError (not_admin, unknown_group, ...). One whose
 * connection is lost before its answer, or answered with a retryable code
 * (unavailable, rate_limited), is asked again under the same request id
 * until it is answered or `timeout` ms have passed since the call: the
 * server applies a change once however often it is asked, and answers a
 * repeat as the first ask was, so a lost answer never turns into
 * already_member or group_exists. One whose frame is larger than the
 * gateway takes rejects with a RangeError, unwritten. `groups({timeout})`
 * resolves with this user's groups, [{group, name, since}], by id.
 *
 * Receiving (events, with `on(type, fn)`, which returns a function that
 * removes the listener):
 *   'message'  {id, from, device, seq, ts, body, media, group, event, to,
 *              sentSeq}: to is set on a message this user sent from
 *              another device (from is this user, device that device):
 *              whom it went to; sentSeq is where it is stored, the seq its
 *              receipts name, and its ticks come as 'receipt' events here
 *              too. Like the others:
 *              each message once; group is set on a group's messages, and
 *              a group's system message has event ({op, users, name,
 *              promoted}) instead of a body; redeliveries after a reconnect
 *              and second stored copies are dropped by (from, id), (group,
 *              from, id) or, for system messages, (group, id), and acked
 *              here when needed. Call
 *              ack(seq) once the app has stored it: then the sender gets
 *              "delivered". Call read(seq) when it is on screen: the sender
 *              gets "read" for it and every earlier message to this user.
 *   'receipt'  {id, status, group, by, device, ts, seq}: one event per message this
 *              client sent, each tick once, never going back. The gateway's
 *              receipts are positions (a range of seqs); the client turns
 *              them into messages by the seqs of its own sends. trackSent()
 *              adds sends the app remembers from an earlier page load.
 *              Receipts are acked here. For a group message group is set
 *              and by is the member whose move completed the tick.
 *   'read_sync' {peer, group, device, seq}: this user read peer's
 *              messages up to seq on another device: mark the chat read up
 *              to there (a watermark; ignore a lower one). With group set
 *              (and peer ''), the group was read up to seq, the seq of a
 *              group message as this device got it. Acked here.
 *   'typing'   {from, device, group}: show it for about 5 s; group is
 *              set when from is typing in that group.
 *   'presence' {user, online, lastSeen, hidden} for users followed with
 *              subscribePresence(...users), or for the other members of a
 *              group followed with subscribePresenceGroup(group), followed
 *              again after reconnects.
 *   'connect' {session}, 'disconnect' {code, reason}, 'close' {error}.
 *   'reconnecting' {delay}: the next connect is tried in delay ms (the
 *              waits grow while connects fail, or while the local store
 *              fails what each connection brings).
 *   'error'    {code, message, seq, id}: error frames that answer no call
 *              (an ack or read the gateway refused, say); code
 *              'local_store' (with error, a StoreError) when the local
 *              store failed a write.
 * Other calls: typing(to), typingGroup(group), settings(change) resolving with the user's
 * settings, status(seq, {to}) resolving with {user: {delivered, read}} for a
 * message this user sent (to, its recipient, for one sent to another
 * region when the client does not remember it), groupStatus(group, seq) resolving with
 * {members: {user: {delivered, read}}, allDelivered, allRead} for one it
 * sent in a group (seq from its sent), close(). A status the gateway
 * refuses for now (rate_limited, unavailable) is asked again after its
 * retry_ms, or a backoff, up to five times in a row, while a call waits
 * for it; calls asking about one message at once share the answer.
 *
 * Media (over HTTP, with the same token): upload(blob, {mime}) asks for an
 * upload ticket, uploads the bytes as the ticket says (PUT to the embedded
 * store, or a POST form to S3) and resolves with {key, mime, size, sha256}
 * to pass to sendMedia; downloadURL(key) resolves with the gateway's
 * {url, expires_ms}; download(media) fetches the object and resolves with
 * a Blob once its sha256 matches the message's (else it rejects).
 *
 * Local store. With options.store the client remembers across page
 * loads, as the Go SDK's store (package client/localstore) does, in
 * IndexedDB: the conversations, with users and in groups, and their
 * messages both ways (this user's own sent from other devices included,
 * filed under the peer or the group; a group's system messages with
 * their event), the outbox of sends not yet confirmed by "sent" (to
 * users and to groups, in one order), each sent message's ticks (a
 * group message's are the group's), each conversation's read watermark,
 * which received messages this device acked and the highest acked seq
 * (its cursor hint). What the client writes, and when:
 *   - send, sendMedia, sendGroup: the send goes into the store's outbox
 *     (a durable transaction) before its frame can be written; sends
 *     enter the outbox in call order. A write that fails (the quota is full, say)
 *     rejects the send with a StoreError and nothing is sent.
 *   - "sent": the send leaves the outbox, with its seq, before it
 *     resolves; refused for good or withdrawn, it is dropped.
 *   - the next page load: the outbox is loaded in order and written first
 *     on the first connection, under the same ids, so the server stores
 *     each once (a send it stored already is answered dup); nobody waits
 *     for them, and a send with the same id joins one. Sent messages not
 *     yet read are tracked again, so their receipts are events.
 *   - 'message': stored before the event; one an earlier page stored is
 *     dropped and acked (it is in the history).
 *   - 'receipt' and 'read_sync' (a group's too): stored before they are
 *     events and acked.
 *   - ack(seq) and read(seq): the acked flag and cursor hint, the read
 *     watermark (their write errors are not reported: the server keeps
 *     the real ones); ackGroup and readGroup, for a group read from its
 *     log, the acked flags up to the place and the group's read place
 *     (readGSeq), which a read_sync with gseq raises too. Such a group's
 *     messages are kept with their place (gseq, seq 0); one this user
 *     sent from another device as their own at that place (seq, what
 *     its receipts name).
 * A write that fails while a frame is handled is an 'error' event with
 * code 'local_store' (and the StoreError as error), and ends the
 * connection unanswered: the frame comes again after the reconnect. The
 * app reads the history from client.store (messages(conv, limit),
 * groupMessages(group, limit), conversations(), ...) once ready()
 * resolves, which it may do before start(). The schema is versioned
 * (STORE_VERSION, the database's version) with migrations run in its
 * upgrade transaction; ready() and start() reject with a StoreError when
 * the database was written by a newer SDK (code newer_version: it is
 * left as it is), when another tab holding an older version blocks the
 * upgrade (blocked), or when another client has the store open (locked:
 * each open store holds a Web Lock named after it, waited for up to a
 * second, so a page being reloaded hands it over). A client that opened
 * the store by name closes it on close().
 *
 * Transports. A transport is {name, open(url, token, handlers)}: open
 * resolves with a connection {name, send(text), close(code, reason)} once
 * it can carry frames (or rejects), then calls handlers.frame(text) for
 * each frame from the gateway and handlers.close(code, reason) once when
 * it ends. The client makes one connection per connect and knows nothing
 * else about it. Three come with the SDK: webSocketTransport;
 * sseTransport(), the gateway's HTTP fallback for networks that block
 * WebSockets (Server-Sent Events from /v1/sse, the client's frames POSTed
 * to /v1/sse/<session>, the same frames, close codes and rules); and
 * fallbackTransport({openTimeout}), the default, which uses a WebSocket
 * and falls back by itself: when a WebSocket fails before it opens (or
 * does not open within openTimeout, 6000 ms) and the gateway still
 * answers plain HTTP without refusing the token, the network stopped the
 * WebSocket, so it opens the event stream instead, and keeps to it. The
 * client's `transport` says which one the current connection uses.
 *
 * All of it runs on the page's one thread: no call blocks, and listeners
 * run inside the client's frame handling, so they should not take long.
 */

/** The WebSocket subprotocol this SDK speaks. */
export const SUBPROTOCOL = 'switchboard.v1.json';
/** The gateway's WebSocket path. */
export const WS_PATH = '/v1/ws';

/**
 * Error codes: true when resending the same frame can succeed. A code not
 * listed is treated as `internal` (retryable), as PROTOCOL.md asks. Kept in
 * step with package protocol's registry by web's tests.
 */
export const ERRORS = Object.freeze({
  bad_json: false,
  unknown_type: false,
  bad_field: false,
  bad_id: false,
  rate_limited: true,
  store_failed: true,
  unknown_seq: false,
  shutting_down: true,
  internal: true,
  too_many: false,
  unavailable: true,
  bad_media: false,
  unknown_group: false,
  group_exists: false,
  not_member: false,
  not_admin: false,
  group_full: false,
  already_member: false,
  unknown_member: false,
});

/**
 * Close codes: [name, reconnect]. A code not listed means reconnect. Kept
 * in step with package protocol's registry by web's tests.
 */
export const CLOSES = Object.freeze({
  1000: ['normal', false],
  1001: ['going_away', true],
  1003: ['unsupported_data', false],
  1005: ['no_status', true],
  1006: ['abnormal', true],
  1007: ['invalid_data', false],
  1008: ['policy', true],
  1009: ['too_big', true],
  1011: ['internal', true],
  1012: ['service_restart', true],
  4001: ['slow', true],
  4002: ['replaced', false],
});

const ID = /^[A-Za-z0-9_-]{1,64}$/;
/** validId reports whether s is a user, device or message id. */
export const validId = (s) => typeof s === 'string' && ID.test(s);

let idCounter = 0;
/** newId returns a fresh message id: random, then a counter. */
export function newId() {
  const r = new Uint8Array(9);
  crypto.getRandomValues(r);
  let s = '';
  for (const b of r) s += 'abcdefghijklmnopqrstuvwxyz234567'[b & 31];
  return s + '-' + (++idCounter).toString(36);
}

/** The client has stopped: close() was called. */
export class ClosedError extends Error {
  constructor() { super('switchboard: client closed'); this.name = 'ClosedError'; }
}

/** The gateway closed with a code after which a client must not reconnect. */
export class CloseError extends Error {
  constructor(code, name, reason) {
    super(`switchboard: the server closed the connection with ${code} ${name} (${reason}); not reconnecting`);
    this.name = 'CloseError';
    this.code = code;
    this.closeName = name;
    this.reason = reason;
    /** True for 4002: the same device connected elsewhere. */
    this.replaced = code === 4002;
  }
}

/** An error frame that answered a call, with a code resending cannot fix. */
export class ServerError extends Error {
  constructor(code, message) {
    super(`switchboard: server: ${code}: ${message}`);
    this.name = 'ServerError';
    this.code = code;
    this.serverMessage = message;
  }
}

// LostAnswer ends the wait of a group operation whose connection was lost
// before its answer; group() asks again on the next connection.
class LostAnswer extends Error {
  constructor() {
    super('switchboard: the connection was lost before the answer');
    this.name = 'LostAnswer';
  }
}

/** The first connection could not be made. */
export class ConnectError extends Error {
  constructor(message, status = 0, code = '') {
    super(message);
    this.name = 'ConnectError';
    /** The HTTP status the gateway refused with, 0 if unknown. */
    this.status = status;
    /** Its code (no_token, bad_token, token_expired, bad_origin, ...), '' if unknown. */
    this.code = code;
  }
}

/** An HTTP request of the media API failed. */
export class HTTPError extends Error {
  constructor(status, code, message) {
    super(`switchboard: HTTP ${status} ${code}: ${message}`);
    this.name = 'HTTPError';
    this.status = status;
    this.code = code;
  }
}

/** The WebSocket transport: the token goes in the query, as browsers must. */
export const webSocketTransport = Object.freeze({
  name: 'websocket',
  open(url, token, handlers) { return openWebSocket(url, token, handlers, 0); },
});

// openWebSocket opens a WebSocket; with a timeout (ms), one that has not
// opened by then is given up and rejects.
function openWebSocket(url, token, handlers, timeout) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    u.searchParams.set('access_token', token);
    let ws;
    try {
      ws = new WebSocket(u.href, SUBPROTOCOL);
    } catch (e) {
      reject(e);
      return;
    }
    let open = false;
    let timer = 0;
    if (timeout > 0) {
      timer = setTimeout(() => {
        ws.onclose = null;
        ws.onmessage = null;
        ws.close();
        reject(new ConnectError(`switchboard: the WebSocket to ${url} did not open within ${timeout} ms`));
      }, timeout);
    }
    ws.onopen = () => {
      clearTimeout(timer);
      open = true;
      resolve({
        name: 'websocket',
        send(text) { if (ws.readyState === WebSocket.OPEN) ws.send(text); },
        close(code, reason) { ws.close(code, reason); },
      });
    };
    ws.onmessage = (e) => { if (typeof e.data === 'string') handlers.frame(e.data); };
    ws.onclose = (e) => {
      clearTimeout(timer);
      if (open) handlers.close(e.code, e.reason);
      else reject(new ConnectError(`switchboard: could not connect to ${url} (${e.code})`));
    };
  });
}

/** The HTTP fallback's path: the event stream, and its frames' POSTs under it. */
export const SSE_PATH = '/v1/sse';

// The fallback's POSTs: at most this many frames in one body, and how long
// a POST the gateway refused waits for the stream's close event (which
// says why) before the connection is ended here.
const MAX_BATCH = 100;
const POST_REFUSED_WAIT = 5000;
const utf8 = new TextEncoder();

// sseBase is the event stream's URL for a gateway's WebSocket URL.
function sseBase(url) {
  const u = new URL(url);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  // /v1/ws → /v1/sse, under whatever prefix the gateway is served.
  u.pathname = /\/ws\/?$/.test(u.pathname) ? u.pathname.replace(/\/ws\/?$/, '/sse') : SSE_PATH;
  u.search = '';
  u.hash = '';
  return u;
}

/**
 * sseTransport makes a transport over the gateway's HTTP fallback
 * (PROTOCOL.md): Server-Sent Events for the gateway's frames, and POSTs
 * of the client's, one at a time, each carrying what queued meanwhile.
 * It keeps the last event id it saw and tells the gateway on its next
 * stream (last_event_id), which resumes from the device's cursor anyway.
 */
export function sseTransport() {
  let lastEventId = '';
  return {
    name: 'sse',
    open(url, token, handlers) {
      return new Promise((resolve, reject) => {
        const base = sseBase(url);
        const u = new URL(base);
        u.searchParams.set('access_token', token);
        if (lastEventId) u.searchParams.set('last_event_id', lastEventId);
        let es;
        try {
          es = new EventSource(u.href);
        } catch (e) {
          reject(e);
          return;
        }
        let opened = false;
        let ended = false;
        let session = '';
        let maxFrame = 65536;
        let queue = [];
        let posting = false;
        let refused = false;
        let refusedTimer = 0;
        // end ends the connection once: the gateway's close event, a lost
        // stream, a refused POST or the client's close.
        const end = (code, reason) => {
          if (ended) return;
          ended = true;
          es.close();
          clearTimeout(refusedTimer);
          queue = [];
          if (opened) setTimeout(() => handlers.close(code, reason));
          else reject(new ConnectError(`switchboard: could not open the event stream at ${base.href} (${reason})`));
        };
        // post writes the queued frames, one POST at a time, so they reach
        // the session in order.
        const post = async () => {
          if (posting || ended || refused || !session || queue.length === 0) return;
          let n = 0;
          let size = -1;
          for (; n < queue.length && n < MAX_BATCH; n++) {
            const b = utf8.encode(queue[n]).length + 1;
            if (n > 0 && size + b > maxFrame) break;
            size += b;
          }
          const body = queue.splice(0, n).join('\n');
          posting = true;
          let status = 0;
          try {
            const res = await fetch(base.href + '/' + encodeURIComponent(session), {
              method: 'POST',
              headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'text/plain;charset=UTF-8' },
              body,
              cache: 'no-store',
            });
            status = res.status;
          } catch {
            // Unreachable: the stream goes the same way, or the wait below ends it.
          }
          posting = false;
          if (ended) return;
          if (status === 204) {
            post();
            return;
          }
          // Not every frame reached the session. When it ended, its close
          // event says why and ends this connection; what was queued goes
          // again after the reconnect (sends are rewritten, acks come again
          // with the redeliveries).
          refused = true;
          queue = [];
          refusedTimer = setTimeout(() => end(status === 413 ? 1009 : status === 400 ? 1007 : 1006,
            `the gateway answered a POST with ${status || 'no answer'}`), POST_REFUSED_WAIT);
        };
        const conn = {
          name: 'sse',
          send(text) {
            if (ended || refused) return;
            queue.push(text);
            post();
          },
          close(code, reason) { end(code, reason); },
        };
        es.onopen = () => {
          opened = true;
          resolve(conn);
        };
        es.onmessage = (e) => {
          if (ended) return;
          if (e.lastEventId) lastEventId = e.lastEventId;
          if (!session) {
            try {
              const f = JSON.parse(e.data);
              if (f?.type === 'welcome' && typeof f.session === 'string') {
                session = f.session;
                if (f.max_frame > 0) maxFrame = f.max_frame;
              }
            } catch {
              // Not a frame; the client ignores it too.
            }
          }
          handlers.frame(e.data);
          post();
        };
        es.addEventListener('close', (e) => {
          let f = {};
          try {
            f = JSON.parse(e.data);
          } catch {
            // A close event without its frame: still the end.
          }
          end(Number.isInteger(f.code) ? f.code : 1006, typeof f.reason === 'string' ? f.reason : '');
        });
        // EventSource would reconnect by itself; the client does that,
        // with its backoff and a fresh token.
        es.onerror = () => end(1006, 'the event stream was lost');
      });
    },
  };
}

/**
 * fallbackTransport makes the default transport: a WebSocket, and the
 * HTTP fallback when a WebSocket cannot get through. When a WebSocket
 * fails before it opens (refused, dropped, or not open within
 * openTimeout ms), the gateway's WebSocket URL is asked over plain HTTP
 * with the token: if the gateway answers that it would take it (426
 * upgrade_required), a WebSocket is tried once more; if that one fails too
 * while the gateway still answers, something on the way stops
 * WebSockets, so the event stream is tried. Once a stream has opened the
 * client stays on it (a new page tries a WebSocket again). The current
 * transport's name is Client.transport.
 */
export function fallbackTransport({ openTimeout = 6000 } = {}) {
  const sse = sseTransport();
  let onSSE = false;
  return {
    name: 'fallback',
    async open(url, token, handlers) {
      if (!onSSE) {
        // Twice: a WebSocket refused while the gateway was down (a
        // restart) and a gateway that answers the probe a moment later
        // look like a network that stops WebSockets. A second WebSocket,
        // made after the gateway answered, tells the two apart.
        for (let tries = 2; ; tries--) {
          try {
            return await openWebSocket(url, token, handlers, openTimeout);
          } catch (e) {
            if (!(await reachable(url, token))) throw e;
            if (tries === 1) break;
          }
        }
      }
      const conn = await sse.open(url, token, handlers);
      onSSE = true;
      return conn;
    },
  };
}

// probe asks the gateway's WebSocket URL over plain HTTP what it would
// answer this token: {status, code}, or null when there is no answer the
// page may read (unreachable, or another origin's). The token goes in the
// query, as for a WebSocket, so the request needs no CORS preflight. The
// gateway answers 426 upgrade_required when it would take the token.
async function probe(url, token) {
  try {
    const u = new URL(url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.searchParams.set('access_token', token);
    const res = await fetch(u.href, { cache: 'no-store' });
    const b = await res.json().catch(() => ({}));
    return { status: res.status, code: b.code ?? '', message: b.message ?? '' };
  } catch {
    return null;
  }
}

// reachable says whether the gateway itself answers plain HTTP and would
// take the token there: 426 upgrade_required, and nothing else (a proxy's
// 502 while the gateway restarts is not the gateway).
async function reachable(url, token) {
  const p = await probe(url, token);
  return p !== null && p.status === 426;
}

/** connect makes a Client and resolves once its first connection is up. */
export async function connect(options) {
  const c = new Client(options);
  await c.start();
  return c;
}

const WELCOME_TIMEOUT = 15000;
// REDELIVERED are the frames a connection's end brings again on the next.
const REDELIVERED = new Set(['msg', 'receipt', 'read_sync']);
const MAX_SEEN = 100000;

/** Client is one device's connection to Switchboard. */
export class Client {
  #opts;
  #listeners = new Map();
  #link = null; // the current connection: {conn, session}
  #stopped = null; // why the client stopped, once it has
  #outbox = new Outbox();
  #maxFrame = 0; // the largest frame the gateway takes (its welcome's max_frame), 0 until one came
  #self = ''; // this user, as the welcome names them
  #seen = new Lru(MAX_SEEN); // from + '\0' + id -> seq of messages given to the app
  #acked = new Lru(MAX_SEEN); // seqs the app acked
  // Per group read from its log, the highest place the app acked: one
  // that comes again at or below it is acked here, one above it the app
  // still holds (docs/GROUP-LOG.md).
  #groupAcked = new Map();
  #ticks = new Ticks();
  #following = new Set();
  #followingGroups = new Set(); // groups whose members' presence is followed
  #unsentReads = []; // reads made with no connection, for the next one
  #readsOut = new Map(); // reads written lately: seq -> times refused with a retryable code
  // Status questions awaiting their answers: statusKey(group, seq) ->
  // {frame, waiting: [{resolve, reject}], refused, again}; see askStatus.
  #statusWait = new Map();
  #retryTimers = new Set(); // waits before writing a refused read or status again
  #groupWait = new Map(); // request id (a group operation's, a settings change's) -> {resolve, reject}
  #settingsChain = Promise.resolve(); // settings changes, one at a time
  #settingsAsked = ''; // the id of the last settings change asked
  #wake = null; // ends the current reconnect wait early
  #onOnline = () => this.#wake?.();
  #stats = { connects: 0, duplicatesDropped: 0 };
  // The local store (options.store), once open; see the top of the file.
  #store = null;
  #ownsStore = false; // opened here by name: closed here too
  #ready = Promise.resolve(); // the store open and its outbox loaded
  #keeping = new Map(); // id -> send being written to the store's outbox
  #keepChain = Promise.resolve(); // sends enter the outbox in call order
  #chain = Promise.resolve(); // with a store: frames are handled one after another

  constructor(options = {}) {
    const o = { minBackoff: 100, maxBackoff: 5000, ...options };
    if (!o.transport) o.transport = fallbackTransport();
    if (!o.url) {
      if (typeof location === 'undefined') throw new TypeError('switchboard: options.url is required');
      o.url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + WS_PATH;
    }
    if (!o.httpURL) o.httpURL = new URL(o.url).origin.replace(/^ws/, 'http');
    if (o.token === undefined) throw new TypeError('switchboard: options.token is required');
    if (o.store != null && typeof o.store !== 'string' && !(o.store instanceof Store)) {
      throw new TypeError('switchboard: options.store is a database name or a Store');
    }
    this.#opts = o;
    if (o.store != null) {
      this.#ready = this.#openStore(o.store);
      this.#ready.catch(() => {}); // reported by ready(), start() and every send
      this.#keepChain = this.#ready.catch(() => {});
    }
  }

  // openStore opens the local store and loads its outbox and the ticks of
  // its sent messages not yet read.
  async #openStore(s) {
    const st = typeof s === 'string' ? await openStore(s) : s;
    this.#ownsStore = typeof s === 'string';
    if (this.#stopped) {
      if (this.#ownsStore) st.close();
      throw this.#stopped;
    }
    this.#store = st;
    for (const p of await st.outbox()) {
      if (this.#outbox.byId.has(p.id)) continue;
      const o = outgoing(p.id, p.to, p.group, sendFrame(p.id, p.to, p.group, p.body, p.media));
      o.done.catch(() => {}); // nobody may wait for it: a send with its id joins it
      this.#outbox.add(o);
    }
    for (const m of await st.unread()) {
      this.#ticks.sent(m.group ? '#' + m.group : m.conv, m.id, m.seq);
      if (m.status === 'delivered') this.#ticks.apply({ status: 'delivered', by: m.conv, group: m.group, from_seq: m.seq, to_seq: m.seq });
    }
  }

  /** on adds a listener for an event type and returns a function that removes it. */
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.#listeners.get(type)?.delete(fn);
  }

  #emit(type, detail) {
    for (const fn of this.#listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch (e) {
        setTimeout(() => { throw e; }); // reported, without breaking the client
      }
    }
  }

  /** The current session id, or '' while disconnected. */
  get session() { return this.#link?.session ?? ''; }
  /** Whether a connection is up. */
  get connected() { return this.#link !== null; }
  /** How the current connection travels ('websocket', 'sse'), or '' while disconnected. */
  get transport() { return this.#link?.conn?.name ?? ''; }
  /** What the client did behind the app's back: {connects, duplicatesDropped}. */
  get stats() { return { ...this.#stats }; }
  /** Why the client stopped (a CloseError or ClosedError), or null. */
  get error() { return this.#stopped; }
  /** The local store (a Store) once open, or null: the app reads its conversations and history there. */
  get store() { return this.#store; }

  /**
   * ready resolves once the local store (options.store) is open and its
   * outbox loaded, at once without one; it rejects with a StoreError.
   * The app may read the store's history then, before start().
   */
  ready() { return this.#ready; }

  /**
   * start makes the first connection; connect() calls it. It rejects with
   * a StoreError when the local store cannot be opened, and with a
   * ConnectError when the connection fails; after a ConnectError it may
   * be called again.
   */
  async start() {
    await this.#ready;
    if (this.#stopped) throw this.#stopped;
    let link;
    try {
      link = await this.#dial();
    } catch (e) {
      throw await this.#explain(e);
    }
    if (this.#stopped) {
      link.conn.close(1000, '');
      throw this.#stopped;
    }
    this.#attach(link);
    globalThis.addEventListener?.('online', this.#onOnline);
    this.#run(link);
  }

  async #token() {
    const t = this.#opts.token;
    return typeof t === 'function' ? await t() : t;
  }

  // dial makes one connection and waits for its welcome frame.
  async #dial() {
    const token = await this.#token();
    let welcomed, failed, closed;
    const welcome = new Promise((res, rej) => { welcomed = res; failed = rej; });
    welcome.catch(() => {}); // a close after the wait gave up is no one's news
    const ended = new Promise((res) => { closed = res; });
    const link = { conn: null, session: '', ended, live: false };
    const conn = await this.#opts.transport.open(this.#opts.url, token, {
      frame: (text) => {
        let f;
        try {
          f = JSON.parse(text);
        } catch {
          return;
        }
        if (!f || typeof f !== 'object') return;
        if (link.live) this.#take(link, f);
        else if (f.type === 'welcome') welcomed(f);
      },
      close: (code, reason) => {
        failed(new ConnectError(`switchboard: closed before the welcome (${code} ${reason})`));
        closed({ code, reason });
      },
    });
    link.conn = conn;
    let timer;
    const late = new Promise((_, rej) => {
      timer = setTimeout(() => rej(new ConnectError('switchboard: no welcome from the gateway')), WELCOME_TIMEOUT);
    });
    try {
      const w = await Promise.race([welcome, late]);
      link.session = w.session;
      if (w.max_frame > 0) this.#maxFrame = w.max_frame;
      this.#self = typeof w.user === 'string' ? w.user : '';
      return link;
    } catch (e) {
      conn.close(1000, '');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // explain turns a failed first connect into a ConnectError that says
  // why when it can: a browser cannot read a refused handshake's status,
  // so the same URL is asked over plain HTTP, where the gateway answers
  // with the same refusal.
  async #explain(err) {
    if (err instanceof ConnectError && err.status) return err;
    try {
      const p = await probe(this.#opts.url, await this.#token());
      if (p && (p.status === 401 || p.status === 403 || p.status === 503)) {
        return new ConnectError(`switchboard: the gateway refused the connection: ${p.status} ${p.code} ${p.message}`.trim(),
          p.status, p.code);
      }
    } catch {
      // No token to ask with.
    }
    return err instanceof ConnectError ? err : new ConnectError(`switchboard: ${err?.message ?? err}`);
  }

  // run waits for each connection to end and makes the next, until the
  // client stops.
  async #run(link) {
    const b = new Backoff(this.#opts.minBackoff, this.#opts.maxBackoff);
    for (;;) {
      const { code, reason } = await link.ended;
      this.#detach(link);
      this.#emit('disconnect', { code, reason });
      if (this.#stopped) return;
      const info = Object.hasOwn(CLOSES, code) ? CLOSES[code] : null;
      if (info && !info[1]) {
        this.#shutdown(new CloseError(code, info[0], reason));
        return;
      }
      // A connection this client ended because its store failed: the next
      // may well fail the same way (a full disk, a store closed under it),
      // so the waits keep growing across connects, not starting over.
      const local = link.storeFailed;
      for (;;) {
        const delay = b.next();
        this.#emit('reconnecting', { delay });
        await this.#sleep(delay);
        if (this.#stopped) return;
        try {
          link = await this.#dial();
        } catch {
          continue;
        }
        if (this.#stopped) {
          link.conn.close(1000, '');
          return;
        }
        if (!local) b.reset();
        this.#attach(link);
        break;
      }
    }
  }

  // sleep waits ms, or less if woken (close, or the browser back online).
  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  // attach makes link current and writes every unconfirmed send again, in
  // order, then follows the users followed before.
  #attach(link) {
    link.live = true;
    link.delivered = new Set(); // seqs given to the app on this link, not yet acked by it
    this.#link = link;
    this.#stats.connects++;
    // A send made before this gateway said its max_frame (offline, or
    // kept in the store), or under a larger one, is refused here: written,
    // it would close the connection (1009) and go first again every time.
    for (const o of [...this.#outbox.order]) {
      if (this.#maxFrame > 0 && utf8.encode(o.frame).length > this.#maxFrame) {
        this.#outbox.remove(o); // rewriteAll writes the rest: no flush here
        this.#storeDrop(o);
        o.reject(tooLarge(this.#maxFrame));
      }
    }
    for (const o of this.#outbox.rewriteAll()) this.#write(o.frame);
    for (const seq of this.#unsentReads.splice(0)) this.#writeRead(seq, 0);
    // Status questions still waiting: their answers, or their writes
    // again after a refusal for now, may have been lost with the link.
    for (const a of this.#statusWait.values()) if (a.waiting.length) this.#write(a.waiting[0].frame);
    const users = [...this.#following].sort();
    for (let i = 0; i < users.length; i += 256) {
      this.#write(JSON.stringify({ type: 'presence_sub', users: users.slice(i, i + 256) }));
    }
    for (const group of [...this.#followingGroups].sort()) this.#write({ type: 'presence_sub', group });
    this.#emit('connect', { session: link.session });
  }

  #detach(link) {
    link.live = false;
    if (this.#link === link) {
      this.#link = null;
      // Their answers went with the connection.
      const ws = [...this.#groupWait.values()];
      this.#groupWait.clear();
      for (const w of ws) w.reject(new LostAnswer());
    }
  }

  // write sends a frame on the current connection, if any: one that cannot
  // go now is covered by the resend after the next connect, or was not
  // worth keeping (typing, say).
  #write(frame) {
    if (this.#link) this.#link.conn.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  // writeOn sends a frame answering one that came on link (an ack), only
  // on that connection: after it ended, the frame comes again and is
  // answered then.
  #writeOn(link, frame) {
    if (this.#link === link) link.conn.send(JSON.stringify(frame));
  }

  // take handles a frame from link. With a local store, frames are
  // handled one after another, each once the store writes it asks for are
  // done; one whose write fails ends the connection (see storeFailed), and
  // the frames of that connection still waiting that come again on the
  // next one (messages, receipts, read syncs) are dropped: handled, a
  // message after the one that failed would reach the app (and the
  // store's history) ahead of it. Answers (sent, status, errors) are
  // still taken.
  #take(link, f) {
    if (!this.#store) {
      this.#handle(link, f);
      return;
    }
    this.#chain = this.#chain
      .then(() => (link.storeFailed && REDELIVERED.has(f.type) ? undefined : this.#handle(link, f)))
      .catch((e) => this.#storeFailed(link, e));
  }

  // storeFailed reports a store write that failed while handling a frame
  // from link, and ends that connection unanswered: the frame (a message,
  // a receipt) comes again on the next one, and is stored then.
  #storeFailed(link, e) {
    link.storeFailed = true;
    const err = storeError(e, this.#store?.name ?? '');
    this.#emit('error', { code: 'local_store', message: err.message, seq: 0, id: '', error: err });
    if (this.#link === link) link.conn.close(4000, 'local store failed');
  }

  // handle handles one frame. It awaits nothing without a store, so it
  // then runs to its end at once.
  async #handle(link, f) {
    switch (f.type) {
      case 'sent':
        await this.#onSent(f);
        break;
      case 'msg': {
        if (f.gseq) {
          await this.#onLogMsg(link, f);
          break;
        }
        const key = msgKey(f);
        const first = this.#seen.get(key);
        if (first !== undefined) {
          this.#stats.duplicatesDropped++;
          // Already given to the app. A second stored copy (a resend after
          // the server's duplicate window) has a seq the app never saw:
          // ack it here. The same seq again is a redelivery: if the app
          // acked it, that ack was lost with the old connection, so ack
          // again; otherwise the app still holds it and will ack it.
          if (first !== f.seq || this.#acked.has(f.seq)) this.#writeOn(link, { type: 'ack', seq: f.seq });
          else (link.delivered ??= new Set()).add(f.seq); // the app's ack goes on this link
          return;
        }
        this.#seen.set(key, f.seq);
        if (this.#store && (await this.#storeMsg(f, key))) {
          // Stored by an earlier page: given to the app then, and in its
          // history now. Acked, as the store holds it.
          this.#stats.duplicatesDropped++;
          this.#acked.set(String(f.seq), 0);
          this.#store.acked(f.seq).catch(() => {});
          this.#writeOn(link, { type: 'ack', seq: f.seq });
          return;
        }
        if (this.#acked.has(f.seq)) {
          // Acked by the app before it came (what it kept across a
          // reload, say): acked here, as a redelivery would be. The app
          // gets it all the same; its ack of it writes nothing.
          this.#writeOn(link, { type: 'ack', seq: f.seq });
        } else {
          (link.delivered ??= new Set()).add(f.seq);
        }
        this.#emit('message', {
          id: f.id, from: f.from, device: f.device, seq: f.seq, ts: f.ts,
          body: f.body === undefined ? null : f.body, media: f.media ?? null,
          group: f.group ?? '', event: f.event ?? null,
          to: f.to ?? '', sentSeq: f.sent_seq ?? 0,
        });
        if (ownCopy(f) && f.sent_seq) {
          // Sent by this user from another device: its ticks are ours too
          // (a group's kept apart, as for a group send of ours).
          const early = this.#ticks.sent(f.group ? '#' + f.group : f.to, f.id, f.sent_seq);
          if (early && this.#store) {
            if (f.group) await this.#store.applyGroupReceipt(f.group, early, f.sent_seq, f.sent_seq);
            else await this.#store.applyReceipt(f.to, early, f.sent_seq, f.sent_seq);
          }
          if (early) this.#emit('receipt', { id: f.id, status: early, group: f.group ?? '', by: f.to ?? '', device: '', ts: Date.now(), seq: f.sent_seq });
        }
        break;
      }
      case 'read_sync':
        // One with gseq is of a group read from its log: a place in it.
        if (this.#store && f.gseq) await this.#store.setGroupReadPlace(f.group, f.gseq);
        else if (this.#store && f.group) await this.#store.setGroupReadWatermark(f.group, f.to_seq);
        else if (this.#store && f.peer) await this.#store.setReadWatermark(f.peer, f.to_seq);
        this.#emit('read_sync', f.gseq
          ? { peer: '', group: f.group, device: f.device, seq: 0, gseq: f.gseq, ts: f.ts }
          : { peer: f.peer ?? '', group: f.group ?? '', device: f.device, seq: f.to_seq, ts: f.ts });
        this.#writeOn(link, { type: 'ack', seq: f.seq });
        break;
      case 'receipt':
        // Stored first: a receipt whose write fails comes again, and its
        // ticks are news then.
        if (this.#store && f.group) await this.#store.applyGroupReceipt(f.group, f.status, f.from_seq ?? 0, f.to_seq);
        else if (this.#store) await this.#store.applyReceipt(f.by, f.status, f.from_seq ?? 0, f.to_seq);
        for (const m of this.#ticks.apply(f)) {
          this.#emit('receipt', { id: m.id, status: f.status, group: f.group ?? '', by: f.by, device: f.device ?? '', ts: f.ts, seq: m.seq });
        }
        this.#writeOn(link, { type: 'ack', seq: f.seq });
        break;
      case 'typing':
        this.#emit('typing', { from: f.from, device: f.device, group: f.group ?? '' });
        break;
      case 'presence':
        this.#emit('presence', { user: f.user, online: !!f.online, lastSeen: f.last_seen ?? 0, hidden: !!f.hidden });
        break;
      case 'settings': {
        // A gateway from before settings frames had ids answers without
        // one: the change asked (one at a time) is the one it answers.
        const id = f.id ?? this.#settingsAsked;
        const w = this.#groupWait.get(id);
        this.#groupWait.delete(id);
        w?.resolve({ readReceipts: !!f.read_receipts, lastSeenPrivacy: f.last_seen_privacy ?? '', contacts: f.contacts ?? [] });
        break;
      }
      case 'status':
        this.#answerStatus(statusKey(f.group, f.seq), f.group
          ? { members: f.recipients ?? {}, allDelivered: !!f.all_delivered, allRead: !!f.all_read }
          : f.recipients ?? {});
        break;
      case 'group': {
        const w = this.#groupWait.get(f.id);
        this.#groupWait.delete(f.id);
        if (f.op === 'list') w?.resolve((f.groups ?? []).map((g) => ({ group: g.group, name: g.name ?? '', since: g.since ?? 0 })));
        else w?.resolve({ id: f.group, name: f.name ?? '', createdBy: f.created_by ?? '', created: f.created ?? 0, members: f.members ?? [], history: f.history ?? 0 });
        break;
      }
      case 'error':
        this.#onError(f);
        break;
    }
  }

  // storeMsg stores a message new to this page, and reports whether an
  // earlier page stored it already. On an error the message is forgotten,
  // so its redelivery is tried again.
  async #storeMsg(f, key) {
    const m = { group: f.group ?? '', device: f.device, id: f.id, ts: f.ts, body: f.body ?? null, media: f.media ?? null };
    try {
      const seen = ownCopy(f)
        ? await this.#store.receivedOwn({ ...m, conv: f.to ?? '', seq: f.sent_seq ?? 0 })
        : await this.#store.received({ ...m, conv: f.from, from: f.from, seq: f.seq, event: f.event ?? null });
      return seen.dup;
    } catch (e) {
      this.#seen.delete(key);
      throw e;
    }
  }

  async #onSent(f) {
    const o = this.#outbox.byId.get(f.id);
    if (!o) return;
    // A group message's seq is its place in the group's log: its ticks
    // are the group's, kept apart ('#' starts no user id).
    const early = this.#ticks.sent(o.group ? '#' + o.group : o.to, f.id, f.seq);
    // Out of the store's outbox before the send resolves. A failure
    // leaves it there: after a reload it is resent, and answered dup.
    if (this.#store) await this.#store.confirm(f.id, f.seq, f.ts, early, o.group).catch(() => {});
    // A tick that came first is in the result too: an app that shows
    // "sent" when the promise resolves shows it instead, where the
    // 'receipt' event below, emitted before the app's continuation
    // runs, would be overwritten by "sent".
    const ok = { id: f.id, seq: f.seq, ts: f.ts, dup: !!f.dup };
    if (early) ok.tick = early;
    this.#resolve(o, { ok });
    // Its tick came before its "sent" did.
    if (early) {
      const device = o.group ? '' : this.#ticks.earlyDevice(o.to, early);
      this.#emit('receipt', { id: f.id, status: early, group: o.group, by: o.to, device, ts: Date.now(), seq: f.seq });
    }
  }

  #onError(f) {
    if (f.id && this.#groupWait.has(f.id)) {
      const w = this.#groupWait.get(f.id);
      this.#groupWait.delete(f.id);
      const e = new ServerError(f.code, f.message);
      if (f.retry_ms > 0) e.retryMs = f.retry_ms;
      w.reject(e);
      return;
    }
    if (f.id) {
      const o = this.#outbox.byId.get(f.id);
      if (o && retryable(f.code)) {
        // Resend it, and hold newer sends until it is stored: a newer send
        // stored first would break the sender's order.
        if (this.#outbox.failed(o)) {
          const delay = f.retry_ms > 0 ? f.retry_ms : retryWait(o.retries, this.#opts.minBackoff, this.#opts.maxBackoff);
          this.#scheduleProbe(delay);
        }
        return;
      }
      if (o) {
        this.#storeDrop(o);
        this.#resolve(o, { err: new ServerError(f.code, f.message) });
        return;
      }
    }
    if (f.seq && this.#onRefusal(f)) return;
    this.#emit('error', { code: f.code, message: f.message, seq: f.seq ?? 0, id: f.id ?? '' });
  }

  // onRefusal hands an error naming a seq to what waits on it: a status
  // question, or a read to write again. The frame says which kind of frame
  // it refuses (for, and group for a group's status); from a gateway that
  // does not, any status waiting on the seq takes it first.
  #onRefusal(f) {
    switch (f.for) {
      case 'read':
        return this.#retryRead(f);
      case 'status':
        return this.#statusRefused(f);
      case 'ack':
        return false;
    }
    return this.#statusRefused(f) || this.#retryRead(f);
  }

  // statusRefused hands error frame f to the status questions it refuses,
  // and reports whether there were any. f names one (for 'status', and
  // group for a group's); from a gateway that names none, it refuses the
  // status of a message to a user at f.seq, if one is asked, else those
  // of group messages at f.seq in any group. A refusal for now (a
  // retryable code: rate_limited, unavailable) writes the question again
  // after f's retry_ms, or a backoff, and its calls go on waiting, up to
  // MAX_RETRIES times in a row; any other refusal, or one past those,
  // rejects them.
  #statusRefused(f) {
    let keys = [statusKey(f.group, f.seq)];
    if (!f.for && !this.#statusWait.has(keys[0])) keys = [...this.#statusWait.keys()].filter((k) => k.endsWith(' ' + f.seq));
    let found = false;
    for (const k of keys) {
      const a = this.#statusWait.get(k);
      if (!a) continue;
      found = true;
      // Another call's frame refused too: the write again already due
      // answers for it.
      if (retryable(f.code) && a.again) continue;
      if (retryable(f.code) && a.refused < MAX_RETRIES) {
        a.refused++;
        a.again = true;
        this.#retryLater(f, a.refused, () => {
          a.again = false;
          // Not if answered, or given up by every call, meanwhile.
          if (this.#statusWait.get(k) === a && a.waiting.length) this.#write(a.waiting[0].frame);
        });
        continue;
      }
      this.#statusWait.delete(k);
      a.waiting.forEach((w) => w.reject(new ServerError(f.code, f.message)));
    }
    return found;
  }

  // retryLater calls again, which writes a refused frame again, after
  // error frame f's retry_ms, or the backoff of the frame's n-th
  // retryable refusal in a row. close clears the wait.
  #retryLater(f, n, again) {
    const ms = f.retry_ms > 0 ? f.retry_ms : retryWait(n, this.#opts.minBackoff, this.#opts.maxBackoff);
    const t = setTimeout(() => {
      this.#retryTimers.delete(t);
      if (!this.#stopped) again();
    }, ms);
    this.#retryTimers.add(t);
  }

  // scheduleProbe lets the send holding the others back be written again
  // after ms. A later call, or the end of the hold, makes it moot.
  #scheduleProbe(ms) {
    const ob = this.#outbox;
    const gen = ++ob.probeGen;
    ob.probeDue = false;
    setTimeout(() => {
      if (this.#stopped) return;
      const due = ob.probeGen === gen && ob.holder !== null;
      ob.probeDue ||= due;
      if (due) this.#flush();
    }, ms);
  }

  // resolve ends send o and writes what its end lets go out.
  #resolve(o, r) {
    const ob = this.#outbox;
    if (ob.byId.get(o.id) !== o) return;
    const released = ob.remove(o);
    if (r.err) o.reject(r.err);
    else o.resolve(r.ok);
    // Held with the probe due, and something older than the holder just
    // answered: the holder may go now. Or sends wait for the window.
    if (released || (ob.holder && ob.probeDue) || ob.waiting()) this.#flush();
  }

  // flush writes the sends the outbox lets go out now, in order.
  #flush() {
    if (!this.#link) return;
    for (const o of this.#outbox.writable()) this.#write(o.frame);
  }

  /**
   * send stores body (any JSON value but null) for user `to` under message
   * id `id`, and resolves on "sent" with {id, seq, ts, dup}. A message
   * larger than the gateway takes (its max_frame, 64 KiB by default) is
   * rejected with a RangeError, and never written: at once once the
   * gateway has said its max_frame, else when the client connects.
   */
  send(to, id, body, { signal } = {}) {
    if (body === null || body === undefined) return Promise.reject(new TypeError('switchboard: a body is required (any JSON value but null)'));
    return this.#send(to, id, body, null, signal);
  }

  /**
   * sendMedia sends a media message: media is {key, mime, size, sha256,
   * thumb?} of an upload of this user's; body (optional) is a caption.
   */
  sendMedia(to, id, media, body = null, { signal } = {}) {
    if (!media || typeof media.key !== 'string') return Promise.reject(new TypeError('switchboard: media.key is required'));
    const m = { key: media.key, mime: media.mime, size: media.size, sha256: media.sha256 };
    if (media.thumb) m.thumb = media.thumb;
    return this.#send(to, id, body, m, signal);
  }

  /**
   * sendGroup stores body (any JSON value but null) in group's log under
   * message id `id`, for its members, and resolves on "sent" as send()
   * does; it shares send()'s order.
   */
  sendGroup(group, id, body, { signal } = {}) {
    if (body === null || body === undefined) return Promise.reject(new TypeError('switchboard: a body is required (any JSON value but null)'));
    return this.#send('', id, body, null, signal, group);
  }

  #send(to, id, body, media, signal, group = '') {
    if (!(group ? validId(group) : validId(to)) || !validId(id)) {
      return Promise.reject(new TypeError('switchboard: to (or group) and id must be 1-64 characters of A-Z a-z 0-9 _ -'));
    }
    let frame;
    try {
      frame = sendFrame(id, to, group, body, media);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#maxFrame > 0 && utf8.encode(frame).length > this.#maxFrame) {
      // The gateway would close the connection (1009), and the send would
      // be written first on every connection after: nothing newer would go.
      // Before the first welcome the limit is not known: attach checks.
      return Promise.reject(tooLarge(this.#maxFrame));
    }
    if (signal?.aborted) return Promise.reject(signal.reason); // given up before it started: write nothing
    if (this.#stopped) return Promise.reject(this.#stopped);
    const ob = this.#outbox;
    let o = ob.byId.get(id) ?? this.#keeping.get(id);
    const fresh = !o;
    if (fresh) {
      o = outgoing(id, to, group, frame);
      if (this.#opts.store != null) this.#keep(o, { id, to, group, body: body ?? null, media: media ?? null });
      else ob.add(o);
    }
    o.waiters++;
    if (fresh && this.#opts.store == null) this.#flush();
    if (!signal) return o.done;
    return new Promise((resolve, reject) => {
      const abort = () => {
        if (this.#keeping.get(o.id) === o) { // not in the outbox yet: keep sees no waiter left
          o.waiters--;
          reject(signal.reason);
          return;
        }
        // Joined a send the store restored while it opened: withdrawn
        // from that one, which holds this caller's count.
        const w = o.joined ?? o;
        if (ob.byId.get(w.id) !== w) return; // answered meanwhile: that answer wins
        w.waiters--;
        if (w.waiters === 0) {
          const released = ob.remove(w);
          this.#storeDrop(w);
          if (released || ob.waiting()) this.#flush();
        }
        reject(signal.reason);
      };
      signal.addEventListener('abort', abort, { once: true });
      o.done.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort));
    });
  }

  // keep writes send o (rec, to a user or in a group) to the store's
  // outbox, then puts it in the outbox, one after another, so sends
  // enter both in call order. A send whose write fails is rejected with
  // the StoreError and never written to the wire.
  #keep(o, rec) {
    this.#keeping.set(o.id, o);
    this.#keepChain = this.#keepChain.then(async () => {
      let err = this.#stopped;
      if (!err) {
        try {
          await this.#ready;
          await this.#store.addOutgoing(rec);
        } catch (e) {
          err = storeError(e, this.#store?.name ?? String(this.#opts.store));
        }
      }
      this.#keeping.delete(o.id);
      if (err) {
        o.reject(err);
        return;
      }
      const restored = this.#outbox.byId.get(o.id);
      if (restored) {
        // Sent again while the store was opening, which restored it: its
        // callers wait for the restored one, in its place in the order.
        restored.waiters += o.waiters;
        o.joined = restored;
        restored.done.then(o.resolve, o.reject);
        return;
      }
      if (o.waiters === 0) { // withdrawn while it was written
        this.#storeDrop(o);
        o.reject(new DOMException('the send was withdrawn', 'AbortError'));
        return;
      }
      if (this.#stopped) {
        o.reject(this.#stopped); // kept: the next client sends it
        return;
      }
      if (this.#maxFrame > 0 && utf8.encode(o.frame).length > this.#maxFrame) {
        // Made before the welcome said the limit, and kept after attach
        // looked: refused here, as attach would have.
        this.#storeDrop(o);
        o.reject(tooLarge(this.#maxFrame));
        return;
      }
      this.#outbox.add(o);
      this.#flush();
    });
  }

  // storeDrop takes send o out of the store's outbox.
  #storeDrop(o) {
    if (this.#store) this.#store.drop(o.id, o.group).catch(() => {});
  }

  /**
   * ack tells the gateway this device has stored the message at seq. An
   * ack of a message given on an earlier connection is written when the
   * message comes again on this one (the SDK acks it then by itself):
   * written before, the gateway would answer unknown_seq.
   */
  ack(seq) {
    seq = Number(seq);
    this.#acked.set(String(seq), 0);
    this.#store?.acked(seq).catch(() => {});
    const link = this.#link;
    if (link?.delivered?.delete(seq)) this.#writeOn(link, { type: 'ack', seq });
  }

  // onLogMsg takes a message of a group read from its log (gseq, no seq):
  // once to the app. One that comes again was given to the app before;
  // if the app acked it, that ack was lost with a connection, so it is
  // acked again here. Not kept in the store yet.
  async #onLogMsg(link, f) {
    if (!validId(f.group)) return;
    const handed = (link.handed ??= new Map());
    handed.set(f.group, Math.max(handed.get(f.group) ?? 0, f.gseq));
    const key = msgKey(f);
    if (this.#seen.get(key) !== undefined) {
      this.#stats.duplicatesDropped++;
      if (f.gseq <= (this.#groupAcked.get(f.group) ?? 0)) this.#writeOn(link, { type: 'ack', group: f.group, gseq: f.gseq });
      return;
    }
    this.#seen.set(key, 0);
    // Sent by this user from another device: its receipts name its place
    // in the log, and the store keeps it as one of its own there.
    const own = f.from === this.#self && !f.event;
    if (this.#store && (await this.#storeLogMsg(f, key, own))) {
      // Stored by an earlier page: given to the app then. Acked, with
      // everything of the group before it (the log hands a device its
      // messages in order, each stored before the app had it).
      this.#stats.duplicatesDropped++;
      this.#groupAcked.set(f.group, Math.max(this.#groupAcked.get(f.group) ?? 0, f.gseq));
      this.#store.ackedGroup(f.group, f.gseq).catch(() => {});
      this.#writeOn(link, { type: 'ack', group: f.group, gseq: f.gseq });
      return;
    }
    this.#emit('message', {
      id: f.id, from: f.from, device: f.device, seq: 0, gseq: f.gseq, ts: f.ts,
      body: f.body === undefined ? null : f.body, media: f.media ?? null,
      group: f.group, event: f.event ?? null, to: '', sentSeq: 0,
    });
    if (own) {
      const early = this.#ticks.sent('#' + f.group, f.id, f.gseq);
      if (early && this.#store) await this.#store.applyGroupReceipt(f.group, early, f.gseq, f.gseq);
      if (early) this.#emit('receipt', { id: f.id, status: early, group: f.group, by: '', device: '', ts: Date.now(), seq: f.gseq });
    }
  }

  // storeLogMsg is storeMsg for a message of a group read from its log:
  // an incoming one kept with its place there, an own one (sent from
  // another device) as this user's at that place.
  async #storeLogMsg(f, key, own) {
    const m = { group: f.group, device: f.device, id: f.id, ts: f.ts, body: f.body ?? null, media: f.media ?? null };
    try {
      const seen = own
        ? await this.#store.receivedOwn({ ...m, seq: f.gseq })
        : await this.#store.received({ ...m, from: f.from, seq: 0, gseq: f.gseq, event: f.event ?? null });
      return seen.dup;
    } catch (e) {
      this.#seen.delete(key);
      throw e;
    }
  }

  /**
   * ackGroup tells the gateway this device has every message of group, a
   * group read from its log, up to gseq (a message's gseq) that this
   * connection gave the app. Made for messages an earlier connection
   * gave, it is written when they come again (the SDK acks them then).
   */
  ackGroup(group, gseq) {
    gseq = Number(gseq);
    this.#groupAcked.set(group, Math.max(this.#groupAcked.get(group) ?? 0, gseq));
    this.#store?.ackedGroup(group, gseq).catch(() => {});
    const link = this.#link;
    if (link && gseq <= (link.handed?.get(group) ?? 0)) this.#writeOn(link, { type: 'ack', group, gseq });
  }

  /** readGroup tells the senders of group, a group read from its log, that this user read it up to gseq; with no connection it is dropped (the next read covers it). */
  readGroup(group, gseq) {
    this.#store?.setGroupReadPlace(group, Number(gseq)).catch(() => {});
    if (this.#link) this.#writeOn(this.#link, { type: 'read', group, gseq: Number(gseq) });
  }

  /** read tells the sender of the message at seq that it (and every earlier one to this user) was read; made with no connection, it is written on the next one. */
  read(seq) {
    this.#store?.markRead(seq).catch(() => {});
    this.#writeRead(seq, 0);
  }

  // writeRead writes the read of seq, refused `retries` times so far with
  // a retryable code. With no connection it is written after the resends
  // on the next one (a read is a position, so a repeat is harmless; the
  // oldest go past 256).
  #writeRead(seq, retries) {
    if (this.#link) {
      this.#readsOut.delete(seq);
      this.#readsOut.set(seq, retries);
      if (this.#readsOut.size > 256) this.#readsOut.delete(this.#readsOut.keys().next().value);
      this.#write({ type: 'read', seq });
      return;
    }
    this.#unsentReads.push(seq);
    if (this.#unsentReads.length > 256) this.#unsentReads.shift();
  }

  // retryRead writes again, after the wait f names or a backoff, a read
  // that error frame f refused with a retryable code (rate_limited,
  // unavailable), up to MAX_RETRIES times, and reports whether it
  // will. An error with a seq and a retryable code that answers no status
  // question can only be a read's (acks are refused unknown_seq).
  #retryRead(f) {
    if (!f.seq || !retryable(f.code)) return false;
    const n = this.#readsOut.get(f.seq);
    if (n === undefined) return false;
    this.#readsOut.delete(f.seq);
    if (n >= MAX_RETRIES) return false;
    this.#retryLater(f, n + 1, () => this.#writeRead(f.seq, n + 1));
    return true;
  }

  /** typing tells user `to`'s online devices that this user is typing; repeat every ~3 s while typing. */
  typing(to) {
    if (!validId(to)) throw new TypeError('switchboard: bad user id');
    this.#write({ type: 'typing', to });
  }

  /** typingGroup tells the online devices of group's other members that this user is typing there. */
  typingGroup(group) {
    if (!validId(group)) throw new TypeError('switchboard: bad group id');
    this.#write({ type: 'typing', group });
  }

  /**
   * group asks for group operation op on group (with name for create and
   * rename, history for history, users for create, add, remove, promote
   * and demote) and resolves
   * with the group as it then is. It waits for a connection, asks again
   * under the same id after a lost connection or a retryable refusal, and
   * rejects with a ServerError on any other refusal, or once timeout ms
   * have passed.
   */
  async group(op, group, { name, users, history, timeout = 10000 } = {}) {
    if (!validId(group)) throw new TypeError('switchboard: bad group id');
    if (users !== undefined && users.length > 0) checkUsers(users);
    const f = { type: 'group', op, group };
    if (name !== undefined) f.name = name;
    if (users !== undefined) f.users = users;
    if (history !== undefined) f.history = history;
    return this.#ask(f, timeout);
  }

  /**
   * groups resolves with this user's groups, by id: [{group, name, since}],
   * since being the place in the group's log where the user joined. What
   * a device added later shows before any group says anything. Asked like
   * group()'s operations.
   */
  async groups({ timeout = 10000 } = {}) {
    return this.#ask({ type: 'group', op: 'list' }, timeout);
  }

  // ask writes request frame f under an id of its own and resolves with
  // its answer: it waits for a connection, asks again under the same id
  // after a lost connection or a retryable refusal, and rejects with a
  // ServerError on any other refusal, or once timeout ms have passed.
  async #ask(f, timeout) {
    const id = f.id ?? 'q' + newId();
    f.id = id;
    // Written, a frame past the gateway's max_frame would close the
    // connection (1009) and go again on every new one.
    const size = utf8.encode(JSON.stringify(f)).length;
    if (size > (this.#maxFrame || 65536)) throw tooLarge(this.#maxFrame || 65536);
    const deadline = Date.now() + timeout;
    // late is what the call rejects with once the deadline passes: the
    // last retryable refusal, if one came, else "no answer in time".
    let late = null;
    const overdue = () => late ?? new Error('switchboard: no answer in time');
    for (let n = 1; ; n++) {
      if (!this.#link) {
        // Reconnecting: wait for a connection, but not past the deadline.
        let timer;
        const expired = new Promise((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now()), 'expired'); });
        const why = await Promise.race([this.#connected().then(() => 'connected'), expired]).finally(() => clearTimeout(timer));
        if (why === 'expired') throw overdue();
      }
      const left = deadline - Date.now();
      if (left <= 0) throw overdue();
      try {
        return await this.#await(left, (w) => {
          this.#groupWait.set(id, w);
          w.id = id;
          this.#write(f);
        }, (w) => { this.#groupWait.delete(w.id); });
      } catch (e) {
        if (e instanceof LostAnswer) continue; // asked again on the next connection
        if (!(e instanceof ServerError) || !retryable(e.code)) throw e;
        late = e;
        const wait = Math.min(e.retryMs > 0 ? e.retryMs : retryWait(n, this.#opts.minBackoff, this.#opts.maxBackoff), deadline - Date.now());
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** subscribePresence follows users' presence: their state now, then each change, across reconnects. */
  subscribePresence(...users) {
    checkUsers(users);
    for (const u of users) this.#following.add(u);
    this.#write({ type: 'presence_sub', users });
  }

  /** unsubscribePresence stops following users. */
  unsubscribePresence(...users) {
    checkUsers(users);
    for (const u of users) this.#following.delete(u);
    this.#write({ type: 'presence_unsub', users });
  }

  /**
   * subscribePresenceGroup follows the presence of every other member of
   * group with one frame: their state now, then each change, as
   * 'presence' events. It is sent again after each reconnect, so members
   * who joined meanwhile are followed then (call it again to follow them
   * at once). Refusals (unknown_group, not_member, too_many) are 'error'
   * events.
   */
  subscribePresenceGroup(group) {
    if (!validId(group)) throw new TypeError('switchboard: bad group id');
    this.#followingGroups.add(group);
    this.#write({ type: 'presence_sub', group });
  }

  /** unsubscribePresenceGroup stops following group's current members, and following it after reconnects. */
  unsubscribePresenceGroup(group) {
    if (!validId(group)) throw new TypeError('switchboard: bad group id');
    this.#followingGroups.delete(group);
    this.#write({ type: 'presence_unsub', group });
  }

  /**
   * trackSent remembers a message this user sent to `to`, stored at seq, in
   * an earlier page load, so receipts for it become events again.
   */
  trackSent(to, id, seq) {
    this.#ticks.sent(to, id, seq);
  }

  /**
   * settings changes this user's settings ({readReceipts, lastSeenPrivacy,
   * contacts}: what is left out stays; {} just reads them) and resolves
   * with all of them. Calls take turns; each is asked like group()'s
   * operations, under an id its answer and refusals carry.
   */
  settings(change = {}, { timeout = 10000 } = {}) {
    const f = { type: 'settings', id: 'q' + newId() };
    if (change.readReceipts !== undefined) f.read_receipts = !!change.readReceipts;
    if (change.lastSeenPrivacy) f.last_seen_privacy = change.lastSeenPrivacy;
    if (change.contacts) f.contacts = change.contacts;
    // One change at a time, in the order of the calls: one asked again
    // (refused for now, its connection lost) must not land after a later
    // one.
    const run = () => {
      this.#settingsAsked = f.id;
      return this.#ask(f, timeout);
    };
    const p = this.#settingsChain.then(run, run);
    this.#settingsChain = p.catch(() => {});
    return p;
  }

  /**
   * status resolves with each recipient's ticks, {bob: {delivered, read}}, for
   * the message this user sent at seq. A message to a user homed in another
   * region (seq 2^52 or more) is asked about with its recipient, which the
   * client names when it remembers the message (sent from here, or seen from
   * another of this user's devices), or `to` names.
   */
  status(seq, { timeout = 10000, to = '' } = {}) {
    if (!to && seq >= OUTBOX_SEQ_FLOOR) to = this.#ticks.recipientOf(seq);
    if (to && !validId(to)) return Promise.reject(new TypeError('switchboard: to must be 1-64 characters of A-Z a-z 0-9 _ -'));
    // Not among the messages whose ticks it follows (one already read,
    // from an earlier page load): the local store, if any, knows it.
    const named = to || seq < OUTBOX_SEQ_FLOOR || !this.#store ? Promise.resolve(to)
      : this.#store.recipientOf(seq).catch(() => '');
    return named.then((to) => this.#connected().then(() =>
      this.#askStatus(statusKey('', seq), to ? { type: 'status', seq, to } : { type: 'status', seq }, timeout)));
  }

  /**
   * groupStatus resolves with {members: {bob: {delivered, read}}, allDelivered,
   * allRead} for the message this user sent in group at seq (its place in
   * the group's log); anyone else's rejects with unknown_seq.
   */
  groupStatus(group, seq, { timeout = 10000 } = {}) {
    if (!validId(group)) return Promise.reject(new TypeError('switchboard: group must be 1-64 characters of A-Z a-z 0-9 _ -'));
    return this.#connected().then(() => this.#askStatus(statusKey(group, seq), { type: 'status', group, seq }, timeout));
  }

  // askStatus writes frame, status question k, and resolves with its
  // answer, or rejects after timeout ms or when the client stops. Each
  // call writes its frame; calls asking k at once share one answer, or
  // one refusal for good, and what a refusal for now, or a new
  // connection, writes again is the frame of the oldest call still
  // waiting (calls about one seq may name different recipients).
  #askStatus(k, frame, timeout) {
    return this.#await(timeout, (w) => {
      let a = this.#statusWait.get(k);
      if (!a) this.#statusWait.set(k, (a = { waiting: [], refused: 0, again: false }));
      w.frame = frame;
      a.waiting.push(w);
      this.#write(frame);
    }, (w) => {
      const a = this.#statusWait.get(k);
      const i = a ? a.waiting.indexOf(w) : -1;
      if (i < 0) return;
      a.waiting.splice(i, 1);
      if (!a.waiting.length) this.#statusWait.delete(k); // nobody waits: never written again
    });
  }

  // answerStatus resolves the calls waiting for status question k with v.
  #answerStatus(k, v) {
    const a = this.#statusWait.get(k);
    if (!a) return;
    this.#statusWait.delete(k);
    a.waiting.forEach((w) => w.resolve(v));
  }

  // await runs start with a waiter {resolve, reject} and settles with it,
  // or rejects after timeout ms (then cancel forgets the waiter) or when
  // the client stops.
  #await(timeout, start, cancel) {
    if (this.#stopped) return Promise.reject(this.#stopped);
    return new Promise((resolve, reject) => {
      const w = {};
      const timer = setTimeout(() => {
        cancel(w);
        reject(new Error('switchboard: no answer in time'));
      }, timeout);
      const off = this.on('close', ({ error }) => w.reject(error));
      w.resolve = (v) => { clearTimeout(timer); off(); resolve(v); };
      w.reject = (e) => { clearTimeout(timer); off(); reject(e); };
      start(w);
    });
  }

  #connected() {
    if (this.#link) return Promise.resolve();
    if (this.#stopped) return Promise.reject(this.#stopped);
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('connect', () => { offs.forEach((f) => f()); resolve(); }),
        this.on('close', ({ error }) => { offs.forEach((f) => f()); reject(error); }),
      ];
    });
  }

  /** close ends the client: the connection closes with 1000 and no reconnect follows. */
  close() {
    this.#shutdown(new ClosedError());
  }

  #shutdown(err) {
    if (this.#stopped) return;
    this.#stopped = err;
    globalThis.removeEventListener?.('online', this.#onOnline);
    this.#wake?.();
    for (const t of this.#retryTimers) clearTimeout(t); // nothing is written again
    this.#retryTimers.clear();
    const link = this.#link;
    if (link) {
      this.#detach(link);
      link.conn.close(1000, '');
    }
    for (const o of this.#outbox.drain()) o.reject(err);
    this.#emit('close', { error: err });
    // A store opened here closes once what was begun on it is done; its
    // outbox keeps the unconfirmed sends for the next client.
    Promise.allSettled([this.#ready, this.#chain, this.#keepChain]).then(() => {
      if (this.#ownsStore) this.#store?.close();
    });
  }

  // --- media over HTTP ---

  async #http(method, path, body) {
    const headers = { Authorization: 'Bearer ' + (await this.#token()) };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(this.#opts.httpURL + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return answer(res);
  }

  /**
   * upload uploads a File or Blob through an upload ticket and resolves
   * with {key, mime, size, sha256} for sendMedia.
   */
  async upload(blob, { mime = blob.type } = {}) {
    if (!mime) throw new TypeError('switchboard: the upload has no type; give {mime}');
    const size = blob.size;
    const [t, sha256] = await Promise.all([
      this.#http('POST', '/v1/media/uploads', { mime, size }),
      blob.arrayBuffer().then(sha256Hex),
    ]);
    let res;
    if (t.method === 'POST') {
      const form = new FormData();
      for (const [k, v] of Object.entries(t.fields ?? {})) form.append(k, v);
      form.append('file', blob);
      res = await fetch(t.url, { method: 'POST', body: form });
    } else {
      res = await fetch(t.url, { method: t.method || 'PUT', headers: t.headers ?? { 'Content-Type': mime }, body: blob });
    }
    if (!res.ok) await answer(res);
    return { key: t.key, mime, size, sha256 };
  }

  /** downloadURL resolves with {key, url, method, expires_ms} for an object this user may read. */
  downloadURL(key) {
    return this.#http('GET', '/v1/media/download?key=' + encodeURIComponent(key));
  }

  /**
   * download fetches a media message's object and resolves with it as a
   * Blob once its sha256 is the one the message gives.
   */
  async download(media) {
    const d = await this.downloadURL(media.key);
    const res = await fetch(d.url);
    if (!res.ok) await answer(res);
    const bytes = await res.arrayBuffer();
    if (media.sha256 && (await sha256Hex(bytes)) !== media.sha256) {
      throw new Error('switchboard: the downloaded object is not the one the message names (sha256 differs)');
    }
    return new Blob([bytes], { type: media.mime || res.headers.get('Content-Type') || '' });
  }
}

// answer returns a JSON answer's body, or throws an HTTPError.
async function answer(res) {
  const text = await res.text();
  let b = {};
  try {
    b = text ? JSON.parse(text) : {};
  } catch {
    b = { message: text.slice(0, 200) };
  }
  if (!res.ok) throw new HTTPError(res.status, b.code ?? '', b.message ?? res.statusText);
  return b;
}

// outgoing makes an outbox entry for a send.
function outgoing(id, to, group, frame) {
  const o = { id, to, group, frame, written: false, retries: 0, waiters: 0, order: 0 };
  o.done = new Promise((res, rej) => { o.resolve = res; o.reject = rej; });
  return o;
}

// sendFrame is a send's frame, as JSON.
// tooLarge is the error of a send larger than the gateway takes.
const tooLarge = (max) => new RangeError(`switchboard: the message is larger than the gateway takes (${max} bytes a frame)`);

function sendFrame(id, to, group, body, media) {
  const f = group ? { type: 'send', id, group } : { type: 'send', id, to };
  if (body !== null && body !== undefined) f.body = body;
  if (media) f.media = media;
  return JSON.stringify(f);
}

// retryable says whether resending a frame refused with code can succeed;
// an unknown code counts as internal.
const retryable = (code) => (Object.hasOwn(ERRORS, code) ? ERRORS[code] : true);

function checkUsers(users) {
  if (users.length === 0 || users.length > 256 || !users.every(validId)) {
    throw new TypeError('switchboard: 1 to 256 user ids');
  }
}

// --- waits ---

// jitter is a random wait from 1 ms up to bound: "full jitter", so clients
// that lost the same gateway at once do not come back together.
const jitter = (bound) => (bound <= 1 ? 1 : 1 + Math.random() * (bound - 1));

// ownCopy says whether message frame f is one this user sent from another
// device (to a user, or in a group): its sent_seq is where its ticks are.
const ownCopy = (f) => !f.event && (!!f.to || (!!f.group && !!f.sent_seq));

// msgKey tells a message's repeats from other messages: a user's message
// by (from, id), a group message by (group, from, id), a group's system
// message by (group, id).
function msgKey(f) {
  if (f.group && f.event) return 'e\0' + f.group + '\0' + f.id;
  if (f.group) return 'g\0' + f.group + '\0' + f.from + '\0' + f.id;
  return f.from + '\0' + f.id;
}

class Backoff {
  constructor(min, max) { this.min = min; this.max = max; this.bound = min; }
  next() { const d = jitter(this.bound); this.bound = Math.min(this.bound * 2, this.max); return d; }
  reset() { this.bound = this.min; }
}

// MAX_RETRIES bounds the writes again of one read, or one status
// question, answered with retryable codes in a row; then a read's error
// is an 'error' event, a status's its calls' rejection.
const MAX_RETRIES = 5;

// statusKey names a status question: about the message at seq sent to a
// user (group ''), or at seq in group's log.
const statusKey = (group, seq) => (group ?? '') + ' ' + seq;

// retryWait is the wait before resending a send answered with a
// retryable error for the n-th time, unless the server gave retry_ms.
function retryWait(n, min, max) {
  let bound = min;
  for (let i = 1; i < n && bound < max; i++) bound *= 2;
  return jitter(Math.min(bound, max));
}

// --- the outbox: which sends may be written, in what order ---

// Outbox holds the unconfirmed sends in the order of the send calls. In
// the normal case each is written as soon as it is made, up to SEND_WINDOW
// unanswered. A send answered
// with a retryable error becomes the holder: no newer send is written, and
// it alone is written again (the probe) once its wait has passed and
// nothing older is unanswered. The hold ends when it is stored, refused for
// good or withdrawn; then the sends not on the wire go out, in order, as
// the window allows. A new connection writes the unconfirmed sends in
// order, up to SEND_WINDOW; a holder among them keeps newer sends made
// after that waiting until it is answered.
// SEND_WINDOW bounds the sends written on a connection and not yet
// answered; the rest go as answers come. The gateway takes a burst of 200
// sends and closes a connection whose frames it refused 50 times in a row:
// a page back with hundreds of sends made offline, all written at once,
// would be refused and closed, come back and write them all again.
const SEND_WINDOW = 64;

class Outbox {
  byId = new Map();
  order = []; // oldest first
  next = 0;
  unwritten = 0; // entries whose frame is not on the current connection
  holder = null;
  probeDue = false;
  probeGen = 0;

  add(o) {
    o.order = ++this.next;
    this.order.push(o);
    this.byId.set(o.id, o);
    this.unwritten++;
  }

  // remove drops o and reports whether that ended a hold.
  remove(o) {
    if (this.byId.get(o.id) !== o) return false;
    this.byId.delete(o.id);
    this.order.splice(this.order.indexOf(o), 1);
    if (!o.written) this.unwritten--;
    if (this.holder === o) {
      this.holder = null;
      this.probeDue = false;
      this.probeGen++;
      return true;
    }
    return false;
  }

  // failed records a retryable error answered to o, and reports whether o
  // is now the holder (whose resend the caller schedules).
  failed(o) {
    if (o.written) {
      o.written = false;
      this.unwritten++;
    }
    o.retries++;
    if (this.holder === null || o.order <= this.holder.order) {
      this.holder = o;
      return true;
    }
    return false;
  }

  // writable returns the sends to write now, in order, and counts them as
  // written.
  writable() {
    if (this.unwritten === 0) return [];
    if (this.holder !== null) {
      const head = this.order[0];
      if (!this.probeDue || head.written) return [];
      this.probeDue = false;
      head.written = true;
      this.unwritten--;
      return [head];
    }
    const room = SEND_WINDOW - (this.order.length - this.unwritten);
    if (room <= 0) return [];
    // The oldest unwritten: past at most SEND_WINDOW written ones.
    const out = [];
    for (let i = 0; i < this.order.length && out.length < room; i++) {
      const o = this.order[i];
      if (!o.written) {
        o.written = true;
        out.push(o);
      }
    }
    this.unwritten -= out.length;
    return out;
  }

  // waiting says sends wait for room in the window, with no hold: an
  // answer lets the next go.
  waiting() {
    return this.holder === null && this.unwritten > 0;
  }

  // rewriteAll returns the unconfirmed sends, oldest first, as many as
  // SEND_WINDOW lets go, for a new connection; the rest go as answers
  // come. A holder stays the holder until it is answered.
  rewriteAll() {
    this.order.forEach((o, i) => { o.written = i < SEND_WINDOW; });
    this.unwritten = Math.max(0, this.order.length - SEND_WINDOW);
    this.probeDue = false;
    this.probeGen++; // the holder is on the wire: a pending wait is moot
    return this.order.slice(0, SEND_WINDOW);
  }

  // drain removes and returns every send (the client stopped).
  drain() {
    const all = this.order;
    this.order = [];
    this.byId.clear();
    this.unwritten = 0;
    this.holder = null;
    return all;
  }
}

// --- receipts: positions turned into this client's messages ---

const NONE = 0;
const DELIVERED = 1;
const READ = 2;
const MAX_TRACKED = 100000;
// Where a region's outbox seqs start: a message sent to another region.
const OUTBOX_SEQ_FLOOR = 2 ** 52;
const MAX_SPANS = 32;

// Ticks tracks this client's sent messages by recipient, sorted by seq,
// and turns a receipt (a range of seqs, or everything up to one) into the
// messages it moves on, each tick once. What receipts said is kept for a
// message whose "sent" comes after its tick (the two travel apart).
class Ticks {
  // recipient -> {msgs: [{seq, id, tick}], read, readTo, delivered: [[from, to]], readDevice, deliveredDevice}
  to = new Map();
  count = 0;
  order = []; // [to, seq], oldest first, to forget the oldest past MAX_TRACKED
  head = 0;

  #recipient(to) {
    let r = this.to.get(to);
    if (!r) {
      r = { msgs: [], read: 0, readTo: 0, delivered: [], readDevice: '', deliveredDevice: '' };
      this.to.set(to, r);
    }
    return r;
  }

  // sent records message id to `to` at seq, and returns the tick a receipt
  // already gave it ('' if none).
  sent(to, id, seq) {
    const r = this.#recipient(to);
    const i = search(r.msgs, seq);
    if (i < r.msgs.length && r.msgs[i].seq === seq) return '';
    const m = { seq, id, tick: NONE };
    let status = '';
    if (seq <= r.readTo) {
      m.tick = READ;
      status = 'read';
    } else if (r.delivered.some(([a, b]) => a <= seq && seq <= b)) {
      m.tick = DELIVERED;
      status = 'delivered';
    }
    r.msgs.splice(i, 0, m);
    if (i < r.read && m.tick < READ) r.read = i; // an older seq confirmed late: not known read
    this.order.push([to, seq]);
    this.count++;
    while (this.count > MAX_TRACKED) this.#forget(...this.order[this.head++]);
    if (this.head > 4096 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
    return status;
  }

  // earlyDevice is the device of the receipt that gave the message sent at
  // seq to `to` its early tick status ('' if unknown).
  earlyDevice(to, status) {
    const r = this.to.get(to);
    if (!r) return '';
    return status === 'read' ? r.readDevice : status === 'delivered' ? r.deliveredDevice : '';
  }

  #forget(to, seq) {
    const r = this.to.get(to);
    if (!r) return;
    const i = search(r.msgs, seq);
    if (i < r.msgs.length && r.msgs[i].seq === seq) {
      r.msgs.splice(i, 1);
      if (i < r.read) r.read--;
      this.count--;
    }
    if (r.msgs.length === 0) this.to.delete(to);
  }

  // recipientOf is whom the message sent at seq went to, '' if it is not
  // known or went to a group.
  recipientOf(seq) {
    for (const [to, r] of this.to) {
      if (to.startsWith('#')) continue;
      const i = search(r.msgs, seq);
      if (i < r.msgs.length && r.msgs[i].seq === seq) return to;
    }
    return '';
  }

  // apply returns the messages a receipt frame moves on: [{id, seq}].
  apply(f) {
    // A group receipt is the group's: every member but this user.
    const r = this.#recipient(f.group ? '#' + f.group : f.by);
    const out = [];
    if (f.status === 'read') {
      if (f.to_seq >= r.readTo) r.readDevice = f.device ?? '';
      r.readTo = Math.max(r.readTo, f.to_seq);
      for (; r.read < r.msgs.length && r.msgs[r.read].seq <= f.to_seq; r.read++) {
        const m = r.msgs[r.read];
        if (m.tick < READ) {
          m.tick = READ;
          out.push({ id: m.id, seq: m.seq });
        }
      }
    } else if (f.status === 'delivered') {
      const from = f.from_seq ?? 0;
      r.delivered.push([from, f.to_seq]);
      r.deliveredDevice = f.device ?? '';
      if (r.delivered.length > MAX_SPANS) r.delivered.shift();
      for (let i = search(r.msgs, from); i < r.msgs.length && r.msgs[i].seq <= f.to_seq; i++) {
        const m = r.msgs[i];
        if (m.tick < DELIVERED) {
          m.tick = DELIVERED;
          out.push({ id: m.id, seq: m.seq });
        }
      }
    }
    return out;
  }
}

// search returns the index of the first message with a seq >= seq.
function search(msgs, seq) {
  let lo = 0;
  let hi = msgs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (msgs[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Lru is a bounded map: adding past its size forgets the oldest key.
class Lru {
  constructor(max) { this.max = max; this.m = new Map(); }
  get(k) { return this.m.get(k); }
  has(k) { return this.m.has(String(k)); }
  delete(k) { this.m.delete(k); }
  set(k, v) {
    if (this.m.has(k)) return;
    this.m.set(k, v);
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value);
  }
}

// --- the local store: IndexedDB ---

/** The local store's schema version this SDK writes: the number of migrations it knows. */
export const STORE_VERSION = 3;

/**
 * A local store could not be opened or written. code says why:
 *   newer_version  the database was written by a newer SDK (found, known
 *                  say which schema versions); it was not changed
 *   blocked        another tab holds an older version of it open and does
 *                  not let it be upgraded
 *   locked         another client (in this tab or another) has it open
 *                  and did not close it within a second
 *   quota          the browser's storage quota is full: nothing of the
 *                  write was kept (for a send: nothing was sent)
 *   corrupt        the database is not a store (its object stores are missing)
 *   unavailable    this browser has no IndexedDB (some private modes)
 *   closed         the store was closed (by close(), or to let another tab
 *                  upgrade it)
 *   failed         any other error of the browser's, named in the message
 */
export class StoreError extends Error {
  constructor(code, message, { cause, found = 0, known = STORE_VERSION } = {}) {
    super(message, { cause });
    this.name = 'StoreError';
    this.code = code;
    /** For newer_version: the database's schema version and the newest this SDK knows. */
    this.found = found;
    this.known = known;
  }
}

// A message's status in the store: an own message goes from PENDING (in
// the outbox) to SENT to DELIVERED to READ, never back, or to DROPPED; a
// received one is SENT (the server stored it). As the Go SDK's store.
const DROPPED = -1;
const PENDING = 0;
const SENT = 1;
const DELIVERED_ = 2;
const READ_ = 3;
const STATUS_NAMES = { [DROPPED]: 'dropped', [PENDING]: 'pending', [SENT]: 'sent', [DELIVERED_]: 'delivered', [READ_]: 'read' };
const statusOf = (s) => (s === 'read' ? READ_ : s === 'delivered' ? DELIVERED_ : SENT);

// MIGRATIONS[i] takes a database from version i to i+1, inside the
// versionchange transaction of its open, so a store is at one version or
// the next, never between. A migration is never edited once released: a
// change is a new entry. The IndexedDB version is the schema version.
const MIGRATIONS = [
  // 1: messages both ways (the outbox is the pending own ones),
  // conversations with their read watermarks, and meta (the cursor hint).
  // Records of 'messages': {n, conv, from ('' for this user's own), device,
  // id, seq (0 until "sent"), ts, body, media, status, acked}, plus the
  // sparse index fields set by indexed(): an index holds only the records
  // that have its field, as SQLite's partial indexes do.
  (db) => {
    const m = db.createObjectStore('messages', { keyPath: 'n', autoIncrement: true });
    m.createIndex('key', ['from', 'id'], { unique: true }); // dedup: (sender, id)
    m.createIndex('conv', ['conv', 'n']); // history
    m.createIndex('seq', 'seq'); // ack and read name a seq
    m.createIndex('outbox', 'pending'); // pending sends, in n order
    m.createIndex('tickable', 'tickable'); // [conv, seq] of own messages sent or delivered: receipts move them
    m.createIndex('incoming', 'incoming'); // [conv, seq] of received messages: unread counts
    db.createObjectStore('conversations', { keyPath: 'conv' }); // {conv, readSeq}
    db.createObjectStore('meta', { keyPath: 'key' }); // {key, value}
  },
  // 2: group traffic, as the Go store's version 2. A message and a
  // conversation belong to a group (grp) or are one to one (grp ''); a
  // group's conversation is named by the group. Repeats are told apart
  // within a group (a system message's id is unique in its group only),
  // so the indexes gain grp; a system message keeps its event. The
  // conversations are keyed by [grp, conv] in a new object store that
  // takes the old one's name. Every record is rewritten with grp '' in
  // this same transaction, so the version-1 data stays as it was: in
  // batches, their puts not waited for one by one, with the changed
  // indexes dropped meanwhile and built once at the end (a cursor's step
  // per record into live indexes took three times as long).
  (db, tx) => {
    const m = tx.objectStore('messages');
    for (const ix of ['key', 'conv', 'tickable', 'incoming']) m.deleteIndex(ix);
    const batch = (after) => {
      const r = m.getAll(after === undefined ? null : IDBKeyRange.lowerBound(after, true), MIGRATION_BATCH);
      r.onsuccess = () => {
        for (const v of r.result) m.put(indexed({ ...v, grp: '' }));
        if (r.result.length === MIGRATION_BATCH) {
          batch(r.result.at(-1).n);
          return;
        }
        m.createIndex('key', ['grp', 'from', 'id'], { unique: true });
        m.createIndex('conv', ['grp', 'conv', 'n']);
        m.createIndex('tickable', 'tickable'); // [grp, conv, seq]
        m.createIndex('incoming', 'incoming'); // [grp, conv, seq], system messages left out
      };
    };
    batch();
    const cs = db.createObjectStore('conversations_v2', { keyPath: ['grp', 'conv'] }); // {grp, conv, readSeq}
    const old = tx.objectStore('conversations').getAll();
    old.onsuccess = () => {
      for (const c of old.result) cs.put({ grp: '', conv: c.conv, readSeq: c.readSeq });
      db.deleteObjectStore('conversations');
      cs.name = 'conversations';
    };
  },
  // 3: groups read from their log, as the Go store's version 3: a
  // received message of such a group has gseq, its place in the log, and
  // seq 0; it is counted unread by a sparse index of its own, against the
  // conversation's readGSeq. No record of version 2 has a gseq: nothing
  // is rewritten.
  (db, tx) => {
    tx.objectStore('messages').createIndex('logged', 'logged'); // [grp, conv, gseq] of received log messages, system messages left out
  },
];
const OBJECT_STORES = ['messages', 'conversations', 'meta'];
const MIGRATION_BATCH = 2000; // records read at once by a migration that rewrites them

// indexed sets a message record's sparse index fields from its status
// (for the schema's latest version).
function indexed(r) {
  delete r.pending;
  delete r.tickable;
  delete r.incoming;
  delete r.logged;
  if (r.from !== '') {
    if (r.event) {
      // System messages are not counted unread.
    } else if (r.gseq) r.logged = [r.grp, r.conv, r.gseq];
    else r.incoming = [r.grp, r.conv, r.seq];
  } else if (r.status === PENDING) r.pending = 1;
  else if (r.status === SENT || r.status === DELIVERED_) r.tickable = [r.grp, r.conv, r.seq];
  return r;
}

// record is what the store hands out of a message record.
// group is '' for a 1:1 message; event is set on a group's system
// message.
function record(r) {
  return {
    n: r.n, group: r.grp, conv: r.conv, from: r.from, own: r.from === '', device: r.device, id: r.id, seq: r.seq, gseq: r.gseq ?? 0, ts: r.ts,
    body: r.body ?? null, media: r.media ?? null, event: r.event ?? null, status: STATUS_NAMES[r.status] ?? 'sent', acked: !!r.acked,
  };
}

// req waits for an IndexedDB request. Called again on a cursor's request
// after continue(), it waits for the next step.
const req = (r) => new Promise((resolve, reject) => {
  r.onsuccess = () => resolve(r.result);
  r.onerror = () => reject(r.error);
});

// storeError turns an error of IndexedDB's into a StoreError.
function storeError(e, name) {
  if (e instanceof StoreError) return e;
  const what = `switchboard: local store ${JSON.stringify(name)}`;
  switch (e?.name) {
    case 'QuotaExceededError':
      return new StoreError('quota', `${what}: the browser's storage quota for this site is full; nothing of this write was kept (${e.message})`, { cause: e });
    case 'InvalidStateError':
      return new StoreError('closed', `${what} is closed`, { cause: e });
    case 'NotFoundError':
      return new StoreError('corrupt', `${what} is damaged: ${e.message}`, { cause: e });
  }
  return new StoreError('failed', `${what}: ${e?.name ?? 'Error'}: ${e?.message ?? e}`, { cause: e });
}

/**
 * openStore opens (or creates) the local store in the IndexedDB database
 * `name` and brings its schema to STORE_VERSION. It rejects with a
 * StoreError: newer_version (the database untouched), blocked, locked,
 * corrupt, unavailable, quota. A Client given options.store opens its own.
 */
export async function openStore(name) {
  if (typeof name !== 'string' || name === '') throw new TypeError('switchboard: a local store is named by a non-empty string');
  if (!globalThis.indexedDB) {
    throw new StoreError('unavailable', `switchboard: local store ${JSON.stringify(name)}: this browser offers no IndexedDB (a private window, say)`);
  }
  const release = await lockStore(name);
  try {
    return new Store(name, await openDatabase(name, MIGRATIONS), release);
  } catch (e) {
    release();
    throw e;
  }
}

// How long openStore waits for another client to let go of the store
// (one closing as this one opens: a page being reloaded, say) before it
// gives up with locked.
const LOCK_WAIT = 1000;

// lockStore holds the Web Lock named after the store until the returned
// function is called (which resolves once the lock is let go), so two
// clients never write one store at once (the Go SDK's store holds its
// file's lock the same way). Where the page has no Web Locks (an
// insecure context) there is no lock.
function lockStore(name) {
  const locks = globalThis.navigator?.locks;
  if (!locks) return Promise.resolve(() => Promise.resolve());
  return new Promise((resolve, reject) => {
    let release;
    const held = new Promise((r) => { release = r; });
    const done = locks.request('switchboard.store:' + name, { signal: AbortSignal.timeout(LOCK_WAIT) }, () => {
      resolve(() => {
        release();
        return done.catch(() => {});
      });
      return held;
    });
    done.catch((e) => reject(e?.name === 'TimeoutError' || e?.name === 'AbortError'
      ? new StoreError('locked', `switchboard: local store ${JSON.stringify(name)} is open in another client (this tab or another): close it first`, { cause: e })
      : storeError(e, name)));
  });
}

// openDatabase opens the database at the migrations' version, running the
// missing ones in its versionchange transaction.
function openDatabase(name, migrations) {
  return new Promise((resolve, reject) => {
    let r;
    try {
      r = indexedDB.open(name, migrations.length);
    } catch (e) {
      reject(storeError(e, name));
      return;
    }
    let settled = false;
    const fail = (e) => {
      if (settled) return;
      settled = true;
      reject(e);
    };
    r.onupgradeneeded = (e) => {
      try {
        for (let v = e.oldVersion; v < migrations.length; v++) migrations[v](r.result, r.transaction);
      } catch (err) {
        // A migration that finds no object store to change: the database
        // is not a store (it is left as it was).
        fail(err?.name === 'NotFoundError'
          ? new StoreError('corrupt', `switchboard: local store ${JSON.stringify(name)} is not a Switchboard store (${err.message})`, { cause: err })
          : new StoreError('failed', `switchboard: local store ${JSON.stringify(name)}: migration failed: ${err.message}`, { cause: err }));
        r.transaction.abort();
      }
    };
    r.onblocked = () => fail(new StoreError('blocked', `switchboard: local store ${JSON.stringify(name)} is held open at an older version by another tab, so it cannot be upgraded: close that tab and try again`));
    r.onsuccess = () => {
      const db = r.result;
      if (settled) { // blocked, then let through: the caller has given up
        db.close();
        return;
      }
      const missing = OBJECT_STORES.filter((s) => !db.objectStoreNames.contains(s));
      if (missing.length) {
        db.close();
        fail(new StoreError('corrupt', `switchboard: local store ${JSON.stringify(name)} is not a Switchboard store (no ${missing.join(', ')})`));
        return;
      }
      settled = true;
      resolve(db);
    };
    r.onerror = (e) => {
      e.preventDefault();
      const err = r.error;
      if (err?.name !== 'VersionError') {
        fail(storeError(err, name));
        return;
      }
      databaseVersion(name).then((found) => fail(new StoreError('newer_version',
        `switchboard: local store ${JSON.stringify(name)} is at schema version ${found || 'unknown'}, written by a newer SDK; this SDK knows up to ${migrations.length}: use the newer SDK, or delete the database (it was not changed)`,
        { cause: err, found, known: migrations.length })));
    };
  });
}

// databaseVersion returns the version of database name, 0 if unknown.
async function databaseVersion(name) {
  try {
    return (await indexedDB.databases()).find((d) => d.name === name)?.version ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Store is an open local store (openStore). What a Client with a store
 * writes, and when, is said at the top of this file; the app reads its
 * conversations and history here. Each write is one transaction with
 * strict durability: once it resolves it is on disk. Methods reject with
 * a StoreError.
 */
export class Store {
  #db;
  #release;

  constructor(name, db, release) {
    /** The IndexedDB database's name. */
    this.name = name;
    this.#db = db;
    this.#release = release;
    // Another tab opens a newer schema: let it, and stop here.
    db.onversionchange = () => { this.close(); };
    db.onclose = () => { this.close(); };
  }

  /** The schema version of the open database. */
  get version() { return this.#db?.version ?? 0; }
  /** Whether the store is open. */
  get open() { return this.#db !== null; }

  /**
   * close closes the store; writes already begun finish. It resolves once
   * its lock is let go, when another client may open it.
   */
  close() {
    const db = this.#db;
    this.#db = null;
    db?.close();
    const release = this.#release;
    this.#release = null;
    return release ? release() : Promise.resolve();
  }

  // tx runs fn(transaction) in one transaction on stores and resolves
  // with its result once the transaction is committed.
  async #tx(stores, mode, fn) {
    if (!this.#db) throw new StoreError('closed', `switchboard: local store ${JSON.stringify(this.name)} is closed`);
    let tx;
    try {
      tx = this.#db.transaction(stores, mode, { durability: mode === 'readwrite' ? 'strict' : 'default' });
    } catch (e) {
      throw storeError(e, this.name);
    }
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onabort = () => reject(tx.error ?? new DOMException('the transaction was aborted', 'AbortError'));
    });
    let out;
    try {
      out = await fn(tx);
    } catch (e) {
      try {
        tx.abort();
      } catch {
        // Aborted already.
      }
      await done.catch(() => {});
      throw storeError(e, this.name);
    }
    try {
      await done;
    } catch (e) {
      throw storeError(e, this.name);
    }
    return out;
  }

  #write(fn) { return this.#tx(['messages', 'conversations', 'meta'], 'readwrite', fn); }
  #read(fn) { return this.#tx(['messages', 'conversations', 'meta'], 'readonly', fn); }

  /**
   * addOutgoing puts a send {id, to, group, body, media} (to a user, or
   * in group) at the end of the outbox. A send with the same id (in the
   * same group, or one to one) pending or stored stays as it is; one
   * dropped goes back into the outbox, at its end.
   */
  addOutgoing({ id, to = '', group = '', body = null, media = null }) {
    return this.#write(async (tx) => {
      const ms = tx.objectStore('messages');
      const old = await req(ms.index('key').get([group, '', id]));
      if (old && old.status !== DROPPED) return;
      if (old) await req(ms.delete(old.n));
      await req(ms.add(indexed({ grp: group, conv: group || to, from: '', device: '', id, seq: 0, ts: 0, body, media, status: PENDING, acked: false })));
    });
  }

  /** outbox resolves with the sends not yet confirmed, oldest first: [{id, to, group, body, media}] (to '' for a group's). */
  outbox() {
    return this.#read(async (tx) => {
      const rs = await req(tx.objectStore('messages').index('outbox').getAll());
      return rs.map((r) => ({ id: r.id, to: r.grp ? '' : r.conv, group: r.grp, body: r.body ?? null, media: r.media ?? null }));
    });
  }

  // #update applies change to the records found by get and writes them back.
  async #update(tx, rs, change) {
    const ms = tx.objectStore('messages');
    for (const r of rs) {
      if (change(r) !== false) await req(ms.put(indexed(r)));
    }
  }

  /**
   * confirm records that the server stored send id (in group, '' for a
   * send to a user) at seq (time ts; in a group, its place in the group's
   * log): it leaves the outbox. tick is a receipt status that came before
   * the "sent" ('' if none).
   */
  confirm(id, seq, ts, tick = '', group = '') {
    return this.#write(async (tx) => {
      const r = await req(tx.objectStore('messages').index('key').get([group, '', id]));
      if (!r || r.status < 0) return;
      await this.#update(tx, [r], () => {
        r.seq = seq;
        r.ts = ts;
        r.status = Math.max(r.status, statusOf(tick), SENT);
      });
    });
  }

  /** drop takes a pending send (in group, '' for one to a user) out of the outbox: withdrawn, or refused for good. */
  drop(id, group = '') {
    return this.#write(async (tx) => {
      const r = await req(tx.objectStore('messages').index('key').get([group, '', id]));
      if (r && r.status === PENDING) await this.#update(tx, [r], () => { r.status = DROPPED; });
    });
  }

  /**
   * applyReceipt records a receipt from user `by`: delivered covers this
   * user's messages to by stored from `from` to `to`, read every one up to
   * `to`. Ticks only rise.
   */
  applyReceipt(by, status, from, to) {
    return this.#tick('', by, status, from, to);
  }

  /**
   * applyGroupReceipt records a group receipt: every other member of
   * group has (delivered) or has read this user's messages there stored
   * from `from` to `to`, places in the group's log; a read covers every
   * one up to `to`. Ticks only rise.
   */
  applyGroupReceipt(group, status, from, to) {
    return this.#tick(group, group, status, from, to);
  }

  #tick(grp, conv, status, from, to) {
    const st = statusOf(status);
    if (st === SENT) return Promise.resolve();
    return this.#write(async (tx) => {
      const lo = st === READ_ ? 0 : from;
      const rs = await req(tx.objectStore('messages').index('tickable').getAll(IDBKeyRange.bound([grp, conv, lo], [grp, conv, to])));
      await this.#update(tx, rs, (r) => {
        if (r.status >= st) return false;
        r.status = st;
        return true;
      });
    });
  }

  /** unread resolves with this user's messages stored and not yet known read (group set on a group's), by seq: the ones a receipt can still move. */
  unread() {
    return this.#read(async (tx) => {
      const rs = await req(tx.objectStore('messages').index('tickable').getAll());
      return rs.sort((a, b) => a.seq - b.seq).map(record);
    });
  }

  // #receive stores r unless a message with its (grp, from, id) is
  // stored, and says which: {dup, firstSeq, acked}.
  #receive(r) {
    return this.#write(async (tx) => {
      const ms = tx.objectStore('messages');
      const old = await req(ms.index('key').get([r.grp, r.from, r.id]));
      if (old) return { dup: true, firstSeq: old.seq, acked: !!old.acked };
      await req(ms.add(indexed(r)));
      return { dup: false, firstSeq: r.seq, acked: false };
    });
  }

  /**
   * received stores a message from another user {group, conv, from,
   * device, id, seq, ts, body, media, event} unless one with its (group,
   * from, id) is stored: {dup, firstSeq, acked}. A group's message, or its
   * system message (with event, and no body), has group set and is in the
   * group's conversation.
   */
  received(m) {
    const grp = m.group ?? '';
    const r = { grp, conv: grp || (m.conv ?? m.from), from: m.from, device: m.device ?? '', id: m.id, seq: m.seq ?? 0, ts: m.ts ?? 0,
      body: m.body ?? null, media: m.media ?? null, status: SENT, acked: false };
    if (m.event) r.event = m.event;
    if (m.gseq) r.gseq = m.gseq;
    return this.#receive(r);
  }

  /**
   * receivedOwn stores a message this user sent from another device, as
   * one of its own, in conversation conv (or in group) at seq (the seq its
   * receipts name), unless a message of this user's with its id is stored
   * there (sent from here, or stored before).
   */
  receivedOwn(m) {
    const grp = m.group ?? '';
    return this.#receive({ grp, conv: grp || m.conv, from: '', device: m.device ?? '', id: m.id, seq: m.seq, ts: m.ts ?? 0,
      body: m.body ?? null, media: m.media ?? null, status: Math.max(statusOf(m.status ?? ''), SENT), acked: false });
  }

  /** acked records that this device acked the message at seq, and raises the cursor hint to it. */
  acked(seq) {
    if (!seq) return Promise.resolve(); // no inbox seq (a group's log): ackedGroup
    return this.#write(async (tx) => {
      const rs = await req(tx.objectStore('messages').index('seq').getAll(seq));
      await this.#update(tx, rs.filter((r) => r.from !== '' && !r.acked), (r) => { r.acked = true; });
      const meta = tx.objectStore('meta');
      const hint = (await req(meta.get('cursor_hint')))?.value ?? 0;
      if (seq > hint) await req(meta.put({ key: 'cursor_hint', value: seq }));
    });
  }

  /** cursorHint resolves with the highest seq this device acked (0 if none): the device's own record of where it was. */
  cursorHint() {
    return this.#read(async (tx) => (await req(tx.objectStore('meta').get('cursor_hint')))?.value ?? 0);
  }

  /**
   * markRead raises the read watermark of the conversation (with a user,
   * or a group) of the received message at seq to seq; resolves false if
   * none is stored at seq.
   */
  markRead(seq) {
    if (!seq) return Promise.resolve(false); // no inbox seq (a group's log): setGroupReadPlace
    return this.#write(async (tx) => {
      const rs = await req(tx.objectStore('messages').index('seq').getAll(seq));
      const m = rs.find((r) => r.from !== '');
      if (!m) return false;
      await this.#raise(tx, m.grp, m.conv, seq);
      return true;
    });
  }

  async #raise(tx, grp, conv, seq, field = 'readSeq') {
    const cs = tx.objectStore('conversations');
    const c = await req(cs.get([grp, conv]));
    if (!c || (c[field] ?? 0) < seq) await req(cs.put({ readSeq: 0, ...c, grp, conv, [field]: seq }));
  }

  /** setReadWatermark raises the read watermark of the conversation with user conv to seq (a read made on another device). */
  setReadWatermark(conv, seq) {
    return this.#write((tx) => this.#raise(tx, '', conv, seq));
  }

  /** setGroupReadWatermark raises group's read watermark to seq, a seq of this user's messages (a group read_sync). */
  setGroupReadWatermark(group, seq) {
    return this.#write((tx) => this.#raise(tx, group, group, seq));
  }

  /**
   * ackedGroup records that this device acked every message of group, a
   * group read from its log, up to its place gseq there.
   */
  ackedGroup(group, gseq) {
    return this.#write(async (tx) => {
      const rs = await req(tx.objectStore('messages').index('logged').getAll(IDBKeyRange.bound([group, group, 0], [group, group, gseq])));
      await this.#update(tx, rs.filter((r) => !r.acked), (r) => { r.acked = true; });
    });
  }

  /** setGroupReadPlace raises the read watermark of group, a group read from its log, to its place gseq there. */
  setGroupReadPlace(group, gseq) {
    return this.#write((tx) => this.#raise(tx, group, group, gseq, 'readGSeq'));
  }

  /** groupReadPlace resolves with the place in group's log up to which this user read it (0 if none). */
  groupReadPlace(group) {
    return this.#read(async (tx) => (await req(tx.objectStore('conversations').get([group, group])))?.readGSeq ?? 0);
  }

  /** readWatermark resolves with the seq up to which this user read the conversation with user conv (0 if none). */
  readWatermark(conv) {
    return this.#watermark('', conv);
  }

  /** groupReadWatermark resolves with the seq (of this user's messages) up to which this user read group (0 if none). */
  groupReadWatermark(group) {
    return this.#watermark(group, group);
  }

  #watermark(grp, conv) {
    return this.#read(async (tx) => (await req(tx.objectStore('conversations').get([grp, conv])))?.readSeq ?? 0);
  }

  /** count resolves with the number of stored messages, both directions. */
  count() {
    return this.#read((tx) => req(tx.objectStore('messages').count()));
  }

  /**
   * conversations resolves with a summary of each conversation, the most
   * recently active first: [{group, conv, messages, unread, readSeq,
   * readGSeq, lastN}] (group and conv the group for a group's, group ''
   * with a user; messages counts both directions, dropped sends and
   * system messages included; unread the received ones above the read
   * watermark, or, read from a group's log, above readGSeq, the place
   * read up to there; system messages left out).
   */
  conversations() {
    return this.#read(async (tx) => {
      const ix = tx.objectStore('messages').index('conv');
      const convs = [];
      const r = ix.openKeyCursor();
      for (let c = await req(r); c; c = await req(r)) {
        convs.push([c.key[0], c.key[1]]);
        c.continue([c.key[0], c.key[1], Infinity]); // the next conversation
      }
      const out = [];
      for (const [grp, conv] of convs) {
        const all = IDBKeyRange.bound([grp, conv, -Infinity], [grp, conv, Infinity]);
        const cv = await req(tx.objectStore('conversations').get([grp, conv]));
        const readSeq = cv?.readSeq ?? 0;
        const readGSeq = cv?.readGSeq ?? 0;
        const ms = tx.objectStore('messages');
        const [messages, last, unread, unreadLog] = await Promise.all([
          req(ix.count(all)),
          req(ix.openKeyCursor(all, 'prev')),
          req(ms.index('incoming').count(IDBKeyRange.bound([grp, conv, readSeq], [grp, conv, Infinity], true))),
          req(ms.index('logged').count(IDBKeyRange.bound([grp, conv, readGSeq], [grp, conv, Infinity], true))),
        ]);
        out.push({ group: grp, conv, messages, unread: unread + unreadLog, readSeq, readGSeq, lastN: last.key[2] });
      }
      return out.sort((a, b) => b.lastN - a.lastN);
    });
  }

  /** messages resolves with the conversation with user conv's last limit messages (all if limit is 0), oldest first; dropped sends are left out. */
  messages(conv, limit = 0) {
    return this.#messages('', conv, limit);
  }

  /** groupMessages is messages() for group's conversation, its system messages included. */
  groupMessages(group, limit = 0) {
    return this.#messages(group, group, limit);
  }

  #messages(grp, conv, limit) {
    return this.#read(async (tx) => {
      const out = [];
      const r = tx.objectStore('messages').index('conv').openCursor(IDBKeyRange.bound([grp, conv, -Infinity], [grp, conv, Infinity]), 'prev');
      for (let c = await req(r); c && (limit <= 0 || out.length < limit); c = await req(r)) {
        if (c.value.status !== DROPPED) out.push(record(c.value));
        c.continue();
      }
      return out.reverse();
    });
  }

  /** recipientOf resolves with whom the own message stored at seq went to: '' if none is, or it went to a group. */
  recipientOf(seq) {
    return this.#read(async (tx) => {
      const rs = await req(tx.objectStore('messages').index('seq').getAll(seq));
      return rs.find((r) => r.from === '' && r.grp === '')?.conv ?? '';
    });
  }

  /** message resolves with the message (from, id) with a user, from '' for an own one, or null. */
  message(from, id) {
    return this.groupMessage('', from, id);
  }

  /** groupMessage resolves with the message (from, id) in group ('' : with a user), from '' for an own one, or null. */
  groupMessage(group, from, id) {
    return this.#read(async (tx) => {
      const r = await req(tx.objectStore('messages').index('key').get([group, from, id]));
      return r ? record(r) : null;
    });
  }
}

// --- SHA-256 ---

/**
 * sha256Hex returns the hex SHA-256 of an ArrayBuffer or typed array, with
 * WebCrypto where the page has it (secure contexts: https, localhost) and
 * sha256Portable elsewhere (a page on a LAN address over plain http).
 */
export async function sha256Hex(data) {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (globalThis.crypto?.subtle) {
    return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
  }
  return sha256Portable(bytes);
}

// The constants of FIPS 180-4: the first 32 bits of the fractional parts
// of the square roots (H) and cube roots (K) of the first primes.
const PRIMES = (() => {
  const p = [];
  for (let n = 2; p.length < 64; n++) if (p.every((q) => n % q)) p.push(n);
  return p;
})();
const frac32 = (x) => ((x - Math.floor(x)) * 0x100000000) >>> 0;
const K = Uint32Array.from(PRIMES, (p) => frac32(Math.cbrt(p)));
const H0 = Uint32Array.from(PRIMES.slice(0, 8), (p) => frac32(Math.sqrt(p)));

/** sha256Portable is SHA-256 in plain JavaScript: the hex digest of a Uint8Array. */
export function sha256Portable(bytes) {
  const n = bytes.length;
  const padded = new Uint8Array((((n + 8) >> 6) + 1) << 6);
  padded.set(bytes);
  padded[n] = 0x80;
  const dv = new DataView(padded.buffer);
  dv.setUint32(padded.length - 8, Math.floor(n / 0x20000000));
  dv.setUint32(padded.length - 4, (n << 3) >>> 0);
  const h = Uint32Array.from(H0);
  const w = new Uint32Array(64);
  const rotr = (x, r) => (x >>> r) | (x << (32 - r));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15];
      const b = w[i - 2];
      w[i] = w[i - 16] + (rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3)) + w[i - 7] + (rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10));
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  const out = new Uint8Array(32);
  const odv = new DataView(out.buffer);
  h.forEach((v, i) => odv.setUint32(4 * i, v));
  return hex(out);
}

const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
