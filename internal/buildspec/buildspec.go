// Package buildspec reads xcaddy.json, the inputs of a reproducible
// custom Caddy build: the Caddy version, the plugin modules (ours first)
// and the Go build tags and flags. The same file drives `xcaddy build`
// and the plain `go build ./cmd/caddy` used by the tests, and a test
// fails when it drifts from go.mod or cmd/caddy/main.go.
package buildspec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Spec is the content of xcaddy.json.
type Spec struct {
	// The Caddy version to build, e.g. "v2.11.9". It must equal the
	// version go.mod requires.
	CaddyVersion string `json:"caddy_version"`

	// Plugin modules to build in, caddy-linktrack first.
	Plugins []Plugin `json:"plugins"`

	// Go build tags.
	BuildTags []string `json:"build_tags,omitempty"`

	// Extra `go build` flags, each one argument.
	BuildFlags []string `json:"build_flags,omitempty"`
}

// Plugin is one module built into Caddy.
type Plugin struct {
	// The module path.
	Module string `json:"module"`

	// The module version; empty for a local replacement.
	Version string `json:"version,omitempty"`

	// A local directory replacing the module, relative to xcaddy.json.
	Replace string `json:"replace,omitempty"`
}

// Load reads and checks a spec file.
func Load(path string) (*Spec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading build spec: %v", err)
	}
	var s Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("decoding build spec %s: %v", path, err)
	}
	if !strings.HasPrefix(s.CaddyVersion, "v2.") {
		return nil, fmt.Errorf("build spec %s: caddy_version '%s' is not a Caddy v2 version", path, s.CaddyVersion)
	}
	if len(s.Plugins) == 0 {
		return nil, errors.New("build spec " + path + ": plugins is empty")
	}
	for i, p := range s.Plugins {
		if p.Module == "" {
			return nil, fmt.Errorf("build spec %s: plugins[%d]: module is empty", path, i)
		}
		if (p.Version == "") == (p.Replace == "") {
			return nil, fmt.Errorf("build spec %s: plugins[%d] (%s): set exactly one of version and replace", path, i, p.Module)
		}
	}
	return &s, nil
}

// LocalVersion is the version a local replacement is built at: the
// zero pseudo-version, which Go itself gives a module required only
// through a replace directive. xcaddy turns `--with module@version=dir`
// into a replace of module@version by dir and `go get module@version`,
// which the replacement answers; with no version, `go get module` asks
// the module proxy for the module's latest version, which fails while
// the module is not published.
const LocalVersion = "v0.0.0-00010101000000-000000000000"

// XcaddyArgs returns the arguments of `xcaddy` for this build.
func (s *Spec) XcaddyArgs(output string) []string {
	args := []string{"build", s.CaddyVersion}
	for _, p := range s.Plugins {
		with := p.Module
		switch {
		case p.Replace != "":
			with += "@" + LocalVersion + "=" + p.Replace
		case p.Version != "":
			with += "@" + p.Version
		}
		args = append(args, "--with", with)
	}
	if output != "" {
		args = append(args, "--output", output)
	}
	return args
}

// XcaddyEnv returns the environment xcaddy reads its Go flags from.
func (s *Spec) XcaddyEnv() []string {
	flags := s.goFlags()
	if len(flags) == 0 {
		return nil
	}
	return []string{"XCADDY_GO_BUILD_FLAGS=" + strings.Join(quoteAll(flags), " ")}
}

// XcaddyCommand returns the shell command line that runs xcaddy for
// this build from the directory of xcaddy.json: the environment, then
// `xcaddy` and its arguments.
func (s *Spec) XcaddyCommand(output string) string {
	var parts []string
	for _, env := range s.XcaddyEnv() {
		name, value, _ := strings.Cut(env, "=")
		parts = append(parts, name+"="+shellQuote(value))
	}
	parts = append(parts, "xcaddy")
	for _, a := range s.XcaddyArgs(output) {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

// GoBuildArgs returns the arguments of `go` that build ./cmd/caddy, the
// repository's equivalent of the xcaddy build, into output.
func (s *Spec) GoBuildArgs(output string) []string {
	args := append([]string{"build"}, s.goFlags()...)
	return append(args, "-o", output, "./cmd/caddy")
}

// GoBuildEnv returns the environment of the `go build` of GoBuildArgs,
// given the current one: cgo off unless CGO_ENABLED=1, as xcaddy
// builds. Both builds then also share Go's build cache.
func GoBuildEnv(environ []string) []string {
	cgo := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CGO_ENABLED="); ok {
			cgo = v
		}
	}
	env := append([]string(nil), environ...)
	if cgo != "1" {
		env = append(env, "CGO_ENABLED=0")
	}
	return env
}

func (s *Spec) goFlags() []string {
	flags := append([]string(nil), s.BuildFlags...)
	if len(s.BuildTags) > 0 {
		flags = append(flags, "-tags="+strings.Join(s.BuildTags, ","))
	}
	return flags
}

// shellQuote returns s as one POSIX shell word: unchanged if it holds
// only characters the shell takes literally, else double-quoted, as the
// README writes XCADDY_GO_BUILD_FLAGS.
func shellQuote(s string) string {
	const literal = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-"
	if s != "" && strings.Trim(s, literal) == "" {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")
	return `"` + r.Replace(s) + `"`
}

// quoteAll single-quotes arguments that contain spaces, the way
// xcaddy's flag splitting expects.
func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t") {
			if k, v, ok := strings.Cut(a, "="); ok {
				a = k + "='" + v + "'"
			} else {
				a = "'" + a + "'"
			}
		}
		out[i] = a
	}
	return out
}
