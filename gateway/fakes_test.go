package gateway

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// storedMsg is a chat message as a direct get answers it.
func storedMsg(seq uint64, user, from, id string) *nats.Msg {
	return &nats.Msg{
		Subject: contract.InboxSubject(user),
		Header: nats.Header{
			contract.HdrSequence: {strconv.FormatUint(seq, 10)},
			contract.HdrSubject:  {contract.InboxSubject(user)},
			contract.HdrKind:     {contract.KindMsg},
			contract.HdrFrom:     {from},
			contract.HdrDevice:   {"phone"},
			contract.HdrID:       {id},
			contract.HdrTS:       {"1795582349000"},
		},
		Data: []byte(`"` + id + `"`),
	}
}
