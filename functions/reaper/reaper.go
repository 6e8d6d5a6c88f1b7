// Package reaper is the worker function that carries over what earlier
// versions left behind: a durable consumer on INBOX per device. This
// version gives devices no consumer; a device's position is a cursor in
// the CURSORS bucket. A pass finds the device consumers of devices idle
// past a set time, copies each one's ack floor to the device's cursor and
// deletes the consumer, so the device costs disk (its messages in INBOX
// and a cursor), not server memory. A device that connects first carries
// its consumer over itself (see gateway.Reap). Nothing creates such
// consumers any more: once they are gone, a pass finds nothing to do.
package reaper

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/gateway"
)

// Version is the micro service version.
const Version = "1.0.0"

// ReapSubject asks an instance to reap now: {"idle":"1h"} (empty: the
// configured idle time). The answer is a gateway.ReapResult.
const ReapSubject = "sb.fn.reaper.reap"

// Config tunes an instance.
type Config struct {
	// Idle is how long a device must have been away before its legacy
	// consumer is carried over to its cursor and deleted.
	Idle time.Duration
	// Interval is how often a pass runs; negative runs none (reap on
	// request only). Each instance runs its own passes: they are safe
	// together, only repeated.
	Interval time.Duration
}

// DefaultConfig carries over the consumers of devices away for three
// days, hourly.
func DefaultConfig() Config { return Config{Idle: 72 * time.Hour, Interval: time.Hour} }

// Service is one running instance.
type Service struct {
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	svc  micro.Service
	mu   sync.Mutex // one pass at a time per instance
	stop chan struct{}
	done chan struct{}

	passes, reaped atomic.Int64
}

// Start starts the micro service and the periodic passes.
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Idle <= 0 {
		return nil, fmt.Errorf("reaper: idle must be positive")
	}
	s := &Service{js: js, cfg: cfg, log: log.With("function", "reaper"), stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	s.svc, err = micro.AddService(nc, micro.Config{
		Name:        "reaper",
		Version:     Version,
		Description: "Carries device consumers left by earlier versions over to cursors and deletes them",
		StatsHandler: func(*micro.Endpoint) any {
			return map[string]int64{"passes": s.passes.Load(), "reaped": s.reaped.Load()}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("reaper: %w", err)
	}
	if err := s.svc.AddEndpoint("reap", micro.HandlerFunc(s.handleReap), micro.WithEndpointSubject(ReapSubject)); err != nil {
		_ = s.svc.Stop()
		return nil, fmt.Errorf("reaper: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = s.svc.Stop()
		return nil, fmt.Errorf("reaper: %w", err)
	}
	go s.loop()
	return s, nil
}

// Stop ends the periodic passes and the service.
func (s *Service) Stop() {
	close(s.stop)
	<-s.done
	_ = s.svc.Stop()
}

func (s *Service) loop() {
	defer close(s.done)
	if s.cfg.Interval <= 0 {
		<-s.stop
		return
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		// A pass over many consumers takes a while; it is bounded on its
		// own, not by how often passes start.
		ctx, cancel := context.WithTimeout(context.Background(), max(s.cfg.Interval, 10*time.Minute))
		res, err := s.Reap(ctx, s.cfg.Idle)
		cancel()
		if err != nil {
			s.log.Warn("reap pass failed", "err", err)
			continue
		}
		s.log.Info("reap pass", "scanned", res.Scanned, "reaped", res.Reaped, "busy", res.Busy)
	}
}

// Reap runs one pass now.
func (s *Service) Reap(ctx context.Context, idle time.Duration) (gateway.ReapResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res, err := gateway.Reap(ctx, s.js, idle)
	s.passes.Add(1)
	s.reaped.Add(int64(res.Reaped))
	return res, err
}

func (s *Service) handleReap(r micro.Request) {
	var req struct {
		Idle string `json:"idle"`
	}
	if len(r.Data()) > 0 {
		if err := json.Unmarshal(r.Data(), &req); err != nil {
			_ = r.Error("400", "bad_json: "+err.Error(), nil)
			return
		}
	}
	idle := s.cfg.Idle
	if req.Idle != "" {
		d, err := time.ParseDuration(req.Idle)
		if err != nil || d < 0 {
			_ = r.Error("400", "bad_field: idle must be a non-negative duration like 72h", nil)
			return
		}
		idle = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := s.Reap(ctx, idle)
	if err != nil {
		_ = r.Error("500", "internal: "+err.Error(), nil)
		return
	}
	_ = r.RespondJSON(res)
}
