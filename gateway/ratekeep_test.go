package gateway

import (
	"testing"
	"time"
)

// A device's sessions share one set of buckets, which outlives the last
// of them until it would have filled; then the device starts afresh and
// the set is forgotten.
func TestLimitKeeperHandsBucketsOn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SendRate, cfg.SendBurst = 1, 10 // the slowest to fill: 10 s
	k := newLimitKeeper(&cfg)
	if k.keep != 10*time.Second {
		t.Fatalf("kept for %s, want 10s", k.keep)
	}
	now := time.Now()
	phone := Identity{User: "alice", Device: "phone", Expires: now.Add(time.Hour)}
	a := k.take(phone, now)
	for range 10 {
		if !a.send.AllowN(now, 1) {
			t.Fatal("a fresh bucket refused")
		}
	}
	phone.Expires = now.Add(2 * time.Hour) // another token, the same device
	b := k.take(phone, now)
	if a != b {
		t.Fatal("two sessions of one device got their own buckets")
	}
	k.give(phone, a, now)
	k.give(phone, b, now)
	if c := k.take(phone, now.Add(time.Second)); c != a || c.send.AllowN(now.Add(time.Second), 2) {
		t.Fatal("a reconnect got full buckets")
	} else {
		k.give(phone, c, now.Add(time.Second))
	}
	later := now.Add(time.Second + k.keep + time.Millisecond)
	laptop := Identity{User: "alice", Device: "laptop"}
	d := k.take(laptop, later) // sweeps
	if k.kept() != 1 {
		t.Fatalf("%d sets kept, want only the laptop's", k.kept())
	}
	if e := k.take(phone, later); e == a {
		t.Fatal("the phone's old set came back after it filled")
	}
	_ = d
}
