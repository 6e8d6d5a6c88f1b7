package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// The terminal chat's local store: the Go SDK's (client/localstore), one
// file per server, user and device, so a restart shows the same
// conversations and sends what was typed and not yet confirmed.

// defaultStoreHint says in the flag's help where the store is by default.
const defaultStoreHint = "<config dir>/switchboard/chat/<server>/<user>-<device>.db"

// historyPerConversation is how many of each conversation's last messages
// the chat shows on start.
const historyPerConversation = 20

// openChatStore opens the chat's store: at path, or at the default path
// for this server, user and device when path is empty; none for "off".
// A store another chat holds, or one that cannot be read, is an error
// that says what to do.
func openChatStore(path, gatewayURL, user, device string) (*localstore.Store, error) {
	switch path {
	case "off":
		return nil, nil
	case "":
		p, err := defaultStorePath(gatewayURL, user, device)
		if err != nil {
			return nil, err
		}
		path = p
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("chat: local store: %w", err)
	}
	st, err := localstore.Open(path)
	switch {
	case errors.Is(err, localstore.ErrLocked):
		return nil, fmt.Errorf("chat: %w: is another chat running as this device? (--store PATH picks another store, --store off runs without one)", err)
	case err != nil:
		return nil, fmt.Errorf("chat: %w (--store PATH picks another store, --store off runs without one)", err)
	}
	return st, nil
}

// defaultStorePath is where the store of user's device on the server
// at gatewayURL is kept: under the user's config directory (the store
// holds sends not yet made, so it is no cache to be cleared).
func defaultStorePath(gatewayURL, user, device string) (string, error) {
	if !protocol.ValidID(user) || !protocol.ValidID(device) {
		return "", errors.New("chat: the token names no user and device to name the local store by: give --store PATH, or --store off")
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("chat: no directory for the local store (%v): give --store PATH, or --store off", err)
	}
	server := "server"
	if u, err := url.Parse(gatewayURL); err == nil && u.Host != "" {
		server = strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(u.Host)
	}
	return filepath.Join(dir, "switchboard", "chat", server, user+"-"+device+".db"), nil
}

// showHistory prints the last messages of each conversation in the
// store, the most recent conversation last, and says how many typed lines
// wait to be sent.
func showHistory(t *terminal, st *localstore.Store, me string) error {
	convs, err := st.Conversations()
	if err != nil {
		return fmt.Errorf("chat: reading the local store: %w", err)
	}
	for i := len(convs) - 1; i >= 0; i-- {
		cv := convs[i]
		var ms []localstore.Message
		if cv.Group != "" {
			t.say("-- [%s] --", cv.Group)
			ms, err = st.GroupMessages(cv.Group, historyPerConversation)
		} else {
			t.say("-- with %s --", cv.Conv)
			ms, err = st.Messages(cv.Conv, historyPerConversation)
		}
		if err != nil {
			return fmt.Errorf("chat: reading the local store: %w", err)
		}
		for _, m := range ms {
			t.say("%s", historyLine(me, m))
		}
	}
	ob, err := st.Outbox()
	if err != nil {
		return fmt.Errorf("chat: reading the local store: %w", err)
	}
	if len(convs) > 0 {
		t.say("-- end of history; %d typed line(s) not sent yet, sent once connected --", len(ob))
	}
	return nil
}

// historyLine is how a stored message reads: as it did when it came,
// this user's own with its tick.
func historyLine(me string, m localstore.Message) string {
	ts := "--:--:--"
	if m.TS.UnixMilli() > 0 {
		ts = m.TS.Format("15:04:05")
	}
	grp := ""
	if m.Group != "" {
		grp = "[" + m.Group + "] "
	}
	cm := client.Message{Body: m.Body, Media: m.Media}
	switch {
	case m.Event != nil:
		return fmt.Sprintf("%s %s* %s", ts, grp, describeEvent(me, m.From, m.Event))
	case m.From == "":
		return fmt.Sprintf("%s %syou: %s  [%s]", ts, grp, describe(cm), tickName(m.Status))
	case m.Group != "":
		return fmt.Sprintf("%s %s%s: %s", ts, grp, m.From, describe(cm))
	}
	return fmt.Sprintf("%s %s/%s: %s", ts, m.From, m.Device, describe(cm))
}

// tickName names an own message's status.
func tickName(s localstore.Status) string {
	switch s {
	case localstore.Pending:
		return "not sent yet"
	case localstore.Delivered:
		return "delivered"
	case localstore.Read:
		return "read"
	}
	return "sent"
}
