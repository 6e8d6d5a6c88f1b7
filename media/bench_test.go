package media_test

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// BenchmarkPresign measures requests per second through the media
// function over NATS, as the HTTP API makes them, beside a bare NATS
// request/reply on the same server: only the ratio is worth comparing
// across machines.
func BenchmarkPresign(b *testing.B) {
	m := testkit.StartMinIO(b)
	emb := backend{name: "embedded"}.start(b)
	s3 := backend{name: "s3", minio: m}.start(b)
	ctx := context.Background()

	b.Run("nats_baseline", func(b *testing.B) {
		nc := emb.n.Conn
		sub, err := nc.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		req := []byte(`{"user":"alice","mime":"image/png","size":123456}`)
		runRate(b, func() error {
			_, err := nc.Request("bench.echo", req, 5*time.Second)
			return err
		})
	})
	for _, h := range []*harness{emb, s3} {
		b.Run(h.b.name+"/upload", func(b *testing.B) {
			runRate(b, func() error {
				_, err := h.client.Upload(ctx, "alice", "image/png", 123456)
				return err
			})
		})
		key := h.mustUpload("alice", "image/png", []byte("x"))
		if r := h.grant("alice", key, "bob"); r.status != http.StatusOK {
			b.Fatal(r)
		}
		b.Run(h.b.name+"/download", func(b *testing.B) {
			runRate(b, func() error {
				_, err := h.client.Download(ctx, "bob", key)
				return err
			})
		})
	}
}

// runRate runs fn b.N times from parallel goroutines and reports req/s.
func runRate(b *testing.B, fn func() error) {
	b.ReportAllocs()
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := fn(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkTransfer10MB moves a 10 MB file through presigned URLs and,
// for comparison, through minio-go's PutObject and GetObject against the
// same MinIO; the embedded store's signed URLs run beside them. MB/s is
// reported by the testing package from SetBytes.
func BenchmarkTransfer10MB(b *testing.B) {
	const size = 10 << 20
	m := testkit.StartMinIO(b)
	s3 := backend{name: "s3", minio: m}.start(b)
	emb := backend{name: "embedded"}.start(b)
	data := randomBytes(b, size)
	ctx := context.Background()

	for _, h := range []*harness{s3, emb} {
		var last string
		b.Run(h.b.name+"/presigned_upload", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				t := h.ticket("alice", "application/pdf", size)
				req := uploadRequest(b, t, data)
				b.StartTimer()
				resp, err := h.hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					b.Fatalf("upload: %d", resp.StatusCode)
				}
				last = t.Key
			}
		})
		if last == "" {
			last = h.mustUpload("alice", "application/pdf", data)
		}
		b.Run(h.b.name+"/presigned_download", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				d, r := h.downloadURL("alice", last)
				if d == nil {
					b.Fatal(r)
				}
				b.StartTimer()
				resp, err := h.hc.Get(d.URL)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || n != size {
					b.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
				}
			}
		})
	}

	var direct string
	b.Run("s3/minio_go_put", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			key, _ := media.NewKey("alice")
			if _, err := s3.mc.PutObject(ctx, s3.cfg.S3.Bucket, key, bytes.NewReader(data), size,
				minio.PutObjectOptions{ContentType: "application/pdf"}); err != nil {
				b.Fatal(err)
			}
			direct = key
		}
	})
	b.Run("s3/minio_go_get", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			o, err := s3.mc.GetObject(ctx, s3.cfg.S3.Bucket, direct, minio.GetObjectOptions{})
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, o)
			o.Close()
			if err != nil || n != size {
				b.Fatalf("get: %d bytes, %v", n, err)
			}
		}
	})
}

// uploadRequest builds the request a ticket asks for, body included, so
// only the transfer is timed.
func uploadRequest(b *testing.B, t *media.Ticket, data []byte) *http.Request {
	b.Helper()
	if t.Method == http.MethodPut {
		req, err := http.NewRequest(http.MethodPut, t.URL, bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		for k, v := range t.Headers {
			req.Header.Set(k, v)
		}
		return req
	}
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range t.Fields {
		_ = w.WriteField(k, v)
	}
	fw, _ := w.CreateFormFile("file", "upload")
	_, _ = fw.Write(data)
	_ = w.Close()
	req, err := http.NewRequest(http.MethodPost, t.URL, bytes.NewReader(buf.Bytes()))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	return req
}
