package gateway

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-im/switchboard/gateway/protocol"
)

// Auth errors. None of them carries the token: tokens are never logged.
var (
	ErrNoToken      = errors.New("gateway: no token")
	ErrBadToken     = errors.New("gateway: invalid token")
	ErrTokenExpired = errors.New("gateway: token expired")
	ErrNoKey        = errors.New("gateway: no signing key configured")
)

// Claims are the JWT claims Switchboard reads: sub is the user id, dev the
// device id, exp is required.
type Claims struct {
	Device string `json:"dev"`
	jwt.RegisteredClaims
}

// Identity is an authenticated user and device.
type Identity struct {
	User    string
	Device  string
	Expires time.Time
}

// Keys verifies tokens (and, with a private key or secret, mints them).
// Exactly one of HS256 or Ed25519 is used.
type Keys struct {
	secret []byte
	pub    ed25519.PublicKey
	priv   ed25519.PrivateKey
}

// NewHS256Keys uses a shared secret of at least 32 bytes.
func NewHS256Keys(secret []byte) (*Keys, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("%w: HS256 secret must be at least 32 bytes", ErrConfig)
	}
	return &Keys{secret: secret}, nil
}

// NewEd25519Keys parses a PEM public key (PKIX) and, optionally, a PEM
// private key (PKCS#8) for minting.
func NewEd25519Keys(pubPEM, privPEM []byte) (*Keys, error) {
	k := &Keys{}
	if len(pubPEM) > 0 {
		pub, err := parsePEM(pubPEM, x509.ParsePKIXPublicKey)
		if err != nil {
			return nil, err
		}
		p, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: public key is not Ed25519", ErrConfig)
		}
		k.pub = p
	}
	if len(privPEM) > 0 {
		priv, err := parsePEM(privPEM, x509.ParsePKCS8PrivateKey)
		if err != nil {
			return nil, err
		}
		p, ok := priv.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: private key is not Ed25519", ErrConfig)
		}
		k.priv = p
		if k.pub == nil {
			k.pub = p.Public().(ed25519.PublicKey)
		}
	}
	if k.pub == nil {
		return nil, fmt.Errorf("%w: Ed25519 needs a public key", ErrConfig)
	}
	return k, nil
}

func parsePEM(b []byte, parse func([]byte) (any, error)) (any, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: key is not PEM", ErrConfig)
	}
	k, err := parse(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return k, nil
}

// Verify checks a token's signature, algorithm and expiry and that its user
// and device are safe ids.
func (k *Keys) Verify(token string, now time.Time) (Identity, error) {
	if token == "" {
		return Identity{}, ErrNoToken
	}
	method := jwt.SigningMethodHS256.Alg()
	if k.pub != nil {
		method = jwt.SigningMethodEdDSA.Alg()
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) {
		if k.pub != nil {
			return k.pub, nil
		}
		return k.secret, nil
	}, jwt.WithValidMethods([]string{method}), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, ErrTokenExpired
	case err != nil:
		return Identity{}, ErrBadToken
	}
	if !protocol.ValidID(c.Subject) || !protocol.ValidID(c.Device) {
		return Identity{}, fmt.Errorf("%w: sub and dev must be safe ids", ErrBadToken)
	}
	return Identity{User: c.Subject, Device: c.Device, Expires: c.ExpiresAt.Time}, nil
}

// Mint signs a token for user and device valid for ttl.
func (k *Keys) Mint(user, device string, ttl time.Duration, now time.Time) (string, error) {
	if err := protocol.CheckID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	if err := protocol.CheckID(device); err != nil {
		return "", fmt.Errorf("device: %w", err)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("%w: ttl must be positive", ErrConfig)
	}
	c := Claims{Device: device, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	switch {
	case k.secret != nil:
		return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(k.secret)
	case k.priv != nil:
		return jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(k.priv)
	}
	return "", ErrNoKey
}
