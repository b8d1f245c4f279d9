package linktrack

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// TestClientGuardScope: the guard wraps only what nothing else guards,
// and only what can stall: a body, not a bodyless click; a response
// net/http does not buffer whole, not a small one of known length.
func TestClientGuardScope(t *testing.T) {
	on := clientGuard{timeout: time.Minute, logger: zap.NewNop()}
	click := httptest.NewRequest("GET", "/c", nil)
	post := httptest.NewRequest("POST", "/u", strings.NewReader("List-Unsubscribe=One-Click"))
	guarded := post.WithContext(caddyhttp.ContextWithIdleTimeouts(post.Context(), new(caddyhttp.IdleTimeoutReader), new(caddyhttp.IdleTimeoutWriter)))
	for _, tc := range []struct {
		name               string
		guard              clientGuard
		r                  *http.Request
		wantBody, wantOuts bool
	}{
		{"bodyless click", on, click, false, true},
		{"request with a body", on, post, true, true},
		{"already guarded by the server", on, guarded, false, false},
		{"guard off", clientGuard{timeout: -1}, post, false, false},
	} {
		body, writes := tc.guard.guards(tc.r)
		if body != tc.wantBody || writes != tc.wantOuts {
			t.Errorf("%s: guards body %t, writes %t; want %t, %t", tc.name, body, writes, tc.wantBody, tc.wantOuts)
		}
	}

	w := httptest.NewRecorder()
	for _, tc := range []struct {
		length int64
		wrap   bool
	}{{0, false}, {bufferedResponseSize, false}, {bufferedResponseSize + 1, true}, {-1, true}} {
		got, done := on.guardWriter(w, click, &http.Response{ContentLength: tc.length})
		done()
		if _, wrapped := got.(*caddyhttp.IdleTimeoutWriter); wrapped != tc.wrap {
			t.Errorf("response of length %d: wrapped %t, want %t", tc.length, wrapped, tc.wrap)
		}
	}

	r := post.Clone(post.Context())
	done := on.guardBody(w, r)
	if _, ok := r.Body.(*caddyhttp.IdleTimeoutReader); !ok {
		t.Errorf("the body is a %T, want Caddy's IdleTimeoutReader", r.Body)
	}
	done()
}
