package integration

import (
	"os/exec"
	"testing"
)

// TestFuzzShortPass runs each fuzz target of the linktrack package for
// a few seconds, 48 s of fuzzing in all, so that CI fuzzes every run.
// Their seed corpora, crashers found so far included, run in every
// `go test` already; longer runs are documented in the README.
func TestFuzzShortPass(t *testing.T) {
	for _, target := range []string{"FuzzCaddyfile", "FuzzTenantsFile", "FuzzDomains", "FuzzRequestTarget"} {
		cmd := exec.Command("go", "test", "./linktrack", "-run", "^$", "-fuzz", "^"+target+"$", "-fuzztime", "12s")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", target, err, out)
		}
	}
}
