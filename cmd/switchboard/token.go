package main

import (
	"flag"
	"fmt"
	"io"
	"time"
)

// runToken mints a token with the configured key and prints it.
func runToken(args []string, out io.Writer) error {
	c := defaultAppConfig()
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	user := fs.String("user", "", "user id (required)")
	device := fs.String("device", "", "device id (required)")
	ttl := tokenTTLFlag(fs)
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory holding the dev signing secret")
	bindKeyFlags(fs, &c)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *user == "" || *device == "" {
		return fmt.Errorf("token: --user and --device are required")
	}
	keys, err := loadKeys(&c, false)
	if err != nil {
		return err
	}
	tok, err := keys.Mint(*user, *device, *ttl, time.Now(), c.Gateway.TokenRules())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
