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
// Digests: a media message carries the object's size and sha256 so the
// recipient can check what it downloaded; that check is what protects a
// recipient, whatever the store. The function also refuses to grant a
// media message that does not describe its object: the size always (a
// Stat, which the grant makes anyway), the sha256 on the embedded store,
// which keeps the SHA-256 it computed while storing the bytes. S3 gives
// no sha256 of an object uploaded with a POST policy short of reading it
// back: its ETag is an MD5, or a hash of part hashes, and it stores a
// SHA-256 checksum only if the upload sent one, which the ticket does not
// ask for (binding one in the POST policy would need the digest in the
// upload request). Reading the object back would cost a download per
// message sent. So on S3 a wrong digest passes the grant: the recipient's
// check refuses the download, and a sender who lies about its own upload
// breaks only its own message.
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
