// Command buildspec builds Caddy with caddy-linktrack as xcaddy.json
// describes, or prints the equivalent xcaddy command.
//
//	go run ./cmd/buildspec build [-o caddy]   # go build ./cmd/caddy with the spec's flags, cgo off as in xcaddy
//	go run ./cmd/buildspec xcaddy [-o caddy]  # print the xcaddy command line
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"

	"github.com/caddy-linktrack/caddy-linktrack/internal/buildspec"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: buildspec build|xcaddy [-spec xcaddy.json] [-o output]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	specPath := fs.String("spec", "xcaddy.json", "build spec file")
	output := fs.String("o", "caddy", "output binary")
	_ = fs.Parse(os.Args[2:])

	spec, err := buildspec.Load(*specPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	switch os.Args[1] {
	case "build":
		cmd := exec.Command("go", spec.GoBuildArgs(*output)...)
		cmd.Env = buildspec.GoBuildEnv(os.Environ())
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n", err)
			os.Exit(1)
		}
	case "xcaddy":
		fmt.Println(spec.XcaddyCommand(*output))
	default:
		fmt.Fprintf(os.Stderr, "unknown command '%s'; want build or xcaddy\n", os.Args[1])
		os.Exit(2)
	}
}
