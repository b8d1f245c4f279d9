package main

// HTTPS probes: wait until a server is ready, and check that a contender
// really proxies a click to the origin before it is measured.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

const (
	trackingHost = "link.example.test"
	// wantLocation must match the origin's Location (bench/origin).
	wantLocation = "https://shop.example.com/p?utm_source=email&utm_campaign=x"
	// clickPath is an AWS SES style tracked link, as wrk requests it.
	clickPath = "/CL0/https:%2F%2Fshop.example.com%2Fp%3Futm_source=email/1/abc="
)

// newClient returns an HTTP/1.1 client that trusts only the bench CA,
// expects serverName in the certificate, and never follows redirects.
func newClient(caFile, serverName string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       3 * time.Second,
	}, nil
}

// get does one GET of https://127.0.0.1:port/path with the given Host.
func get(ctx context.Context, c *http.Client, port int, path, host string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return nil, err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp, nil
}

// waitReady polls GET /health every 50ms, for at most 15s, until it
// answers 200. A server that answers HTTP but never 200 on /health (a
// handler may treat /health its own way) is accepted with a warning 2s
// after its first answer; the click check that follows is the real gate.
func waitReady(ctx context.Context, p *proc, c *http.Client, port int, host string) error {
	deadline := time.Now().Add(15 * time.Second)
	var firstAnswer time.Time
	var last string
	for time.Now().Before(deadline) {
		if !p.alive() {
			return fmt.Errorf("%s exited during startup (%v); log:\n%s", p.name, p.err, p.logTail(15))
		}
		resp, err := get(ctx, c, port, "/health", host)
		switch {
		case err != nil:
			last = err.Error()
		case resp.StatusCode == http.StatusOK:
			return nil
		default:
			last = resp.Status
			if firstAnswer.IsZero() {
				firstAnswer = time.Now()
			} else if time.Since(firstAnswer) > 2*time.Second {
				fmt.Printf("  warning: %s answers /health with %s, not 200\n", p.name, resp.Status)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after 15s (last: %s); log:\n%s", p.name, last, p.logTail(15))
}

// verifyClick checks that a tracked click comes back as the origin's 302,
// with its Location unchanged and with Host rewritten to the tracking
// domain on the way in (the origin echoes it in X-Origin-Host).
func verifyClick(ctx context.Context, c *http.Client, port int) error {
	resp, err := get(ctx, c, port, clickPath, trackingHost)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusFound {
		return fmt.Errorf("click answered %s, want 302 Found", resp.Status)
	}
	if loc := resp.Header.Get("Location"); loc != wantLocation {
		return fmt.Errorf("click Location %q, want %q", loc, wantLocation)
	}
	switch h := resp.Header.Get("X-Origin-Host"); h {
	case trackingHost:
	case "":
		fmt.Println("  warning: response lacks X-Origin-Host; cannot confirm the Host sent upstream")
	default:
		return fmt.Errorf("origin saw Host %q, want %q", h, trackingHost)
	}
	return nil
}
