package gateway

// DevicesChanged is devicesChanged, for the tests that run it against a
// real bucket (package gateway_test).
func (srv *Server) DevicesChanged(since uint64) (bool, error) { return srv.devicesChanged(since) }
