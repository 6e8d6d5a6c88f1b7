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
