//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package linktrack

// peerQuiet reports whether an idle connection is still usable. Where
// the socket cannot be peeked at, a connection is assumed usable until
// a request on it fails.
func (c *h1Conn) peerQuiet() bool { return true }

// peek is not used on this platform.
func (c *h1Conn) peek(uintptr) bool { return true }
