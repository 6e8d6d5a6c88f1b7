package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/switchboard-im/switchboard/client"
)

// runChat is a line-based chat client for trying the system: each line read
// is sent to --to as a JSON string; incoming messages and receipts are
// printed, acked and marked read.
func runChat(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/v1/ws", "gateway WebSocket URL")
	tok := fs.String("token", "", "device token (from switchboard token); or SWITCHBOARD_TOKEN")
	to := fs.String("to", "", "user to send lines to (empty: only receive)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tok == "" {
		return errors.New("chat: --token is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.Dial(ctx, client.Options{URL: *url, Token: client.WithToken(*tok)})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	go func() {
		for {
			select {
			case m := <-c.Messages():
				var text string
				if json.Unmarshal(m.Body, &text) != nil {
					text = string(m.Body)
				}
				fmt.Fprintf(out, "%s %s/%s: %s\n", m.TS.Format("15:04:05"), m.From, m.Device, text)
				c.Ack(m.Seq)
				c.Read(m.Seq)
			case r := <-c.Receipts():
				fmt.Fprintf(out, "  [%s %s by %s/%s]\n", r.ID, r.Status, r.By, r.Device)
			case <-c.Done():
				return
			}
		}
	}()
	sc := bufio.NewScanner(in)
	for n := 1; sc.Scan(); n++ {
		if *to == "" {
			continue
		}
		body, _ := json.Marshal(sc.Text())
		id := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(n)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := c.Send(ctx, *to, id, body)
		cancel()
		if err != nil {
			fmt.Fprintf(out, "  [%s not sent: %v]\n", id, err)
			continue
		}
		fmt.Fprintf(out, "  [%s sent, seq %d]\n", id, s.Seq)
	}
	if *to == "" {
		<-c.Done() // receive until interrupted
	}
	return sc.Err()
}
