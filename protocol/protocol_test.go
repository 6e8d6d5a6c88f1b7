package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"
)

// seedDir holds client frames, valid ("ok-*.json") and malformed
// ("bad-*.json"), that seed FuzzDecodeClient.
const seedDir = "../testdata/frames"

type seedFrame struct {
	name string
	data []byte
}

func loadSeedFrames(tb testing.TB) []seedFrame {
	tb.Helper()
	entries, err := os.ReadDir(seedDir)
	if err != nil {
		tb.Fatalf("seed frames: %v", err)
	}
	var seeds []seedFrame
	var ok, bad int
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(seedDir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		switch {
		case strings.HasPrefix(e.Name(), "ok-"):
			ok++
		case strings.HasPrefix(e.Name(), "bad-"):
			bad++
		default:
			tb.Fatalf("seed frame %s: name must start with ok- or bad-", e.Name())
		}
		seeds = append(seeds, seedFrame{e.Name(), b})
	}
	if ok == 0 || bad == 0 {
		tb.Fatalf("seed frames in %s: %d valid and %d malformed, want some of each", seedDir, ok, bad)
	}
	return seeds
}

func knownCode(c ErrorCode) bool {
	return slices.ContainsFunc(Errors, func(e ErrorInfo) bool { return e.Code == c })
}

func TestDecodeClientValidFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Frame
	}{
		{"send string body", `{"type":"send","id":"m-1","to":"bob","body":"hello"}`,
			Frame{Type: TypeSend, ID: "m-1", To: "bob", Body: json.RawMessage(`"hello"`)}},
		{"send object body kept verbatim", `{"type":"send","id":"m_2","to":"Bob_99","body":{"a": [1, 2],"b":null}}`,
			Frame{Type: TypeSend, ID: "m_2", To: "Bob_99", Body: json.RawMessage(`{"a": [1, 2],"b":null}`)}},
		{"send falsy bodies are bodies", `{"type":"send","id":"z","to":"bob","body":false}`,
			Frame{Type: TypeSend, ID: "z", To: "bob", Body: json.RawMessage(`false`)}},
		{"send empty string body", `{"type":"send","id":"z","to":"bob","body":""}`,
			Frame{Type: TypeSend, ID: "z", To: "bob", Body: json.RawMessage(`""`)}},
		{"send 64-char ids", `{"type":"send","id":"` + strings.Repeat("a", 64) + `","to":"` + strings.Repeat("Z", 64) + `","body":0}`,
			Frame{Type: TypeSend, ID: strings.Repeat("a", 64), To: strings.Repeat("Z", 64), Body: json.RawMessage(`0`)}},
		{"send unknown fields ignored", `{"type":"send","id":"x","to":"bob","body":1,"future":{"k":[true]}}`,
			Frame{Type: TypeSend, ID: "x", To: "bob", Body: json.RawMessage(`1`)}},
		{"send with whitespace", " {\n\"type\" : \"send\" ,\t\"id\":\"w\", \"to\":\"bob\", \"body\" : [ 1 ] } ",
			Frame{Type: TypeSend, ID: "w", To: "bob", Body: json.RawMessage(`[ 1 ]`)}},
		{"ack", `{"type":"ack","seq":42}`, Frame{Type: TypeAck, Seq: 42}},
		{"ack max seq", `{"type":"ack","seq":18446744073709551615}`, Frame{Type: TypeAck, Seq: math.MaxUint64}},
		{"read", `{"type":"read","seq":1}`, Frame{Type: TypeRead, Seq: 1}},
		{"send to a group", `{"type":"send","id":"m1","group":"g1","body":"hi"}`,
			Frame{Type: TypeSend, ID: "m1", Group: "g1", Body: json.RawMessage(`"hi"`)}},
		{"group create", `{"type":"group","id":"q1","op":"create","group":"g1","name":"Friends ❤","users":["bob"]}`,
			Frame{Type: TypeGroup, ID: "q1", Op: GroupCreate, Group: "g1", Name: "Friends ❤", Users: []string{"bob"}}},
		{"group create alone", `{"type":"group","id":"q1","op":"create","group":"g1","name":"Me"}`,
			Frame{Type: TypeGroup, ID: "q1", Op: GroupCreate, Group: "g1", Name: "Me"}},
		{"group list", `{"type":"group","id":"q1","op":"list"}`, Frame{Type: TypeGroup, ID: "q1", Op: GroupList}},
		{"settings asked under an id", `{"type":"settings","id":"q-5","last_seen_privacy":"nobody"}`, Frame{Type: TypeSettings, ID: "q-5", LastSeenPrivacy: PrivacyNobody}},
		{"group leave", `{"type":"group","id":"q1","op":"leave","group":"g1"}`,
			Frame{Type: TypeGroup, ID: "q1", Op: GroupLeave, Group: "g1"}},
		{"status", `{"type":"status","seq":42}`, Frame{Type: TypeStatus, Seq: 42}},
		{"status to another region", `{"type":"status","seq":4503599627370500,"to":"bob"}`,
			Frame{Type: TypeStatus, Seq: 4503599627370500, To: "bob"}},
		{"status in a group", `{"type":"status","seq":7,"group":"g1"}`, Frame{Type: TypeStatus, Seq: 7, Group: "g1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClient([]byte(tc.in))
			if err != nil {
				t.Fatalf("DecodeClient(%s): %v", tc.in, err)
			}
			if f.Type != tc.want.Type || f.ID != tc.want.ID || f.To != tc.want.To || f.Seq != tc.want.Seq ||
				!bytes.Equal(f.Body, tc.want.Body) || f.Group != tc.want.Group || f.Op != tc.want.Op || f.Name != tc.want.Name ||
				!slices.Equal(f.Users, tc.want.Users) {
				t.Fatalf("DecodeClient(%s) = %+v (body %s), want %+v (body %s)", tc.in, *f, f.Body, tc.want, tc.want.Body)
			}
		})
	}
}

func TestDecodeClientErrors(t *testing.T) {
	long := strings.Repeat("a", MaxIDLen+1)
	for _, tc := range []struct {
		name   string
		in     string
		code   ErrorCode
		id     string // DecodeError.ID: the client id, when the frame had a valid one
		reason string // a substring of the reason
	}{
		// Not a JSON object.
		{"empty", ``, ErrBadJSON, "", ""},
		{"not json", `hello`, ErrBadJSON, "", ""},
		{"truncated", `{"type":"send","id":"m1","to":"bob","body":"hel`, ErrBadJSON, "", ""},
		{"array", `[{"type":"ack","seq":1}]`, ErrBadJSON, "", ""},
		{"string", `"send"`, ErrBadJSON, "", ""},
		{"number", `42`, ErrBadJSON, "", ""},
		{"trailing garbage", `{"type":"ack","seq":1}}`, ErrBadJSON, "", ""},
		{"two objects", `{"type":"ack","seq":1}{"type":"ack","seq":2}`, ErrBadJSON, "", ""},
		{"nesting beyond the decoder's limit", `{"type":"send","id":"d","to":"b","body":` +
			strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, ErrBadJSON, "", ""},
		// JSON text is UTF-8 (RFC 8259 §8.1); encoding/json would pass
		// these bytes through in a body.
		{"body not utf-8", "{\"type\":\"send\",\"id\":\"m1\",\"to\":\"bob\",\"body\":\"\xff\"}", ErrBadJSON, "", "UTF-8"},
		{"truncated utf-8 in an unknown field", "{\"type\":\"ack\",\"seq\":1,\"x\":\"\xc3\"}", ErrBadJSON, "", "UTF-8"},
		{"utf-16 surrogate as utf-8", "{\"type\":\"send\",\"id\":\"m1\",\"to\":\"bob\",\"body\":\"\xed\xa0\x80\"}", ErrBadJSON, "", "UTF-8"},

		// Type.
		{"type unknown", `{"type":"hello"}`, ErrUnknownType, "", `"hello"`},
		{"type is case sensitive", `{"type":"SEND","id":"m1","to":"bob","body":1}`, ErrUnknownType, "", ""},
		{"server frame type", `{"type":"msg","id":"m1","from":"a","device":"d","seq":1,"body":1}`, ErrUnknownType, "", ""},
		{"type missing", `{"id":"m1","to":"bob","body":"hi"}`, ErrBadField, "", "type"},
		{"type empty", `{"type":"","seq":1}`, ErrBadField, "", "type"},

		// Send ids.
		{"status to a bad id", `{"type":"status","seq":4503599627370500,"to":"b.ob"}`, ErrBadID, "", "to"},
		{"status to a user in a group", `{"type":"status","seq":7,"to":"bob","group":"g1"}`, ErrBadField, "", "not both"},
		{"send id too long", `{"type":"send","id":"` + long + `","to":"bob","body":1}`, ErrBadID, "", "id"},
		{"send id with colon", `{"type":"send","id":"m:1","to":"bob","body":1}`, ErrBadID, "", "id"},
		{"send id with dot", `{"type":"send","id":"m.1","to":"bob","body":1}`, ErrBadID, "", "id"},
		{"send id non-ascii", `{"type":"send","id":"m\u00e9","to":"bob","body":1}`, ErrBadID, "", "id"},
		{"send id with nul", `{"type":"send","id":"m\u0000","to":"bob","body":1}`, ErrBadID, "", "id"},
		{"send to missing", `{"type":"send","id":"m1","body":1}`, ErrBadField, "m1", "to"},
		{"send id missing", `{"type":"send","to":"bob","body":1}`, ErrBadField, "", "id"},
		{"send to dot", `{"type":"send","id":"m1","to":"bob.carol","body":1}`, ErrBadID, "m1", "to"},
		{"send to star", `{"type":"send","id":"m1","to":"*","body":1}`, ErrBadID, "m1", "to"},
		{"send to gt", `{"type":"send","id":"m1","to":">","body":1}`, ErrBadID, "m1", "to"},
		{"send to space", `{"type":"send","id":"m1","to":"bob carol","body":1}`, ErrBadID, "m1", "to"},
		{"send to tab", `{"type":"send","id":"m1","to":"bob\t","body":1}`, ErrBadID, "m1", "to"},
		{"send to too long", `{"type":"send","id":"m1","to":"` + long + `","body":1}`, ErrBadID, "m1", "to"},
		{"send to a user and a group", `{"type":"send","id":"m1","to":"bob","group":"g1","body":1}`, ErrBadField, "m1", "not both"},
		{"send group dot", `{"type":"send","id":"m1","group":"g.1","body":1}`, ErrBadID, "m1", "group"},
		{"send group wildcard", `{"type":"send","id":"m1","group":"*","body":1}`, ErrBadID, "m1", "group"},
		{"send group with a system message's id", `{"type":"send","id":"ev-11","group":"g1","body":1}`, ErrBadID, "ev-11", "system"},

		// Group frames.
		{"group id missing", `{"type":"group","op":"info","group":"g1"}`, ErrBadField, "", "id"},
		{"group id bad", `{"type":"group","id":"q.1","op":"info","group":"g1"}`, ErrBadID, "", "id"},
		{"group op unknown", `{"type":"group","id":"q1","op":"delete","group":"g1"}`, ErrBadField, "q1", "op"},
		{"group op missing", `{"type":"group","id":"q1","group":"g1"}`, ErrBadField, "q1", "op"},
		{"group missing", `{"type":"group","id":"q1","op":"info"}`, ErrBadField, "q1", "group"},
		{"group bad", `{"type":"group","id":"q1","op":"info","group":"a b"}`, ErrBadID, "q1", "group"},
		{"group create without name", `{"type":"group","id":"q1","op":"create","group":"g1"}`, ErrBadField, "q1", "name"},
		{"group name with newline", `{"type":"group","id":"q1","op":"rename","group":"g1","name":"a\nb"}`, ErrBadField, "q1", "name"},
		{"group name too long", `{"type":"group","id":"q1","op":"rename","group":"g1","name":"` + strings.Repeat("n", MaxGroupName+1) + `"}`, ErrBadField, "q1", "name"},
		{"group add nobody", `{"type":"group","id":"q1","op":"add","group":"g1","users":[]}`, ErrBadField, "q1", "users"},
		{"group add a bad id", `{"type":"group","id":"q1","op":"add","group":"g1","users":["bob","x>"]}`, ErrBadID, "q1", "users"},
		{"group add twice", `{"type":"group","id":"q1","op":"add","group":"g1","users":["bob","bob"]}`, ErrBadField, "q1", "twice"},
		{"group add too many", `{"type":"group","id":"q1","op":"add","group":"g1","users":[` + strings.Repeat(`"u",`, MaxGroupUsersPerFrame) + `"v"]}`, ErrBadField, "q1", "users"},
		{"group leave with users", `{"type":"group","id":"q1","op":"leave","group":"g1","users":["bob"]}`, ErrBadField, "q1", "users"},
		{"group history missing", `{"type":"group","id":"q1","op":"history","group":"g1"}`, ErrBadField, "q1", "history"},
		{"group history too many", `{"type":"group","id":"q1","op":"history","group":"g1","history":101}`, ErrBadField, "q1", "history"},
		{"group history negative", `{"type":"group","id":"q1","op":"history","group":"g1","history":-1}`, ErrBadField, "q1", "history"},
		{"group history not a number", `{"type":"group","id":"q1","op":"history","group":"g1","history":"all"}`, ErrBadField, "q1", "history"},
		{"group history past an int", `{"type":"group","id":"q1","op":"history","group":"g1","history":1e30}`, ErrBadField, "q1", "history"},
		{"group history on another op", `{"type":"group","id":"q1","op":"rename","group":"g1","name":"n","history":5}`, ErrBadField, "q1", "history"},
		{"group list of a group", `{"type":"group","id":"q1","op":"list","group":"g1"}`, ErrBadField, "q1", "list"},
		{"settings with a bad id", `{"type":"settings","id":"q 5"}`, ErrBadID, "", "id"},
		{"settings refused under its id", `{"type":"settings","id":"q-5","last_seen_privacy":"friends"}`, ErrBadField, "q-5", "last_seen_privacy"},
		{"group list with users", `{"type":"group","id":"q1","op":"list","users":["bob"]}`, ErrBadField, "q1", "list"},

		// Send body.
		{"send body missing", `{"type":"send","id":"m1","to":"bob"}`, ErrBadField, "m1", "body"},
		{"send body null", `{"type":"send","id":"m1","to":"bob","body":null}`, ErrBadField, "m1", "body"},

		// Ack and read.
		{"ack seq missing", `{"type":"ack"}`, ErrBadField, "", "seq"},
		{"ack seq zero", `{"type":"ack","seq":0}`, ErrBadField, "", "seq"},
		{"read seq missing", `{"type":"read"}`, ErrBadField, "", "seq"},
		{"read seq zero", `{"type":"read","seq":0}`, ErrBadField, "", "seq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClient([]byte(tc.in))
			if err == nil {
				t.Fatalf("DecodeClient accepted %.80q as %+v, want %s", tc.in, *f, tc.code)
			}
			if f != nil {
				t.Fatalf("DecodeClient returned a frame with its error %v", err)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a *DecodeError", err, err)
			}
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("errors.Is(%v, ErrDecode) = false", err)
			}
			if de.Code != tc.code || de.ID != tc.id {
				t.Fatalf("DecodeClient(%.80q) = code %s id %q (%v), want code %s id %q", tc.in, de.Code, de.ID, err, tc.code, tc.id)
			}
			if !knownCode(de.Code) {
				t.Fatalf("code %s is not in the Errors registry", de.Code)
			}
			if !strings.Contains(de.Reason, tc.reason) {
				t.Fatalf("reason %q does not mention %q", de.Reason, tc.reason)
			}
			if !strings.Contains(err.Error(), string(tc.code)) {
				t.Fatalf("Error() = %q does not name the code", err.Error())
			}
		})
	}
}

// The reason of an unknown type quotes it, but not without bound: it goes
// back to the client and into logs.
func TestDecodeClientUnknownTypeReasonIsBounded(t *testing.T) {
	typ := strings.Repeat("x", 10000)
	_, err := DecodeClient([]byte(`{"type":"` + typ + `"}`))
	var de *DecodeError
	if !errors.As(err, &de) || de.Code != ErrUnknownType {
		t.Fatalf("err = %v, want unknown_type", err)
	}
	if len(de.Reason) > 100 {
		t.Fatalf("reason is %d bytes long, want the type truncated", len(de.Reason))
	}
}

// PROTOCOL.md: bad_json is "The frame is not a JSON object"; bad_field is "A
// field is missing, has the wrong JSON type or is out of range"; and
// "Fields a receiver does not know are ignored". DecodeClient unmarshals
// every frame into the one shared Frame struct, so a JSON object with a
// wrongly typed field is answered bad_json (without the frame's id), a
// client frame carrying a field that only server frames use, with another
// type, is refused, and the JSON value null is answered bad_field.
func TestDecodeClientFieldErrorsFollowProtocolDoc(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		code ErrorCode // "" means the frame must be accepted
	}{
		{"seq as string", `{"type":"ack","seq":"42"}`, ErrBadField},
		{"seq negative", `{"type":"ack","seq":-1}`, ErrBadField},
		{"seq fraction", `{"type":"read","seq":1.5}`, ErrBadField},
		{"seq above uint64", `{"type":"ack","seq":18446744073709551616}`, ErrBadField},
		{"type as number", `{"type":7}`, ErrBadField},
		{"null is not an object", `null`, ErrBadJSON},
		{"send with a server-only field of another type", `{"type":"send","id":"m1","to":"bob","body":"hi","ts":"2026-01-01T00:00:00Z"}`, ""},
		{"send with a future field named like a server one", `{"type":"send","id":"m1","to":"bob","body":"hi","dup":"no"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClient([]byte(tc.in))
			var de *DecodeError
			switch {
			case tc.code == "" && err != nil:
				t.Errorf("DecodeClient(%s) = %v; PROTOCOL.md: fields a receiver does not know are ignored", tc.in, err)
			case tc.code == "":
				if f.ID != "m1" {
					t.Errorf("DecodeClient(%s) = %+v", tc.in, *f)
				}
			case !errors.As(err, &de):
				t.Errorf("DecodeClient(%s) = %v, want a *DecodeError", tc.in, err)
			case de.Code != tc.code:
				t.Errorf("DecodeClient(%s) = %s (%s), PROTOCOL.md says %s", tc.in, de.Code, de.Reason, tc.code)
			}
		})
	}
}

// Every seed frame decodes (ok-*) or is refused (bad-*) as its name says.
func TestSeedFramesDecodeAsNamed(t *testing.T) {
	for _, s := range loadSeedFrames(t) {
		f, err := DecodeClient(s.data)
		if strings.HasPrefix(s.name, "ok-") && err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
		if strings.HasPrefix(s.name, "bad-") && err == nil {
			t.Errorf("%s: accepted as %+v", s.name, *f)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"0", true},
		{"_", true},
		{"-", true},
		{"alice", true},
		{"Bob_99-x", true},
		{strings.Repeat("a", MaxIDLen), true},
		{"", false},
		{strings.Repeat("a", MaxIDLen+1), false},
		{"a.b", false},
		{"a*", false},
		{"*", false},
		{">", false},
		{"a>", false},
		{"a b", false},
		{" a", false},
		{"a\t", false},
		{"a\n", false},
		{"a\x00", false},
		{"a:b", false},
		{"a/b", false},
		{"a~b", false}, // consumer names join user~device
		{"a\"b", false},
		{"a\\b", false},
		{"é", false},
		{"a\u00e9", false},
		{"\xff", false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
		err := CheckID(tc.id)
		if tc.want && err != nil {
			t.Errorf("CheckID(%q) = %v, want nil", tc.id, err)
		}
		if !tc.want && !errors.Is(err, ErrInvalidID) {
			t.Errorf("CheckID(%q) = %v, want ErrInvalidID", tc.id, err)
		}
	}
}

// keys returns the sorted top-level keys of a JSON object.
func keys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// appended checks that an Append function kept the prefix and returns
// what it added, which must be valid JSON.
func appended(t *testing.T, prefix, out []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(out, prefix) {
		t.Fatalf("output %q does not start with the buffer's prefix %q", out, prefix)
	}
	frame := out[len(prefix):]
	if !json.Valid(frame) {
		t.Fatalf("encoder produced invalid JSON: %s", frame)
	}
	return frame
}

func decodeServer(t *testing.T, b []byte) *Frame {
	t.Helper()
	f, err := DecodeServer(b)
	if err != nil {
		t.Fatalf("DecodeServer(%s): %v", b, err)
	}
	return f
}

func TestEncodersRoundTrip(t *testing.T) {
	prefix := []byte("prefix:")
	bodies := []string{
		`"hello"`,
		`""`,
		`0`,
		`-12.5e3`,
		`true`,
		`null`,
		`[]`,
		`{"ciphertext":"q83v","n":[1,2,{"x":null}],"s":"a\"b\\c\u2028"}`,
		`"h\u00e9llo \ud83d\ude00 <b>&</b>"`,
		`{ "spaced" : [ 1 , 2 ] }`,
		`"` + strings.Repeat("x", 254) + `"`,
	}

	t.Run("sent", func(t *testing.T) {
		for _, tc := range []struct {
			id  string
			seq uint64
			ts  int64
			dup bool
		}{
			{"m-1", 42, 1795582349000, false},
			{"m_2", 1, 0, true},
			{strings.Repeat("z", MaxIDLen), math.MaxUint64, math.MaxInt64, true},
			{"neg", 7, -1, false},
		} {
			fr := appended(t, prefix, AppendSent(slices.Clone(prefix), tc.id, tc.seq, tc.ts, tc.dup))
			f := decodeServer(t, fr)
			if f.Type != TypeSent || f.ID != tc.id || f.Seq != tc.seq || f.TS != tc.ts || f.Dup != tc.dup {
				t.Errorf("AppendSent(%q,%d,%d,%v) read back as %+v", tc.id, tc.seq, tc.ts, tc.dup, *f)
			}
			want := []string{"id", "seq", "ts", "type"}
			if tc.dup {
				want = []string{"dup", "id", "seq", "ts", "type"}
			}
			if got := keys(t, fr); !slices.Equal(got, want) {
				t.Errorf("sent frame %s has keys %v, want %v", fr, got, want)
			}
		}
	})

	t.Run("msg", func(t *testing.T) {
		for i, body := range bodies {
			fr := appended(t, prefix, AppendMsg(slices.Clone(prefix), "m-1", "alice", "phone", uint64(i+1), 1795582349000, []byte(body), nil))
			f := decodeServer(t, fr)
			if f.Type != TypeMsg || f.ID != "m-1" || f.From != "alice" || f.Device != "phone" ||
				f.Seq != uint64(i+1) || f.TS != 1795582349000 {
				t.Errorf("AppendMsg read back as %+v", *f)
			}
			if body == "null" {
				// Frame.Body cannot tell null from absent; the raw key can.
				var m map[string]json.RawMessage
				_ = json.Unmarshal(fr, &m)
				if string(m["body"]) != "null" {
					t.Errorf("body null read back as %s", m["body"])
				}
			} else if !bytes.Equal(f.Body, []byte(body)) {
				t.Errorf("AppendMsg body %s read back as %s", body, f.Body)
			}
		}
	})

	t.Run("receipt", func(t *testing.T) {
		for _, c := range []struct {
			status string
			from   uint64
			keys   []string
		}{
			{StatusDelivered, 40, []string{"by", "device", "from_seq", "seq", "status", "to_seq", "ts", "type"}},
			{StatusRead, 0, []string{"by", "device", "seq", "status", "to_seq", "ts", "type"}},
		} {
			fr := appended(t, prefix, AppendReceipt(slices.Clone(prefix), c.status, "bob", "laptop", c.from, 45, math.MaxUint64, 1795582350000))
			f := decodeServer(t, fr)
			if f.Type != TypeReceipt || f.Status != c.status || f.By != "bob" || f.Device != "laptop" ||
				f.FromSeq != c.from || f.ToSeq != 45 || f.Seq != math.MaxUint64 || f.TS != 1795582350000 {
				t.Errorf("AppendReceipt(%s) read back as %+v", c.status, *f)
			}
			if got := keys(t, fr); !slices.Equal(got, c.keys) {
				t.Errorf("receipt keys %v, want %v", got, c.keys)
			}
		}
	})

	t.Run("group receipt", func(t *testing.T) {
		fr := appended(t, prefix, AppendGroupReceipt(slices.Clone(prefix), StatusRead, "friends", "carol", "phone", 51, 60, 79, 1795582352000))
		f := decodeServer(t, fr)
		if f.Type != TypeReceipt || f.Status != StatusRead || f.Group != "friends" || f.By != "carol" || f.Device != "phone" ||
			f.FromSeq != 51 || f.ToSeq != 60 || f.Seq != 79 || f.TS != 1795582352000 {
			t.Errorf("AppendGroupReceipt read back as %+v", *f)
		}
		want := []string{"by", "device", "from_seq", "group", "seq", "status", "to_seq", "ts", "type"}
		if got := keys(t, fr); !slices.Equal(got, want) {
			t.Errorf("group receipt keys %v, want %v", got, want)
		}
	})

	t.Run("group status", func(t *testing.T) {
		f := decodeServer(t, EncodeGroupStatus(51, "friends", map[string]Ticks{"bob": {Delivered: true}}, false, false))
		if f.Type != TypeStatus || f.Seq != 51 || f.Group != "friends" || f.Recipients["bob"] != (Ticks{Delivered: true}) || f.AllDelivered || f.AllRead {
			t.Errorf("EncodeGroupStatus read back as %+v", *f)
		}
		c, err := DecodeClient(AppendStatusGroup(nil, "friends", 51))
		if err != nil || c.Type != TypeStatus || c.Group != "friends" || c.Seq != 51 {
			t.Errorf("AppendStatusGroup read back as %+v, %v", c, err)
		}
	})

	t.Run("group list", func(t *testing.T) {
		groups := []GroupEntry{{Group: "club", Name: "The \"club\" ❤", Since: 7}, {Group: "friends", Name: "Friends", Since: 51}}
		f := decodeServer(t, EncodeGroupList("q-1", groups))
		if f.Type != TypeGroup || f.ID != "q-1" || f.Op != GroupList || !slices.Equal(f.Groups, groups) {
			t.Errorf("EncodeGroupList read back as %+v", *f)
		}
		none := EncodeGroupList("q-2", nil)
		if got := keys(t, none); !slices.Equal(got, []string{"groups", "id", "op", "type"}) || !bytes.Contains(none, []byte(`"groups":[]`)) {
			t.Errorf("an empty list is %s, want groups as []", none)
		}
	})

	t.Run("send", func(t *testing.T) {
		for _, body := range bodies {
			if body == "null" {
				continue // not a valid send body
			}
			fr := appended(t, prefix, AppendSend(slices.Clone(prefix), "m-9", "Bob_1", []byte(body)))
			f, err := DecodeClient(fr)
			if err != nil {
				t.Fatalf("DecodeClient(AppendSend(%s)) = %v", body, err)
			}
			if f.Type != TypeSend || f.ID != "m-9" || f.To != "Bob_1" || !bytes.Equal(f.Body, []byte(body)) {
				t.Errorf("AppendSend(%s) read back as %+v (body %s)", body, *f, f.Body)
			}
		}
	})

	t.Run("ack and read", func(t *testing.T) {
		for _, typ := range []string{TypeAck, TypeRead} {
			for _, seq := range []uint64{1, 42, math.MaxUint64} {
				fr := appended(t, prefix, AppendSeqFrame(slices.Clone(prefix), typ, seq))
				f, err := DecodeClient(fr)
				if err != nil {
					t.Fatalf("DecodeClient(%s) = %v", fr, err)
				}
				if f.Type != typ || f.Seq != seq {
					t.Errorf("AppendSeqFrame(%s,%d) read back as %+v", typ, seq, *f)
				}
			}
		}
	})

	t.Run("error", func(t *testing.T) {
		for _, e := range Errors {
			msg := "quote \" backslash \\ newline \n tab \t html <script>&</script> unicode h\u00e9 \u2028 nul \x00 end"
			b := EncodeError(e.Code, msg, "m-1", 99, 1234)
			if !json.Valid(b) {
				t.Fatalf("EncodeError produced invalid JSON: %s", b)
			}
			f := decodeServer(t, b)
			if f.Type != TypeError || f.Code != e.Code || f.Message != msg || f.ID != "m-1" || f.Seq != 99 || f.RetryMS != 1234 {
				t.Errorf("EncodeError(%s) read back as %+v", e.Code, *f)
			}
		}
		// Zero fields are left out.
		b := EncodeError(ErrBadJSON, "frame is not a valid JSON object", "", 0, 0)
		if got, want := keys(t, b), []string{"code", "message", "type"}; !slices.Equal(got, want) {
			t.Errorf("error frame %s has keys %v, want %v", b, got, want)
		}
	})

	t.Run("welcome", func(t *testing.T) {
		b := EncodeWelcome("bob", "phone", "9VKLJzAxJFY7", 65536)
		if !json.Valid(b) {
			t.Fatalf("EncodeWelcome produced invalid JSON: %s", b)
		}
		f := decodeServer(t, b)
		if f.Type != TypeWelcome || f.User != "bob" || f.Device != "phone" || f.Session != "9VKLJzAxJFY7" ||
			f.Protocol != Version || f.MaxFrame != 65536 {
			t.Errorf("EncodeWelcome read back as %+v", *f)
		}
		if got, want := keys(t, b), []string{"device", "max_frame", "protocol", "session", "type", "user"}; !slices.Equal(got, want) {
			t.Errorf("welcome keys %v, want %v", got, want)
		}
	})
}

func TestDecodeServerRefusesFramesWithoutType(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{}`, `{"type":""}`, `{"seq":1}`} {
		if f, err := DecodeServer([]byte(in)); err == nil {
			t.Errorf("DecodeServer(%q) = %+v, want an error", in, *f)
		}
	}
}

// FuzzDecodeClient checks DecodeClient on arbitrary input: it never panics;
// it accepts only UTF-8; a frame it returns is a send, ack or read whose ids (a send's id and to)
// are valid and that survives re-encoding unchanged; an error is always a
// *DecodeError with a registered code. (ack and read carry no ids, so
// their id/to fields, which the gateway ignores, are not checked.)
func FuzzDecodeClient(f *testing.F) {
	for _, s := range []string{
		`{"type":"send","id":"m-1","to":"bob","body":"hello"}`,
		`{"type":"send","id":"m1","to":"bob.*","body":{"a":1}}`,
		`{"type":"send","id":"m1","to":"bob"}`,
		`{"type":"ack","seq":42}`,
		`{"type":"read","seq":0}`,
		`{"type":"hello"}`,
		`{"TYPE":"send","Id":"m1","TO":"bob","BODY":1,"body":null}`,
		`null`,
		"{\"type\":\"send\",\"id\":\"m\xff\",\"to\":\"b\",\"body\":\"\xfe\"}",
		``,
	} {
		f.Add([]byte(s))
	}
	for _, s := range loadSeedFrames(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeClient(data)
		if err == nil && !utf8.Valid(data) {
			t.Fatalf("accepted a frame that is not UTF-8: %q", data)
		}
		if err != nil {
			if fr != nil {
				t.Fatalf("frame %+v returned with error %v", *fr, err)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a *DecodeError", err, err)
			}
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("errors.Is(%v, ErrDecode) = false", err)
			}
			if !knownCode(de.Code) {
				t.Fatalf("code %q is not in the Errors registry", de.Code)
			}
			if de.ID != "" && !ValidID(de.ID) {
				t.Fatalf("error carries an invalid client id %q", de.ID)
			}
			return
		}
		switch fr.Type {
		case TypeSend:
			if !ValidID(fr.ID) || (fr.To == "") == (fr.Group == "") || (fr.To != "" && !ValidID(fr.To)) || (fr.Group != "" && !ValidID(fr.Group)) {
				t.Fatalf("send accepted with id %q to %q group %q", fr.ID, fr.To, fr.Group)
			}
			if len(fr.Body) == 0 || (string(fr.Body) == "null" && fr.Media == nil) || !json.Valid(fr.Body) {
				t.Fatalf("send accepted with body %q", fr.Body)
			}
			if fr.Media != nil {
				if fr.Media.validate() != nil {
					t.Fatalf("send accepted with media %+v", *fr.Media)
				}
				return
			}
			if fr.Group != "" {
				again, err := DecodeClient(AppendGroupSend(nil, fr.ID, fr.Group, fr.Body))
				if err != nil || again.ID != fr.ID || again.Group != fr.Group || !bytes.Equal(again.Body, fr.Body) {
					t.Fatalf("re-encoded group send %+v, %v differs from %+v", again, err, *fr)
				}
				return
			}
			again, err := DecodeClient(AppendSend(nil, fr.ID, fr.To, fr.Body))
			if err != nil {
				t.Fatalf("re-encoded send does not decode: %v", err)
			}
			if again.Type != TypeSend || again.ID != fr.ID || again.To != fr.To || !bytes.Equal(again.Body, fr.Body) {
				t.Fatalf("re-encoded send %+v differs from %+v", *again, *fr)
			}
		case TypeAck, TypeRead:
			if fr.Seq == 0 {
				t.Fatalf("%s accepted with seq 0", fr.Type)
			}
			again, err := DecodeClient(AppendSeqFrame(nil, fr.Type, fr.Seq))
			if err != nil || again.Type != fr.Type || again.Seq != fr.Seq {
				t.Fatalf("re-encoded %s seq %d read back as %+v, %v", fr.Type, fr.Seq, again, err)
			}
		case TypeTyping:
			if fr.Group != "" {
				if fr.To != "" || !ValidID(fr.Group) {
					t.Fatalf("typing accepted to %q in group %q", fr.To, fr.Group)
				}
				again, err := DecodeClient(AppendTypingGroup(nil, fr.Group))
				if err != nil || again.Type != TypeTyping || again.Group != fr.Group {
					t.Fatalf("re-encoded typing in group %q read back as %+v, %v", fr.Group, again, err)
				}
				break
			}
			if !ValidID(fr.To) {
				t.Fatalf("typing accepted to %q", fr.To)
			}
			again, err := DecodeClient(AppendTypingTo(nil, fr.To))
			if err != nil || again.Type != TypeTyping || again.To != fr.To {
				t.Fatalf("re-encoded typing to %q read back as %+v, %v", fr.To, again, err)
			}
		case TypeStatus:
			if fr.Seq == 0 || (fr.To != "" && (fr.Group != "" || !ValidID(fr.To))) {
				t.Fatalf("status accepted with seq %d, to %q, group %q", fr.Seq, fr.To, fr.Group)
			}
			again, err := DecodeClient(AppendStatusFrame(nil, fr.Seq, fr.To))
			if err != nil || again.Type != TypeStatus || again.Seq != fr.Seq || again.To != fr.To {
				t.Fatalf("re-encoded status of %d to %q read back as %+v, %v", fr.Seq, fr.To, again, err)
			}
		case TypePresenceSub, TypePresenceUnsub:
			if len(fr.Users) == 0 || len(fr.Users) > MaxUsersPerFrame {
				t.Fatalf("%s accepted with %d users", fr.Type, len(fr.Users))
			}
			for _, u := range fr.Users {
				if !ValidID(u) {
					t.Fatalf("%s accepted user %q", fr.Type, u)
				}
			}
		case TypeSettings:
			if fr.ID != "" && !ValidID(fr.ID) {
				t.Fatalf("settings accepted id %q", fr.ID)
			}
			switch fr.LastSeenPrivacy {
			case "", PrivacyEveryone, PrivacyContacts, PrivacyNobody:
			default:
				t.Fatalf("settings accepted privacy %q", fr.LastSeenPrivacy)
			}
			if fr.Contacts != nil {
				if len(*fr.Contacts) > MaxContacts {
					t.Fatalf("settings accepted %d contacts", len(*fr.Contacts))
				}
				for _, u := range *fr.Contacts {
					if !ValidID(u) {
						t.Fatalf("settings accepted contact %q", u)
					}
				}
			}
		case TypeGroup:
			if fr.Op == GroupList && (fr.Group != "" || fr.Name != "" || len(fr.Users) > 0) {
				t.Fatalf("list accepted with a group, a name or users: %+v", *fr)
			}
			if !ValidID(fr.ID) || (fr.Op != GroupList && !ValidID(fr.Group)) || !slices.Contains(GroupOps, fr.Op) || len(fr.Users) > MaxGroupUsersPerFrame {
				t.Fatalf("group frame accepted: %+v", *fr)
			}
			if (fr.Op == GroupCreate || fr.Op == GroupRename) && !ValidGroupName(fr.Name) {
				t.Fatalf("group %s accepted with name %q", fr.Op, fr.Name)
			}
			for _, u := range fr.Users {
				if !ValidID(u) {
					t.Fatalf("group frame accepted user %q", u)
				}
			}
		default:
			t.Fatalf("accepted a frame of type %q", fr.Type)
		}
	})
}

var (
	benchBody  = []byte(`"` + strings.Repeat("x", 254) + `"`) // 256 bytes
	benchFrame *Frame
	benchBuf   []byte
)

func BenchmarkDecodeClientSend(b *testing.B) {
	data := AppendSend(nil, "m-000001", "bob", benchBody)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := DecodeClient(data)
		if err != nil {
			b.Fatal(err)
		}
		benchFrame = f
	}
}

func BenchmarkAppendMsg(b *testing.B) {
	buf := make([]byte, 0, 512)
	b.SetBytes(int64(len(AppendMsg(nil, "m-000001", "alice", "phone", 123456789, 1795582349000, benchBody, nil))))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMsg(buf[:0], "m-000001", "alice", "phone", 123456789, 1795582349000, benchBody, nil)
	}
	benchBuf = buf
}

func BenchmarkAppendSent(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendSent(buf[:0], "m-000001", 123456789, 1795582349000, false)
	}
	benchBuf = buf
}

// FuzzSeqFrameFastPath checks that the fast path for ack and read frames
// decides exactly as the whole decoder: a frame it takes is the frame
// decodeClientJSON returns for the same bytes.
func FuzzSeqFrameFastPath(f *testing.F) {
	for _, s := range []string{
		`{"type":"ack","seq":42}`,
		`{"type":"read","seq":7}`,
		`{"type":"ack","seq":0}`,
		`{"type":"ack","seq":042}`,
		`{"type":"ack","seq":18446744073709551615}`,
		`{"type":"ack","seq":18446744073709551616}`,
		`{"type":"ack","seq":99999999999999999999}`,
		`{"type":"ack","seq":1} `,
		`{"type":"ack","seq":1}}`,
		`{"type":"ack","seq":-1}`,
		`{"type":"ack","seq":1.5}`,
		`{"type":"ack","seq":}`,
		`{"type":"read","seq":3,"id":"x"}`,
	} {
		f.Add([]byte(s))
	}
	fuzzFastPath(f, decodeSeqFrame, decodeClientJSON)
}

func TestSeqFrameFastPathTakesOnlyTheCanonicalForm(t *testing.T) {
	for in, want := range map[string]uint64{
		`{"type":"ack","seq":42}`:                   42,
		`{"type":"read","seq":1}`:                   1,
		`{"type":"ack","seq":18446744073709551615}`: math.MaxUint64,
		`{"type":"ack","seq":18446744073709551616}`: 0,
		`{"type":"ack","seq":0}`:                    0,
		`{"type":"ack","seq":042}`:                  0,
		`{"type":"ack", "seq":42}`:                  0,
		`{"type":"ack","seq":42,"id":"x"}`:          0,
		`{"type":"ack","seq":4x}`:                   0,
	} {
		f := decodeSeqFrame([]byte(in))
		switch {
		case want == 0 && f != nil:
			t.Errorf("%s: fast path took it as %+v", in, *f)
		case want != 0 && (f == nil || f.Seq != want):
			t.Errorf("%s: fast path gave %v, want seq %d", in, f, want)
		}
		// Whichever way, DecodeClient decides as the whole decoder does.
		got, gerr := DecodeClient([]byte(in))
		exp, eerr := decodeClientJSON([]byte(in))
		if (gerr == nil) != (eerr == nil) || (gerr == nil && !reflect.DeepEqual(*got, *exp)) {
			t.Errorf("%s: DecodeClient %v %v, the whole decoder %v %v", in, got, gerr, exp, eerr)
		}
	}
}

// Frames of a group read from its log carry its place there (gseq), not
// an inbox seq; an ack or read of one names the group and gseq, and only
// those.
func TestGroupLogFrames(t *testing.T) {
	b := AppendGroupLogMsg(nil, "m-1", "alice", "phone", "crowd", 42, 1795582349000, []byte(`"hi"`), nil)
	f, err := DecodeServer(b)
	if err != nil || f.GSeq != 42 || f.Seq != 0 || f.Group != "crowd" || f.ID != "m-1" || string(f.Body) != `"hi"` {
		t.Fatalf("%s: %+v %v", b, f, err)
	}
	b = AppendGroupLogEvent(nil, "ev-43", "alice", "phone", "crowd", 43, 1795582349000, []byte(`{"op":"add","users":["bob"]}`))
	f, err = DecodeServer(b)
	if err != nil || f.GSeq != 43 || f.Seq != 0 || f.Event == nil || f.Event.Op != "add" {
		t.Fatalf("%s: %+v %v", b, f, err)
	}
	for _, typ := range []string{TypeAck, TypeRead} {
		c, err := DecodeClient(AppendGroupSeqFrame(nil, typ, "crowd", 42))
		if err != nil || c.Type != typ || c.GSeq != 42 || c.Group != "crowd" || c.Seq != 0 {
			t.Fatalf("%s: %+v %v", typ, c, err)
		}
	}
	for _, bad := range []string{`{"type":"ack","group":"crowd"}`, `{"type":"ack","gseq":3}`,
		`{"type":"ack","group":"crowd","gseq":3,"seq":4}`, `{"type":"read","group":"a b","gseq":3}`} {
		if _, err := DecodeClient([]byte(bad)); err == nil {
			t.Fatalf("%s decoded", bad)
		}
	}
}
