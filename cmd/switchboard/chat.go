package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/protocol"
)

// runChat is a terminal chat client for trying the system: each line typed
// is sent to the current destination as a JSON string: a user (--to, or
// /to NAME) or a group (/group ID). /create makes a group, /add, /remove,
// /leave and /members act on the current one; /help lists the commands.
// Incoming messages, receipts, typing and the recipient's presence are
// printed, a group's as "[group] from: body" and its changes as
// "[group] * alice added carol". A message counts as read when it is
// printed on the screen, so its sender gets "read" then.
//
// It keeps a local store (chatstore.go): the conversations so far are
// shown on start, and each line typed is kept there before it goes out,
// so one typed while the connection is down, or when the chat was killed
// before the server confirmed it, is sent once when it is back.
func runChat(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/v1/ws", "gateway WebSocket URL")
	tok := fs.String("token", "", "device token (from switchboard token); or SWITCHBOARD_TOKEN")
	to := fs.String("to", "", "user to send lines to (or type /to NAME, or /group ID for a group)")
	storeFlag := fs.String("store", "", "local store file (history, and lines not yet sent); empty: "+defaultStoreHint+"; off: none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tok == "" {
		return errors.New("chat: --token is required (switchboard token --user ME --device NAME prints one)")
	}
	user, device := tokenIdentity(*tok)
	t := &terminal{out: out}
	st, err := openChatStore(*storeFlag, *url, user, device)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
		if err := showHistory(t, st, user); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.Dial(ctx, client.Options{
		URL: *url, Token: client.WithToken(*tok), Store: st,
		OnDisconnect: func(err error) { t.say("[disconnected (%v); reconnecting]", err) },
		OnConnect:    func(string) { t.say("[connected]") },
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	t.say("connected as %s/%s. Type a line to send it%s; /to NAME picks who gets it, /group ID a group; /help lists the commands; Ctrl-D quits.", user, device, recipientHint(*to))

	var mu sync.Mutex // guards recipient and group
	recipient, group := *to, ""
	follow := func(u string) {
		if u != "" {
			_ = c.SubscribePresence(u)
		}
	}
	follow(recipient)
	go func() {
		var lastTyping time.Time
		for {
			select {
			case m := <-c.Messages():
				own := m.SentSeq != 0 // sent from another device of this user
				switch {
				case m.Event != nil:
					t.say("%s [%s] * %s", m.TS.Format("15:04:05"), m.Group, describeEvent(user, m.From, m.Event))
				case m.Group != "" && own:
					t.say("%s [%s] you/%s: %s", m.TS.Format("15:04:05"), m.Group, m.Device, describe(m))
				case m.Group != "":
					t.say("%s [%s] %s: %s", m.TS.Format("15:04:05"), m.Group, m.From, describe(m))
				case own:
					t.say("%s you/%s → %s: %s", m.TS.Format("15:04:05"), m.Device, m.To, describe(m))
				default:
					t.say("%s %s/%s: %s", m.TS.Format("15:04:05"), m.From, m.Device, describe(m))
				}
				c.Ack(m.Seq)
				if !own {
					c.Read(m.Seq) // shown on the screen: read
				}
			case rs := <-c.ReadSyncs():
				if rs.Group != "" {
					t.say("  [%s read on %s]", rs.Group, rs.Device)
				} else {
					t.say("  [%s's messages read on %s]", rs.Peer, rs.Device)
				}
			case r := <-c.Receipts():
				t.say("  [%s %s by %s/%s]", r.ID, r.Status, r.By, r.Device)
			case ty := <-c.TypingEvents():
				if time.Since(lastTyping) > 3*time.Second {
					lastTyping = time.Now()
					if ty.Group != "" {
						t.say("  [%s is typing in %s]", ty.From, ty.Group)
					} else {
						t.say("  [%s is typing]", ty.From)
					}
				}
			case p := <-c.PresenceEvents():
				switch {
				case p.Hidden:
					t.say("  [%s hides when they are online]", p.User)
				case p.Online:
					t.say("  [%s is online]", p.User)
				case !p.LastSeen.IsZero():
					t.say("  [%s was last seen %s]", p.User, p.LastSeen.Format("Jan 2 15:04"))
				default:
					t.say("  [%s is offline]", p.User)
				}
			case <-c.Done():
				return
			}
		}
	}()

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// groupOp runs a group operation and prints the group it leaves.
	groupOp := func(what string, op func(context.Context) (client.Group, error)) (client.Group, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		g, err := op(ctx)
		if err != nil {
			t.say("  [%s failed: %v]", what, err)
			return g, false
		}
		t.say("  [%s: %s]", what, describeGroup(g))
		return g, true
	}
	var sending sync.WaitGroup // lines queued, until their outcome
	for n := 1; ; n++ {
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-c.Done():
			return goneErr(c.Err())
		}
		if !ok {
			mu.Lock()
			idle := recipient == "" && group == ""
			mu.Unlock()
			if *to == "" && idle {
				<-c.Done() // nothing to send: receive until interrupted
			}
			waitSent(c, &sending) // the lines typed go out before the chat ends
			return nil
		}
		mu.Lock()
		g := group
		mu.Unlock()
		if cmd, rest, isCmd := chatCommand(line); isCmd {
			switch cmd {
			case "help":
				t.say("%s", chatHelp)
			case "to":
				if !protocol.ValidID(rest) {
					t.say("  [%q is not a user id: 1-64 characters of A-Z a-z 0-9 _ -]", rest)
					continue
				}
				mu.Lock()
				recipient, group = rest, ""
				mu.Unlock()
				follow(rest)
				t.say("  [now sending to %s]", rest)
			case "group":
				if !protocol.ValidID(rest) {
					t.say("  [%q is not a group id: 1-64 characters of A-Z a-z 0-9 _ -]", rest)
					continue
				}
				mu.Lock()
				recipient, group = "", rest
				mu.Unlock()
				t.say("  [now sending to the group %s]", rest)
			case "create":
				id, name, members, err := parseCreate(rest)
				if err != nil {
					t.say("  [%v]", err)
					continue
				}
				if _, ok := groupOp("created", func(ctx context.Context) (client.Group, error) {
					return c.CreateGroup(ctx, id, name, members...)
				}); ok {
					mu.Lock()
					recipient, group = "", id
					mu.Unlock()
					t.say("  [now sending to the group %s]", id)
				}
			case "add", "remove", "leave", "members":
				if g == "" {
					t.say("  [no group picked: /group ID picks one]")
					continue
				}
				users := splitUsers(rest)
				if (cmd == "add" || cmd == "remove") && len(users) == 0 {
					t.say("  [/%s USER,USER names whom]", cmd)
					continue
				}
				groupOp(map[string]string{"add": "added", "remove": "removed", "leave": "left", "members": "members"}[cmd],
					func(ctx context.Context) (client.Group, error) {
						switch cmd {
						case "add":
							return c.AddMembers(ctx, g, users...)
						case "remove":
							return c.RemoveMembers(ctx, g, users...)
						case "leave":
							return c.LeaveGroup(ctx, g)
						}
						return c.GroupInfo(ctx, g)
					})
			}
			continue
		}
		mu.Lock()
		dest := recipient
		mu.Unlock()
		if dest == "" && g == "" {
			t.say("  [not sent: pick a recipient first with /to NAME (or a group with /group ID), or start with --to NAME]")
			continue
		}
		body, _ := json.Marshal(line)
		id := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(n)
		// Queued, not sent and waited for: the line is kept (in the
		// store) at once, in order, and goes out whenever it can.
		var p *client.Pending
		var err error
		if g != "" {
			p, err = c.QueueGroup(g, id, body)
		} else {
			p, err = c.Queue(dest, id, body)
		}
		if err != nil {
			t.say("  [%s not sent: %v]", id, err)
			continue
		}
		if c.Session() == "" {
			t.say("  [%s not sent yet: kept, and sent once connected]", id)
		}
		sending.Add(1)
		go func() {
			defer sending.Done()
			confirm(t, p)
		}()
	}
}

// waitSent waits until every line queued has its outcome, or the client
// stops for good.
func waitSent(c *client.Client, sending *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		sending.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-c.Done():
	}
}

// confirm prints the outcome of a queued line. A chat closed first says
// nothing: the line stays in the store's outbox, for the next start.
func confirm(t *terminal, p *client.Pending) {
	s, err := p.Wait(context.Background())
	switch {
	case errors.Is(err, client.ErrClosed):
	case err != nil:
		t.say("  [%s not sent: %v]", p.ID(), err)
	default:
		t.say("  [%s sent, seq %d]", p.ID(), s.Seq)
	}
}

// chatHelp lists the terminal chat's commands.
const chatHelp = `  /to NAME                       send the lines that follow to user NAME
  /group ID                      send them to the group ID
  /create ID NAME USER,USER      make the group ID named NAME (it may hold spaces) with
                                 you and the users listed, and send to it
  /add USER,USER                 add users to the current group (admins)
  /remove USER,USER              remove users from it (admins)
  /leave                         leave it
  /members                       show its members and admins
  /help                          this list`

// chatCommands are the terminal chat's commands; any other line, one
// starting with a slash included, is a message.
var chatCommands = map[string]bool{"help": true, "to": true, "group": true, "create": true, "add": true, "remove": true, "leave": true, "members": true}

// chatCommand splits a line that is a command into the command and the
// rest.
func chatCommand(line string) (cmd, rest string, ok bool) {
	word, rest, _ := strings.Cut(strings.TrimRight(line, " "), " ")
	cmd, slash := strings.CutPrefix(word, "/")
	if !slash || !chatCommands[cmd] {
		return "", "", false
	}
	return cmd, strings.TrimSpace(rest), true
}

// parseCreate reads "/create ID NAME USER,USER": the id, the name (the
// words between, or the id when there are none) and, last, the members
// (comma-separated; none when the line has only the id and a name).
func parseCreate(rest string) (id, name string, members []string, err error) {
	f := strings.Fields(rest)
	if len(f) == 0 || !protocol.ValidID(f[0]) {
		return "", "", nil, errors.New("/create ID NAME USER,USER: the id is 1-64 characters of A-Z a-z 0-9 _ -")
	}
	id, f = f[0], f[1:]
	if len(f) >= 2 {
		members = splitUsers(f[len(f)-1])
		f = f[:len(f)-1]
	}
	name = strings.Join(f, " ")
	if name == "" {
		name = id
	}
	for _, u := range members {
		if !protocol.ValidID(u) {
			return "", "", nil, fmt.Errorf("/create: %q is not a user id", u)
		}
	}
	return id, name, members, nil
}

// splitUsers reads "bob,carol" (or "bob, carol", "bob carol").
func splitUsers(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

// describeGroup is a group in one line: its name and its members, admins
// marked.
func describeGroup(g client.Group) string {
	members := make([]string, len(g.Members))
	for i, m := range g.Members {
		members[i] = m.User
		if m.Admin {
			members[i] += " (admin)"
		}
	}
	return fmt.Sprintf("%s %q: %s", g.ID, g.Name, strings.Join(members, ", "))
}

// describeEvent is how a group's system message reads: "alice added
// carol", with "you" for this user.
func describeEvent(me, from string, e *protocol.GroupEvent) string {
	who := func(u string) string {
		if u == me {
			return "you"
		}
		return u
	}
	names := func(users []string) string {
		w := make([]string, len(users))
		for i, u := range users {
			w[i] = who(u)
		}
		if len(w) < 2 {
			return strings.Join(w, "")
		}
		return strings.Join(w[:len(w)-1], ", ") + " and " + w[len(w)-1]
	}
	by, users := who(from), names(e.Users)
	var s string
	switch e.Op {
	case protocol.GroupCreate:
		s = fmt.Sprintf("%s created the group %q", by, e.Name)
		if users != "" {
			s += " with " + users
		}
	case protocol.GroupRename:
		s = fmt.Sprintf("%s renamed the group to %q", by, e.Name)
	case protocol.GroupAdd:
		s = by + " added " + users
	case protocol.GroupRemove:
		s = by + " removed " + users
	case protocol.GroupLeave:
		s = by + " left"
	case protocol.GroupPromote:
		s = by + " made " + users + " admin"
	case protocol.GroupDemote:
		s = by + " dismissed " + users + " as admin"
	default:
		s = fmt.Sprintf("%s changed the group (%s)", by, e.Op)
	}
	if len(e.Promoted) > 0 {
		s += "; now admin: " + names(e.Promoted)
	}
	return s
}

// terminal prints whole lines from several goroutines.
type terminal struct {
	mu  sync.Mutex
	out io.Writer
}

func (t *terminal) say(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.out, format+"\n", args...)
}

// describe is how a message reads on the terminal: its text, or what its
// media is.
func describe(m client.Message) string {
	var text string
	if json.Unmarshal(m.Body, &text) != nil && string(m.Body) != "null" {
		text = string(m.Body)
	}
	if m.Media == nil {
		return text
	}
	media := fmt.Sprintf("[%s, %d KB]", m.Media.Mime, (m.Media.Size+1023)/1024)
	if text == "" {
		return media
	}
	return media + " " + text
}

// goneErr says why the client stopped for good.
func goneErr(err error) error {
	if errors.Is(err, client.ErrReplaced) {
		return errors.New("chat: this device connected again elsewhere, so this session ended")
	}
	return err
}

func recipientHint(to string) string {
	if to == "" {
		return ""
	}
	return " to " + to
}

// tokenIdentity reads the user and device a token names, for the banner
// (the gateway checks the token; this only shows what it says).
func tokenIdentity(tok string) (user, device string) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "?", "?"
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "?", "?"
	}
	var c struct {
		Sub string `json:"sub"`
		Dev string `json:"dev"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "?", "?"
	}
	return c.Sub, c.Dev
}
