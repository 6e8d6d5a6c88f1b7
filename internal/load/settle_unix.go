//go:build unix

package load

import "syscall"

// settleDisk writes out what the page cache holds dirty, before a
// measured phase: the kernel's writeback of an earlier run's files (a
// run leaves hundreds of megabytes) otherwise lands on the cores a
// figure is measured on, at a time of its own. Run back to back without
// it, the raw baseline before 1:1 flat out ranged from 58,000 to 82,000
// msgs/s in six runs; with it, from 77,000 to 85,000 in eight.
func settleDisk() { syscall.Sync() }
