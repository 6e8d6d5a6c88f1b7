package presence

// WaitSweep waits for the sweep an instance starting after a gap in
// lease changes runs (none: at once).
func (s *Service) WaitSweep() { s.sweeping.Wait() }
