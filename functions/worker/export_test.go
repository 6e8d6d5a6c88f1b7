package worker

// Draining is closed once Stop has stopped the pulls.
func (p *Pool) Draining() <-chan struct{} { return p.draining }
