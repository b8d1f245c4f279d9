package integration

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Client returns an HTTP/3-only client, quic-go's, that sends every
// request from a loopback UDP socket to Caddy's HTTPS port, whatever
// the URL's host, and adds nothing to requests on its own. It never
// falls back to TCP: a Caddy that does not answer over QUIC fails the
// request. Its connections and socket close when the test ends.
func (r *rig) h3Client(t testing.TB) *http.Client {
	t.Helper()
	loopback := net.IPv4(127, 0, 0, 1)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: conn}
	caddy := &net.UDPAddr{IP: loopback, Port: r.httpsPort}
	transport := &http3.Transport{
		TLSClientConfig:    r.clientTLS(),
		DisableCompression: true,
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return qt.DialEarly(ctx, caddy, tlsConf, conf)
		},
	}
	t.Cleanup(func() {
		transport.Close()
		qt.Close()
		conn.Close()
	})
	return &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}
