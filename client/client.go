package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// Errors returned by the client.
var (
	ErrClosed   = errors.New("client: closed")
	ErrReplaced = errors.New("client: the same device connected elsewhere")
	ErrBadID    = protocol.ErrInvalidID
	// ErrBadBody: a body must be JSON, and JSON is UTF-8. A frame that is
	// not UTF-8 would make the gateway close the connection (1007), and
	// the send would be resent, and refused, on every reconnect.
	ErrBadBody = errors.New("client: body is not valid UTF-8 JSON")
	// ErrTooLarge: the send's frame is larger than the gateway takes (its
	// welcome's max_frame, 64 KiB by default). Written, it would close the
	// connection (1009) and be written first again on every reconnect,
	// holding every newer send back.
	ErrTooLarge = errors.New("client: message larger than the gateway takes")
	// ErrWithdrawn: every call that waited for the send gave up, so it
	// was withdrawn; a Pending's Wait made after that returns it.
	ErrWithdrawn = errors.New("client: the send was withdrawn")
)

// defaultMaxFrame is the gateway's default max_frame, assumed until a
// welcome says otherwise.
const defaultMaxFrame = 64 << 10

// CloseError is the close the server ended the connection with when its
// code is one after which a client must not reconnect (its row in
// protocol.Closes says so): the client has stopped, and Err returns it.
// For 4002 (replaced) it matches ErrReplaced with errors.Is.
type CloseError struct {
	Code   int
	Name   string // the code's name in protocol.Closes
	Reason string // the close frame's reason, as the server wrote it
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: the server closed the connection with %d %s (%s); not reconnecting", e.Code, e.Name, e.Reason)
}

// Is makes errors.Is(err, ErrReplaced) true for a 4002 close.
func (e *CloseError) Is(target error) bool {
	return target == ErrReplaced && e.Code == protocol.CloseReplaced
}

// stopError returns the error to stop the client with when err, what
// ended a connection, is a close whose code says not to reconnect, and
// nil otherwise (a network error, or a code that says to reconnect or
// that protocol.Closes does not know).
func stopError(err error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return nil
	}
	for _, info := range protocol.Closes {
		if info.Code == ce.Code {
			if info.Reconnect {
				return nil
			}
			return &CloseError{Code: ce.Code, Name: info.Name, Reason: ce.Text}
		}
	}
	return nil
}

// ServerError is an error frame the server answered a send with, for a
// code that resending cannot fix.
type ServerError struct {
	Code    protocol.ErrorCode
	Message string
}

func (e *ServerError) Error() string { return fmt.Sprintf("client: server: %s: %s", e.Code, e.Message) }

// HandshakeError is a refused WebSocket upgrade (401, 403, ...).
type HandshakeError struct {
	Status int
	Body   string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("client: handshake refused: %d %s", e.Status, e.Body)
}

// Options configure a Client.
type Options struct {
	// URL of the gateway's WebSocket endpoint, e.g. ws://127.0.0.1:8080/v1/ws.
	URL string
	// Token returns the token for each (re)connect, so an expiring token can
	// be refreshed. Required.
	Token func(ctx context.Context) (string, error)
	// Header is added to the upgrade request (e.g. Origin).
	Header http.Header
	// MinBackoff and MaxBackoff bound the reconnect delay; zero means 100ms
	// and 5s. Each attempt waits a random time up to the current bound,
	// which doubles after each failed attempt and starts again from
	// MinBackoff after a connect. A send answered with a retryable error
	// is resent after a wait drawn the same way (or the server's
	// retry_ms).
	MinBackoff, MaxBackoff time.Duration
	// ReadTimeout reconnects when nothing, not even a ping, has arrived for
	// this long (or from 7/8 of it: a busy connection's deadline moves
	// only once it has run down an eighth). Zero means 90s.
	ReadTimeout time.Duration
	// Buffer is the capacity of the Messages and Receipts channels; zero
	// means 1024.
	Buffer int
	// Store, when set, keeps this device's state across restarts (see
	// package localstore): each send is written to it before it goes
	// out, and the sends it holds unconfirmed are resent first, in order
	// and under the same ids, when the client starts; received messages
	// are kept and ones an earlier process received are not handed to
	// the app again; ticks, acks and read watermarks are recorded. The
	// app opens and closes it (after the client); one client per store.
	Store *localstore.Store
	// OnConnect is called after each successful (re)connect with the
	// session id; OnDisconnect after each lost connection.
	//
	// These callbacks and OnError run on the goroutine that reads the
	// connection, which waits for them: they must return promptly, and
	// must not call Close (it waits for that goroutine) or wait for a
	// send to be answered (the answer is read by that goroutine). Queue a
	// send from them, or hand the work to a goroutine of the app's.
	OnConnect    func(session string)
	OnDisconnect func(err error)
	// OnError receives error frames that answer no pending send.
	OnError func(code protocol.ErrorCode, message string, seq uint64)
	// AckGather is how long acks wait to go out together: an ack made
	// within AckGather of the last acks written is written with every
	// ack made until that time is up, in one system call (see acks.go),
	// or as soon as 64 are waiting. Zero means 250ms; negative writes each
	// ack at once.
	AckGather time.Duration
	// NetDialContext, when set, makes the TCP connection (a load
	// generator binds many local source addresses with it, past the
	// per-address port limit).
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Message is a chat message delivered to this device. Ack it (by Seq) once
// it is safely stored by the app; then the sender gets "delivered".
type Message struct {
	ID     string
	From   string
	Device string
	Seq    uint64
	TS     time.Time
	Body   json.RawMessage
	// Media is set on a media message: fetch the object with the media
	// API's download route and check its SHA256.
	Media *protocol.Media
	// Group is set on a message sent in a group, and on a group's system
	// message, which has Event (what changed, made by From) instead of a
	// Body. A system message's ID is unique within the group only.
	Group string
	Event *protocol.GroupEvent
	// To is set on a message this user sent from another device (From is
	// this user, Device that device): whom it went to. SentSeq is where it
	// is stored, the seq its receipts name; its ticks reach this device as
	// Receipts too. A group message this user sent from another device has
	// Group and no To, and SentSeq its place in the group's log, which
	// its group receipts name.
	To      string
	SentSeq uint64
	// GSeq is, instead of Seq, the message's place in its group's log,
	// for a group whose members read its log (a big one): acked with
	// AckGroup and read with ReadGroup (Ack and Read of its Seq, 0, do
	// nothing).
	GSeq uint64
}

// Receipt reports that By (on Device) received or read message ID. For
// a message sent in a group, Group is set, and the tick is the group's:
// every member but this user has it (delivered) or has read it (read);
// By is the member whose position made it so.
type Receipt struct {
	ID     string
	Status string
	Group  string
	By     string
	Device string
	TS     time.Time
	// Seq is where the message was stored (its Sent.Seq).
	Seq uint64
}

// Sent confirms a stored message.
type Sent struct {
	ID  string
	Seq uint64
	TS  time.Time
	// Dup is true when the store already held this id (a retry).
	Dup bool
	// Tick is protocol.StatusDelivered or StatusRead when that tick came
	// before this "sent" (ticks and answers travel apart), else empty.
	// Its Receipt comes too, but on another goroutine: an app that shows
	// "sent" when Send returns shows Tick instead, so a tick that came
	// first is never overwritten by the "sent".
	Tick string
}

// Typing reports that From (on Device) is typing to this user. Typing
// events are never stored: one missed while offline is gone.
type Typing struct {
	From   string
	Device string
	// Group is set when From is typing in that group.
	Group string
}

// Client is one device's connection to Switchboard.
type Client struct {
	opts   Options
	msgs   chan Message
	rcpt   chan Receipt
	rsync  chan ReadSync
	typing chan Typing

	presence chan Presence

	hooks  hooks
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // run and pending resend waits

	mu       sync.Mutex // guards everything below
	conn     *websocket.Conn
	session  string
	maxFrame int     // the largest frame the gateway takes (its welcome's max_frame)
	self     string  // this user, as the welcome names them
	ob       *outbox // unconfirmed sends, in order
	seenMsg  *lru    // from+id of messages handed to the app
	acked    *lru    // seqs the app acked (redeliveries of them are acked again)
	// unsentReads are reads made with no connection, or whose write
	// failed, for the next connection (Read).
	unsentReads []uint64
	// delivered are the seqs of messages the current connection gave the
	// app and the app has not acked yet: an Ack of any other seq waits
	// for its message to come again on this connection (see Ack).
	delivered map[uint64]struct{}
	// handed is, per group read from its log, the highest place in it
	// the current connection gave the app: an AckGroup past it waits for
	// those messages to come again on this connection.
	handed map[string]uint64
	// groupAcked is, per group read from its log, the highest place the
	// app acked, on any connection: one that comes again at or below it
	// is acked by the client, one above it the app still holds.
	groupAcked map[string]uint64
	// readsOut are the reads written lately, each with the times it was
	// answered with a retryable code: such an answer writes it again.
	readsOut *lru
	closeErr error
	stats    Stats
	// following are the users whose presence this client follows.
	following map[string]bool
	// followingGroups are the groups whose members' presence it follows.
	followingGroups map[string]bool
	// statusWait: the status questions (Status, GroupStatus) awaiting
	// their answers (presence.go).
	statusWait map[statusKey]*statusAsk
	ticks      *ticks // sent messages by recipient, for their receipts
	// groupWait: group operations awaiting their answers, by request id
	// (groups.go).
	groupWait   map[string]chan groupResult
	groupPrefix string
	groupNext   uint64
	// down is closed by the next connect; nil while connected.
	down chan struct{}

	// settingsTurn holds a token while a Settings call asks: one change
	// at a time. settingsAsked is the id of the last one asked (mu).
	settingsTurn  chan struct{}
	settingsAsked string
	writeMu       sync.Mutex // one writer at a time on conn
	// closeSent is the connection whose close frame this client wrote
	// (its own, or its answer to the server's); guarded by writeMu. The
	// frames written on the socket itself (writeRaw) go around the
	// library's own record of it, and no data frame may follow a close.
	closeSent *websocket.Conn
	acks      ackQueue   // acks waiting to be written; taken under writeMu
	storeMu   sync.Mutex // see lockStore; taken before mu
	// sendMu makes choosing send frames to write (under mu) and writing
	// them one step, so they reach the connection in the order the outbox
	// chose them. Lock order: sendMu, then mu or writeMu.
	sendMu sync.Mutex
}

// Dial connects and returns a Client that keeps reconnecting until Close.
// It fails if the first connection cannot be made.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	return dialWith(ctx, opts, hooks{})
}

func dialWith(ctx context.Context, opts Options, h hooks) (*Client, error) {
	if h.wait == nil {
		h.wait = sleep
	}
	if opts.Token == nil {
		return nil, errors.New("client: Options.Token is required")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 90 * time.Second
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 1024
	}
	if opts.AckGather == 0 {
		opts.AckGather = defaultAckGather
	}
	c := &Client{
		maxFrame: defaultMaxFrame,
		opts:     opts,
		hooks:    h,
		msgs:     make(chan Message, opts.Buffer),
		rcpt:     make(chan Receipt, opts.Buffer),
		rsync:    make(chan ReadSync, opts.Buffer),
		typing:   make(chan Typing, 64),
		ob:       newOutbox(),

		presence:   make(chan Presence, 256),
		following:  map[string]bool{},
		statusWait: map[statusKey]*statusAsk{},
		ticks:      newTicks(),
		seenMsg:    newLRU(100000),
		acked:      newLRU(100000),
		readsOut:   newLRU(maxUnsentReads),

		settingsTurn: make(chan struct{}, 1),
	}
	if err := c.restore(); err != nil {
		return nil, err
	}
	conn, sid, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.attach(conn, sid)
	c.wg.Add(1)
	go c.run(conn)
	return c, nil
}

// WithToken returns an Options.Token that always gives tok.
func WithToken(tok string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return tok, nil }
}

// Messages delivers each chat message once, in the order stored.
func (c *Client) Messages() <-chan Message { return c.msgs }

// Receipts delivers each receipt once. Receipts are acked automatically.
func (c *Client) Receipts() <-chan Receipt { return c.rcpt }

// TypingEvents delivers typing signals. They are dropped, never queued
// without bound, when the app does not keep up.
func (c *Client) TypingEvents() <-chan Typing { return c.typing }

// SendTyping tells user to's online devices that this user is typing.
// Send it again every few seconds while typing; receivers show it for
// about 5 seconds. Nothing is stored and nothing is answered.
func (c *Client) SendTyping(to string) error {
	if !protocol.ValidID(to) {
		return ErrBadID
	}
	c.writeCurrent(protocol.AppendTypingTo(nil, to))
	return nil
}

// Stats counts what the client did behind the app's back.
type Stats struct {
	// DuplicatesDropped counts redelivered messages not handed to the app
	// again.
	DuplicatesDropped uint64
	// Connects counts successful connections, the first included.
	Connects uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Session returns the current session id, or "" while disconnected.
func (c *Client) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// dial makes one connection and waits for the welcome frame.
func (c *Client) dial(ctx context.Context) (*websocket.Conn, string, error) {
	tok, err := c.opts.Token(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("client: token: %w", err)
	}
	h := http.Header{}
	for k, v := range c.opts.Header {
		h[k] = v
	}
	h.Set("Authorization", "Bearer "+tok)
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		Subprotocols:     []string{protocol.Subprotocol},
		NetDialContext:   c.opts.NetDialContext,
	}
	conn, resp, err := d.DialContext(ctx, c.opts.URL, h)
	if err != nil {
		if resp != nil {
			var body [256]byte
			n, _ := resp.Body.Read(body[:])
			resp.Body.Close()
			return nil, "", &HandshakeError{Status: resp.StatusCode, Body: string(body[:n])}
		}
		return nil, "", fmt.Errorf("client: dial: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(c.opts.ReadTimeout))
	_, data, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("client: waiting for welcome: %w", err)
	}
	f, err := protocol.DecodeServer(data)
	if err != nil || f.Type != protocol.TypeWelcome {
		conn.Close()
		return nil, "", fmt.Errorf("client: expected welcome, got %.100q", data)
	}
	c.mu.Lock()
	if f.MaxFrame > 0 {
		c.maxFrame = f.MaxFrame
	}
	c.self = f.User
	c.mu.Unlock()
	return conn, f.Session, nil
}

// run owns the connection: it reads until the connection fails, then
// reconnects with backoff, until Close or a close code that says not to
// reconnect.
func (c *Client) run(conn *websocket.Conn) {
	defer c.wg.Done()
	b := newBackoff(c.opts.MinBackoff, c.opts.MaxBackoff)
	for {
		err := c.readLoop(conn)
		c.detach(conn)
		if c.opts.OnDisconnect != nil {
			c.opts.OnDisconnect(err)
		}
		if stop := stopError(err); stop != nil {
			c.shutdown(stop)
			return
		}
		// A connection this client ended because its Store failed: the
		// next one may well fail the same way (a full disk, a store
		// closed under it), so the waits keep growing across connects
		// instead of starting over at MinBackoff after each.
		local := errors.Is(err, errLocalStore)
		for {
			if c.ctx.Err() != nil || !c.hooks.wait(c.ctx, b.next()) {
				return
			}
			ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
			var sid string
			conn, sid, err = c.dial(ctx)
			cancel()
			if err == nil {
				if !local {
					b.reset()
				}
				c.attach(conn, sid)
				break
			}
		}
	}
}

// attach makes conn current and resends every unconfirmed send in order,
// then tells the app (OnConnect), which may queue sends at once.
func (c *Client) attach(conn *websocket.Conn, sid string) {
	if c.attachSends(conn, sid) && c.opts.OnConnect != nil {
		c.opts.OnConnect(sid)
	}
}

// attachSends is attach under sendMu, so no send is written between the
// resends; it reports whether conn became current.
func (c *Client) attachSends(conn *websocket.Conn, sid string) bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	if c.ctx.Err() != nil {
		// Closed while dialing: the read loop fails at once and run ends.
		c.mu.Unlock()
		conn.Close()
		return false
	}
	c.conn, c.session = conn, sid
	c.delivered = map[uint64]struct{}{}
	c.handed = map[string]uint64{}
	c.acks.attach(conn)
	if c.down != nil {
		close(c.down)
		c.down = nil
	}
	c.stats.Connects++
	// A send made under a larger max_frame, or kept in the store by an
	// older build, is refused here: written, it would close the connection
	// (1009) and go first again every time.
	var tooLarge []*outgoing
	for e := c.ob.order.Front(); e != nil; {
		o := e.Value.(*outgoing)
		e = e.Next()
		if len(o.frame()) > c.maxFrame {
			c.ob.remove(o) // rewriteAll writes the rest
			o.done <- result{err: ErrTooLarge}
			tooLarge = append(tooLarge, o)
		}
	}
	pending := c.ob.rewriteAll()
	reads := c.unsentReads
	c.unsentReads = nil
	statuses := c.statusesToAskLocked()
	c.mu.Unlock()
	for _, o := range tooLarge {
		c.storeDrop(o)
	}
	if len(pending) > 0 && c.writeSends(conn, pending) != nil {
		conn.Close() // the read loop sees it and reconnects
	}
	for i, seq := range reads {
		c.mu.Lock()
		c.noteRead(seq, 0)
		c.mu.Unlock()
		if err := c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeRead, seq)); err != nil {
			c.mu.Lock()
			c.unsentReads = append(reads[i:], c.unsentReads...)
			c.mu.Unlock()
			conn.Close()
			break
		}
	}
	for _, f := range statuses {
		if err := c.write(conn, f); err != nil {
			conn.Close()
			break
		}
	}
	c.resubscribe()
	return true
}

func (c *Client) detach(conn *websocket.Conn) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn, c.session = nil, ""
		c.failGroupsLocked()
		if c.down == nil {
			c.down = make(chan struct{})
		}
	}
	c.mu.Unlock()
	c.writeMu.Lock() // after Close's last frames, if it is closing
	c.writeMu.Unlock()
	conn.Close()
}

func (c *Client) write(conn *websocket.Conn, frame []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if b, n, _ := c.acks.take(conn, nil); n > 0 {
		// The acks waiting go first, in the same write.
		var key [4]byte
		_, _ = rand.Read(key[:]) // never fails
		return c.writeRaw(conn, appendClientFrame(b, frame, key))
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return conn.WriteMessage(websocket.TextMessage, frame)
}

// writeCurrent writes to the current connection, if any. A frame that cannot
// be written now is covered by the resend after reconnecting.
func (c *Client) writeCurrent(frame []byte) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		if err := c.write(conn, frame); err != nil {
			conn.Close() // the read loop sees it and reconnects
		}
	}
}

func (c *Client) readLoop(conn *websocket.Conn) error {
	// The deadline moves once the one set last has run down an eighth,
	// not with every frame (a runtime timer update each): nothing for
	// 7/8 of ReadTimeout at least. The ping handler runs here too.
	var readBy time.Time
	alive := func() {
		if t := time.Now().Add(c.opts.ReadTimeout); t.Sub(readBy) >= c.opts.ReadTimeout/8 {
			readBy = t
			_ = conn.SetReadDeadline(t)
		}
	}
	conn.SetPingHandler(func(data string) error {
		alive()
		// Under writeMu: gathered acks are written to the socket itself.
		c.writeMu.Lock()
		defer c.writeMu.Unlock()
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		// The library's answer, under writeMu so that no frame written on
		// the socket itself follows it.
		c.writeMu.Lock()
		defer c.writeMu.Unlock()
		c.closeSent = conn
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	for {
		alive()
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		f, err := protocol.DecodeServer(data)
		if err != nil {
			continue
		}
		if err := c.handle(conn, f); err != nil {
			return err
		}
	}
}

func (c *Client) handle(conn *websocket.Conn, f *protocol.Frame) error {
	switch f.Type {
	case protocol.TypeSent:
		c.onSent(f)
	case protocol.TypeMsg:
		if f.GSeq != 0 {
			return c.onLogMsg(conn, f)
		}
		key := msgKey(f)
		c.mu.Lock()
		firstSeq, dup := c.seenMsg.get(key)
		wasAcked := c.acked.has(seqKey(f.Seq))
		if !dup {
			c.seenMsg.put(key, f.Seq)
		} else {
			c.stats.DuplicatesDropped++
		}
		if dup && firstSeq == f.Seq && !wasAcked && c.conn == conn {
			// A redelivery the app holds: under the lock Ack takes,
			// either Ack sees this and writes the ack, or it came first
			// and the ack is written below.
			c.delivered[f.Seq] = struct{}{}
		}
		c.mu.Unlock()
		if dup {
			// Already handed to the app. A second stored copy (a resend
			// after the server's duplicate window) has a new seq the app
			// never saw: ack it here. The same seq again is a redelivery:
			// if the app acked it, that ack was lost with the old
			// connection, so ack again; otherwise the app still holds it
			// and will ack by seq.
			if firstSeq != f.Seq || wasAcked {
				return c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq))
			}
			return nil
		}
		if known, err := c.storeMsg(conn, f, key); known || err != nil {
			return err // known: acked by storeMsg
		}
		// New here: the app acks it, unless it acked its seq before it
		// came (what it kept across a restart, say), when it is acked
		// here, as a redelivery would be (the app still gets it; its ack
		// of it writes nothing). Decided under the lock Ack takes, after
		// the store: an Ack made meanwhile is seen either way.
		c.mu.Lock()
		wasAcked = c.acked.has(seqKey(f.Seq))
		if !wasAcked && c.conn == conn {
			c.delivered[f.Seq] = struct{}{}
		}
		c.mu.Unlock()
		if wasAcked {
			if err := c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)); err != nil {
				return err
			}
		}
		m := Message{ID: f.ID, From: f.From, Device: f.Device, Seq: f.Seq, TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media,
			Group: f.Group, Event: f.Event, To: f.To, SentSeq: f.SentSeq}
		select {
		case c.msgs <- m:
		case <-c.ctx.Done():
			return ErrClosed
		}
		return c.ownTicks(f)
	case protocol.TypeReadSync:
		return c.onReadSync(conn, f)
	case protocol.TypeReceipt:
		// One frame covers many messages: each tick goes to the app once
		// per message, and never goes back. The store records it first: a
		// write that fails drops the connection and the receipt comes
		// again, and must then still move the ticks.
		if err := c.storeReceipt(f); err != nil {
			return err
		}
		c.mu.Lock()
		ids, seqs := c.ticks.apply(f)
		c.mu.Unlock()
		for i, id := range ids {
			r := Receipt{ID: id, Status: f.Status, Group: f.Group, By: f.By, Device: f.Device, TS: time.UnixMilli(f.TS), Seq: seqs[i]}
			select {
			case c.rcpt <- r:
			case <-c.ctx.Done():
				return ErrClosed
			}
		}
		return c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq))
	case protocol.TypeTyping:
		select {
		case c.typing <- Typing{From: f.From, Device: f.Device, Group: f.Group}:
		default: // ephemeral: drop rather than block the connection
		}
	case protocol.TypePresence:
		c.onPresence(f)
	case protocol.TypeSettings:
		c.onSettings(f)
	case protocol.TypeStatus:
		c.answerStatus(statusKey{f.Group, f.Seq}, statusResult{recipients: f.Recipients, allDelivered: f.AllDelivered, allRead: f.AllRead})
	case protocol.TypeGroup:
		c.onGroup(f)
	case protocol.TypeError:
		c.onError(f)
	}
	return nil
}

func (c *Client) onError(f *protocol.Frame) {
	if f.ID != "" && c.resolveGroup(f.ID, groupResult{err: &ServerError{Code: f.Code, Message: f.Message}, retry: time.Duration(f.RetryMS) * time.Millisecond}) {
		return
	}
	if f.ID != "" {
		c.mu.Lock()
		o := c.ob.byID[f.ID]
		if o != nil && retryable(f.Code) {
			// Resend it, and hold newer sends until it is stored: a
			// newer send stored first would break the sender's order.
			if c.ob.failed(o) {
				delay := time.Duration(f.RetryMS) * time.Millisecond
				if delay <= 0 {
					delay = retryWait(o.retries, c.opts.MinBackoff, c.opts.MaxBackoff)
				}
				c.scheduleProbe(delay)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if o != nil {
			c.storeDrop(o)
			c.resolve(o, result{err: &ServerError{Code: f.Code, Message: f.Message}})
			return
		}
	}
	if c.onRefusal(f) {
		return
	}
	if c.opts.OnError != nil {
		c.opts.OnError(f.Code, f.Message, f.Seq)
	}
}

// onRefusal hands an error naming a seq to what waits on it: a status
// question, or a read to write again. The frame says which kind of frame
// it refuses (For, and Group for a group's status); from a gateway that
// does not, any status waiting on the seq takes it first. It reports
// whether anything did.
func (c *Client) onRefusal(f *protocol.Frame) bool {
	if f.Seq == 0 {
		return false
	}
	switch f.For {
	case protocol.TypeRead:
		return c.retryRead(f)
	case protocol.TypeStatus:
		return c.statusRefused(f)
	case protocol.TypeAck:
		return false
	}
	return c.statusRefused(f) || c.retryRead(f)
}

// scheduleProbe lets the holder be written again after d. A later call,
// or the end of the hold, makes a pending one moot. c.mu must be held.
func (c *Client) scheduleProbe(d time.Duration) {
	c.ob.probeGen++
	gen := c.ob.probeGen
	c.ob.probeDue = false
	// Called from the read loop, so run holds wg above zero and Add
	// cannot race Close's Wait.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if !c.hooks.wait(c.ctx, d) {
			return
		}
		c.mu.Lock()
		due := c.ob.probeGen == gen && c.ob.holder != nil
		c.ob.probeDue = c.ob.probeDue || due
		c.mu.Unlock()
		if due {
			c.flush()
		}
	}()
}

func retryable(code protocol.ErrorCode) bool { return protocol.Retryable(code) }

// onSent resolves the send a sent frame confirms.
func (c *Client) onSent(f *protocol.Frame) {
	c.mu.Lock()
	o := c.ob.byID[f.ID]
	var early, device string
	switch {
	case o != nil && o.group != "":
		// A group message's seq is its place in the group's log: its
		// ticks are the group's.
		early = c.ticks.sent(groupKey(o.group), f.ID, f.Seq)
	case o != nil:
		early = c.ticks.sent(o.to, f.ID, f.Seq)
		device = c.ticks.earlyDevice(o.to, f.Seq, early)
	}
	c.mu.Unlock()
	if o != nil {
		c.storeSent(o, f, early)
		c.resolve(o, result{sent: Sent{ID: f.ID, Seq: f.Seq, TS: time.UnixMilli(f.TS), Dup: f.Dup, Tick: early}})
		if early != "" {
			// Its tick came before its "sent" did.
			select {
			case c.rcpt <- Receipt{ID: f.ID, Status: early, Group: o.group, By: o.to, Device: device, Seq: f.Seq, TS: time.Now()}:
			case <-c.ctx.Done():
			}
		}
	}
}

// resolve ends send o with r, and writes what its end lets go out.
func (c *Client) resolve(o *outgoing, r result) {
	c.mu.Lock()
	if c.ob.byID[o.id] != o {
		c.mu.Unlock()
		return
	}
	released := c.ob.remove(o)
	o.done <- r // under mu: whoever finds o gone finds its result
	// Held with the probe due, and something older than the holder just
	// answered: the holder may go now.
	flush := released || (c.ob.holder != nil && c.ob.probeDue) || c.ob.waiting()
	c.mu.Unlock()
	if flush {
		c.flush()
	}
}

// flush writes the sends the outbox lets go out now, in order, on the
// current connection. Without one, the next connection writes them all.
func (c *Client) flush() {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	conn := c.conn
	var batch []*outgoing
	if conn != nil {
		batch = c.ob.writable()
	}
	c.mu.Unlock()
	if len(batch) > 0 && c.writeSends(conn, batch) != nil {
		conn.Close() // the read loop sees it; the next connection writes them again
	}
}

// maxBatchWrite bounds one write of several sends: past it they go in
// more than one.
const maxBatchWrite = 64 << 10

// maxClientFrameHeader is the longest header of a masked frame: 10 bytes
// and the 4 of its key.
const maxClientFrameHeader = 14

// writeSends writes sends, in order, after any acks waiting. Several go
// out in one write (up to maxBatchWrite each), not one each: sends made
// while the last write was under way, and those a reconnect writes again,
// cost one system call here and, mostly, one read on the gateway's side.
func (c *Client) writeSends(conn *websocket.Conn, batch []*outgoing) error {
	if len(batch) == 1 {
		return c.write(conn, batch[0].frame())
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	b, _, _ := c.acks.take(conn, nil)
	keys := make([]byte, 4*len(batch))
	_, _ = rand.Read(keys) // never fails
	for i, o := range batch {
		f := o.frame()
		if len(b) > 0 && len(b)+len(f)+maxClientFrameHeader > maxBatchWrite {
			if err := c.writeRaw(conn, b); err != nil {
				return err
			}
			b = b[:0]
		}
		b = appendClientFrame(b, f, [4]byte(keys[4*i:]))
	}
	return c.writeRaw(conn, b)
}

// Send stores body (any JSON value) for user to, under the client message
// id, and returns once the server confirms it is stored. Sends go out in
// the order of the calls and are stored in that order (see the package
// doc for the rule). If the connection drops first, the send is repeated
// after reconnecting with the same id, so it is stored once; a retryable
// error frame (store_failed, say) makes it be resent, while newer sends
// wait.
//
// If ctx ends first, the send is withdrawn: the client writes it no more
// and the sends behind it go ahead. A frame already written may still be
// stored, in its place; Send again with the same id to learn whether it
// was (the server answers dup) or to store it now, after the others. A
// second Send with the id of a send still waiting joins it, and the send
// is withdrawn only when every such call has given up.
func (c *Client) Send(ctx context.Context, to, id string, body json.RawMessage) (Sent, error) {
	return c.send(ctx, to, id, body, nil)
}

// SendMedia sends a media message: m names an object this user uploaded
// through the media API (see media.Ticket), and body (may be nil) is the
// rest of the message, a caption say. The gateway lets to download the
// object before it stores the message. Like Send, it returns on "sent".
func (c *Client) SendMedia(ctx context.Context, to, id string, m protocol.Media, body json.RawMessage) (Sent, error) {
	if body == nil {
		body = json.RawMessage("null")
	}
	return c.send(ctx, to, id, body, &m)
}

func (c *Client) send(ctx context.Context, to, id string, body json.RawMessage, media *protocol.Media) (Sent, error) {
	if !protocol.ValidID(to) || !protocol.ValidID(id) {
		return Sent{}, ErrBadID
	}
	if !protocol.ValidJSON(body) || !utf8.Valid(body) {
		return Sent{}, ErrBadBody
	}
	if err := ctx.Err(); err != nil {
		return Sent{}, err // given up before it started: write nothing
	}
	o, err := c.enqueueTo(dest{to: to}, id, body, media)
	if err != nil {
		return Sent{}, err
	}
	return c.await(ctx, o)
}

// Pending is a send handed to the client with Queue or QueueGroup and
// not yet known stored: Wait gives its outcome.
type Pending struct {
	c *Client
	o *outgoing
	// held: the Queue call's own hold on the send, which keeps it in the
	// outbox while nobody waits; the first Wait takes it over. Guarded by
	// Client.mu.
	held bool
}

// ID is the send's client message id.
func (p *Pending) ID() string { return p.o.id }

// Wait returns once the server confirms the send is stored, like Send.
// If ctx ends first the send is withdrawn (as Send's is), unless another
// call still waits for it; a Wait after that returns ErrWithdrawn. A
// client closed first returns its error, and the send stays in the
// Store's outbox, for the next client.
func (p *Pending) Wait(ctx context.Context) (Sent, error) {
	c := p.c
	c.mu.Lock()
	if c.ob.byID[p.o.id] == p.o {
		p.o.waiters++ // this call, so another that gives up leaves the send to it
		if p.held {
			p.held = false
			p.o.waiters-- // the calls that wait hold it now
		}
	}
	c.mu.Unlock()
	if c.hooks.waiting != nil {
		c.hooks.waiting(p.o.id)
	}
	return c.await(ctx, p.o)
}

// Queue is Send without the wait: it returns once the send is in the
// outbox (and in Options.Store, durably, when one is set), in the order
// of the calls with every other send, and goes out as Send's does. An
// app that takes what its user types uses it to keep each line as it is
// typed, online or not.
func (c *Client) Queue(to, id string, body json.RawMessage) (*Pending, error) {
	if !protocol.ValidID(to) || !protocol.ValidID(id) {
		return nil, ErrBadID
	}
	return c.queue(dest{to: to}, id, body)
}

// QueueGroup is Queue for a send to group (SendGroup without the wait).
func (c *Client) QueueGroup(group, id string, body json.RawMessage) (*Pending, error) {
	if !protocol.ValidID(group) || !protocol.ValidID(id) {
		return nil, ErrBadID
	}
	return c.queue(dest{group: group}, id, body)
}

func (c *Client) queue(d dest, id string, body json.RawMessage) (*Pending, error) {
	if !protocol.ValidJSON(body) || !utf8.Valid(body) {
		return nil, ErrBadBody
	}
	o, err := c.enqueueTo(d, id, body, nil)
	if err != nil {
		return nil, err
	}
	return &Pending{c: c, o: o, held: true}, nil
}

// dest is where a send goes: a user or a group.
type dest struct{ to, group string }

// enqueueTo adds a send to the outbox, or joins the one with the same id
// still waiting, and writes what may go out now.
func (c *Client) enqueueTo(d dest, id string, body json.RawMessage, media *protocol.Media) (*outgoing, error) {
	unlock := c.lockStore()
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		unlock()
		return nil, c.closeErr
	}
	o := c.ob.byID[id]
	fresh := o == nil
	if fresh {
		o = &outgoing{id: id, to: d.to, group: d.group, body: append([]byte(nil), body...), media: media, done: make(chan result, 1)}
		if len(o.frame()) > c.maxFrame {
			c.mu.Unlock()
			unlock()
			return nil, ErrTooLarge
		}
		if err := c.keep(o); err != nil {
			c.mu.Unlock()
			unlock()
			return nil, err
		}
		c.ob.add(o)
	}
	o.waiters++
	c.mu.Unlock()
	unlock()
	if fresh {
		c.flush()
	}
	return o, nil
}

// await waits for o's outcome; if ctx ends first, it withdraws o unless
// another call still waits for it.
func (c *Client) await(ctx context.Context, o *outgoing) (Sent, error) {
	select {
	case r := <-o.done:
		o.done <- r // let a second waiter on the same id see it too
		return r.sent, r.err
	case <-ctx.Done():
	case <-c.ctx.Done():
		return Sent{}, c.Err()
	}
	// Under the store's lock until the store has the withdrawal: a Send
	// or Queue of the same id made meanwhile keeps it again after it, not
	// before (a drop after its keep would leave a live send marked
	// dropped, never resent after a crash, its "sent" never recorded).
	unlock := c.lockStore()
	c.mu.Lock()
	resolved := c.ob.byID[o.id] != o
	o.waiters--
	released := false
	withdrawn := !resolved && o.waiters == 0
	if withdrawn {
		released = c.ob.remove(o)
		// Its outcome, for a Wait that comes later: nothing else answers it.
		select {
		case o.done <- result{err: ErrWithdrawn}:
		default:
		}
	}
	// Its room in the window is free too: a send waiting for it may go.
	flush := released || (withdrawn && c.ob.waiting())
	c.mu.Unlock()
	if withdrawn {
		if c.hooks.dropping != nil {
			c.hooks.dropping(o.id)
		}
		c.storeDrop(o)
	}
	unlock()
	if flush {
		c.flush()
	}
	if resolved { // answered as ctx ended
		r := <-o.done
		o.done <- r
		return r.sent, r.err
	}
	return Sent{}, ctx.Err()
}

// Ack tells the server this device has the message with this seq; the
// sender then gets "delivered". An ack made soon after others may wait
// up to Options.AckGather to go out with the ones made meanwhile. Acks
// lost to a dropped connection are repeated when the message is
// redelivered.
//
// An ack is written on the connection that delivered the message: one
// the app got on an earlier connection is written when the message comes
// again on this one (the client acks it then by itself); written before,
// the gateway, which has not delivered it yet on this connection, would
// answer unknown_seq.
func (c *Client) Ack(seq uint64) {
	c.mu.Lock()
	c.acked.add(seqKey(seq))
	conn := c.conn
	_, here := c.delivered[seq]
	delete(c.delivered, seq)
	c.mu.Unlock()
	c.storeAcked(seq)
	if here && conn != nil {
		c.ack(conn, seq)
	}
}

// Read tells the sender of the message with this seq that it was read.
// Made while there is no connection, or failing to be written, it is
// written on the next connection, after the resends (a read is a
// position: a repeat is harmless); the last 256 such are kept.
//
// A read the server answers with a retryable code (rate_limited,
// unavailable) is written again after the wait it names, or a backoff:
// up to maxRetries times, then the error goes to OnError.
func (c *Client) Read(seq uint64) {
	c.storeRead(seq)
	c.writeRead(seq, 0)
}

// maxRetries bounds the writes again of one read, or one status
// question, answered with retryable codes in a row.
const maxRetries = 5

// writeRead writes the read of seq, refused retries times so far, or
// keeps it for the next connection.
func (c *Client) writeRead(seq uint64, retries int) {
	frame := protocol.AppendSeqFrame(nil, protocol.TypeRead, seq)
	c.mu.Lock()
	conn := c.conn
	if conn == nil {
		c.keepRead(seq)
	} else {
		c.noteRead(seq, retries) // before the write: its answer may come at once
	}
	c.mu.Unlock()
	if conn == nil {
		return
	}
	if err := c.write(conn, frame); err != nil {
		c.mu.Lock()
		c.keepRead(seq)
		c.mu.Unlock()
		conn.Close() // the read loop sees it and reconnects
	}
}

// noteRead records the read of seq as written, refused retries times so
// far.
//
// Lock c.mu should be held.
func (c *Client) noteRead(seq uint64, retries int) {
	k := seqKey(seq)
	c.readsOut.remove(k)
	c.readsOut.put(k, uint64(retries))
}

// retryRead writes again, after the wait f names or a backoff, a read
// that error frame f refused with a retryable code, and reports whether
// it will. An error with a seq and a retryable code that answers no
// status request can only be a read's (acks are refused unknown_seq).
func (c *Client) retryRead(f *protocol.Frame) bool {
	if f.Seq == 0 || !retryable(f.Code) {
		return false
	}
	k := seqKey(f.Seq)
	c.mu.Lock()
	n, ok := c.readsOut.get(k)
	if ok {
		c.readsOut.remove(k)
	}
	c.mu.Unlock()
	if !ok || n >= maxRetries {
		return false
	}
	seq := f.Seq
	c.retryLater(f, int(n)+1, func() { c.writeRead(seq, int(n)+1) })
	return true
}

// retryLater calls again, which writes a refused frame again, after the
// wait that error frame f, the frame's n-th retryable refusal in a row,
// names (retry_ms), or else a backoff. Close ends the wait, and again is
// not called. Called from the read loop, so run holds wg above zero and
// Add cannot race Close's Wait.
func (c *Client) retryLater(f *protocol.Frame, n int, again func()) {
	d := time.Duration(f.RetryMS) * time.Millisecond
	if d <= 0 {
		d = retryWait(n, c.opts.MinBackoff, c.opts.MaxBackoff)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if c.hooks.wait(c.ctx, d) {
			again()
		}
	}()
}

// maxUnsentReads bounds the reads kept for the next connection.
const maxUnsentReads = 256

// keepRead keeps a read for the next connection.
//
// Lock c.mu should be held.
func (c *Client) keepRead(seq uint64) {
	c.unsentReads = append(c.unsentReads, seq)
	if n := len(c.unsentReads); n > maxUnsentReads {
		c.unsentReads = c.unsentReads[n-maxUnsentReads:]
	}
}

// Close ends the client: the connection closes with 1000 and no reconnect
// follows. Unconfirmed sends fail with ErrClosed.
func (c *Client) Close() error {
	// The connection is taken, and the context ended, under writeMu:
	// the read loop, ending with it, closes the connection only once
	// the waiting acks and the close frame are written (detach). Both in
	// one hold of mu: a reconnect's attach in between would make a
	// connection current that nobody closes.
	c.writeMu.Lock()
	c.mu.Lock()
	conn := c.conn
	if c.closeErr == nil {
		c.closeErr = ErrClosed
	}
	c.cancel() // under mu, so attach sees it
	c.mu.Unlock()
	if conn != nil {
		if b, n, _ := c.acks.take(conn, nil); n > 0 {
			_ = c.writeRaw(conn, b) // the app's last acks go before the close
		}
	}
	c.acks.stop() // and none after it
	if conn != nil {
		c.closeSent = conn
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseNormal, ""), time.Now().Add(time.Second))
	}
	c.writeMu.Unlock()
	if conn != nil {
		conn.Close()
	}
	c.wg.Wait()
	return nil
}

func (c *Client) shutdown(err error) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.cancel() // under mu, so attach sees it
	c.mu.Unlock()
}

// Done is closed once the client has stopped for good: Close, or a close
// code after which it must not reconnect (see CloseError).
func (c *Client) Done() <-chan struct{} { return c.ctx.Done() }

// Err says why the client stopped, once Done is closed.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// msgKey is what tells a message's repeats apart from other messages: a
// user's message by (from, id), a group message by (group, from, id), a
// group's system message by (group, id).
func msgKey(f *protocol.Frame) string {
	switch {
	case f.Group != "" && f.Event != nil:
		return "e\x00" + f.Group + "\x00" + f.ID
	case f.Group != "":
		return "g\x00" + f.Group + "\x00" + f.From + "\x00" + f.ID
	}
	return f.From + "\x00" + f.ID
}

func validUTF8(b []byte) bool { return utf8.Valid(b) }

// onLogMsg takes a msg of a group read from its log (GSeq, no Seq): once
// to the app; one that comes again was handed before, and its ack was
// lost with a connection, so it is acked again here.
func (c *Client) onLogMsg(conn *websocket.Conn, f *protocol.Frame) error {
	if !protocol.ValidID(f.Group) {
		return nil
	}
	key := msgKey(f)
	c.mu.Lock()
	_, dup := c.seenMsg.get(key)
	if dup {
		c.stats.DuplicatesDropped++
	} else {
		c.seenMsg.put(key, 0)
	}
	if c.conn == conn {
		c.handed[f.Group] = max(c.handed[f.Group], f.GSeq)
	}
	appAcked := f.GSeq <= c.groupAcked[f.Group]
	c.mu.Unlock()
	if dup {
		if appAcked {
			c.ackGroup(conn, f.Group, f.GSeq) // its ack was lost with a connection
		}
		return nil // else the app still holds it, and acks it
	}
	if known, err := c.storeLogMsg(conn, f, key); known || err != nil {
		return err // known: acked by storeLogMsg
	}
	c.mu.Lock()
	own := f.From == c.self && f.Event == nil
	c.mu.Unlock()
	if own {
		// Sent from another device: its receipts name its place in the log.
		if err := c.ownTicksAt(f, f.GSeq); err != nil {
			return err
		}
	}
	m := Message{ID: f.ID, From: f.From, Device: f.Device, GSeq: f.GSeq, TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media,
		Group: f.Group, Event: f.Event}
	select {
	case c.msgs <- m:
	case <-c.ctx.Done():
		return ErrClosed
	}
	return nil
}

// AckGroup acks everything of group, a group read from its log, up to
// gseq that this connection gave the app (Message.GSeq). Acks of one
// group gathered together go out as one frame, of the highest. Made on
// a connection that did not give the app gseq (one that came since), it
// is not written: those messages come again and are acked then.
func (c *Client) AckGroup(group string, gseq uint64) {
	c.mu.Lock()
	if c.groupAcked == nil {
		c.groupAcked = map[string]uint64{}
	}
	c.groupAcked[group] = max(c.groupAcked[group], gseq)
	conn := c.conn
	ok := conn != nil && gseq <= c.handed[group]
	c.mu.Unlock()
	c.storeAckedGroup(group, gseq)
	if ok {
		c.ackGroup(conn, group, gseq)
	}
}

// ReadGroup tells the senders of group, a group read from its log, that
// this user read it up to gseq (Message.GSeq). Written on the current
// connection only; with none it is dropped (a read is a position: the
// next one covers it).
func (c *Client) ReadGroup(group string, gseq uint64) {
	c.storeReadGroup(group, gseq)
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		if err := c.write(conn, protocol.AppendGroupSeqFrame(nil, protocol.TypeRead, group, gseq)); err != nil {
			conn.Close()
		}
	}
}
