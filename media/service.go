package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// The media function as operators see it in `nats micro ls`.
const (
	ServiceName = "media"
	Version     = "1.0.0"
)

// The JetStream assets, as `nats kv ls` and `nats object ls` show them.
const (
	// BucketACL is the KV bucket of grant records, key = object key.
	BucketACL = "MEDIA_ACL"
	// BucketObjects is the embedded store's object store.
	BucketObjects = "MEDIA"
	// BucketUploads is the embedded store's upload claims.
	BucketUploads = "MEDIA_UPLOADS"
	// BucketQuota (quota.go) counts each user's upload tickets per day.
)

// Service is the media function: it issues upload tickets and download
// URLs, keeps grants, and sweeps orphans. Any number of instances may run
// on one NATS; they share requests through micro's default queue group
// and state through JetStream.
//
// Its methods are safe from many goroutines. The micro handlers run one
// request at a time per endpoint and instance, which keeps micro's stats
// exact; more throughput comes from more instances.
type Service struct {
	cfg   Config
	log   *slog.Logger
	store Store
	acl   *acl
	quota *quota // nil: no quota
	svc   micro.Service
	api   *API

	cancel   context.CancelFunc
	sweeper  sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New binds to the buckets the operator made (Setup; ErrNotSetUp when
// they are missing), creates the S3 bucket if missing, starts the micro
// service on nc and, unless SweepInterval is negative, the orphan sweep.
// Stop undoes the last two.
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log = log.WithGroup("media")
	store, a, blob, err := open(ctx, js, cfg, log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, store: store, acl: a}
	if cfg.DailyQuota > 0 {
		if s.quota, err = openQuota(ctx, js, cfg); err != nil {
			return nil, err
		}
	}
	s.api = &API{client: NewClient(nc, cfg.RequestTimeout), blob: blob, log: log}

	backend := "s3"
	if cfg.Embedded() {
		backend = "embedded"
	}
	s.svc, err = micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "Switchboard media: presigned upload and download URLs and who may download what",
		Metadata:    map[string]string{"backend": backend},
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			log.Error("micro", "subject", e.Subject, "err", e.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("media: micro service: %w", err)
	}
	g := s.svc.AddGroup(contract.MediaSubjectPrefix)
	for _, ep := range []struct {
		name, doc string
		h         micro.HandlerFunc
	}{
		{"upload", "an upload ticket for {user, mime, size}", s.handleUpload},
		{"download", "a download URL for {user, key} if user may read key", s.handleDownload},
		{"grant", "let {users} download {key}, owned by {user}", s.handleGrant},
	} {
		if err := g.AddEndpoint(ep.name, ep.h, micro.WithEndpointMetadata(map[string]string{"description": ep.doc})); err != nil {
			_ = s.svc.Stop()
			return nil, fmt.Errorf("media: endpoint %s: %w", ep.name, err)
		}
	}

	sctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if cfg.SweepInterval > 0 {
		s.sweeper.Add(1)
		go s.runSweeper(sctx)
	}
	log.Info("started", "backend", backend, "version", Version)
	return s, nil
}

// open binds to the buckets the config needs (Setup made them) and opens
// the store. blob is the
// embedded store when that is the backend, for the signed HTTP routes.
func open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (Store, *acl, *embeddedStore, error) {
	kv, err := bindKV(ctx, js, BucketACL)
	if err != nil {
		return nil, nil, nil, err
	}
	a := &acl{kv: kv, maxGrantees: cfg.MaxGrantees}
	if cfg.Embedded() {
		es, err := newEmbeddedStore(ctx, js, cfg, log)
		if err != nil {
			return nil, nil, nil, err
		}
		return es, a, es, nil
	}
	ss, err := newS3Store(ctx, cfg.S3)
	if err != nil {
		return nil, nil, nil, err
	}
	return ss, a, nil, nil
}

// Stop stops the micro service (draining requests in flight) and the
// sweep. It is safe to call twice.
func (s *Service) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.svc.Stop()
		s.cancel()
		s.sweeper.Wait()
	})
	return s.stopErr
}

// API returns the HTTP handlers, calling this deployment's media function
// over NATS and serving this service's embedded store.
func (s *Service) API() *API { return s.api }

// Info is the micro service's description, as `nats micro info` shows it.
func (s *Service) Info() micro.Info { return s.svc.Info() }

// Upload issues a ticket for user to upload one object of type mime and
// at most size bytes, counted against their daily quota.
func (s *Service) Upload(ctx context.Context, user, mime string, size int64) (*Ticket, error) {
	return s.upload(ctx, user, mime, size, time.Now())
}

// upload is Upload as of now.
func (s *Service) upload(ctx context.Context, user, mime string, size int64, now time.Time) (*Ticket, error) {
	if !protocol.ValidID(user) {
		return nil, errorf(ErrBadRequest, "user id must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	mt, class, limit, err := s.cfg.classify(mime)
	if err != nil {
		return nil, err
	}
	if size < 1 {
		return nil, errorf(ErrBadRequest, "size must be at least 1 byte")
	}
	if size > limit.MaxSize {
		return nil, errorf(ErrTooLarge, "%d bytes is above the %s limit of %d bytes", size, class, limit.MaxSize)
	}
	key, err := NewKey(user)
	if err != nil {
		return nil, err
	}
	if s.quota != nil {
		if err := s.quota.take(ctx, user, size, now); err != nil {
			return nil, err
		}
	}
	return s.store.PresignUpload(ctx, key, mt, size, s.cfg.UploadExpiry)
}

// Download issues a download URL for key if user may read it. Access is
// checked before existence, so someone not granted a key cannot tell
// whether it exists.
//
// Only the owner's request costs a Stat. A grant record proves the object
// exists: Grant stats the object before writing one, the sweep never
// removes an object that has one, and nothing else deletes objects. That
// keeps the common request (a recipient fetching media) to one KV read and
// a signature, with no round trip to the store.
func (s *Service) Download(ctx context.Context, user, key string) (*DownloadURL, error) {
	if !protocol.ValidID(user) {
		return nil, errorf(ErrBadRequest, "user id must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	owner, err := ParseKey(key)
	if err != nil {
		return nil, err
	}
	if owner != user {
		ok, err := s.acl.allowed(ctx, key, user)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errorf(ErrForbidden, "%s may not download this object", user)
		}
	} else if _, err := s.store.Stat(ctx, key); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, errorf(ErrNotFound, "no object has been uploaded under this key")
		}
		return nil, err
	}
	return s.store.PresignDownload(ctx, key, s.cfg.DownloadExpiry)
}

// Grant lets users download key, which owner must have uploaded: a key
// outside u/<owner>/ is refused with ErrForbidden, and a key with no object
// yet with ErrNotFound. Users are added to earlier grants, never replace
// them. A grant with no users still marks the object as referenced.
func (s *Service) Grant(ctx context.Context, key, owner string, users []string) error {
	_, err := s.grant(ctx, contract.GrantRequest{User: owner, Key: key, Users: users})
	return err
}

func (s *Service) grant(ctx context.Context, r contract.GrantRequest) (grantRecord, error) {
	keyOwner, err := ParseKey(r.Key)
	if err != nil {
		return grantRecord{}, err
	}
	if !protocol.ValidID(r.User) {
		return grantRecord{}, errorf(ErrBadRequest, "user id must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	if keyOwner != r.User {
		return grantRecord{}, errorf(ErrForbidden, "only the uploader can grant a key; %s may grant keys under u/%s/ only", r.User, r.User)
	}
	info, err := s.store.Stat(ctx, r.Key)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return grantRecord{}, errorf(ErrNotFound, "no object has been uploaded under this key")
		}
		return grantRecord{}, err
	}
	if err := describes(r, info); err != nil {
		return grantRecord{}, err
	}
	return s.acl.grant(ctx, r.Key, r.User, r.Users)
}

// describes checks what a media message says of an object against the
// object as stored. A sender who lies about its own upload would only
// break its message (the recipient checks the digest of what it
// downloads), but refusing here keeps such a message from being stored
// and tells the sender why.
func describes(r contract.GrantRequest, info ObjectInfo) error {
	if r.Size != 0 && r.Size != info.Size {
		return errorf(ErrBadRequest, "the message says %d bytes, but %d were uploaded under this key", r.Size, info.Size)
	}
	if r.SHA256 != "" && info.SHA256 != "" && r.SHA256 != info.SHA256 {
		return errorf(ErrBadRequest, "the message's sha256 is not that of the bytes uploaded under this key")
	}
	if r.Mime != "" && info.ContentType != "" && !sameMediaType(r.Mime, info.ContentType) {
		// The recipient's app shows the bytes as the message's type: an
		// upload of one type must not be shown as another (HTML as an
		// image's page, say).
		return errorf(ErrBadRequest, "the message's mime is not the type uploaded under this key")
	}
	return nil
}

// sameMediaType compares two media types, ignoring case and parameters.
func sameMediaType(a, b string) bool {
	ta, _, errA := mime.ParseMediaType(a)
	tb, _, errB := mime.ParseMediaType(b)
	return errA == nil && errB == nil && ta == tb
}

// Allowed reports whether user may download key: its uploader always may,
// anyone else once granted.
func (s *Service) Allowed(ctx context.Context, key, user string) (bool, error) {
	owner, err := ParseKey(key)
	if err != nil {
		return false, err
	}
	if owner == user {
		return true, nil
	}
	return s.acl.allowed(ctx, key, user)
}

func (s *Service) handleUpload(req micro.Request) {
	var r contract.UploadRequest
	if !s.decode(req, &r) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	t, err := s.Upload(ctx, r.User, r.Mime, r.Size)
	s.respond(req, t, err)
}

func (s *Service) handleDownload(req micro.Request) {
	var r contract.DownloadRequest
	if !s.decode(req, &r) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	d, err := s.Download(ctx, r.User, r.Key)
	s.respond(req, d, err)
}

func (s *Service) handleGrant(req micro.Request) {
	var r contract.GrantRequest
	if !s.decode(req, &r) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	rec, err := s.grant(ctx, r)
	s.respond(req, contract.GrantResult{Key: r.Key, Owner: rec.Owner, Users: rec.Users}, err)
}

func (s *Service) decode(req micro.Request, v any) bool {
	if err := json.Unmarshal(req.Data(), v); err != nil {
		s.respond(req, nil, errorf(ErrBadRequest, "the request is not valid JSON"))
		return false
	}
	return true
}

// respond answers with v, or with err as a micro error: the code is the
// HTTP status, the description the message, the data the Error's JSON.
func (s *Service) respond(req micro.Request, v any, err error) {
	var rerr error
	if err == nil {
		rerr = req.RespondJSON(v)
	} else {
		e := asError(err)
		if e.Status >= 500 {
			s.log.Error("request failed", "subject", req.Subject(), "err", err)
		}
		data, _ := json.Marshal(e)
		rerr = req.Error(strconv.Itoa(e.Status), e.Message, data)
	}
	if rerr != nil {
		s.log.Warn("respond", "subject", req.Subject(), "err", rerr)
	}
}
