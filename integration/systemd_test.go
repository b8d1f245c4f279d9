package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unitFile is a systemd unit file: each section's keys, each with its
// values in order (a key may repeat, as ExecStartPre or Environment do).
type unitFile map[string]map[string][]string

// readUnitFile parses a unit file the way systemd reads its syntax:
// [Section] headers, Key=Value lines, # and ; comments, and lines
// continued by a trailing backslash.
func readUnitFile(path string) (unitFile, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	unit := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		for strings.HasSuffix(line, `\`) && sc.Scan() {
			n++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(sc.Text())
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if unit[section] == nil {
				unit[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("%s:%d: not a Key=Value line in a section: %q", path, n, line)
			}
			key = strings.TrimSpace(key)
			unit[section][key] = append(unit[section][key], strings.TrimSpace(value))
		}
	}
	return unit, sc.Err()
}

// value returns a key's last value, which is the one systemd uses for
// a single-valued setting.
func (u unitFile) value(section, key string) string {
	values := u[section][key]
	if len(values) == 0 {
		return ""
	}
	return values[len(values)-1]
}

// TestSystemdUnit checks examples/systemd/caddy-linktrack.service: the
// settings Caddy's own caddy.service relies on, then `systemd-analyze
// verify` on a copy that runs the Caddy this test run built: any failure
// or warning about the unit fails the test. Without systemd-analyze the
// check is skipped, except in CI, whose machines have it.
func TestSystemdUnit(t *testing.T) {
	path := filepath.Join("..", "examples", "systemd", "caddy-linktrack.service")
	unit, err := readUnitFile(path)
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []struct{ section, key, value string }{
		{"Service", "Type", "notify"},
		{"Service", "User", "caddy"},
		{"Service", "Group", "caddy"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := unit.value(want.section, want.key); got != want.value {
			t.Errorf("[%s] %s=%q, want %q", want.section, want.key, got, want.value)
		}
	}
	for _, want := range []struct{ section, key, word string }{
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Service", "AmbientCapabilities", "CAP_NET_BIND_SERVICE"},
	} {
		if got := unit.value(want.section, want.key); !slices.Contains(strings.Fields(got), want.word) {
			t.Errorf("[%s] %s=%q lacks %s", want.section, want.key, got, want.word)
		}
	}
	if unit.value("Service", "LimitNOFILE") == "" {
		t.Error("[Service] LimitNOFILE is not set")
	}
	// the GOGC that README "Benchmark" measured
	if env := strings.Fields(unit.value("Service", "Environment")); !slices.Contains(env, "GOGC=400") {
		t.Errorf("[Service] Environment=%q lacks GOGC=400", strings.Join(env, " "))
	}

	start := strings.Fields(unit.value("Service", "ExecStart"))
	if len(start) != 5 || filepath.Base(start[0]) != "caddy" || !filepath.IsAbs(start[0]) ||
		!slices.Equal(start[1:4], []string{"run", "--environ", "--config"}) || !filepath.IsAbs(start[4]) {
		t.Fatalf("ExecStart=%q, want /path/to/caddy run --environ --config /path/to/config", strings.Join(start, " "))
	}
	bin, config := start[0], start[4]
	reload := strings.Fields(unit.value("Service", "ExecReload"))
	if want := []string{bin, "reload", "--config", config, "--force"}; !slices.Equal(reload, want) {
		t.Errorf("ExecReload=%q, want %q", strings.Join(reload, " "), strings.Join(want, " "))
	}

	t.Run("verify", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			// the project's machines, and so CI's, have systemd: there
			// the check must run
			if os.Getenv("CI") != "" {
				t.Fatal("systemd-analyze is not on PATH: CI cannot verify the unit (apt-get install systemd)")
			}
			t.Skip("systemd-analyze is not on PATH: the unit is not verified by systemd")
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// the copy runs the Caddy built for this test run, so that
		// verify finds an executable; as the current user where the
		// caddy user does not exist
		built, err := filepath.Abs(caddyBin)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(raw), "\n")
		for i, line := range lines {
			key, value, _ := strings.Cut(line, "=")
			switch key {
			case "ExecStart", "ExecReload":
				lines[i] = key + "=" + strings.Replace(value, bin, built, 1)
			case "User", "Group":
				if _, err := user.Lookup(value); err == nil {
					continue
				}
				me, err := user.Current()
				if err != nil {
					t.Fatal(err)
				}
				name := me.Username
				if key == "Group" {
					g, err := user.LookupGroupId(me.Gid)
					if err != nil {
						t.Fatal(err)
					}
					name = g.Name
				}
				lines[i] = key + "=" + name
			}
		}
		name := filepath.Base(path)
		copyPath := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(copyPath, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}

		out, err := exec.Command(analyze, "verify", "--man=no", "--generators=no", copyPath).CombinedOutput()
		// a failure fails the test, whatever unit it names: verify also
		// loads the units ours names, such as network-online.target.
		// A warning about ours fails it too, although verify exits 0
		// after one, as after "Failed to parse ..., ignoring"
		if err != nil {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		} else if strings.Contains(string(out), name) {
			t.Errorf("systemd-analyze verify %s warned:\n%s", name, out)
		}
	})
}
