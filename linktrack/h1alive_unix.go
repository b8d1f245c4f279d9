//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package linktrack

import "syscall"

// peerQuiet reports whether an idle connection is still open and the
// origin sent nothing on it, by peeking at its socket without blocking.
// An origin that closed an idle connection, or sent a TLS alert or an
// unsolicited response on it, makes it unusable; finding that out
// before writing a request keeps the request from being lost on it.
// http.Transport learns it from the read loop each connection keeps.
func (c *h1Conn) peerQuiet() bool {
	if c.sys == nil {
		return true
	}
	c.peekQuiet = false
	if err := c.sys.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekQuiet
}

// peek is the raw read of peerQuiet: it never blocks and consumes
// nothing.
func (c *h1Conn) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), c.peekByte[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	c.peekQuiet = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true
}
