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

// UploadAt issues an upload ticket as if the clock read now, so tests can
// move to the next day without waiting one.
func UploadAt(ctx context.Context, s *Service, user, mime string, size int64, now time.Time) (*Ticket, error) {
	return s.upload(ctx, user, mime, size, now)
}
