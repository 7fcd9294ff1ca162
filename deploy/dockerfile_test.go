// Package deploy_test checks the deployment files: the Dockerfile and .dockerignore at the
// repository root, and deploy/cloudrun/service.yaml. No container engine runs in CI, so the
// Dockerfile is parsed with BuildKit's own parser and checked against the image rules; the binary
// it builds is checked by deploy/build-static.sh.
package deploy_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

const finalImage = "gcr.io/distroless/static-debian12:nonroot"

// instr is one Dockerfile instruction, as the BuildKit parser sees it.
type instr struct {
	cmd   string   // lower case: from, run, env, ...
	args  []string // the node chain: for RUN in shell form, one string; for ENV, key value key value ...
	flags []string // --platform=..., --from=...
	json  bool     // exec form
	line  int
}

type stage struct {
	from   instr
	image  string
	instrs []instr
}

// parseDockerfile splits a Dockerfile into its global instructions (before the first FROM) and
// its stages.
func parseDockerfile(src string) (global []instr, stages []stage, err error) {
	res, err := parser.Parse(strings.NewReader(src))
	if err != nil {
		return nil, nil, err
	}
	for _, n := range res.AST.Children {
		in := instr{cmd: strings.ToLower(n.Value), flags: n.Flags, json: n.Attributes["json"], line: n.StartLine}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		switch {
		case in.cmd == "from":
			st := stage{from: in}
			if len(in.args) > 0 {
				st.image = in.args[0]
			}
			stages = append(stages, st)
		case len(stages) == 0:
			global = append(global, in)
		default:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	return global, stages, nil
}

var (
	secretName = regexp.MustCompile(`(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)`)
	// The build command: static, trimmed paths, stripped, version stamped, one output path.
	goBuild   = regexp.MustCompile(`\bgo build\b`)
	ldflagsRE = regexp.MustCompile(`-ldflags="-s -w -X main\.version=\$\{?VERSION\}?"`)
)

// checkDockerfile returns every rule the Dockerfile breaks.
func checkDockerfile(src string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	global, stages, err := parseDockerfile(src)
	if err != nil {
		return []string{"parse: " + err.Error()}
	}
	if len(stages) < 2 {
		bad("multi-stage: want at least 2 FROM, got %d", len(stages))
	}

	// No secrets in ENV or ARG, anywhere (global ARGs included): they end up in the image history.
	all := append([]instr(nil), global...)
	for _, st := range stages {
		all = append(all, st.instrs...)
	}
	for _, in := range all {
		switch in.cmd {
		case "arg":
			for _, a := range in.args {
				if name, _, _ := strings.Cut(a, "="); secretName.MatchString(name) {
					bad("line %d: ARG %s looks like a secret", in.line, name)
				}
			}
		case "env":
			// The parser gives key, value, separator ("=" or "") for each pair.
			for i := 0; i < len(in.args); i += 3 {
				if secretName.MatchString(in.args[i]) {
					bad("line %d: ENV %s looks like a secret", in.line, in.args[i])
				}
			}
		}
	}

	// Exactly one `go build`, in a builder stage, with the required flags (deploy/build-static.sh
	// runs that very line).
	var builds []instr
	for i, st := range stages {
		for _, in := range st.instrs {
			if in.cmd != "run" || !goBuild.MatchString(strings.Join(in.args, " ")) {
				continue
			}
			if i == len(stages)-1 {
				bad("line %d: go build in the final stage", in.line)
			}
			builds = append(builds, in)
		}
	}
	if len(builds) != 1 {
		bad("want exactly one RUN ... go build, got %d", len(builds))
	}
	for _, in := range builds {
		cmd := strings.Join(in.args, " ")
		if in.json {
			bad("line %d: the go build RUN must be in shell form (build-static.sh runs it with sh -c)", in.line)
		}
		if !regexp.MustCompile(`(^|\s)CGO_ENABLED=0\s`).MatchString(cmd) {
			bad("line %d: go build without CGO_ENABLED=0", in.line)
		}
		if !strings.Contains(cmd, " -trimpath") {
			bad("line %d: go build without -trimpath", in.line)
		}
		if !ldflagsRE.MatchString(cmd) {
			bad(`line %d: go build without -ldflags="-s -w -X main.version=${VERSION}"`, in.line)
		}
		if !strings.Contains(cmd, "-o /out/server ") || !strings.HasSuffix(cmd, " ./cmd/server") {
			bad("line %d: go build must write -o /out/server from ./cmd/server", in.line)
		}
	}

	if len(stages) == 0 {
		return problems
	}
	final := stages[len(stages)-1]
	if final.image != finalImage {
		bad("final image is %q, want %q", final.image, finalImage)
	}
	user, entry := "", -1
	for i, in := range final.instrs {
		switch in.cmd {
		case "run", "shell":
			bad("line %d: %s in the final stage (distroless has no shell)", in.line, strings.ToUpper(in.cmd))
		case "user":
			user = strings.Join(in.args, "")
		case "entrypoint":
			entry = i
		case "copy":
			if !hasFlag(in, "--from=") {
				bad("line %d: the final stage copies only from the builder (COPY --from=...)", in.line)
			}
		}
	}
	if user != "nonroot" && user != "65532" && user != "nonroot:nonroot" && user != "65532:65532" {
		bad("final stage runs as %q, want USER nonroot", user)
	}
	if entry < 0 {
		bad("final stage has no ENTRYPOINT")
	} else if in := final.instrs[entry]; !in.json {
		bad("line %d: ENTRYPOINT must be in exec form", in.line)
	} else if strings.Join(in.args, " ") != "/server" {
		bad(`line %d: ENTRYPOINT is %q, want ["/server"]`, in.line, in.args)
	}
	return problems
}

func hasFlag(in instr, prefix string) bool {
	for _, f := range in.flags {
		if strings.HasPrefix(f, prefix) {
			return true
		}
	}
	return false
}

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDockerfileRules(t *testing.T) {
	src := readRepoFile(t, "Dockerfile")
	if p := checkDockerfile(src); len(p) > 0 {
		t.Fatalf("Dockerfile breaks the image rules:\n  %s", strings.Join(p, "\n  "))
	}
	if !strings.Contains(src, "go:embed") {
		t.Error("Dockerfile should say that openapi.yaml is embedded in the binary (//go:embed)")
	}
}

// TestDockerfileCheckerRejects proves each rule can fail: every mutation of the real Dockerfile
// must be reported, with the expected reason.
func TestDockerfileCheckerRejects(t *testing.T) {
	src := readRepoFile(t, "Dockerfile")
	buildLine := regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 .*go build .*$`).FindString(src)
	if buildLine == "" {
		t.Fatal("no go build RUN line in the Dockerfile")
	}
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				t.Fatalf("mutation: %q not in the Dockerfile", old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	// Mutations of the go build line itself (the header comment mentions the same flags).
	inBuild := func(old, new string) func(string) string {
		if !strings.Contains(buildLine, old) {
			t.Fatalf("mutation: %q not in the go build line", old)
		}
		return replace(buildLine, strings.Replace(buildLine, old, new, 1))
	}
	appendLines := func(lines string) func(string) string {
		return func(s string) string { return strings.TrimRight(s, "\n") + "\n" + lines + "\n" }
	}
	tests := []struct {
		name   string
		mutate func(string) string
		want   string
	}{
		{"single stage", func(string) string {
			return "FROM " + finalImage + "\nCOPY server /server\nUSER nonroot\nENTRYPOINT [\"/server\"]\n"
		}, "multi-stage"},
		{"cgo on", inBuild("CGO_ENABLED=0", "CGO_ENABLED=1"), "CGO_ENABLED=0"},
		{"no trimpath", inBuild(" -trimpath", ""), "-trimpath"},
		{"not stripped", inBuild(`-ldflags="-s -w `, `-ldflags="`), "-ldflags"},
		{"no version stamp", inBuild(` -X main.version=${VERSION}`, ""), "-ldflags"},
		{"other output", inBuild("-o /out/server", "-o /server"), "-o /out/server"},
		{"second go build", replace(buildLine, buildLine+"\n"+buildLine), "exactly one"},
		{"exec-form build", replace(buildLine, `RUN ["go", "build", "-o", "/out/server", "./cmd/server"]`), "shell form"},
		{"base image", replace("FROM "+finalImage, "FROM gcr.io/distroless/base-debian12:nonroot"), "final image"},
		{"root tag", replace("FROM "+finalImage, "FROM gcr.io/distroless/static-debian12:latest"), "final image"},
		{"debian final", replace("FROM "+finalImage, "FROM debian:bookworm-slim"), "final image"},
		{"runs as root", replace("USER nonroot", "USER root"), "USER nonroot"},
		{"no user", replace("USER nonroot\n", ""), "USER nonroot"},
		{"run in final", appendLines("RUN echo hi"), "RUN in the final stage"},
		{"shell in final", appendLines(`SHELL ["/busybox/sh", "-c"]`), "SHELL in the final stage"},
		{"go build in final", appendLines(buildLine), "go build in the final stage"},
		{"env secret", appendLines("ENV CORTEX_API_KEY=abc"), "ENV CORTEX_API_KEY"},
		{"env secret, second pair", appendLines("ENV LOG_FORMAT=json WEBHOOK_SECRETS=whsec_x"), "ENV WEBHOOK_SECRETS"},
		{"arg token", replace("ARG VERSION=dev", "ARG VERSION=dev\nARG GITHUB_TOKEN"), "ARG GITHUB_TOKEN"},
		{"global arg password", func(s string) string { return "ARG DB_PASSWORD=x\n" + s }, "ARG DB_PASSWORD"},
		{"shell-form entrypoint", replace(`ENTRYPOINT ["/server"]`, "ENTRYPOINT /server"), "exec form"},
		{"other entrypoint", replace(`ENTRYPOINT ["/server"]`, `ENTRYPOINT ["/bin/server"]`), "ENTRYPOINT is"},
		{"no entrypoint", replace(`ENTRYPOINT ["/server"]`, ""), "no ENTRYPOINT"},
		{"copy from context", appendLines("COPY deploy/ /deploy/"), "copies only from the builder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := checkDockerfile(tt.mutate(src))
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("checker did not report %q; got %q", tt.want, problems)
		})
	}
}

// dockerignored reports whether a context path is excluded by the .dockerignore patterns (last
// match wins, "!" re-includes, a pattern matching a directory excludes what is under it, "**"
// matches any number of directories).
func dockerignored(patterns []string, name string) bool {
	ignored := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		p = strings.TrimSuffix(p, "/")
		if matchIgnore(p, name) {
			ignored = !neg
		}
	}
	return ignored
}

func matchIgnore(pattern, name string) bool {
	// name or any of its parent directories
	for n := name; n != "." && n != ""; n = path.Dir(n) {
		if globMatch(strings.Split(pattern, "/"), strings.Split(n, "/")) {
			return true
		}
	}
	return false
}

func globMatch(pat, parts []string) bool {
	if len(pat) == 0 {
		return len(parts) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(parts); i++ {
			if globMatch(pat[1:], parts[i:]) {
				return true
			}
		}
		return false
	}
	if len(parts) == 0 {
		return false
	}
	ok, err := path.Match(pat[0], parts[0])
	return err == nil && ok && globMatch(pat[1:], parts[1:])
}

func dockerignorePatterns(src string) []string {
	var out []string
	for line := range strings.SplitSeq(src, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

func TestDockerignore(t *testing.T) {
	patterns := dockerignorePatterns(readRepoFile(t, ".dockerignore"))
	// What the build needs must stay in the context, whatever else is ignored. (The demo writes
	// into ./archive/{objects,meta,tmp}, but archive/ is also a Go package: never ignore it whole.)
	keep := []string{"go.mod", "go.sum", "openapi.yaml", "openapi.go", "cmd/server/main.go",
		"archive/archiver.go", "fetch/cortexsim/sim.go", "handlers/routes.go", "jobs/cloudtasks.go", "store/store.go"}
	for _, name := range keep {
		if dockerignored(patterns, name) {
			t.Errorf(".dockerignore excludes %s, which the build needs", name)
		}
	}
	drop := []string{".git/HEAD", "xsoar-content/Packs/CaseArchiver/README.md", "tools/go.mod",
		"archive/objects/incidents/1/x/manifest.json", "archive/tmp/x", "store/store_test.go",
		"handlers/testdata/x.json", "deploy/cloudrun/service.yaml"}
	for _, name := range drop {
		if !dockerignored(patterns, name) {
			t.Errorf(".dockerignore keeps %s in the build context", name)
		}
	}
	// The matcher itself can fail.
	if !dockerignored([]string{"archive/"}, "archive/archiver.go") || dockerignored([]string{"**/*_test.go", "!x_test.go"}, "x_test.go") {
		t.Error("dockerignore matcher is broken")
	}
}
