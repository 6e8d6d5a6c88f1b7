package natsauth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ErrKeys wraps a missing, unreadable or malformed key.
var ErrKeys = errors.New("natsauth: keys")

// Keys are every role's NKey. A process holds only the seed of its own
// role (a file); the server needs only the public keys.
type Keys struct {
	pairs map[Role]nkeys.KeyPair
}

// Generate makes a fresh key for every role.
func Generate() (*Keys, error) {
	k := &Keys{pairs: map[Role]nkeys.KeyPair{}}
	for _, r := range keyRoles {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, err
		}
		k.pairs[r] = kp
	}
	return k, nil
}

// SeedFile is where a role's seed is kept in dir.
func SeedFile(dir string, r Role) string { return filepath.Join(dir, string(r)+".nk") }

// LoadOrCreate reads every role's seed from dir, generating and writing
// (0600) the ones that are missing, so the all-in-one has credentials on
// its first start and the same ones after.
func LoadOrCreate(dir string) (*Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	k := &Keys{pairs: map[Role]nkeys.KeyPair{}}
	for _, r := range keyRoles {
		kp, err := readSeed(SeedFile(dir, r))
		if errors.Is(err, fs.ErrNotExist) {
			if kp, err = nkeys.CreateUser(); err == nil {
				err = writeSeed(SeedFile(dir, r), kp)
			}
			if errors.Is(err, fs.ErrExist) { // written meanwhile by another process
				kp, err = readSeed(SeedFile(dir, r))
			}
		}
		if err != nil {
			return nil, err
		}
		k.pairs[r] = kp
	}
	return k, nil
}

// Write saves every role's seed into dir (0600), refusing to overwrite.
func (k *Keys) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, r := range keyRoles {
		if err := writeSeed(SeedFile(dir, r), k.pairs[r]); err != nil {
			return err
		}
	}
	return nil
}

func readSeed(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not an NKey seed file", ErrKeys, path)
	}
	if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("%w: %s is not a user seed", ErrKeys, path)
	}
	return kp, nil
}

func writeSeed(path string, kp nkeys.KeyPair) error {
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(append(seed, '\n'))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

// Public is a role's public key.
func (k *Keys) Public(r Role) string {
	pub, _ := k.pairs[r].PublicKey()
	return pub
}

// ServerUsers are the users an embedded server authenticates: each role's
// public key with its permissions.
func (k *Keys) ServerUsers() []*server.NkeyUser {
	users := make([]*server.NkeyUser, 0, len(Roles))
	for _, r := range Roles {
		users = append(users, &server.NkeyUser{Nkey: k.Public(r), Permissions: Permissions(r)})
	}
	return users
}

// Options are the connection options of a client in role r: its key and
// its inbox prefix.
func (k *Keys) Options(r Role) []nats.Option {
	kp := k.pairs[r]
	return []nats.Option{
		nats.Nkey(k.Public(r), func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }),
		nats.CustomInboxPrefix(InboxPrefix(r)),
	}
}

// EnvVar is the environment variable through which deploy/*.conf takes a
// role's public key.
func EnvVar(r Role) string {
	return "SWITCHBOARD_NKEY_" + strings.ToUpper(string(r))
}

// Route credentials: the user name every node of a cluster presents to
// the others, and the environment variables deploy/cluster takes the
// password and the routes from.
const (
	RouteUser        = "switchboard-route"
	EnvRoutePassword = "SWITCHBOARD_ROUTE_PASSWORD"
	EnvRoutes        = "SWITCHBOARD_ROUTES"
)

// DefaultRoutes are the cluster listen addresses of deploy/cluster's three
// nodes on one machine.
var DefaultRoutes = []string{"127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224"}

// NewRoutePassword returns a random route password (hex, so it needs no
// escaping in a URL).
func NewRoutePassword() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// DeployEnv is the environment deploy/*.conf read: every role's public key,
// the leaf links' seed (deploy/regions) and, for a cluster, the route
// password and the routes (host:port each) with it.
func (k *Keys) DeployEnv(routePassword string, routes []string) map[string]string {
	env := map[string]string{}
	for _, r := range keyRoles {
		env[EnvVar(r)] = k.Public(r)
	}
	// A region's leaf link signs in with the leaf key (deploy/regions).
	seed, _ := k.pairs[Leaf].Seed()
	env[EnvLeafSeed] = string(seed)
	env[EnvRoutePassword] = routePassword
	urls := make([]string, len(routes))
	for i, hp := range routes {
		u := url.URL{Scheme: "nats-route", User: url.UserPassword(RouteUser, routePassword), Host: hp}
		urls[i] = strconv.Quote(u.String())
	}
	env[EnvRoutes] = "[" + strings.Join(urls, ", ") + "]"
	return env
}

// WriteSeed saves role r's seed at path (0600), refusing to overwrite: to
// hand one component, or the nats CLI, its own key alone.
func (k *Keys) WriteSeed(path string, r Role) error { return writeSeed(path, k.pairs[r]) }

// RoleOptions are the connection options of a process in role r. It
// authenticates with a JWT credentials file when credsFile is set (a
// decentralised deployment with the same permissions), else with the
// role's seed in keysDir (SeedFile), which must exist.
func RoleOptions(r Role, keysDir, credsFile string) ([]nats.Option, error) {
	opts := []nats.Option{nats.CustomInboxPrefix(InboxPrefix(r))}
	if credsFile != "" {
		return append(opts, nats.UserCredentials(credsFile)), nil
	}
	path := SeedFile(keysDir, r)
	kp, err := readSeed(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no NATS key for the %s role at %s: make the keys with "+
			"`switchboard nats-keys --out %s` (the all-in-one makes them in its data dir) and "+
			"give the NATS server their public keys", ErrKeys, r, path, keysDir)
	}
	if err != nil {
		return nil, err
	}
	pub, _ := kp.PublicKey()
	return append(opts, nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) })), nil
}
