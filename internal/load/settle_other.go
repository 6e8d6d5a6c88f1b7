//go:build !unix

package load

// settleDisk does nothing where there is no sync(2).
func settleDisk() {}
