// Package media owns Switchboard's media: photos, videos, voice notes and
// documents. Their bytes never cross the WebSocket or NATS messages; a
// client uploads and downloads them straight to object storage with
// short-lived presigned URLs, and a chat message carries only a reference
// (key, size, sha256, mime).
//
// What it owns:
//   - Object keys, u/<owner>/<128 random bits in hex>: the owner is read
//     from the key, and keys cannot be guessed.
//   - Limits per class of media (size, allowed types), enforced by the
//     store itself at upload time, not trusted to the client.
//   - Grants (MEDIA_ACL): who besides the uploader may download an object.
//     A grant record is also the object's reference; the orphan sweep
//     removes uploads that never got one.
//   - The media function, a NATS micro service "media" on sb.fn.media.>
//     (upload, download, grant), and the HTTP API the gateway mounts.
//   - Two stores behind one interface (Store): S3 or MinIO through
//     minio-go, and an embedded store on JetStream's object store for
//     deployments with no object store, served by the binary's own HTTP
//     server with HMAC-signed URLs.
//
// What it must not do: authenticate tokens (the gateway does, and passes
// the user in), import the gateway, hold credentials in URLs beyond their
// signature, or log tickets or URLs, which are credentials.
//
// Files: store.go (the Store interface) with store_s3.go and
// store_embedded.go (which also serves the signed routes); service.go (the
// micro service and the operations it runs); acl.go (grants); sweep.go
// (orphans); api.go (HTTP); client.go (calling the function over NATS);
// keys.go; config.go; errors.go (every code a client can see).
//
// Concurrency: Service, API, Client and both stores are safe from many
// goroutines. The only lock is in sync.Once and WaitGroup for Stop; state
// shared across goroutines and instances lives in JetStream and is updated
// with compare-and-set (grants) or create-if-absent (upload claims), never
// behind an in-process mutex, so several instances behave as one.
package media
