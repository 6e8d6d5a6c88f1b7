package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The SDK resends retryable refusals (rate_limited, store_failed, ...) by
// itself and never shows them to the app, so the load tool reads the
// gateways' own counters to see them: error frames and closes by code, as
// the gateway counted them.

// ServerCounters are gateway counters summed over the targets, as deltas
// over the scenario.
type ServerCounters struct {
	// ErrorFrames are error frames sent to clients, by error code.
	ErrorFrames map[string]int64 `json:"error_frames"`
	// Closes are connections closed, by close code.
	Closes map[string]int64 `json:"closes"`
	// HandshakesRefused are refused upgrades, by reason.
	HandshakesRefused map[string]int64 `json:"handshakes_refused"`
	SendsStored       int64            `json:"sends_stored"`
	// Deliveries counts msg and receipt frames, redeliveries included.
	Deliveries int64 `json:"deliveries"`
	CatchUps   int64 `json:"catchups"`
	// Unreachable lists metrics endpoints that could not be read.
	Unreachable []string `json:"unreachable,omitempty"`
}

// sample is one scrape: "name{label=...}" → value, for the series below.
type sample map[string]float64

// scrape reads one gateway's metrics endpoint (its --metrics-listen
// address, http://host:port/metrics).
func scrape(ctx context.Context, mu string) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mu, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", mu, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the switchboard_gateway_* series of the Prometheus
// text format; the rest (Go runtime, process) is skipped.
func parseMetrics(r io.Reader) (sample, error) {
	s := sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "switchboard_gateway_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		s[strings.TrimPrefix(line[:i], "switchboard_gateway_")] = v
	}
	return s, sc.Err()
}

// label returns the value of key in a series name such as
// `closes_total{code="1000"}`.
func label(series, key string) string {
	i := strings.Index(series, key+`="`)
	if i < 0 {
		return ""
	}
	rest := series[i+len(key)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return ""
}

// counters scrapes every gateway's metrics endpoint at the start of a
// scenario; delta turns a second scrape into ServerCounters. With no
// endpoints there are no counters, and the gateways' sessions are unknown.
type counters struct {
	urls   []string
	before []sample
	// startSessions is the gateways' sessions before the run (other
	// clients of the same system), -1 when unknown.
	startSessions int
}

func startCounters(ctx context.Context, urls []string) *counters {
	c := &counters{urls: urls, before: make([]sample, len(urls))}
	if len(urls) == 0 {
		c.startSessions = -1
	}
	for i, u := range urls {
		s, err := scrape(ctx, u)
		if err != nil {
			c.startSessions = -1
		} else if c.startSessions >= 0 {
			c.startSessions += int(s["sessions"])
		}
		c.before[i] = s
	}
	return c
}

// sessions sums the gateways' connected sessions now, or -1 when a gateway
// cannot be read.
func (c *counters) sessions(ctx context.Context) int {
	if len(c.urls) == 0 {
		return -1
	}
	n := 0
	for _, u := range c.urls {
		s, err := scrape(ctx, u)
		if err != nil {
			return -1
		}
		n += int(s["sessions"])
	}
	return n
}

func (c *counters) delta(ctx context.Context) ServerCounters {
	out := ServerCounters{ErrorFrames: map[string]int64{}, Closes: map[string]int64{}, HandshakesRefused: map[string]int64{}}
	for i, u := range c.urls {
		after, err := scrape(ctx, u)
		if err != nil || c.before[i] == nil {
			out.Unreachable = append(out.Unreachable, u)
			continue
		}
		for series, v := range after {
			d := int64(v - c.before[i][series])
			if d == 0 {
				continue
			}
			switch name, _, _ := strings.Cut(series, "{"); name {
			case "error_frames_total":
				out.ErrorFrames[label(series, "code")] += d
			case "closes_total":
				out.Closes[label(series, "code")] += d
			case "handshakes_refused_total":
				out.HandshakesRefused[label(series, "code")] += d
			case "sends_stored_total":
				out.SendsStored += d
			case "deliveries_total":
				out.Deliveries += d
			case "catchups_total":
				out.CatchUps += d
			}
		}
	}
	return out
}
