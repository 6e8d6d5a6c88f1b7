package gateway

import (
	"testing"
	"time"
)

// An ended session's buckets go to the device's next session until they
// would have filled; then the device starts afresh and they are
// forgotten.
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
	k.give(phone, a, now)
	if k.kept() != 1 {
		t.Fatalf("%d sets kept after a session ended, want 1", k.kept())
	}
	phone.Expires = now.Add(2 * time.Hour) // another token, the same device
	b := k.take(phone, now.Add(time.Second))
	if b != a || b.send.AllowN(now.Add(time.Second), 2) {
		t.Fatal("a reconnect got full buckets")
	}
	if k.kept() != 0 {
		t.Fatalf("%d sets kept while the device is connected, want 0", k.kept())
	}
	if c := k.take(Identity{User: "alice", Device: "laptop"}, now); c == a {
		t.Fatal("another device got the phone's buckets")
	}
	k.give(phone, b, now.Add(time.Second))
	later := now.Add(time.Second + k.keep + time.Millisecond)
	k.give(Identity{User: "bob", Device: "phone"}, k.fresh(), later)
	if c := k.take(Identity{User: "carol", Device: "phone"}, later); c == b { // sweeps
		t.Fatal("carol got alice's buckets")
	}
	if k.kept() != 1 {
		t.Fatalf("%d sets kept, want only bob's", k.kept())
	}
	if d := k.take(phone, later); d == b {
		t.Fatal("the phone's old buckets came back after they filled")
	}
}
