package groups

import "context"

// WithAfterCopy returns c calling f after each copy of a fan-out is
// stored.
func WithAfterCopy(c Config, f func(ctx context.Context, stored int)) Config {
	c.afterCopy = f
	return c
}

// WithoutFanOut returns c answering requests only.
func WithoutFanOut(c Config) Config {
	c.noFanOut = true
	return c
}

// DeleteMsg takes the message at seq out of GROUPS, for its tests.
func (s *Service) DeleteMsg(ctx context.Context, seq uint64) error { return s.deleteMsg(ctx, seq) }

// WithoutMemberships returns c keeping no user's list of groups, as the
// function did before it kept them.
func WithoutMemberships(c Config) Config {
	c.noMemberships = true
	return c
}
