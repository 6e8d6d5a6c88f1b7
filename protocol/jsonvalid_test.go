package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

// jsonCases are values either way of each rule ValidJSON follows.
var jsonCases = []string{
	``, ` `, `"`, `""`, `"a"`, `"a\"b"`, `"\\"`, `"\/\b\f\n\r\t"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00e"`,
	`"\x"`, `"\`, "\"\x01\"", "\"\x7f\"", "\"\xff\xfe\"", `"é"`, "\"a\nb\"", `'a'`,
	`0`, `-0`, `01`, `-`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-1.5e10`, `1.5.5`, `+1`, `0x10`, `1_000`,
	`true`, `false`, `null`, `tru`, `nul`, `True`, `nulll`, `true false`,
	`{}`, `{ }`, `{"a":1}`, `{"a" : 1 , "b":[1,2]}`, `{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1`, `{"a":1}}`,
	`[]`, `[ ]`, `[1,2]`, `[1,]`, `[,1]`, `[1 2]`, `[`, `]`, `[[[]]]`, `[{"a":[{"b":null}]}]`,
	" \t\r\n{}\n", "{}\v", "\u00a0{}", `{"a":"b"}x`, `"a" "b"`,
	strings.Repeat("[", 64) + strings.Repeat("]", 64),
	strings.Repeat("[", 65) + strings.Repeat("]", 65),
	strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
	strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100),
	strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 99),
}

func TestValidJSONAsJSONValid(t *testing.T) {
	for _, c := range jsonCases {
		if got, want := ValidJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("ValidJSON(%.40q) = %v, json.Valid says %v", c, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := ValidJSON(b), json.Valid(b); got != want {
			t.Fatalf("ValidJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	bodies := map[string][]byte{
		"string256": []byte(`"` + strings.Repeat("x", 254) + `"`),
		"object":    []byte(`{"text":"see you at eight, by the station","reply_to":"m-1842","mentions":["bob","carol"],"n":12.5}`),
	}
	for name, body := range bodies {
		b.Run(name+"/ValidJSON", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				ValidJSON(body)
			}
		})
		b.Run(name+"/json.Valid", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				json.Valid(body)
			}
		})
	}
}
