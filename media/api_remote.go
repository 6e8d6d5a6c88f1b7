package media

import (
	"log/slog"

	"github.com/switchboard-im/switchboard/contract"
)

// NewRemoteAPI is the HTTP API of a process that does not run the media
// function (a gateway): its routes ask the function over NATS, and it
// never opens the media buckets or the signing key, which only the media
// function may read. The embedded store's blob URLs are served where the
// function runs (the all-in-one, or `switchboard function media
// --media-listen`); here Blob answers not_found.
//
// nc asks the function: a gateway passes its contract.Caller, whose answers
// come on the prefix the media function may answer on.
func NewRemoteAPI(nc contract.Requester, cfg Config, log *slog.Logger) *API {
	cfg = cfg.withDefaults()
	return &API{client: NewClient(nc, cfg.RequestTimeout), log: log.WithGroup("media")}
}
