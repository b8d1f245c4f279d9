package linktrack

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   string
		want    string // JSON of the handler
		wantErr string
	}{
		{
			name:  "short form",
			input: `linktrack customerio eu`,
			want:  `{"provider":"customerio","region":"eu"}`,
		},
		{
			name:  "short form default region",
			input: `linktrack sendgrid`,
			want:  `{"provider":"sendgrid"}`,
		},
		{
			name: "block form with every option",
			input: `linktrack {
				provider sendgrid
				region eu
				max_body_size 20MiB
				http_redirect
				apple_app_site_association /srv/aasa.json
				assetlinks /srv/assetlinks.json
				dial_timeout 2s
				response_header_timeout 5s
				keepalive_idle_conns_per_host 64
			}`,
			want: `{"provider":"sendgrid","region":"eu","transport":{"keep_alive":{"max_idle_conns_per_host":64},"dial_timeout":2000000000,"response_header_timeout":5000000000},"max_body_size":20971520,"http_redirect":true,"app_links":{"apple_app_site_association":"/srv/aasa.json","assetlinks":"/srv/assetlinks.json"}}`,
		},
		{
			name: "upstream with private CA",
			input: `linktrack {
				upstream https://127.0.0.1:9443
				tls_server_name track.esp.example
				tls_trust_pool file /etc/ca.pem
			}`,
			want: `{"upstream":"https://127.0.0.1:9443","transport":{"tls":{"ca":{"pem_files":["/etc/ca.pem"],"provider":"file"},"server_name":"track.esp.example"}}}`,
		},
		{name: "registry mode", input: `linktrack`, want: `{}`},
		{name: "client idle timeout", input: "linktrack sendgrid {\n client_idle_timeout 30s\n}", want: `{"provider":"sendgrid","client_idle_timeout":30000000000}`},
		{name: "client idle timeout off", input: "linktrack sendgrid {\n client_idle_timeout off\n}", want: `{"provider":"sendgrid","client_idle_timeout":-1}`},
		{
			name: "liveness and scanners",
			input: `linktrack {
				liveness_path /_lb/live
				scanners {
					user_agents Mimecast "Proofpoint URL"
					ranges_file /etc/linktrack/scanners.txt
					ignore_head
				}
			}`,
			want: `{"liveness_path":"/_lb/live","scanners":{"user_agents":["Mimecast","Proofpoint URL"],"ranges_file":"/etc/linktrack/scanners.txt","ignore_head":true}}`,
		},
		{name: "relative liveness path", input: "linktrack sendgrid {\n liveness_path live\n}", wantErr: "liveness_path 'live' must begin with '/'"},
		{name: "unknown scanners option", input: "linktrack sendgrid {\n scanners {\n asn 1\n }\n}", wantErr: "unrecognized scanners subdirective 'asn'"},
		{name: "too many args", input: `linktrack ses eu-west-1 extra`, wantErr: "wrong argument count"},
		{name: "unknown provider", input: `linktrack postmark`, wantErr: "unknown provider 'postmark'; valid providers: customerio, iterable, mailgun, sendgrid, ses, sparkpost"},
		{name: "unknown region", input: `linktrack iterable ap`, wantErr: "unknown region 'ap' for provider 'iterable'; valid regions: eu, us"},
		{name: "bad ses region", input: `linktrack ses west`, wantErr: "not an AWS region name"},
		{name: "missing region", input: `linktrack customerio`, wantErr: "needs a region; valid regions: eu, us"},
		{name: "both provider and upstream", input: "linktrack customerio us {\n upstream https://x.example\n}", wantErr: "mutually exclusive"},
		{name: "provider twice", input: "linktrack customerio us {\n provider sendgrid\n}", wantErr: "provider already specified"},
		{name: "bad upstream", input: "linktrack {\n upstream ftp://x.example\n}", wantErr: "scheme must be https or http"},
		{name: "bad client idle timeout", input: "linktrack sendgrid {\n client_idle_timeout soon\n}", wantErr: "invalid client_idle_timeout 'soon'"},
		{name: "zero client idle timeout", input: "linktrack sendgrid {\n client_idle_timeout 0s\n}", wantErr: "must be positive, or off"},
		{name: "bad body size", input: "linktrack sendgrid {\n max_body_size lots\n}", wantErr: "invalid max_body_size 'lots'"},
		{name: "unknown subdirective names line", input: "linktrack sendgrid {\n dial_timeout 1s\n bogus 1\n}", wantErr: "unrecognized subdirective bogus, at Testfile:3"},
		{name: "bad transport value", input: "linktrack sendgrid {\n dial_timeout soon\n}", wantErr: "Testfile:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got, _ := json.Marshal(&h)
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
