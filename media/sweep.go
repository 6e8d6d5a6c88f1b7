package media

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// SweepResult counts one sweep's work.
type SweepResult struct {
	// Scanned is how many objects were listed.
	Scanned int
	// Orphans is how many were older than OrphanAge with no grant record.
	Orphans int
	// Removed is how many of those were deleted.
	Removed int
}

// SweepOrphans removes uploads that no message ever referenced: objects
// older than OrphanAge with no grant record in MEDIA_ACL. Uploads go
// straight from the client to the store, so an object exists before, and
// without, anyone deciding to keep it; a client that crashes or is
// malicious between upload and send would otherwise leave its bytes
// forever.
//
// It is a sweep and not an S3 lifecycle rule because a rule can only
// express age, prefix and tags, not "not referenced": the reference lives
// in NATS, where the store cannot see it, and tagging objects on grant
// would cost an extra S3 call per message and still not cover the embedded
// store. The sweep covers both backends with one piece of code.
//
// An object granted at the very moment it is swept can lose the race: the
// grant record then names a missing object, and its download URLs get the
// store's not-found. OrphanAge is hours to a day while a client grants
// seconds after its upload, so the window is accepted rather than locked
// against.
//
// Errors on single objects do not stop the sweep; they are joined into the
// returned error.
func (s *Service) SweepOrphans(ctx context.Context) (SweepResult, error) {
	return s.sweep(ctx, time.Now())
}

func (s *Service) sweep(ctx context.Context, now time.Time) (SweepResult, error) {
	var res SweepResult
	var errs []error
	cutoff := now.Add(-s.cfg.OrphanAge)
	for obj, err := range s.store.Objects(ctx) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		res.Scanned++
		if !obj.Modified.Before(cutoff) {
			continue
		}
		ref, err := s.acl.referenced(ctx, obj.Key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ref {
			continue
		}
		res.Orphans++
		if err := s.store.Remove(ctx, obj.Key); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", obj.Key, err))
			continue
		}
		res.Removed++
	}
	return res, errors.Join(errs...)
}

func (s *Service) runSweeper(ctx context.Context) {
	defer s.sweeper.Done()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.SweepOrphans(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("orphan sweep", "scanned", res.Scanned, "removed", res.Removed, "err", err)
		case res.Removed > 0:
			s.log.Info("orphan sweep", "scanned", res.Scanned, "removed", res.Removed)
		}
	}
}
