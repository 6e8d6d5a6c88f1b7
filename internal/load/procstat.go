package load

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// Linux fixes it at 100 for user space on every architecture Go supports,
// whatever the kernel's own tick rate.
const clockTicks = 100

// procSample is one reading of a process.
type procSample struct {
	rss, hwm int64 // resident and peak resident bytes
	cpu      time.Duration
	sysr     int64 // read system calls so far (syscr), -1 unknown
	sysw     int64 // write system calls so far (syscw), -1 unknown
	at       time.Time
}

// readProc reads a process's memory from /proc/PID/status and its CPU time
// from /proc/PID/stat.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.rss, s.hwm = parseStatus(string(status))
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	ticks, err := parseStatTicks(string(stat))
	if err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.cpu = time.Duration(ticks) * time.Second / clockTicks
	s.sysr, s.sysw = -1, -1
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		s.sysr, s.sysw = parseIO(string(io))
	}
	return s, nil
}

// parseIO returns syscr and syscw from /proc/PID/io (-1 for one not
// there). The counts are of read- and write-like system calls (read,
// recvfrom, write, sendmsg...), epoll and futex not among them: the
// cost of a frame or a NATS message that a CPU figure on a noisy machine
// cannot show reliably, it counts exactly.
func parseIO(io string) (syscr, syscw int64) {
	syscr, syscw = -1, -1
	for _, line := range strings.Split(io, "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "syscr":
			syscr = n
		case "syscw":
			syscw = n
		}
	}
	return syscr, syscw
}

// parseStatus returns VmRSS and VmHWM in bytes.
func parseStatus(status string) (rss, hwm int64) {
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// parseStatTicks returns utime+stime. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last ')'.
func parseStatTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields", len(f)+2)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q stime %q", f[11], f[12])
	}
	return u + s, nil
}

// ProcStat is one process over the measured phase of a run.
type ProcStat struct {
	Proc
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	// PeakRSS is VmHWM at the end: the most the process ever held.
	PeakRSS    int64   `json:"peak_rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPercent is CPU time over wall time: 200 is both cores of a
	// two-core machine.
	CPUPercent float64 `json:"cpu_percent"`
	// ReadSyscalls and WriteSyscalls are the read- and write-like system
	// calls the process made over the phase (-1 where /proc/PID/io could
	// not be read).
	ReadSyscalls  int64  `json:"read_syscalls"`
	WriteSyscalls int64  `json:"write_syscalls"`
	Error         string `json:"error,omitempty"`
}

// watch reads a set of processes at the start and the end of a phase.
type watch struct {
	procs  []Proc
	before []procSample
	errs   []error
}

func startWatch(procs []Proc) *watch {
	w := &watch{procs: procs, before: make([]procSample, len(procs)), errs: make([]error, len(procs))}
	for i, p := range procs {
		w.before[i], w.errs[i] = readProc(p.PID)
	}
	return w
}

// stop reads every process again and returns the phase's figures.
func (w *watch) stop() []ProcStat {
	out := make([]ProcStat, len(w.procs))
	for i, p := range w.procs {
		st := ProcStat{Proc: p}
		after, err := readProc(p.PID)
		if err == nil {
			err = w.errs[i]
		}
		if err != nil {
			st.Error = err.Error()
			out[i] = st
			continue
		}
		b := w.before[i]
		st.RSSBefore, st.RSSAfter, st.PeakRSS = b.rss, after.rss, after.hwm
		st.CPUSeconds = (after.cpu - b.cpu).Seconds()
		st.ReadSyscalls, st.WriteSyscalls = -1, -1
		if b.sysr >= 0 && after.sysr >= 0 {
			st.ReadSyscalls, st.WriteSyscalls = after.sysr-b.sysr, after.sysw-b.sysw
		}
		if wall := after.at.Sub(b.at).Seconds(); wall > 0 {
			st.CPUPercent = 100 * st.CPUSeconds / wall
		}
		out[i] = st
	}
	return out
}

// rssDelta sums RSSAfter-RSSBefore over the processes read without error.
func rssDelta(ps []ProcStat) (delta int64, ok bool) {
	for _, p := range ps {
		if p.Error == "" && p.Role != roleBench {
			delta += p.RSSAfter - p.RSSBefore
			ok = true
		}
	}
	return delta, ok
}

// roleBench is the load tool's own process, reported beside the servers
// because it shares their cores.
const roleBench = "bench"
