package deploy_test

import (
	"go/version"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, USER, …
	args string
}

// parseDockerfile returns the instructions of each stage (a stage starts
// at FROM). Comments and blank lines are dropped.
func parseDockerfile(text string) [][]instruction {
	var stages [][]instruction
	var logical strings.Builder
	flush := func() {
		line := strings.TrimSpace(logical.String())
		logical.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if body, ok := strings.CutSuffix(trimmed, "\\"); ok {
			logical.WriteString(body + " ")
			continue
		}
		logical.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

var goDirectiveRE = regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)\s*$`)

// checkDockerfile checks dir/Dockerfile and dir/.dockerignore: a
// multi-stage build of static, path-free binaries (the three processes and
// the health probe the Compose file runs), with a Go no older than go.mod
// wants, onto a final stage that runs as a non-root user; and a build
// context without secrets.
func checkDockerfile(dir string) []string {
	var p problems
	text, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		return []string{"Dockerfile: " + err.Error()}
	}
	stages := parseDockerfile(string(text))
	if len(stages) < 2 {
		return []string{"Dockerfile: want a multi-stage build (build, then a minimal final stage)"}
	}

	var build string
	for _, stage := range stages[:len(stages)-1] {
		for _, in := range stage {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				build = in.args
			}
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/api", "./cmd/relay", "./cmd/consumer", "./deploy/healthcheck"} {
		if !strings.Contains(build, want) {
			p.addf("Dockerfile: the go build (%q) lacks %s", build, want)
		}
	}
	if gomod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
		if m := goDirectiveRE.FindSubmatch(gomod); m != nil {
			builder := stages[0][0].args
			tag := imageTag(strings.Fields(builder)[0])
			goVersion, _, _ := strings.Cut(tag, "-")
			// The golang image sets GOTOOLCHAIN=local: an older Go cannot
			// build the module.
			if !strings.HasPrefix(builder, "golang:") || version.Compare("go"+goVersion, "go"+string(m[1])) < 0 {
				p.addf("Dockerfile: builder %q is older than go.mod's go %s", builder, m[1])
			}
		}
	}

	final := stages[len(stages)-1]
	user := ""
	for _, in := range final {
		if in.cmd == "USER" {
			user = in.args
		}
	}
	name, _, _ := strings.Cut(user, ":")
	switch name {
	case "":
		p.addf("Dockerfile: USER: the final stage sets no user (it would run as the base image's)")
	case "root", "0":
		p.addf("Dockerfile: USER: the final stage runs as %q", user)
	}

	ignore, err := os.ReadFile(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		p.addf(".dockerignore: %v", err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, want := range []string{".env", ".git"} {
		if !containsLine(lines, want) {
			p.addf(".dockerignore: %s is not excluded from the build context", want)
		}
	}
	return p
}

func containsLine(lines []string, want string) bool {
	for _, line := range lines {
		if strings.TrimSpace(line) == want {
			return true
		}
	}
	return false
}
