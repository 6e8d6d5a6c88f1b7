package media

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"strconv"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Store keeps media in an S3 bucket. Clients upload with a presigned
// POST policy rather than a presigned PUT because only a policy can bound
// the size (content-length-range) and pin the type (an exact Content-Type
// condition): a presigned PUT would accept any body of any size.
type s3Store struct {
	api     *minio.Client // talks to the store from this process
	presign *minio.Client // signs for the endpoint clients use; never dials
	bucket  string
}

func newS3Store(ctx context.Context, c S3Config) (*s3Store, error) {
	open := func(endpoint string) (*minio.Client, error) {
		return minio.New(endpoint, &minio.Options{
			Creds:  credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
			Secure: c.TLS,
			// With the region known, presigning is pure computation: no
			// bucket-location request per URL.
			Region: c.Region,
		})
	}
	api, err := open(c.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("media: s3 endpoint %s: %w", c.Endpoint, err)
	}
	presign := api
	if c.PublicEndpoint != c.Endpoint {
		if presign, err = open(c.PublicEndpoint); err != nil {
			return nil, fmt.Errorf("media: s3 public endpoint %s: %w", c.PublicEndpoint, err)
		}
	}
	s := &s3Store{api: api, presign: presign, bucket: c.Bucket}
	if err := s.ensureBucket(ctx, c.Region); err != nil {
		return nil, err
	}
	return s, nil
}

// ensureBucket creates the bucket when missing. Two instances starting
// together may both try; the loser's "already owned" is success.
func (s *s3Store) ensureBucket(ctx context.Context, region string) error {
	ok, err := s.api.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("media: s3 bucket %s: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.api.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil && minio.ToErrorResponse(err).Code != "BucketAlreadyOwnedByYou" {
		return fmt.Errorf("media: create s3 bucket %s: %w", s.bucket, err)
	}
	return nil
}

func (s *s3Store) PresignUpload(ctx context.Context, key, mime string, size int64, expiry time.Duration) (*Ticket, error) {
	exp := time.Now().Add(expiry)
	p := minio.NewPostPolicy()
	for _, err := range []error{
		p.SetBucket(s.bucket),
		p.SetKey(key),
		p.SetContentType(mime),
		// At least one byte: an empty object is never media, and
		// refusing it keeps a client bug from looking like success.
		p.SetContentLengthRange(1, size),
		p.SetExpires(exp),
	} {
		if err != nil {
			return nil, fmt.Errorf("media: post policy: %w", err)
		}
	}
	u, fields, err := s.presign.PresignedPostPolicy(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("media: presign post: %w", err)
	}
	t := &Ticket{Key: key, URL: u.String(), Method: http.MethodPost, Fields: fields, Mime: mime, MaxSize: size}
	t.Expires, t.ExpiresMS = expiryFields(exp)
	return t, nil
}

func (s *s3Store) PresignDownload(ctx context.Context, key string, expiry time.Duration) (*DownloadURL, error) {
	u, err := s.presign.PresignedGetObject(ctx, s.bucket, key, expiry, nil)
	if err != nil {
		return nil, fmt.Errorf("media: presign get: %w", err)
	}
	// The URL expires at X-Amz-Date + X-Amz-Expires, whole seconds both;
	// reading them back reports the instant S3 will enforce rather than
	// one up to a second later.
	q := u.Query()
	exp := time.Now().Add(expiry)
	if date, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date")); err == nil {
		if secs, err := strconv.Atoi(q.Get("X-Amz-Expires")); err == nil {
			exp = date.Add(time.Duration(secs) * time.Second)
		}
	}
	d := &DownloadURL{Key: key, URL: u.String(), Method: http.MethodGet}
	d.Expires, d.ExpiresMS = expiryFields(exp)
	return d, nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	oi, err := s.api.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if r := minio.ToErrorResponse(err); r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound {
			return ObjectInfo{}, ErrNotFound
		}
		return ObjectInfo{}, fmt.Errorf("media: s3 stat: %w", err)
	}
	return ObjectInfo{Key: key, Size: oi.Size, ContentType: oi.ContentType, Modified: oi.LastModified}, nil
}

func (s *s3Store) Objects(ctx context.Context) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops the lister when the caller breaks early
		for oi := range s.api.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: keyPrefix, Recursive: true}) {
			if oi.Err != nil {
				yield(ObjectInfo{}, fmt.Errorf("media: s3 list: %w", oi.Err))
				return
			}
			if !yield(ObjectInfo{Key: oi.Key, Size: oi.Size, ContentType: oi.ContentType, Modified: oi.LastModified}, nil) {
				return
			}
		}
	}
}

func (s *s3Store) Remove(ctx context.Context, key string) error {
	err := s.api.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return fmt.Errorf("media: s3 remove: %w", err)
	}
	return nil
}
