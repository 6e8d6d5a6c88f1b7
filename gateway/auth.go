package gateway

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-im/switchboard/protocol"
)

// Auth errors. None of them carries the token: tokens are never logged.
var (
	ErrNoToken      = errors.New("gateway: no token")
	ErrBadToken     = errors.New("gateway: invalid token")
	ErrTokenExpired = errors.New("gateway: token expired")
	ErrNoKey        = errors.New("gateway: no signing key configured")
)

// Claims are the JWT claims Switchboard reads: sub is the user id, dev the
// device id, exp is required; iat, aud and iss are checked when present or
// configured (TokenRules).
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

// TokenRules are what a token must satisfy besides a valid signature, an
// allowed algorithm and an expiry that has not passed. The zero value adds
// nothing; Config.TokenRules gives the gateway's.
type TokenRules struct {
	// Audience, when set, must be one of the token's aud, and Issuer,
	// when set, its iss: a token minted with the same key for another
	// service, or by another issuer, is refused.
	Audience string
	Issuer   string
	// MaxTTL, when set, bounds a token's lifetime: exp - iat, or exp - now
	// for a token without iat. A leaked token works until it expires, so
	// no token may say it lives longer.
	MaxTTL time.Duration
}

// IssuedAtLeeway is how far in the future a token's iat may be, for
// clocks that differ a little. A token issued further ahead is refused:
// an iat in the future would let it pass a lifetime bound it does not
// meet.
const IssuedAtLeeway = time.Minute

// Verify checks a token's signature, algorithm and expiry, that its user
// and device are safe ids, that its iat is not ahead of now by more than
// IssuedAtLeeway, and rules. Every failure but expiry is ErrBadToken.
func (k *Keys) Verify(token string, now time.Time, rules TokenRules) (Identity, error) {
	if token == "" {
		return Identity{}, ErrNoToken
	}
	method := jwt.SigningMethodHS256.Alg()
	if k.pub != nil {
		method = jwt.SigningMethodEdDSA.Alg()
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{method}), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now })}
	if rules.Audience != "" {
		opts = append(opts, jwt.WithAudience(rules.Audience))
	}
	if rules.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(rules.Issuer))
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) {
		if k.pub != nil {
			return k.pub, nil
		}
		return k.secret, nil
	}, opts...)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, ErrTokenExpired
	case err != nil:
		return Identity{}, ErrBadToken
	}
	if !protocol.ValidID(c.Subject) || !protocol.ValidID(c.Device) {
		return Identity{}, fmt.Errorf("%w: sub and dev must be safe ids", ErrBadToken)
	}
	exp, issued := c.ExpiresAt.Time, now
	if c.IssuedAt != nil {
		issued = c.IssuedAt.Time
		if issued.Sub(now) > IssuedAtLeeway {
			return Identity{}, fmt.Errorf("%w: issued in the future", ErrBadToken)
		}
	}
	if rules.MaxTTL > 0 && exp.Sub(issued) > rules.MaxTTL {
		return Identity{}, fmt.Errorf("%w: lives longer than %s", ErrBadToken, rules.MaxTTL)
	}
	return Identity{User: c.Subject, Device: c.Device, Expires: exp}, nil
}

// Mint signs a token for user and device valid for ttl, with rules'
// audience and issuer. A ttl over rules.MaxTTL is refused: the gateway
// would refuse the token.
func (k *Keys) Mint(user, device string, ttl time.Duration, now time.Time, rules TokenRules) (string, error) {
	if err := protocol.CheckID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	if err := protocol.CheckID(device); err != nil {
		return "", fmt.Errorf("device: %w", err)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("%w: ttl must be positive", ErrConfig)
	}
	if rules.MaxTTL > 0 && ttl > rules.MaxTTL {
		return "", fmt.Errorf("%w: ttl %s is over the maximum token lifetime %s", ErrConfig, ttl, rules.MaxTTL)
	}
	c := Claims{Device: device, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    rules.Issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if rules.Audience != "" {
		c.Audience = jwt.ClaimStrings{rules.Audience}
	}
	switch {
	case k.secret != nil:
		return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(k.secret)
	case k.priv != nil:
		return jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(k.priv)
	}
	return "", ErrNoKey
}

// verifyToken checks a token presented to this gateway now.
func (s *Server) verifyToken(token string) (Identity, error) {
	return s.keys.Verify(token, time.Now(), s.cfg.TokenRules())
}
