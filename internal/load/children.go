package load

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Idle devices held by child processes (Config.Clients): one process here
// may hold some 19,000 sockets, so an idle run of more devices than that
// (QUALITY.md's P10: 100,000 at once) is spread over child load-tool
// processes. Each connects its share (HoldIdle), writes one line of JSON
// saying how it went, and holds its devices until its standard input
// closes; the parent reads the servers' memory while every child holds
// its devices, then closes their inputs.

// childReport is the line a child writes once its devices are connected,
// and again (errors only, all of them) once it has been told to close
// them: what happened while it held them (disconnects) counts too.
type childReport struct {
	Connected int                    `json:"connected"`
	Errors    map[string]int64       `json:"errors,omitempty"`
	Examples  map[string]string      `json:"examples,omitempty"`
	Latency   *hdrhistogram.Snapshot `json:"latency"`
}

// HoldIdle is a child's part of an idle run: it connects cfg.Devices
// devices of its own users (numbered from cfg.FirstDevice), writes a
// childReport line to out, and holds them until in ends (the parent
// closes it) or ctx does.
func HoldIdle(ctx context.Context, cfg Config, t Target, in io.Reader, out io.Writer) error {
	cfg = cfg.withDefaults()
	errs := newErrorCounts()
	run := runID()
	f := newFleet(t, cfg, run, errs)
	users := make([]string, cfg.Devices)
	for i := range users {
		users[i] = f.user("i", i)
	}
	lat := newHist()
	devs := f.connectAll(ctx, users, cfg.ConnectConcurrency, 8, nil, lat, func() {})
	rep := childReport{Connected: connected(devs)}
	rep.Errors, rep.Examples = errs.snapshot()
	lat.mu.Lock()
	rep.Latency = lat.h.Export()
	lat.mu.Unlock()
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "%s\n", b); err != nil {
		closeAll(devs)
		return err
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, in)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	var end childReport
	end.Errors, end.Examples = errs.snapshot()
	if b, err := json.Marshal(end); err == nil {
		_, _ = fmt.Fprintf(out, "%s\n", b)
	}
	closeAll(devs)
	return nil
}

// children are the child processes of an idle run.
type children struct {
	cmds []*exec.Cmd
	ins  []io.WriteCloser
	wg   sync.WaitGroup // the output readers
}

// startChildren starts cfg.Clients children holding cfg.Devices devices
// between them and waits until each has reported (or ended): the devices
// connected, their errors counted in e.errs and their dial latencies in
// lat.
func startChildren(ctx context.Context, e *env, lat *hist, tick func(int)) (*children, int, error) {
	cfg := e.cfg
	if e.target.ChildCommand == nil {
		return nil, 0, fmt.Errorf("%w: clients: the target cannot start child processes", ErrConfig)
	}
	k := &children{}
	reports := make(chan childReport, cfg.Clients)
	fail := func(err error) { e.errs.add("clients", err) }
	// Each child's devices start on a fresh source address, with one
	// address to spare for its retries (each dial attempt takes a
	// number): no two children bind one address's ports.
	share := (cfg.Devices + cfg.Clients - 1) / cfg.Clients
	stride := share
	if cfg.PerSource > 0 {
		stride = ((share+cfg.PerSource-1)/cfg.PerSource + 1) * cfg.PerSource
	}
	for i := range cfg.Clients {
		n := cfg.Devices / cfg.Clients
		if i < cfg.Devices%cfg.Clients {
			n++
		}
		cmd := e.target.ChildCommand(n, i*stride)
		in, err := cmd.StdinPipe()
		if err != nil {
			k.stop()
			return nil, 0, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			k.stop()
			return nil, 0, err
		}
		if err := cmd.Start(); err != nil {
			k.stop()
			return nil, 0, fmt.Errorf("load: child %d: %w", i, err)
		}
		k.cmds, k.ins = append(k.cmds, cmd), append(k.ins, in)
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<24)
			var rep childReport
			switch {
			case !sc.Scan():
				fail(fmt.Errorf("load: child %d ended before reporting: %v", i, sc.Err()))
				reports <- rep
				return
			case json.Unmarshal(sc.Bytes(), &rep) != nil:
				fail(fmt.Errorf("load: child %d: unreadable report %.200q", i, sc.Text()))
			}
			reports <- rep
			// Its last word, once told to close: errors while it held
			// its devices, over those already counted.
			var end childReport
			if !sc.Scan() || json.Unmarshal(sc.Bytes(), &end) != nil {
				// Its devices went with it, perhaps while the servers'
				// memory was read.
				fail(fmt.Errorf("load: child %d ended while holding its devices", i))
				return
			}
			for kind, n := range end.Errors {
				e.errs.addN(kind, n-rep.Errors[kind], end.Examples[kind])
			}
			_, _ = io.Copy(io.Discard, stdout)
		}()
	}
	total := 0
	for range cfg.Clients {
		select {
		case rep := <-reports:
			total += rep.Connected
			tick(rep.Connected)
			for kind, n := range rep.Errors {
				e.errs.addN(kind, n, rep.Examples[kind])
			}
			if rep.Latency != nil {
				lat.mu.Lock()
				lat.h.Merge(hdrhistogram.Import(rep.Latency))
				lat.mu.Unlock()
			}
		case <-ctx.Done():
			k.stop()
			return nil, total, ctx.Err()
		}
	}
	return k, total, nil
}

// stop closes the children's inputs (they close their devices and exit)
// and waits for them.
func (k *children) stop() {
	if k == nil {
		return
	}
	for _, in := range k.ins {
		_ = in.Close()
	}
	k.wg.Wait() // each reader ends when its child exits
	for _, c := range k.cmds {
		_ = c.Wait()
	}
}
