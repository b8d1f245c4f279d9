package main

import (
	"bytes"
	"crypto/sha256"
	"runtime/pprof"
	"strings"
	"testing"
)

func TestCategorize(t *testing.T) {
	for _, tt := range []struct {
		stack string // frames, leaf first
		want  int
	}{
		{"internal/runtime/syscall.Syscall6 syscall.RawSyscall6 syscall.Syscall syscall.write internal/poll.(*FD).Write net.(*conn).Write crypto/tls.(*Conn).write net/http.(*response).finishRequest", catSyscall},
		{"runtime.futex runtime.futexwakeup runtime.notewakeup runtime.startm runtime.wakep", catSyscall},
		{"runtime.epollwait runtime.netpoll runtime.findRunnable runtime.schedule runtime.park_m runtime.mcall", catSyscall},
		// an allocation is GC and allocation, whoever asks for it
		{"runtime.memclrNoHeapPointers runtime.mallocgc runtime.newobject github.com/caddy-linktrack/caddy-linktrack/linktrack.(*Handler).ServeHTTP", catGC},
		{"runtime.scanobject runtime.gcDrain runtime.gcBgMarkWorker.func2 runtime.systemstack runtime.gcBgMarkWorker runtime.goexit", catGC},
		{"crypto/internal/fips140/aes/gcm.gcmAesEnc crypto/internal/fips140/aes/gcm.seal crypto/tls.(*halfConn).encrypt crypto/tls.(*Conn).writeRecordLocked", catCrypto},
		// whatever runs inside crypto/tls is TLS's, less the above
		{"runtime.memmove crypto/tls.(*Conn).readRecordOrCCS crypto/tls.(*Conn).Read bufio.(*Reader).Read net/http.(*conn).serve", catCrypto},
		{"sync/atomic.(*Bool).CompareAndSwap crypto/internal/sysrand.Read crypto/tls.(*Config).encryptTicket crypto/tls.(*Conn).serverHandshake net/http.(*conn).serve", catCrypto},
		{"runtime.gopark runtime.netpollblock internal/poll.runtime_pollWait internal/poll.(*FD).Read net.(*conn).Read crypto/tls.(*Conn).Read net/http.(*connReader).backgroundRead", catSched},
		{"runtime.pcvalue runtime.copystack runtime.newstack internal/poll.(*FD).Read net.(*conn).Read crypto/tls.(*Conn).Read net/http.(*connReader).backgroundRead", catStack},
		{"internal/runtime/syscall/linux.Syscall6 internal/runtime/syscall/linux.EpollWait runtime.netpoll runtime.findRunnable runtime.schedule", catSyscall},
		{"runtime.runqgrab runtime.runqsteal runtime.stealWork runtime.findRunnable runtime.schedule runtime.park_m runtime.mcall", catSched},
		{"runtime.casgstatus runtime.gopark internal/poll.runtime_pollWait net/http.(*conn).serve", catSched},
		{"runtime/pprof.(*profMap).lookup runtime/pprof.(*profileBuilder).addCPUData runtime/pprof.profileWriter", catProfiling},
		// otherwise the innermost owner
		{"strings.IndexByte github.com/caddy-linktrack/caddy-linktrack/linktrack.parseClick github.com/caddyserver/caddy/v2/modules/caddyhttp.(*Server).ServeHTTP net/http.serverHandler.ServeHTTP net/http.(*conn).serve", catHandler},
		{"main.main.func1 net/http.HandlerFunc.ServeHTTP net/http.serverHandler.ServeHTTP net/http.(*conn).serve", catHandler},
		{"net/textproto.CanonicalMIMEHeaderKey net/http.Header.Get github.com/caddyserver/caddy/v2/modules/caddyhttp.(*Server).ServeHTTP net/http.(*conn).serve", catServer},
		{"context.WithValue github.com/caddyserver/caddy/v2/modules/caddyhttp.(*Server).ServeHTTP net/http.(*conn).serve", catCaddy},
		{"bufio.(*Reader).ReadLine net/textproto.(*Reader).readLineSlice net/http.ReadResponse net/http.(*persistConn).readLoop", catClient},
		{"net/http.(*Transport).roundTrip net/http.(*Transport).RoundTrip main.main.func1", catClient},
		{"net/http.readRequest net/http.(*conn).readRequest net/http.(*conn).serve", catServer},
		{"runtime.memmove bytes.(*Buffer).Write", catOther},
		{"", catOther},
	} {
		if got := categorize(strings.Fields(tt.stack)); got != tt.want {
			t.Errorf("categorize(%s) = %s, want %s", tt.stack, catNames[got], catNames[tt.want])
		}
	}
}

// burnSHA256 does a fixed amount of hashing, so that the profile holds
// about the same CPU time however busy the machine is.
func burnSHA256() (sum byte) {
	buf := make([]byte, 1<<20)
	for i := range 300 {
		buf[0] = byte(i)
		h := sha256.Sum256(buf)
		sum ^= h[0]
	}
	return sum
}

// TestParseCPUProfile decodes a CPU profile of this test that
// runtime/pprof writes, of a loop hashing with SHA-256.
func TestParseCPUProfile(t *testing.T) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Skipf("no CPU profile: %v", err)
	}
	burnSHA256()
	pprof.StopCPUProfile()

	p, err := parseCPUProfile(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if p.duration <= 0 {
		t.Errorf("duration %v, want > 0", p.duration)
	}
	if p.total() < p.duration/100 || len(p.samples) == 0 {
		t.Fatalf("%d samples, %v of CPU in %v", len(p.samples), p.total(), p.duration)
	}
	cats := byCategory(p)
	var burn, sum int64
	for _, s := range p.samples {
		if strings.Join(s.frames, " ") == "" {
			t.Errorf("a sample of %d ns has no frames", s.nanos)
		}
		for _, f := range s.frames {
			if strings.HasSuffix(f, ".burnSHA256") {
				burn += s.nanos
				break
			}
		}
	}
	for _, n := range cats {
		sum += n
	}
	if sum != int64(p.total()) {
		t.Errorf("categories add up to %d ns, the profile to %d", sum, p.total())
	}
	if burn < int64(p.total())/2 {
		t.Errorf("burnSHA256 in %d of %d ns of samples, want most", burn, p.total())
	}
	if cats[catCrypto] < burn/2 {
		t.Errorf("TLS crypto %d ns of burnSHA256's %d, want most", cats[catCrypto], burn)
	}
	if _, err := parseCPUProfile([]byte("not a profile")); err == nil {
		t.Error("parseCPUProfile of junk: no error")
	}
}

// pb is a minimal protobuf encoder for hand-made profiles.
type pb []byte

func (b pb) varint(v uint64) pb {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func (b pb) uint(num int, v uint64) pb { return b.varint(uint64(num) << 3).varint(v) }

func (b pb) bytes(num int, data []byte) pb {
	return append(b.varint(uint64(num)<<3|2).varint(uint64(len(data))), data...)
}

// TestParseCPUProfileByHand decodes a profile that is not gzipped, with
// location ids not packed, values packed, a location holding an inlined
// call, and fields the decoder skips.
func TestParseCPUProfileByHand(t *testing.T) {
	var p pb
	for _, s := range []string{"", "samples", "count", "cpu", "nanoseconds", "leaf", "inlined", "root"} {
		p = p.bytes(6, []byte(s)) // string_table
	}
	p = p.bytes(1, pb{}.uint(1, 1).uint(2, 2)) // sample_type samples/count
	p = p.bytes(1, pb{}.uint(1, 3).uint(2, 4)) // sample_type cpu/nanoseconds
	for id, name := range []uint64{5, 6, 7} {
		p = p.bytes(5, pb{}.uint(1, uint64(id+1)).uint(2, name).uint(5, 42)) // function
	}
	// location 1: leaf; location 2: inlined in root, innermost first
	p = p.bytes(4, pb{}.uint(1, 1).uint(3, 0x1234).bytes(4, pb{}.uint(1, 1).uint(2, 10)))
	p = p.bytes(4, pb{}.uint(1, 2).bytes(4, pb{}.uint(1, 2)).bytes(4, pb{}.uint(1, 3)))
	values := pb{}.varint(3).varint(30000000)
	p = p.bytes(2, pb{}.uint(1, 1).uint(1, 2).bytes(2, values)) // sample
	p = p.uint(10, 5e9)                                         // duration_nanos
	p = append(p.varint(12<<3|1), 1, 2, 3, 4, 5, 6, 7, 8)       // a fixed64, skipped

	got, err := parseCPUProfile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.duration.Seconds() != 5 || len(got.samples) != 1 {
		t.Fatalf("duration %v, %d samples", got.duration, len(got.samples))
	}
	s := got.samples[0]
	if s.nanos != 30000000 || strings.Join(s.frames, " ") != "leaf inlined root" {
		t.Errorf("sample %d ns, frames %q, want 30000000 ns, leaf inlined root", s.nanos, s.frames)
	}
	if _, err := parseCPUProfile(p[:len(p)-3]); err == nil {
		t.Error("a truncated profile: no error")
	}
}
