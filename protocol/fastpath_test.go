package protocol

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

// decodeServerJSON is DecodeServer without its fast path.
func decodeServerJSON(data []byte) (*Frame, error) {
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

var sendSeeds = []string{
	`{"type":"send","id":"m1","to":"bob","body":"hi"}`,
	`{"type":"send","id":"m1","to":"bob","body":{"a":[1,2,3]}}`,
	`{"type":"send","id":"m1","to":"bob","body":null}`,
	`{"type":"send","id":"m1","to":"bob","body": "hi"}`,
	`{"type":"send","id":"m1","to":"bob","body":"hi" }`,
	`{"type":"send","id":"m1","to":"bob","body":"hi"}}`,
	`{"type":"send","id":"m1","to":"bob","body":1,"to":"eve"}`,
	`{"type":"send","id":"m 1","to":"bob","body":1}`,
	`{"type":"send","id":"m1","to":"","body":1}`,
	`{"type":"send","id":"m1","to":"bob\u0000","body":1}`,
	"{\"type\":\"send\",\"id\":\"m1\",\"to\":\"bob\",\"body\":\"\xff\"}",
	`{"type":"send","id":"m1","to":"bob","body":}`,
	`{"type":"send","id":"m1","to":"bob","body":"a\"}`,
}

// FuzzSendFastPath checks that the fast path for sends decides exactly
// as the whole decoder: a frame it takes is the frame decodeClientJSON
// returns for the same bytes.
func FuzzSendFastPath(f *testing.F) {
	for _, s := range sendSeeds {
		f.Add([]byte(s))
	}
	fuzzFastPath(f, decodeSendFrame, decodeClientJSON)
}

var serverSeeds = []string{
	`{"type":"sent","id":"m1","seq":42,"ts":1795582349000}`,
	`{"type":"sent","id":"m1","seq":42,"ts":1795582349000,"dup":true}`,
	`{"type":"sent","id":"m1","seq":42,"ts":-5}`,
	`{"type":"sent","id":"m1","seq":42,"ts":-0}`,
	`{"type":"sent","id":"m1","seq":042,"ts":1}`,
	`{"type":"sent","id":"m1","seq":18446744073709551616,"ts":1}`,
	`{"type":"sent","id":"m1","seq":1,"ts":9223372036854775808}`,
	`{"type":"sent","id":"m1","seq":1,"ts":-9223372036854775808}`,
	`{"type":"sent","id":"m1","seq":1.5,"ts":1}`,
	`{"type":"sent","id":"m1","seq":1e3,"ts":1}`,
	`{"type":"sent","id":"m1","seq":1,"ts":1,"dup":false}`,
	`{"type":"sent","id":"m1","seq":1,"ts":1} `,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","seq":7,"ts":1795582349000,"body":"hi"}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","seq":7,"ts":1,"body":{"k":"v"}}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","seq":7,"ts":1,"body":null}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","seq":7,"ts":1,"body":"hi","seq":8}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","seq":7,"ts":1,"media":{},"body":1}`,
	"{\"type\":\"msg\",\"id\":\"m1\",\"from\":\"alice\",\"device\":\"phone\",\"seq\":7,\"ts\":1,\"body\":\"\xff\"}",
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"club","seq":7,"ts":1,"body":"hi"}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"","seq":7,"ts":1,"body":"hi"}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"club","seq":7,"ts":1,"event":{"op":"add"}}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"club","group":"x","seq":7,"ts":1,"body":1}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"club","gseq":7,"ts":1,"body":"hi"}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","gseq":7,"ts":1,"body":"hi"}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"club","gseq":7,"seq":8,"ts":1,"body":"hi"}`,
	`{"type":"msg","id":"m1","from":"alice","device":"phone","group":"club","gseq":-1,"ts":1,"body":"hi"}`,
}

// FuzzServerFastPath checks that DecodeServer's fast path for sent and
// msg frames decides exactly as encoding/json: a frame it takes is the
// frame the whole decoder returns for the same bytes.
func FuzzServerFastPath(f *testing.F) {
	for _, s := range serverSeeds {
		f.Add([]byte(s))
	}
	fuzzFastPath(f, decodeServerFast, decodeServerJSON)
}

// fuzzFastPath fuzzes fast against whole: whatever fast takes, whole
// takes too, as the same frame.
func fuzzFastPath(f *testing.F, fast func([]byte) *Frame, whole func([]byte) (*Frame, error)) {
	f.Fuzz(func(t *testing.T, data []byte) {
		got := fast(data)
		if got == nil {
			return
		}
		want, err := whole(data)
		if err != nil {
			t.Fatalf("fast path took %q as %+v; the whole decoder refuses it: %v", data, *got, err)
		}
		if !reflect.DeepEqual(*got, *want) {
			t.Fatalf("fast path took %q as %+v; the whole decoder as %+v", data, *got, *want)
		}
	})
}

// The encoders' own output takes the fast paths, and what they take is
// what the whole decoders give.
func TestEncodersOutputTakesTheFastPaths(t *testing.T) {
	body := []byte(`{"text":"hello","n":[1,2]}`)
	for _, data := range [][]byte{
		AppendSent(nil, "m-1", 1, 0, false),
		AppendSent(nil, "m-1", math.MaxUint64, math.MinInt64, true),
		AppendSent(nil, "m-1", 99, 1795582349000, false),
		AppendMsg(nil, "m-1", "alice", "phone", 7, 1795582349000, body, nil),
		AppendMsg(nil, "m-1", "alice", "phone", 7, -1, []byte(`"x"`), nil),
		AppendGroupMsg(nil, "m-1", "alice", "phone", "club", 7, 1795582349000, body, nil),
		AppendGroupLogMsg(nil, "m-1", "alice", "phone", "club", 7, 1795582349000, body, nil),
	} {
		takesFastPath(t, data, decodeServerFast, decodeServerJSON)
	}
	// A msg with media, a group's system message or a receipt goes the
	// whole way.
	for _, data := range [][]byte{
		AppendMsg(nil, "m-1", "alice", "phone", 7, 1, body, []byte(`{"key":"k"}`)),
		AppendGroupMsg(nil, "m-1", "alice", "phone", "club", 7, 1, body, []byte(`{"key":"k"}`)),
		AppendGroupEvent(nil, "ev-7", "alice", "phone", "club", 7, 1, []byte(`{"op":"add"}`)),
		AppendReceipt(nil, StatusDelivered, "bob", "phone", 1, 2, 3, 4),
	} {
		if f := decodeServerFast(data); f != nil {
			t.Errorf("%s: taken by the fast path as %+v", data, *f)
		}
		if _, err := DecodeServer(data); err != nil {
			t.Errorf("%s: %v", data, err)
		}
	}
	for _, data := range [][]byte{
		AppendSend(nil, "m-1", "bob", body),
		AppendSend(nil, "m-1", "bob", []byte(`"`+strings.Repeat("é", 100)+`"`)),
	} {
		takesFastPath(t, data, decodeSendFrame, decodeClientJSON)
	}
	// The seeds not in the encoders' form (or not valid) are refused by
	// the fast paths.
	for _, s := range sendSeeds[2:] {
		if f := decodeSendFrame([]byte(s)); f != nil {
			t.Errorf("%s: send fast path took it as %+v", s, *f)
		}
	}
	for _, s := range []string{serverSeeds[4], serverSeeds[5], serverSeeds[6], serverSeeds[8], serverSeeds[9], serverSeeds[10], serverSeeds[11], serverSeeds[15], serverSeeds[16], serverSeeds[19], serverSeeds[20], serverSeeds[21]} {
		if f := decodeServerFast([]byte(s)); f != nil {
			t.Errorf("%s: server fast path took it as %+v", s, *f)
		}
	}
}

// takesFastPath checks that fast takes data, as the frame whole gives.
func takesFastPath(t *testing.T, data []byte, fast func([]byte) *Frame, whole func([]byte) (*Frame, error)) {
	t.Helper()
	got := fast(data)
	if got == nil {
		t.Errorf("%s: not taken by the fast path", data)
		return
	}
	want, err := whole(data)
	if err != nil || !reflect.DeepEqual(*got, *want) {
		t.Errorf("%s: fast path %+v, whole decoder %+v %v", data, *got, want, err)
	}
}

func BenchmarkDecodeServer(b *testing.B) {
	for name, data := range map[string][]byte{
		"msg":       AppendMsg(nil, "m-000001", "alice", "phone", 123456789, 1795582349000, benchBody, nil),
		"group msg": AppendGroupMsg(nil, "m-000001", "alice", "phone", "club", 123456789, 1795582349000, benchBody, nil),
		"sent":      AppendSent(nil, "m-000001", 123456789, 1795582349000, false),
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := DecodeServer(data)
				if err != nil {
					b.Fatal(err)
				}
				benchFrame = f
			}
		})
	}
}

// DecodeClientFastInto overwrites every field of a reused Frame with the
// frame DecodeClientFast gives, and leaves it as it was for a frame off
// the fast paths.
func TestDecodeClientFastIntoReusesAFrame(t *testing.T) {
	used := Frame{Type: TypeGroup, ID: "old", To: "eve", Group: "club", Body: []byte(`1`), Seq: 9, GSeq: 3,
		TS: 5, Dup: true, From: "x", Device: "y", Status: StatusRead, Users: []string{"u"}, Online: true}
	for _, data := range []string{
		`{"type":"ack","seq":12}`,
		`{"type":"read","seq":7}`,
		`{"type":"send","id":"m1","to":"bob","body":{"a":[1,2,3]}}`,
		`{"type":"send","id":"m1","to":"bob","body":null}`,
		`{"type":"typing","to":"bob"}`,
	} {
		f := used
		took := DecodeClientFastInto([]byte(data), &f)
		want := DecodeClientFast([]byte(data))
		switch {
		case took != (want != nil):
			t.Errorf("%s: taken %v, DecodeClientFast %+v", data, took, want)
		case took && !reflect.DeepEqual(f, *want):
			t.Errorf("%s: into a used Frame %+v, want %+v", data, f, *want)
		case !took && !reflect.DeepEqual(f, used):
			t.Errorf("%s: not taken, and the Frame changed to %+v", data, f)
		}
	}
}

// decodeSeqFrame and decodeSendFrame are the fast paths as functions
// returning the frame, nil when they do not take it.
var (
	decodeSeqFrame  = fastDecoder(decodeSeqInto)
	decodeSendFrame = fastDecoder(decodeSendInto)
)

func fastDecoder(into func([]byte, *Frame) bool) func([]byte) *Frame {
	return func(data []byte) *Frame {
		var f Frame
		if !into(data, &f) {
			return nil
		}
		return &f
	}
}
