package media

import (
	"fmt"
	"mime"
	"net/url"
	"sort"
	"time"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Class is a kind of media with its own size limit and allowed types.
type Class string

// The classes a chat app sends.
const (
	ClassImage    Class = "image"
	ClassVideo    Class = "video"
	ClassAudio    Class = "audio"
	ClassDocument Class = "document"
)

// MiB is a mebibyte, for writing limits.
const MiB = 1 << 20

// MaxExpiry is the longest a presigned URL may live: S3's signature v4
// refuses longer, and the embedded store keeps the same bound so a
// deployment can switch backends without revisiting its config.
const MaxExpiry = 7 * 24 * time.Hour

// MinExpiry is the shortest: S3 counts expiry in whole seconds.
const MinExpiry = time.Second

// Limit bounds one class of media.
type Limit struct {
	// MaxSize is the largest object in bytes. Must be positive.
	MaxSize int64 `json:"max_size"`
	// Types are the allowed media types, lower case and without
	// parameters ("image/png", not "image/png; q=1"). A type belongs to one
	// class only, so a type always maps to one limit.
	Types []string `json:"types"`
}

// DefaultLimits are the limits of a fresh config: the common types of each
// class, with sizes in line with what mobile chat apps accept.
func DefaultLimits() map[Class]Limit {
	return map[Class]Limit{
		ClassImage:    {MaxSize: 16 * MiB, Types: []string{"image/jpeg", "image/png", "image/webp", "image/gif"}},
		ClassVideo:    {MaxSize: 64 * MiB, Types: []string{"video/mp4", "video/webm"}},
		ClassAudio:    {MaxSize: 16 * MiB, Types: []string{"audio/ogg", "audio/mpeg", "audio/mp4", "audio/aac"}},
		ClassDocument: {MaxSize: 100 * MiB, Types: []string{"application/pdf", "text/plain", "application/zip", "application/octet-stream"}},
	}
}

// S3Config selects and reaches an S3-compatible object store (MinIO, AWS
// S3). A zero S3Config selects the embedded store.
type S3Config struct {
	// Endpoint is host:port of the S3 API as this process reaches it.
	// Empty selects the embedded store.
	Endpoint string
	// PublicEndpoint is host:port as clients reach it, when that differs
	// (a load balancer, another DNS name). The host is part of an S3
	// signature, so presigned URLs must be made for the name clients use.
	// Empty means Endpoint.
	PublicEndpoint string
	// AccessKey and SecretKey are the credentials. Required with Endpoint.
	AccessKey string
	SecretKey string
	// Bucket holds the media; it is created at start when missing. Empty
	// means "switchboard-media".
	Bucket string
	// Region is the bucket's region. Knowing it lets presigning run without
	// a round trip to the store. Empty means "us-east-1" (MinIO's default).
	Region string
	// TLS makes the endpoints https. False means http.
	TLS bool
}

// Config is the media package's configuration. A zero field means the
// default named in its comment; DefaultConfig returns them filled in.
type Config struct {
	// S3 selects an S3 backend; zero selects the embedded store.
	S3 S3Config

	// BaseURL is scheme://host[:port] of this binary's HTTP server as
	// clients reach it; the embedded store's signed URLs point at it.
	// Required with the embedded store, unused with S3.
	BaseURL string
	// SigningKey signs the embedded store's URLs; at least 32 bytes,
	// required with the embedded store. Every instance must have the same
	// one (LoadOrCreateSigningKey keeps it in a file), and only media
	// instances may: it is never stored in NATS, where other components
	// could read it and forge URLs.
	SigningKey []byte

	// Limits maps each class to its size limit and types. Nil means
	// DefaultLimits().
	Limits map[Class]Limit

	// UploadExpiry is how long an upload URL is valid. Zero means 15
	// minutes; 1 s to 7 days.
	UploadExpiry time.Duration
	// DownloadExpiry is how long a download URL is valid. Zero means 15
	// minutes; 1 s to 7 days.
	DownloadExpiry time.Duration

	// OrphanAge is how long an upload may stay unreferenced (no grant)
	// before the sweep removes it. Zero means 24 hours; it must exceed
	// UploadExpiry, or an upload still in flight could be swept.
	OrphanAge time.Duration
	// ReferenceAge is how long a grant keeps its object after the last
	// message that granted it: the grant records expire then, and the
	// sweep removes the object like an orphan. Set it past the retention
	// of messages (setup and the all-in-one take --max-age plus a day), so
	// an object lives while a stored message references it and no longer.
	// Zero means 31 days (the default retention of 30, plus one). It is
	// the grant bucket's TTL, so only Setup reads it.
	ReferenceAge time.Duration
	// SweepInterval is how often the service sweeps orphans. Zero means
	// one hour; negative turns the periodic sweep off (SweepOrphans can
	// still be called).
	SweepInterval time.Duration

	// RequestTimeout bounds a call from the HTTP API to the media function
	// over NATS. Zero means 5 seconds.
	RequestTimeout time.Duration
	// MaxGrantees caps how many users one object can be granted to, which
	// keeps a grant record well inside a KV value. Zero means 1024.
	MaxGrantees int
	// Replicas is the replication factor of the NATS buckets (1, 3 or 5),
	// for Setup. Zero keeps an existing bucket's (1 for a new one).
	Replicas int
	// DailyQuota is how many bytes of upload tickets one user may be
	// issued per UTC day (quota.go). Zero means DefaultDailyQuota;
	// negative means no quota.
	DailyQuota int64
}

// DefaultConfig returns the embedded-store configuration with every default
// filled in except BaseURL, which only the deployment knows.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

// Embedded reports whether the config selects the embedded store.
func (c Config) Embedded() bool { return c.S3.Endpoint == "" }

func (c Config) withDefaults() Config {
	if c.S3.Endpoint != "" {
		if c.S3.PublicEndpoint == "" {
			c.S3.PublicEndpoint = c.S3.Endpoint
		}
		if c.S3.Bucket == "" {
			c.S3.Bucket = "switchboard-media"
		}
		if c.S3.Region == "" {
			c.S3.Region = "us-east-1"
		}
	}
	if c.Limits == nil {
		c.Limits = DefaultLimits()
	}
	if c.UploadExpiry == 0 {
		c.UploadExpiry = 15 * time.Minute
	}
	if c.DownloadExpiry == 0 {
		c.DownloadExpiry = 15 * time.Minute
	}
	if c.OrphanAge == 0 {
		c.OrphanAge = 24 * time.Hour
	}
	if c.ReferenceAge == 0 {
		c.ReferenceAge = 31 * 24 * time.Hour
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Hour
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.MaxGrantees == 0 {
		c.MaxGrantees = 1024
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DailyQuota == 0 {
		c.DailyQuota = DefaultDailyQuota
	}
	return c
}

// Validate checks the config with its defaults applied and names the first
// field that is wrong.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if c.Embedded() {
		u, err := url.Parse(c.BaseURL)
		switch {
		case c.BaseURL == "":
			return bad("BaseURL is required with the embedded store (no S3.Endpoint)")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "":
			return bad("BaseURL %q must be http(s)://host[:port]", c.BaseURL)
		}
		if len(c.SigningKey) < 32 {
			return bad("SigningKey must be at least 32 bytes with the embedded store")
		}
	} else {
		switch {
		case c.S3.AccessKey == "" || c.S3.SecretKey == "":
			return bad("S3.AccessKey and S3.SecretKey are required with S3.Endpoint")
		case s3utils.CheckValidBucketNameStrict(c.S3.Bucket) != nil:
			return bad("S3.Bucket %q is not a valid bucket name", c.S3.Bucket)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"UploadExpiry", c.UploadExpiry}, {"DownloadExpiry", c.DownloadExpiry}} {
		if d.v < MinExpiry || d.v > MaxExpiry {
			return bad("%s %s must be between 1s and 7 days (S3's limit for presigned URLs)", d.name, d.v)
		}
	}
	if c.OrphanAge <= c.UploadExpiry {
		return bad("OrphanAge %s must exceed UploadExpiry %s, or uploads still in flight could be swept", c.OrphanAge, c.UploadExpiry)
	}
	if c.ReferenceAge < time.Second {
		return bad("ReferenceAge %s must be at least 1s", c.ReferenceAge)
	}
	if c.RequestTimeout < 0 {
		return bad("RequestTimeout %s is negative", c.RequestTimeout)
	}
	if c.MaxGrantees < 0 {
		return bad("MaxGrantees %d is negative", c.MaxGrantees)
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		return bad("Replicas %d must be 1, 3 or 5", c.Replicas)
	}
	if len(c.Limits) == 0 {
		return bad("Limits is empty: no upload could ever be accepted")
	}
	owner := map[string]Class{}
	classes := make([]string, 0, len(c.Limits))
	for class := range c.Limits {
		classes = append(classes, string(class))
	}
	sort.Strings(classes) // a stable first error
	for _, name := range classes {
		class := Class(name)
		l := c.Limits[class]
		if class == "" {
			return bad("Limits has an empty class name")
		}
		if l.MaxSize <= 0 {
			return bad("Limits[%s].MaxSize %d must be positive", class, l.MaxSize)
		}
		if len(l.Types) == 0 {
			return bad("Limits[%s].Types is empty", class)
		}
		for _, t := range l.Types {
			mt, params, err := mime.ParseMediaType(t)
			if err != nil || len(params) > 0 || mt != t {
				return bad("Limits[%s].Types: %q must be a lower-case media type without parameters", class, t)
			}
			if other, dup := owner[t]; dup {
				return bad("Limits: %q is in both %s and %s", t, other, class)
			}
			owner[t] = class
		}
	}
	return nil
}

// classify normalises a client's media type and finds its class. The
// normal form (lower case, parameters dropped) is what the signed upload
// then demands byte for byte as Content-Type.
func (c Config) classify(contentType string) (string, Class, Limit, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", "", Limit{}, errorf(ErrBadType, "%q is not a media type", contentType)
	}
	for class, l := range c.Limits {
		for _, t := range l.Types {
			if t == mt {
				return mt, class, l, nil
			}
		}
	}
	return "", "", Limit{}, errorf(ErrBadType, "media type %s is not allowed", mt)
}
