package load

import "time"

// A body is a JSON string: the due send time in Unix nanoseconds as
// tsDigits digits, then padding up to the configured size. The recipient
// reads the time back without a JSON decoder, so measuring send→deliver
// costs the load tool almost nothing on the cores it shares with the
// server.

const tsDigits = 19

// putBody writes a body stamped at into buf (len(buf) is the size).
func putBody(buf []byte, at time.Time) []byte {
	buf[0] = '"'
	ns := at.UnixNano()
	for i := tsDigits; i >= 1; i-- {
		buf[i] = byte('0' + ns%10)
		ns /= 10
	}
	for i := tsDigits + 1; i < len(buf)-1; i++ {
		buf[i] = 'x'
	}
	buf[len(buf)-1] = '"'
	return buf
}

// bodyTime returns the stamp of a body made by putBody, or false.
func bodyTime(b []byte) (int64, bool) {
	if len(b) < MinSize || b[0] != '"' {
		return 0, false
	}
	var ns int64
	for _, c := range b[1 : tsDigits+1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		ns = ns*10 + int64(c-'0')
	}
	return ns, true
}
