package load

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Schema names the JSON layout; it changes when a field changes meaning.
const Schema = "switchboard-bench/1"

// Report is everything a run measured. Every figure is in it, so runs can
// be compared by reading two files; the table is a view of it.
type Report struct {
	Schema   string     `json:"schema"`
	Scenario string     `json:"scenario"`
	RunID    string     `json:"run_id"`
	Started  time.Time  `json:"started"`
	Seconds  float64    `json:"seconds"`
	Args     []string   `json:"args,omitempty"`
	Host     Host       `json:"host"`
	Target   TargetInfo `json:"target"`
	Config   ConfigInfo `json:"config"`

	// Exactly one of these is set, after Scenario.
	Idle    *IdleResult    `json:"idle,omitempty"`
	Pairs   *PairsResult   `json:"pairs,omitempty"`
	Storm   *StormResult   `json:"storm,omitempty"`
	Offline *OfflineResult `json:"offline,omitempty"`
	Groups  *GroupsResult  `json:"groups,omitempty"`
	// GroupStorm is groupstorm's.
	GroupStorm *GroupStormResult `json:"group_storm,omitempty"`

	Messages Counts `json:"messages"`
	// Errors are what the devices met, by kind (see errorCounts);
	// ErrorExamples holds the first message of each kind.
	Errors        map[string]int64  `json:"errors"`
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	Server        ServerCounters    `json:"server"`
	// Processes are the watched processes over the scenario's measured
	// phase, the load tool itself ("bench") included.
	Processes []ProcStat `json:"processes"`
	Baseline  *Baseline  `json:"baseline,omitempty"`
	// ServerLogs counts the WARN and ERROR lines of spawned servers by
	// process, level and message (--spawn only).
	ServerLogs map[string]int64 `json:"server_logs,omitempty"`
	// Ratios are each figure over its raw JetStream counterpart, by name
	// (see the table for which is which). Above 1 is more of the figure:
	// better for rates, worse for latencies and bytes.
	Ratios map[string]float64 `json:"ratios"`
	Error  string             `json:"error,omitempty"`
}

// Host is the machine the run was on.
type Host struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func thisHost() Host {
	return Host{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}

// TargetInfo is what was loaded.
type TargetInfo struct {
	URLs []string `json:"urls"`
	// MetricsURLs are the metrics endpoints the server counters came
	// from; none: there are no server counters.
	MetricsURLs []string `json:"metrics_urls,omitempty"`
	NATSURL     string   `json:"nats_url,omitempty"`
	Procs       []Proc   `json:"procs,omitempty"`
	// SourceAddrs is how many local addresses the connections came from.
	SourceAddrs int `json:"source_addrs"`
}

// ConfigInfo is the run's sizes, as used (defaults filled).
type ConfigInfo struct {
	Devices            int     `json:"devices"`
	Pairs              int     `json:"pairs"`
	GroupSize          int     `json:"group_size,omitempty"`
	Groups             int     `json:"groups,omitempty"`
	Memberships        int     `json:"memberships,omitempty"`
	Users              int     `json:"users"`
	Messages           int     `json:"messages"`
	Pending            int     `json:"pending"`
	Sample             int     `json:"sample"`
	FirstConnect       bool    `json:"first_connect"`
	Rate               float64 `json:"rate"`
	Inflight           int     `json:"inflight"`
	DurationSeconds    float64 `json:"duration_s"`
	Size               int     `json:"size"`
	Senders            int     `json:"senders"`
	ConnectConcurrency int     `json:"connect_concurrency"`
	PerSource          int     `json:"per_source"`
	DrainTimeout       float64 `json:"drain_timeout_s"`
	Settle             float64 `json:"settle_s"`
	BaselineMsgs       int     `json:"baseline_msgs"`
	BaselineDuration   float64 `json:"baseline_duration_s"`
	BaselineConsumers  int     `json:"baseline_consumers"`
}

func configInfo(c Config) ConfigInfo {
	return ConfigInfo{
		Devices: c.Devices, Pairs: c.Pairs, GroupSize: c.GroupSize, Groups: c.Groups, Memberships: c.Memberships, Users: c.Users, Messages: c.Messages, Pending: c.Pending,
		Sample: c.Sample, FirstConnect: c.FirstConnect, Rate: c.Rate, Inflight: c.Inflight,
		DurationSeconds: c.Duration.Seconds(), Size: c.Size, Senders: c.Senders,
		ConnectConcurrency: c.ConnectConcurrency, PerSource: c.PerSource,
		DrainTimeout: c.DrainTimeout.Seconds(), Settle: max(c.Settle, 0).Seconds(),
		BaselineMsgs: c.BaselineMsgs, BaselineDuration: c.BaselineDuration.Seconds(),
		BaselineConsumers: c.BaselineConsumers,
	}
}

// Connects is how fast devices connected (upgrade, token, consumer,
// welcome).
type Connects struct {
	Devices   int     `json:"devices"`
	Connected int     `json:"connected"`
	Seconds   float64 `json:"seconds"`
	PerSec    float64 `json:"per_sec"`
	// Latency is each device's dial to welcome, retries included.
	Latency Latency `json:"latency"`
}

// IdleResult is N connected devices doing nothing.
type IdleResult struct {
	Connects Connects `json:"connects"`
	// RSSBefore and RSSAfter sum the servers (gateways and NATS), read
	// before the first connect and Settle after the last.
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	// BytesPerDevice is (RSSAfter-RSSBefore)/connected: QUALITY.md's P3.
	BytesPerDevice float64 `json:"bytes_per_device"`
	RSSMeasured    bool    `json:"rss_measured"`
}

// Throughput is rates over a phase: each count over the time from the
// first send to the last event of its kind.
type Throughput struct {
	SentPerSec      float64 `json:"sent_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// ReceiptsPerSec is messages completed end to end (the sender holds
	// the delivered receipt): QUALITY.md's P1.
	ReceiptsPerSec float64 `json:"receipts_per_sec"`
}

// PairsResult is N senders each sending to its own recipient.
type PairsResult struct {
	Connects Connects `json:"connects"`
	// SenderRegion and RecipientRegion are where the senders and the
	// recipients were homed, on a regions deployment (Placement).
	SenderRegion    string `json:"sender_region,omitempty"`
	RecipientRegion string `json:"recipient_region,omitempty"`
	// SendSeconds runs from the first send until the last one was
	// answered: Duration, plus however long the system took to catch up.
	SendSeconds float64 `json:"send_seconds"`
	// OfferedPerSec is the sends started per second of Duration: Rate,
	// when the schedule was kept. Sent below it means the system did not
	// keep up, and its latencies are a queue's.
	OfferedPerSec float64    `json:"offered_per_sec"`
	Throughput    Throughput `json:"throughput"`
	// Latencies run from when each send was due (at a fixed rate, the
	// schedule, so a stall counts against every send it delays).
	SendSent    Latency `json:"send_sent"`
	SendDeliver Latency `json:"send_deliver"`
	SendReceipt Latency `json:"send_receipt"`
	// DrainSeconds is from the last send to the last delivery or receipt.
	DrainSeconds float64 `json:"drain_seconds"`
	Complete     bool    `json:"complete"`
}

// StormResult is every device reconnecting at once to a backlog.
type StormResult struct {
	Connects Connects `json:"connects"`
	// Feed is storing the backlogs through Senders devices.
	FeedSeconds float64 `json:"feed_seconds"`
	FeedPerSec  float64 `json:"feed_per_sec"`
	Backlog     int64   `json:"backlog_messages"`
	StormTimes
}

// StormTimes is a storm's reconnect, from the moment all devices were
// told to reconnect.
type StormTimes struct {
	// Reconnected devices and the time until the last one had its
	// welcome.
	Reconnected      int     `json:"reconnected"`
	ReconnectSeconds float64 `json:"reconnect_seconds"`
	// StormSeconds is until every device was reconnected and had its
	// whole backlog: QUALITY.md's P5.
	StormSeconds    float64 `json:"storm_seconds"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	Complete        bool    `json:"complete"`
	// Reconnect is each device's time to welcome; BacklogDone its time
	// until its last pending message.
	Reconnect   Latency `json:"reconnect"`
	BacklogDone Latency `json:"backlog_done"`
}

// OfflineResult is users who receive while away.
type OfflineResult struct {
	FeedSeconds float64 `json:"feed_seconds"`
	FeedPerSec  float64 `json:"feed_per_sec"`
	Stored      int64   `json:"stored_messages"`
	// RSS sums the servers: before the users (before their first
	// connects, with FirstConnect), once they had all gone away
	// (FirstConnect only), Settle after their messages were stored, and
	// after the sample drained.
	RSSBefore     int64 `json:"rss_before_bytes"`
	RSSAway       int64 `json:"rss_away_bytes,omitempty"`
	RSSAfter      int64 `json:"rss_after_bytes"`
	RSSAfterDrain int64 `json:"rss_after_drain_bytes"`
	// BytesPerUser is (RSSAfter-RSSBefore)/users: what an offline user
	// and their messages hold in server memory, QUALITY.md's P4.
	BytesPerUser float64 `json:"bytes_per_user"`
	RSSMeasured  bool    `json:"rss_measured"`
	// StreamBytesPerMsg is INBOX's growth over the messages stored.
	StreamBytesPerMsg float64 `json:"stream_bytes_per_msg"`
	// The sample reconnects and drains what it was sent.
	Drain        Connects `json:"drain_connects"`
	DrainSeconds float64  `json:"drain_seconds"`
	DrainPerSec  float64  `json:"drain_per_sec"`
	Drained      bool     `json:"drained"`
}

// GroupsResult is Groups groups of GroupSize online members, one sender
// each. Deliveries count members: a message to a group of 100 is 99.
type GroupsResult struct {
	GroupSize int      `json:"group_size"`
	Groups    int      `json:"groups"`
	Connects  Connects `json:"connects"`
	// SetupSeconds is from the groups' create until every member had
	// their last change (the adds' fan-out), before the clock starts.
	SetupSeconds float64 `json:"setup_seconds"`
	Sent         int64   `json:"sent"`
	// SentPerSec is group messages stored; DeliveriesPerSec member
	// deliveries, from the first send to the last delivery (QUALITY.md's
	// P7 sets it against the raw publish rate).
	SentPerSec       float64 `json:"sent_per_sec"`
	Deliveries       int64   `json:"deliveries"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	// SendDeliver is from each send to each member's app;
	// SendAllDelivered from each send until its last member had it.
	SendDeliver      Latency `json:"send_deliver"`
	SendAllDelivered Latency `json:"send_all_delivered"`
	// Lost is member deliveries of confirmed messages missing at the
	// end; Duplicated and Reordered are per member; Foreign is a message
	// this run did not send to that member's group.
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	Reordered  int64 `json:"reordered"`
	Foreign    int64 `json:"foreign"`
	// Stored bytes per group message: the group's log, and the member
	// copies in INBOX (all of them).
	GroupsBytesPerMsg float64 `json:"groups_bytes_per_msg"`
	InboxBytesPerMsg  float64 `json:"inbox_bytes_per_msg"`
	DrainSeconds      float64 `json:"drain_seconds"`
	Complete          bool    `json:"complete"`
}

// GroupStormResult is Users member users, each in Memberships of Groups
// small groups, reconnecting at once to what their groups' senders sent
// while they were away.
type GroupStormResult struct {
	GroupSize    int      `json:"group_size"`
	Groups       int      `json:"groups"`
	Memberships  int      `json:"memberships"`
	SendersAway  bool     `json:"senders_away,omitempty"`
	Users        int      `json:"users"`
	Connects     Connects `json:"connects"`
	SetupSeconds float64  `json:"setup_seconds"`
	// Sent group messages; Backlog the member deliveries they owe.
	FeedSeconds float64 `json:"feed_seconds"`
	Sent        int64   `json:"sent"`
	Backlog     int64   `json:"backlog_deliveries"`
	StormTimes
	// As GroupsResult's, per member.
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	Reordered  int64 `json:"reordered"`
	Foreign    int64 `json:"foreign"`
}

// ratios fills Report.Ratios from the results and the baseline.
func (r *Report) ratios() {
	r.Ratios = map[string]float64{}
	b := r.Baseline
	if b == nil {
		return
	}
	put := func(name string, v, raw float64) {
		if raw > 0 && v > 0 {
			r.Ratios[name] = v / raw
		}
	}
	lat := func(prefix string, v, raw Latency) {
		put(prefix+"_p50", v.P50, raw.P50)
		put(prefix+"_p90", v.P90, raw.P90)
		put(prefix+"_p99", v.P99, raw.P99)
		put(prefix+"_p999", v.P999, raw.P999)
		put(prefix+"_max", v.Max, raw.Max)
	}
	switch {
	case r.Pairs != nil:
		p := r.Pairs
		put("throughput", p.Throughput.ReceiptsPerSec, b.MsgsPerSec)
		put("sent_throughput", p.Throughput.SentPerSec, b.MsgsPerSec)
		put("delivered_throughput", p.Throughput.DeliveredPerSec, b.MsgsPerSec)
		ack, cons := b.PublishAck, b.PublishConsume
		if b.Paced != nil {
			ack, cons = b.Paced.PublishAck, b.Paced.PublishConsume
		}
		lat("send_sent", p.SendSent, ack)
		lat("send_deliver", p.SendDeliver, cons)
		lat("send_receipt", p.SendReceipt, cons)
	case r.Idle != nil:
		if c := b.Consumers; c != nil {
			if c.RSSMeasure && r.Idle.RSSMeasured {
				put("bytes_per_device", r.Idle.BytesPerDevice, c.BytesEach)
			}
			put("connect_rate", r.Idle.Connects.PerSec, c.PerSec)
		}
	case r.Storm != nil:
		put("feed_rate", r.Storm.FeedPerSec, b.MsgsPerSec)
		put("storm_delivered_rate", r.Storm.DeliveredPerSec, b.MsgsPerSec)
	case r.GroupStorm != nil:
		put("group_storm_delivered_rate", r.GroupStorm.DeliveredPerSec, b.MsgsPerSec)
	case r.Groups != nil:
		put("fanout_throughput", r.Groups.DeliveriesPerSec, b.MsgsPerSec)
		put("stream_bytes_per_msg", r.Groups.InboxBytesPerMsg, b.StreamBytesPerMsg)
	case r.Offline != nil:
		put("feed_rate", r.Offline.FeedPerSec, b.MsgsPerSec)
		put("drain_rate", r.Offline.DrainPerSec, b.MsgsPerSec)
		put("stream_bytes_per_msg", r.Offline.StreamBytesPerMsg, b.StreamBytesPerMsg)
	}
}

// WriteTable prints the report for a person.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	b := r.Baseline
	fmt.Fprintf(w, "switchboard bench: %s (run %s, %.1fs, %d B messages, %d CPUs)\n", r.describe(), r.RunID, r.Seconds, r.Config.Size, r.Host.CPUs)
	fmt.Fprintf(tw, "figure\tvalue\traw JetStream\tratio\t\n")
	row := func(name string, v float64, unit string, raw float64, ratio string) {
		rs := "—"
		if raw > 0 {
			rs = num(raw, unit)
		}
		rt := "—"
		if x, ok := r.Ratios[ratio]; ok {
			rt = fmt.Sprintf("%.2f×", x)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", name, num(v, unit), rs, rt)
	}
	latRows := func(name string, v, raw Latency, ratio string) {
		for _, q := range []struct {
			n, key string
			v, raw float64
		}{
			{"p50", "_p50", v.P50, raw.P50}, {"p90", "_p90", v.P90, raw.P90}, {"p99", "_p99", v.P99, raw.P99},
			{"p99.9", "_p999", v.P999, raw.P999}, {"max", "_max", v.Max, raw.Max},
		} {
			row(name+" "+q.n, q.v, "ms", q.raw, ratio+q.key)
		}
	}
	var rawRate float64
	var rawAck, rawCons Latency
	if b != nil {
		rawRate, rawAck, rawCons = b.MsgsPerSec, b.PublishAck, b.PublishConsume
		if b.Paced != nil {
			rawAck, rawCons = b.Paced.PublishAck, b.Paced.PublishConsume
		}
	}
	// stormRows are a storm's reconnect, of n devices.
	stormRows := func(t StormTimes, n int, rateName, ratio string) {
		row(fmt.Sprintf("reconnected (of %d)", n), float64(t.Reconnected), "", 0, "")
		row("all reconnected after", t.ReconnectSeconds, "s", 0, "")
		if t.Complete {
			row("all backlogs delivered after", t.StormSeconds, "s", 0, "")
		} else {
			row("last delivery (incomplete)", t.StormSeconds, "s", 0, "")
		}
		row(rateName, t.DeliveredPerSec, "/s", rawRate, ratio)
		row("reconnect p50", t.Reconnect.P50, "ms", 0, "")
		row("reconnect p99", t.Reconnect.P99, "ms", 0, "")
		row("backlog done p50", t.BacklogDone.P50, "ms", 0, "")
		row("backlog done p99", t.BacklogDone.P99, "ms", 0, "")
		row("backlog done max", t.BacklogDone.Max, "ms", 0, "")
	}
	connects := func(c Connects, raw float64, ratio string) {
		row(fmt.Sprintf("connected (of %d)", c.Devices), float64(c.Connected), "", 0, "")
		row("connects/s", c.PerSec, "/s", raw, ratio)
		row("connect p50", c.Latency.P50, "ms", 0, "")
		row("connect p99", c.Latency.P99, "ms", 0, "")
		row("connect max", c.Latency.Max, "ms", 0, "")
	}
	switch {
	case r.Pairs != nil:
		p := r.Pairs
		if r.Config.Rate > 0 {
			row("offered msgs/s", p.OfferedPerSec, "/s", 0, "")
		}
		row("end to end (receipt back) msgs/s", p.Throughput.ReceiptsPerSec, "/s", rawRate, "throughput")
		row("sent msgs/s", p.Throughput.SentPerSec, "/s", rawRate, "sent_throughput")
		row("delivered msgs/s", p.Throughput.DeliveredPerSec, "/s", rawRate, "delivered_throughput")
		latRows("send→sent", p.SendSent, rawAck, "send_sent")
		latRows("send→deliver", p.SendDeliver, rawCons, "send_deliver")
		latRows("send→delivered receipt", p.SendReceipt, rawCons, "send_receipt")
		row("drain after last send", p.DrainSeconds, "s", 0, "")
		connects(p.Connects, 0, "")
	case r.Idle != nil:
		i := r.Idle
		var rawB, rawC float64
		if b != nil && b.Consumers != nil {
			rawB, rawC = b.Consumers.BytesEach, b.Consumers.PerSec
		}
		if i.RSSMeasured {
			row("server RSS before", float64(i.RSSBefore), "B", 0, "")
			row("server RSS after", float64(i.RSSAfter), "B", 0, "")
			row("bytes per idle device", i.BytesPerDevice, "B", rawB, "bytes_per_device")
		} else {
			row("bytes per idle device (no --pids)", 0, "", 0, "")
		}
		connects(i.Connects, rawC, "connect_rate")
	case r.Storm != nil:
		s := r.Storm
		row("backlog messages", float64(s.Backlog), "", 0, "")
		row("feed msgs/s", s.FeedPerSec, "/s", rawRate, "feed_rate")
		stormRows(s.StormTimes, s.Connects.Devices, "delivered msgs/s in the storm", "storm_delivered_rate")
	case r.GroupStorm != nil:
		s := r.GroupStorm
		row(fmt.Sprintf("users, each in %d groups", s.Memberships), float64(s.Users), "", 0, "")
		row("backlog member deliveries", float64(s.Backlog), "", 0, "")
		stormRows(s.StormTimes, s.Users, "member deliveries/s in the storm", "group_storm_delivered_rate")
	case r.Offline != nil:
		o := r.Offline
		var rawBytes float64
		if b != nil {
			rawBytes = b.StreamBytesPerMsg
		}
		row("stored messages", float64(o.Stored), "", 0, "")
		row("feed msgs/s", o.FeedPerSec, "/s", rawRate, "feed_rate")
		if o.RSSMeasured {
			row("server RSS before", float64(o.RSSBefore), "B", 0, "")
			if o.RSSAway > 0 {
				row("server RSS with the devices away", float64(o.RSSAway), "B", 0, "")
			}
			row("server RSS after", float64(o.RSSAfter), "B", 0, "")
			row("server RSS after the drain", float64(o.RSSAfterDrain), "B", 0, "")
			row("RSS bytes per offline user", o.BytesPerUser, "B", 0, "")
		}
		row("stream bytes per message", o.StreamBytesPerMsg, "B", rawBytes, "stream_bytes_per_msg")
		row(fmt.Sprintf("sample drained (of %d)", o.Drain.Devices), float64(o.Drain.Connected), "", 0, "")
		row("drain time", o.DrainSeconds, "s", 0, "")
		row("drain msgs/s", o.DrainPerSec, "/s", rawRate, "drain_rate")
	case r.Groups != nil:
		g := r.Groups
		var rawBytes float64
		if b != nil {
			rawBytes = b.StreamBytesPerMsg
		}
		row("group msgs sent/s", g.SentPerSec, "/s", 0, "")
		row("member deliveries/s", g.DeliveriesPerSec, "/s", rawRate, "fanout_throughput")
		latRows("send→member", g.SendDeliver, rawCons, "")
		latRows("send→last member", g.SendAllDelivered, Latency{}, "")
		row("group log bytes per message", g.GroupsBytesPerMsg, "B", 0, "")
		row("inbox bytes per message (all copies)", g.InboxBytesPerMsg, "B", rawBytes, "stream_bytes_per_msg")
		row("drain after last send", g.DrainSeconds, "s", 0, "")
		row("setup: create and adds at every member", g.SetupSeconds, "s", 0, "")
		connects(g.Connects, 0, "")
	}
	if b != nil {
		label := "raw JetStream async publish + consume"
		if b.Replicas > 1 {
			label += fmt.Sprintf(" (R%d, as INBOX)", b.Replicas)
		}
		row(label, b.MsgsPerSec, "/s", 0, "")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case b != nil && b.Error != "":
		fmt.Fprintf(w, "raw baseline failed: %s\n", b.Error)
	case b != nil && b.PublishErrors > 0:
		fmt.Fprintf(w, "raw baseline: %d publishes failed, so its rate and the ratios are suspect\n", b.PublishErrors)
	case r.Pairs != nil && r.Config.Rate > 0 && r.Pairs.Throughput.SentPerSec < 0.95*r.Pairs.OfferedPerSec:
		fmt.Fprintf(w, "the system did not keep up: %s sent of %s offered, so its latencies are a growing queue's\n",
			num(r.Pairs.Throughput.SentPerSec, "/s"), num(r.Pairs.OfferedPerSec, "/s"))
	case r.Pairs != nil && r.Config.Rate == 0:
		fmt.Fprintln(w, "flat out: latencies on both sides are queueing at saturation (run --rate for latencies against a paced raw baseline)")
	}
	m := r.Messages
	incomplete := (r.Pairs != nil && !r.Pairs.Complete) || (r.Storm != nil && !r.Storm.Complete) ||
		(r.Offline != nil && !r.Offline.Drained) || (r.Groups != nil && !r.Groups.Complete) ||
		(r.GroupStorm != nil && !r.GroupStorm.Complete)
	if incomplete && r.Error == "" {
		fmt.Fprintf(w, "incomplete: %d of %d confirmed messages arrived within --drain-timeout (%.0fs); "+
			"\"lost\" counts the rest, which JetStream may still hold\n", m.Checked-m.Lost, m.Checked, r.Config.DrainTimeout)
	}
	fmt.Fprintf(w, "messages: attempted %d, sent %d, delivered %d, receipts %d; lost %d, duplicated %d, reordered %d, "+
		"unconfirmed %d, missing receipts %d; SDK dropped %d redeliveries; %d reconnects\n",
		m.Attempted, m.Sent, m.Delivered, m.Receipts, m.Lost, m.Duplicated, m.Reordered,
		m.Unconfirmed, m.MissingReceipts, m.SDKDuplicatesDropped, m.Reconnects)
	fmt.Fprintf(w, "errors: %s\n", kv(r.Errors))
	s := r.Server
	if len(r.Target.MetricsURLs) == 0 {
		fmt.Fprintln(w, "gateways: no counters (give --metrics with each gateway's --metrics-listen address)")
	} else {
		fmt.Fprintf(w, "gateways: error frames %s; closes %s; refused handshakes %s; catch-ups %d\n",
			kv(s.ErrorFrames), kv(s.Closes), kv(s.HandshakesRefused), s.CatchUps)
	}
	if s.ErrorFrames["rate_limited"] > 0 || s.Closes["1008"] > 0 {
		fmt.Fprintln(w, "  the gateways throttled the load (rate_limited, 1008): this measured their per-connection limits;"+
			" raise --send-rate/--send-burst/--frame-rate/--frame-burst on them, as --spawn does")
	}
	if len(s.Unreachable) > 0 {
		fmt.Fprintf(w, "  no counters from %s (unreachable)\n", strings.Join(s.Unreachable, ", "))
	}
	for _, p := range r.Processes {
		if p.Error != "" {
			fmt.Fprintf(w, "%s pid %d: %s\n", p.Role, p.PID, p.Error)
			continue
		}
		sys := ""
		if p.ReadSyscalls >= 0 {
			sys = fmt.Sprintf(", system calls %s read %s write", num(float64(p.ReadSyscalls), ""), num(float64(p.WriteSyscalls), ""))
		}
		fmt.Fprintf(w, "%s pid %d: RSS %s → %s (peak %s), CPU %.1fs (%.0f%%)%s\n", p.Role, p.PID,
			num(float64(p.RSSBefore), "B"), num(float64(p.RSSAfter), "B"), num(float64(p.PeakRSS), "B"), p.CPUSeconds, p.CPUPercent, sys)
	}
	if len(r.ServerLogs) > 0 {
		fmt.Fprintf(w, "server log warnings: %s\n", kv(r.ServerLogs))
	}
	if r.Error != "" {
		fmt.Fprintf(w, "run error: %s\n", r.Error)
	}
	return nil
}

func (r *Report) describe() string {
	c := r.Config
	switch r.Scenario {
	case ScenarioIdle:
		return fmt.Sprintf("idle, %d devices", c.Devices)
	case ScenarioPairs:
		mode := fmt.Sprintf("flat out, %d in flight per sender", c.Inflight)
		if c.Rate > 0 {
			mode = fmt.Sprintf("%.0f msgs/s in total", c.Rate)
		}
		where := ""
		if p := r.Pairs; p != nil && p.SenderRegion != "" {
			where = fmt.Sprintf(", senders in %s, recipients in %s", p.SenderRegion, p.RecipientRegion)
		}
		return fmt.Sprintf("pairs, %d pairs%s, %s, %.0fs", c.Pairs, where, mode, c.DurationSeconds)
	case ScenarioStorm:
		return fmt.Sprintf("storm, %d devices × %d pending", c.Devices, c.Pending)
	case ScenarioOffline:
		seen := "never connected"
		if c.FirstConnect {
			seen = "connected once"
		}
		return fmt.Sprintf("offline, %d users (%s) × %d messages, sample %d", c.Users, seen, c.Messages, c.Sample)
	case ScenarioGroups:
		mode := fmt.Sprintf("flat out, %d in flight per sender", c.Inflight)
		if c.Rate > 0 {
			mode = fmt.Sprintf("%.0f msgs/s in total", c.Rate)
		}
		return fmt.Sprintf("groups, %d × %d members, %s, %.0fs", c.Groups, c.GroupSize, mode, c.DurationSeconds)
	case ScenarioGroupStorm:
		return fmt.Sprintf("groupstorm, %d × %d members, each member in %d, %d pending per group", c.Groups, c.GroupSize, c.Memberships, c.Pending)
	}
	return r.Scenario
}

// num formats v in unit: B as KB/MB, rates and counts with separators.
func num(v float64, unit string) string {
	switch unit {
	case "B":
		switch {
		case v >= 1<<20 || v <= -1<<20:
			return fmt.Sprintf("%.1f MB", v/(1<<20))
		case v >= 1<<10 || v <= -1<<10:
			return fmt.Sprintf("%.1f KB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	case "ms":
		if v < 10 {
			return fmt.Sprintf("%.3f ms", v)
		}
		return fmt.Sprintf("%.1f ms", v)
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "/s":
		return commas(v) + "/s"
	}
	return commas(v)
}

func commas(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func kv(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// ErrFaults is what a run that lost, duplicated, reordered or misdelivered
// a message returns (wrapped with the counts), after its report is
// written: the figures are still there, and a script or CI job running
// the load tool sees the failure in its exit status.
var ErrFaults = errors.New("the run lost, duplicated, reordered or misdelivered messages")

// Faults returns ErrFaults, with the counts, when the run broke a promise
// the system makes (nothing lost, once, in order, to its recipient), and
// nil otherwise.
func (r *Report) Faults() error {
	m := r.Messages
	lost, dup, reord, foreign := m.Lost, m.Duplicated, m.Reordered, r.Errors["foreign_message"]
	if r.Groups != nil { // its counts are in Messages too, but for this one
		foreign += r.Groups.Foreign
	}
	if lost+dup+reord+foreign == 0 {
		return nil
	}
	return fmt.Errorf("%w: lost %d, duplicated %d, reordered %d, misdelivered %d", ErrFaults, lost, dup, reord, foreign)
}
