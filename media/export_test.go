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
