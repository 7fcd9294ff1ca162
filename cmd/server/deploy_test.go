package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v4"
)

// Variables that may appear in the deployment although the server's configuration does not read
// them, each with the reader that does.
var (
	// runtimeEnv may be set in deploy/cloudrun/service.yaml.
	runtimeEnv = map[string]string{"GOMEMLIMIT": "the Go runtime (soft memory limit)"}
	// libraryEnv may be mentioned in README.md, never set in the service.
	libraryEnv = map[string]string{"STORAGE_EMULATOR_HOST": "the GCS client library (tests point it at fake-gcs-server)"}
)

// serverEnv is every variable the server reads: envVars and, for each secret, <NAME>_FILE.
func serverEnv() map[string]bool {
	m := map[string]bool{}
	for _, v := range envVars {
		m[v] = true
	}
	for _, s := range secretVars {
		m[s+"_FILE"] = true
	}
	return m
}

// knService is the part of a Knative service the tests read.
type knService struct {
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Ports []struct {
						ContainerPort int `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom any    `yaml:"valueFrom"`
					} `yaml:"env"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

const serviceYAML = "../../deploy/cloudrun/service.yaml"

func readServiceYAML(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(serviceYAML)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serviceEnv returns the container's env entries in order, and its container port.
func serviceEnv(t *testing.T, src string) ([][2]string, int) {
	t.Helper()
	var svc knService
	if err := yaml.Unmarshal([]byte(src), &svc); err != nil {
		t.Fatalf("service.yaml: %v", err)
	}
	cs := svc.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("service.yaml: want one container, got %d", len(cs))
	}
	var env [][2]string
	for _, e := range cs[0].Env {
		if e.ValueFrom != nil {
			t.Errorf("service.yaml: %s uses valueFrom; secrets are mounted as files (*_FILE)", e.Name)
		}
		env = append(env, [2]string{e.Name, e.Value})
	}
	port := 0
	if len(cs[0].Ports) == 1 {
		port = cs[0].Ports[0].ContainerPort
	}
	return env, port
}

// readmeConfigTable returns the variables of README.md's configuration table, with their rows.
func readmeConfigTable(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\|.*$")
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		if _, dup := rows[m[1]]; dup {
			t.Errorf("README.md config table lists %s twice", m[1])
		}
		rows[m[1]] = m[0]
	}
	if len(rows) == 0 {
		t.Fatal("README.md: no rows found in the configuration table")
	}
	return rows
}

// TestDeployEnvVarsMatchServer checks that deploy/cloudrun/service.yaml and README.md's config
// table document exactly the variables the server reads.
func TestDeployEnvVarsMatchServer(t *testing.T) {
	known := serverEnv()
	secret := map[string]bool{}
	for _, s := range secretVars {
		secret[s] = true
	}

	t.Run("service.yaml", func(t *testing.T) {
		env, port := serviceEnv(t, readServiceYAML(t))
		set := map[string]bool{}
		for _, e := range env {
			name := e[0]
			if set[name] {
				t.Errorf("%s is set twice", name)
			}
			set[name] = true
			switch {
			case name == "PORT":
				t.Error("PORT is set under env: Cloud Run reserves it and sets it from containerPort")
			case secret[name]:
				t.Errorf("%s is a secret and is set in plain text; mount it and set %s_FILE", name, name)
			case libraryEnv[name] != "":
				t.Errorf("%s (read by %s) must not be set in production", name, libraryEnv[name])
			case !known[name] && runtimeEnv[name] == "":
				t.Errorf("%s is set but the server does not read it", name)
			}
		}
		for name := range known {
			switch {
			case name == "PORT":
				if port != 8080 {
					t.Errorf("PORT comes from containerPort; want containerPort 8080, got %d", port)
				}
			case secret[name]:
				if !set[name+"_FILE"] {
					t.Errorf("secret %s: %s_FILE is not set", name, name)
				}
			case !set[name]:
				t.Errorf("%s is read by the server but not set in service.yaml", name)
			}
		}
	})

	t.Run("README config table", func(t *testing.T) {
		rows := readmeConfigTable(t)
		for _, name := range envVars {
			row, ok := rows[name]
			if !ok {
				t.Errorf("%s is read by the server but missing from README.md's config table", name)
				continue
			}
			// <NAME>_FILE is documented once for all secrets, and on each secret's row.
			if secret[name] && !strings.Contains(row, "_FILE") {
				t.Errorf("README.md: the %s row does not say it may be given as %s_FILE", name, name)
			}
		}
		for name := range rows {
			if !known[name] && libraryEnv[name] == "" {
				t.Errorf("README.md documents %s, which the server does not read", name)
			}
		}
	})

	// envVars is "the exact list": compare it with what config.go actually reads.
	t.Run("config.go reads envVars", func(t *testing.T) {
		src, err := os.ReadFile("config.go")
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`\b(?:get|secret|intVar|getenv)\("([A-Z][A-Z0-9_]*)"`)
		read := map[string]bool{}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			read[m[1]] = true
		}
		if len(read) < 10 {
			t.Fatalf("found only %d reads in config.go; the pattern no longer matches the code", len(read))
		}
		got, want := sortedKeys(read), slices.Sorted(slices.Values(envVars))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("envVars (-) and the variables config.go reads (+) differ:\n%s", diff)
		}
	})
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// placeholders are the values deploy/README.md substitutes into service.yaml, with sample values.
var placeholders = map[string]string{
	"__PROJECT_ID__":     "acme-archive",
	"__PROJECT_NUMBER__": "123456789012",
	"__REGION__":         "europe-west1",
	"__IMAGE__":          "europe-west1-docker.pkg.dev/acme-archive/case-archiver/server:v1.0.0",
	"__BUCKET__":         "acme-case-archive",
	"__TENANT_API_URL__": "https://api-acme.xdr.eu.paloaltonetworks.com",
	"__TENANT_KEY_ID__":  "42",
}

// TestDeployServiceConfigLoads renders service.yaml as the README does and runs the server's own
// configuration check on its environment, with the secret files in place: the shipped service
// must start.
func TestDeployServiceConfigLoads(t *testing.T) {
	src := readServiceYAML(t)
	for _, p := range regexp.MustCompile(`__[A-Z_]+__`).FindAllString(src, -1) {
		if _, ok := placeholders[p]; !ok {
			t.Errorf("service.yaml uses placeholder %s, which this test (and deploy/README.md) does not know", p)
		}
	}
	for p, v := range placeholders {
		src = strings.ReplaceAll(src, p, v)
	}
	envList, _ := serviceEnv(t, src)
	dir := t.TempDir()
	secrets := map[string]string{
		"CORTEX_API_KEY_FILE":  strings.Repeat("k", 128) + "\n",
		"ARCHIVER_TOKENS_FILE": "admin:0123456789abcdef0123,trigger:fedcba9876543210fedc\n",
		"WEBHOOK_SECRETS_FILE": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n",
	}
	env := map[string]string{}
	for _, e := range envList {
		name, value := e[0], e[1]
		if content, ok := secrets[name]; ok {
			if !strings.HasPrefix(value, "/secrets/") {
				t.Errorf("%s=%s: want a path under a mounted secret volume", name, value)
			}
			value = filepath.Join(dir, strings.ToLower(name))
			if err := os.WriteFile(value, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		env[name] = value
	}
	cfg, err := loadConfig(envFunc(env), false, false)
	if err != nil {
		t.Fatalf("the rendered service.yaml does not configure a server: %v", err)
	}
	type summary struct {
		Queue, ArchiveURL, LogFormat, Project, Product string
		Target, Audience, TasksQueue                   string
		Tokens, WebhookSecrets, ExtraDataPerMinute     int
	}
	got := summary{
		Queue: cfg.Queue, ArchiveURL: cfg.ArchiveURL, LogFormat: cfg.LogFormat, Project: cfg.Project,
		Product: string(cfg.Cortex.Product), Target: cfg.CloudTasks.TargetURL, Audience: cfg.CloudTasks.Audience,
		TasksQueue: cfg.CloudTasks.Queue, Tokens: len(cfg.Tokens), WebhookSecrets: len(cfg.WebhookSecrets),
		ExtraDataPerMinute: cfg.Cortex.ExtraDataPerMinute,
	}
	const target = "https://case-archiver-123456789012.europe-west1.run.app/internal/tasks/archive"
	want := summary{
		Queue: "cloudtasks", ArchiveURL: "gs://acme-case-archive", LogFormat: "json", Project: "acme-archive",
		Product: "xsiam", Target: target, Audience: target,
		TasksQueue: "projects/acme-archive/locations/europe-west1/queues/case-archiver",
		Tokens:     2, WebhookSecrets: 2, ExtraDataPerMinute: 10,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("configuration from service.yaml (-want +got):\n%s", diff)
	}
	if cfg.MaxAttempts > 5 {
		t.Errorf("JOB_MAX_ATTEMPTS=%d: keep it at or below the queue's --max-attempts=5 (deploy/README.md)", cfg.MaxAttempts)
	}
}
