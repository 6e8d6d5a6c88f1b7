package gateway

import (
	"context"
	"sync"
	"time"
)

// cursorStore writes devices' cursors to CURSORS (devices; a fake in
// tests).
type cursorStore interface {
	// saveCursor publishes the cursor and does not wait: a cursor that
	// lags only means a few messages come again on the next connect, and
	// the SDK drops repeats by id.
	saveCursor(user, device string, floor uint64) error
	// storeCursor publishes the cursor and waits until it is stored.
	storeCursor(ctx context.Context, user, device string, floor uint64) error
}

// cursorSaver keeps a device's cursor in step with its floor (everything
// at or below it settled, see feed). It saves CursorDelay after the floor
// first moves, gathering the moves that follow, so a device acking
// steadily costs one cursor write per CursorDelay, not one per message;
// and once more when the session ends, waiting for that one to be stored,
// so the next session, on any gateway, starts right after it.
type cursorSaver struct {
	s *session

	// mu guards the fields below. Saves are published under it, so they
	// are stored in the order they were made and a cursor never goes back.
	mu      sync.Mutex
	start   uint64 // where the cursor stood when the session started
	floor   uint64 // the newest floor the feed reported
	saved   uint64 // the floor last saved
	waiting bool   // a save is set on the session's timer (opCursor)
	ended   bool   // the final save was made: no save follows
}

// init sets where the device's cursor stands when the session starts.
func (c *cursorSaver) init(pos uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start, c.floor, c.saved = pos, pos, pos
}

// moved takes the feed's new floor and has it saved: at once with no
// CursorDelay, else when the delay has passed, unless a save waits
// already.
func (c *cursorSaver) moved(floor uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.floor = max(c.floor, floor)
	if c.ended || c.waiting || c.floor <= c.saved {
		return
	}
	delay := c.s.srv.cfg.CursorDelay
	if delay == 0 {
		c.saveLocked()
		return
	}
	c.waiting = true
	c.s.timer.set(opCursor, time.Now().Add(delay))
}

// due runs when CursorDelay has passed (opCursor).
func (c *cursorSaver) due() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting = false
	if !c.ended {
		c.saveLocked()
	}
}

// saveLocked publishes the floor if it moved since the last save.
//
// Lock should be held.
func (c *cursorSaver) saveLocked() {
	if c.floor <= c.saved {
		return
	}
	c.saved = c.floor
	if err := c.s.srv.cursors.saveCursor(c.s.id.User, c.s.id.Device, c.floor); err != nil {
		c.s.log.Debug("saving the cursor failed", "err", err)
	}
}

// final saves the floor and waits for it to be stored; no save follows.
// It is stored whenever the floor moved in this session, even if a save
// published it already: that one was not waited for, and may be lost.
func (c *cursorSaver) final() {
	c.mu.Lock()
	floor, start := c.floor, c.start
	c.ended, c.saved = true, floor
	c.mu.Unlock()
	c.s.timer.clear(opCursor)
	if floor <= start {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.s.srv.cursors.storeCursor(ctx, c.s.id.User, c.s.id.Device, floor); err != nil {
		c.s.log.Debug("saving the cursor failed", "err", err)
	}
}
