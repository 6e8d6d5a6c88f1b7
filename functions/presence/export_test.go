package presence

import "github.com/nats-io/nats.go/jetstream"

// WaitSweep waits for the sweep an instance starting after a gap in
// lease changes runs (none: at once).
func (s *Service) WaitSweep() { s.sweeping.Wait() }

// WrapSettings replaces the instance's SETTINGS bucket with what wrap
// makes of it (a test's hook between a record's write and its update).
func (s *Service) WrapSettings(wrap func(jetstream.KeyValue) jetstream.KeyValue) {
	s.settings = wrap(s.settings)
}
