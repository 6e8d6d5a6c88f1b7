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
// is sent to the current recipient (--to, or /to NAME) as a JSON string;
// incoming messages, receipts, typing and the recipient's presence are
// printed. A message counts as read when it is printed on the screen, so
// its sender gets "read" then.
func runChat(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/v1/ws", "gateway WebSocket URL")
	tok := fs.String("token", "", "device token (from switchboard token); or SWITCHBOARD_TOKEN")
	to := fs.String("to", "", "user to send lines to (or type /to NAME)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tok == "" {
		return errors.New("chat: --token is required (switchboard token --user ME --device NAME prints one)")
	}
	t := &terminal{out: out}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.Dial(ctx, client.Options{
		URL: *url, Token: client.WithToken(*tok),
		OnDisconnect: func(err error) { t.say("[disconnected (%v); reconnecting]", err) },
		OnConnect:    func(string) { t.say("[connected]") },
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	user, device := tokenIdentity(*tok)
	t.say("connected as %s/%s. Type a line to send it%s; /to NAME picks who gets it; Ctrl-D quits.", user, device, recipientHint(*to))

	var mu sync.Mutex // guards recipient
	recipient := *to
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
				t.say("%s %s/%s: %s", m.TS.Format("15:04:05"), m.From, m.Device, describe(m))
				c.Ack(m.Seq)
				c.Read(m.Seq) // shown on the screen: read
			case r := <-c.Receipts():
				t.say("  [%s %s by %s/%s]", r.ID, r.Status, r.By, r.Device)
			case ty := <-c.TypingEvents():
				if time.Since(lastTyping) > 3*time.Second {
					lastTyping = time.Now()
					t.say("  [%s is typing]", ty.From)
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
	for n := 1; ; n++ {
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-c.Done():
			return goneErr(c.Err())
		}
		if !ok {
			if *to == "" && recipient == "" {
				<-c.Done() // nothing to send: receive until interrupted
			}
			return nil
		}
		if name, isTo := strings.CutPrefix(line, "/to "); isTo {
			name = strings.TrimSpace(name)
			if !protocol.ValidID(name) {
				t.say("  [%q is not a user id: 1-64 characters of A-Z a-z 0-9 _ -]", name)
				continue
			}
			mu.Lock()
			recipient = name
			mu.Unlock()
			follow(name)
			t.say("  [now sending to %s]", name)
			continue
		}
		mu.Lock()
		dest := recipient
		mu.Unlock()
		if dest == "" {
			t.say("  [not sent: pick a recipient first with /to NAME, or start with --to NAME]")
			continue
		}
		body, _ := json.Marshal(line)
		id := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(n)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := c.Send(ctx, dest, id, body)
		cancel()
		if err != nil {
			t.say("  [%s not sent: %v]", id, err)
			continue
		}
		t.say("  [%s sent, seq %d]", id, s.Seq)
	}
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
