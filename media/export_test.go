package media

import (
	"context"
	"time"
)

// SweepOrphansAt runs a sweep as if the clock read now, so tests can age
// objects by a day without waiting one.
func SweepOrphansAt(ctx context.Context, s *Service, now time.Time) (SweepResult, error) {
	return s.sweep(ctx, now)
}

// UploadsInProgress is how many uploads to the embedded store hold a
// slot, for its tests.
func UploadsInProgress(s *Service) int {
	if es, ok := s.store.(*embeddedStore); ok {
		return es.uploads.inProgress()
	}
	return -1
}
