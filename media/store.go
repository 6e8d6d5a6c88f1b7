package media

import (
	"context"
	"iter"
	"time"
)

// Store is where media bytes live, and the only part of the package that
// differs between S3 and the embedded store. Everything else (keys,
// limits, grants, the sweep) is written once above it.
//
// Implementations are safe for concurrent use. Stat returns an error
// matching ErrNotFound for a missing object.
type Store interface {
	// PresignUpload returns a ticket that lets its holder store one object
	// of type mime, 1..size bytes, under key, until expiry passes.
	PresignUpload(ctx context.Context, key, mime string, size int64, expiry time.Duration) (*Ticket, error)
	// PresignDownload returns a URL that reads key until expiry passes.
	PresignDownload(ctx context.Context, key string, expiry time.Duration) (*DownloadURL, error)
	// Stat describes an object.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Objects lists every object under the key prefix, for the sweep.
	Objects(ctx context.Context) iter.Seq2[ObjectInfo, error]
	// Remove deletes an object; removing a missing object is not an error.
	Remove(ctx context.Context, key string) error
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key         string
	Size        int64
	ContentType string
	Modified    time.Time
	// SHA256 is the hex digest of the bytes as stored, or "" when the
	// store cannot tell without reading them (S3: see doc.go).
	SHA256 string
}

// Ticket is what a client needs to upload one object straight to the
// store. It is a credential: it is answered with Cache-Control: no-store
// and never logged.
type Ticket struct {
	// Key names the object; the chat message refers to it.
	Key string `json:"key"`
	// URL and Method are where and how to upload: POST (S3: a
	// multipart/form-data form) or PUT (embedded: the raw bytes).
	URL    string `json:"url"`
	Method string `json:"method"`
	// Fields are the form fields of a POST upload, all of them, sent
	// before the file part, which comes last and is named "file".
	Fields map[string]string `json:"fields,omitempty"`
	// Headers are the headers a PUT upload must send, byte for byte.
	Headers map[string]string `json:"headers,omitempty"`
	// SignedHeaders names the headers the signature binds: Content-Type
	// must equal Headers' value, Content-Length must be 1..MaxSize.
	SignedHeaders []string `json:"signed_headers,omitempty"`
	// Mime is the normalised media type the upload must declare.
	Mime string `json:"mime"`
	// MaxSize is the largest body the store accepts: the declared size.
	MaxSize int64 `json:"max_size"`
	// Expires (RFC 3339) and ExpiresMS (unix ms) are when the URL stops
	// working; an upload must have started by then.
	Expires   string `json:"expires"`
	ExpiresMS int64  `json:"expires_ms"`
}

// DownloadURL is a short-lived URL that reads one object.
type DownloadURL struct {
	Key       string `json:"key"`
	URL       string `json:"url"`
	Method    string `json:"method"`
	Expires   string `json:"expires"`
	ExpiresMS int64  `json:"expires_ms"`
}

func expiryFields(t time.Time) (string, int64) {
	return t.UTC().Format(time.RFC3339), t.UnixMilli()
}
