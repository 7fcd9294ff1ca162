package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// verifiedFlags lists, per gcloud command, the flags checked against the public gcloud reference
// (https://cloud.google.com/sdk/gcloud/reference/<command path>). deploy/README.md may use no
// other flag, and its "gcloud flags used here" table must list exactly these.
var verifiedFlags = map[string][]string{
	"gcloud projects describe":                           {"--format"},
	"gcloud config set":                                  {},
	"gcloud services enable":                             {},
	"gcloud storage buckets create":                      {"--location", "--uniform-bucket-level-access", "--public-access-prevention", "--soft-delete-duration", "--retention-period", "--enable-per-object-retention"},
	"gcloud storage buckets update":                      {"--retention-period", "--lock-retention-period"},
	"gcloud storage buckets describe":                    {},
	"gcloud storage buckets add-iam-policy-binding":      {"--member", "--role"},
	"gcloud storage ls":                                  {},
	"gcloud iam service-accounts create":                 {"--display-name"},
	"gcloud iam service-accounts add-iam-policy-binding": {"--member", "--role"},
	"gcloud secrets create":                              {"--replication-policy", "--data-file"},
	"gcloud secrets versions add":                        {"--data-file"},
	"gcloud secrets versions disable":                    {"--secret"},
	"gcloud secrets add-iam-policy-binding":              {"--member", "--role"},
	"gcloud artifacts repositories create":               {"--repository-format", "--location"},
	"gcloud builds submit":                               {"--tag", "--config", "--substitutions"},
	"gcloud tasks queues create":                         {"--location", "--max-dispatches-per-second", "--max-concurrent-dispatches", "--max-attempts", "--min-backoff", "--max-backoff", "--max-doublings"},
	"gcloud tasks queues update":                         {"--location", "--log-sampling-ratio"},
	"gcloud tasks queues add-iam-policy-binding":         {"--location", "--member", "--role"},
	"gcloud run services replace":                        {"--region", "--dry-run"},
	"gcloud run services update":                         {"--region", "--no-invoker-iam-check", "--update-labels"},
	"gcloud run services describe":                       {"--region", "--format"},
	"gcloud scheduler jobs create http":                  {"--location", "--schedule", "--time-zone", "--uri", "--http-method", "--headers", "--message-body", "--attempt-deadline", "--max-retry-attempts", "--min-backoff", "--oidc-service-account-email"},
	"gcloud scheduler jobs run":                          {"--location"},
	"gcloud logging metrics create":                      {"--description", "--log-filter"},
	"gcloud monitoring policies create":                  {"--policy-from-file"},
}

func readReadme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// gcloudCalls returns every gcloud invocation in the README's shell blocks and inline code, as
// (command path, flags), and the invocations of commands not in verifiedFlags.
func gcloudCalls(readme string) (calls map[string][]string, unknown []string) {
	var snippets []string
	for i, block := range strings.Split(readme, "```") {
		if i%2 == 1 { // inside a fence
			snippets = append(snippets, strings.ReplaceAll(block, "\\\n", " "))
		} else {
			for _, m := range regexp.MustCompile("`([^`\n]*gcloud [^`\n]*)`").FindAllStringSubmatch(block, -1) {
				snippets = append(snippets, m[1])
			}
		}
	}
	commands := slices.Collect(func(yield func(string) bool) {
		for c := range verifiedFlags {
			if !yield(c) {
				return
			}
		}
	})
	// Longest command paths first, so "gcloud secrets versions add" wins over "gcloud secrets".
	sort.Slice(commands, func(i, j int) bool { return len(commands[i]) > len(commands[j]) })

	calls = map[string][]string{}
	flag := regexp.MustCompile(`(?:^|\s)(--[a-z][a-z0-9-]*)`)
	for _, s := range snippets {
		// Quoted arguments (log filters, JSON bodies) may hold shell operators: blank them.
		s = regexp.MustCompile(`'[^'\n]*'|"[^"\n]*"`).ReplaceAllString(s, "Q")
		for _, line := range strings.Split(s, "\n") {
			for _, call := range strings.Split(line, "gcloud ")[1:] {
				call = "gcloud " + call
				// The invocation ends at a shell operator.
				if i := strings.IndexAny(call, "|;)&"); i >= 0 {
					call = call[:i]
				}
				cmd := ""
				for _, c := range commands {
					if call == c || strings.HasPrefix(call, c+" ") {
						cmd = c
						break
					}
				}
				if cmd == "" {
					unknown = append(unknown, call)
					continue
				}
				for _, m := range flag.FindAllStringSubmatch(call, -1) {
					calls[cmd] = append(calls[cmd], m[1])
				}
				if _, ok := calls[cmd]; !ok {
					calls[cmd] = nil
				}
			}
		}
	}
	return calls, unknown
}

func TestReadmeGcloudFlagsVerified(t *testing.T) {
	readme := readReadme(t)
	calls, unknown := gcloudCalls(readme)
	for _, u := range unknown {
		t.Errorf("README.md: gcloud command not in the verified list: %q", u)
	}
	if len(calls) < 15 {
		t.Fatalf("found only %d gcloud commands in README.md; the extraction is broken", len(calls))
	}
	for cmd, flags := range calls {
		for _, f := range flags {
			if !slices.Contains(verifiedFlags[cmd], f) {
				t.Errorf("README.md: %s %s is not a verified flag", cmd, f)
			}
		}
	}

	// The README's table states exactly what was verified.
	_, table, ok := strings.Cut(readme, "## gcloud flags used here")
	if !ok {
		t.Fatal(`README.md has no "gcloud flags used here" section`)
	}
	got := map[string][]string{}
	row := regexp.MustCompile("(?m)^\\| `(gcloud [a-z -]+)` \\| (.*) \\|$")
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		got[m[1]] = regexp.MustCompile("`(--[a-z0-9-]+)`").FindAllString(m[2], -1)
		for i := range got[m[1]] {
			got[m[1]][i] = strings.Trim(got[m[1]][i], "`")
		}
		slices.Sort(got[m[1]])
	}
	want := map[string][]string{}
	for c, fs := range verifiedFlags {
		want[c] = slices.Sorted(slices.Values(fs))
	}
	if diff := cmp.Diff(want, got, cmp.Transformer("nilEmpty", func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return s
	})); diff != "" {
		t.Errorf("README.md's verified-flags table differs from verifiedFlags (-want +got):\n%s", diff)
	}
}

// TestReadmeExtractorRejects proves the flag check can fail.
func TestReadmeExtractorRejects(t *testing.T) {
	calls, unknown := gcloudCalls("```sh\ngcloud run services replace x.yaml --region=r --no-traffic\n" +
		"gcloud storage buckets create gs://b \\\n  --location=eu --pap | tee log\n```\nand `gcloud run deploy svc`\n")
	if !slices.Contains(calls["gcloud run services replace"], "--no-traffic") {
		t.Errorf("unverified flag not extracted: %v", calls)
	}
	if !slices.Contains(calls["gcloud storage buckets create"], "--pap") {
		t.Errorf("flag after a line continuation not extracted: %v", calls)
	}
	if len(unknown) != 1 || !strings.HasPrefix(unknown[0], "gcloud run deploy") {
		t.Errorf("the unknown command gcloud run deploy was not reported: %q", unknown)
	}
}

func TestReadmeDeploysServiceYAML(t *testing.T) {
	readme := readReadme(t)
	svc := readService(t)
	// The render step substitutes every placeholder service.yaml uses.
	for _, p := range regexp.MustCompile(`__[A-Z_]+__`).FindAllString(svc, -1) {
		if !strings.Contains(readme, "s|"+p+"|") {
			t.Errorf("README.md's render step does not substitute %s", p)
		}
	}
	// The names service.yaml refers to are the ones the README creates.
	for _, name := range []string{"case-archiver-cortex-api-key", "case-archiver-tokens", "case-archiver-webhook-secrets",
		"iam service-accounts create case-archiver ", "iam service-accounts create case-archiver-tasks ",
		"tasks queues create case-archiver ", "gcloud run services replace"} {
		if !strings.Contains(readme, name) {
			t.Errorf("README.md does not mention %q", name)
		}
	}
	for _, name := range []string{"case-archiver-cortex-api-key", "case-archiver-tokens", "case-archiver-webhook-secrets",
		"queues/case-archiver", "case-archiver@", "case-archiver-tasks@"} {
		if !strings.Contains(svc, name) {
			t.Errorf("service.yaml does not use %q", name)
		}
	}
}

func TestReadmeLeastPrivilegeAndLimits(t *testing.T) {
	readme := readReadme(t)
	// Roles granted: only these, never delete rights or project-wide roles.
	allowed := []string{"roles/storage.objectCreator", "roles/storage.objectViewer", "roles/iam.serviceAccountUser",
		"roles/cloudtasks.enqueuer", "roles/secretmanager.secretAccessor"}
	for _, m := range regexp.MustCompile(`--role=(\S+)`).FindAllStringSubmatch(readme, -1) {
		if !slices.Contains(allowed, m[1]) {
			t.Errorf("README.md grants %s; allowed: %v", m[1], allowed)
		}
	}
	for _, role := range allowed {
		if !strings.Contains(readme, "--role="+role) {
			t.Errorf("README.md never grants %s", role)
		}
	}
	if strings.Contains(readme, "gcloud projects add-iam-policy-binding") {
		t.Error("README.md grants a project-wide role; grant on the bucket, queue, secret or service account")
	}
	// The queue dispatches no faster than the tenant's extra-data limit (10 per minute).
	m := regexp.MustCompile(`--max-dispatches-per-second=([0-9.]+)`).FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README.md: no --max-dispatches-per-second")
	}
	if rate, err := strconv.ParseFloat(m[1], 64); err != nil || rate*60 > 10 {
		t.Errorf("--max-dispatches-per-second=%s is more than 10 per minute", m[1])
	}
	for _, want := range []string{"--lock-retention-period", "irreversible", "--no-invoker-iam-check", "Standard Webhooks",
		"OIDC", `"modified_within"`, "/v1/backfill", "Authorization=Bearer $ADMIN_TOKEN", "queue/depth",
		"xsoar-content/Packs/CaseArchiver/README.md", "--enable-per-object-retention", "--soft-delete-duration",
		"cpu-throttling", "minScale"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md does not cover %q", want)
		}
	}
}

func TestReadmeGcloudCallsFound(t *testing.T) {
	calls, _ := gcloudCalls(readReadme(t))
	for cmd := range verifiedFlags {
		if _, ok := calls[cmd]; !ok {
			t.Errorf("verifiedFlags lists %s, which README.md does not use", cmd)
		}
	}
	for cmd, flags := range calls {
		t.Logf("%s %v", cmd, flags)
	}
}
