package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"casearchiver/archive"
	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

const adminTok = "admin-0123456789abcdef"

// tenant serves a simulated tenant for the test and returns it with its URL.
func tenant(t *testing.T, o cortexsim.Options) (*cortexsim.Sim, string) {
	t.Helper()
	sim := cortexsim.New(o)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	return sim, ts.URL
}

// baseEnv is a valid configuration against sim storing into dir.
func baseEnv(sim *cortexsim.Sim, url, archiveURL string) map[string]string {
	return map[string]string{
		"PORT": "0", "CORTEX_API_URL": url, "CORTEX_API_KEY_ID": sim.KeyID(), "CORTEX_API_KEY": sim.Key(),
		"CORTEX_PRODUCT": sim.Product(), "ARCHIVE_URL": archiveURL, "ARCHIVER_TOKENS": "admin:" + adminTok,
		"LOG_FORMAT": "json", "LOG_LEVEL": "debug", "CORTEX_RATE_LIMIT": "500", "CORTEX_EXTRA_DATA_PER_MINUTE": "6000",
		"WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
}

// boot runs run in the background and returns its base URL, logs and a stop function that cancels
// it and returns run's error.
func boot(t *testing.T, env map[string]string, args ...string) (string, *syncBuffer, *syncBuffer, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs, out := &syncBuffer{}, &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, append([]string{"server"}, args...), envFunc(env), out, logs) }()
	url := waitForPort(t, logs, errc)
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(shutdownBudget + time.Second):
			t.Fatal("run did not return within the shutdown budget")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return url, logs, out, stop
}

func TestRunArchivesAndShutsDown(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 3})
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_true_positive", Alerts: 3, EntriesPerInvestigation: 120,
		Files: []cortexsim.FileSpec{{Name: "a.eml", Size: 30000}, {Name: "b.pcap", Size: 200000}}})
	url, logs, _, stop := boot(t, baseEnv(sim, simURL, t.TempDir()))

	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml", "/metrics"} {
		if code := api(t, http.MethodGet, url+path, "", "", nil); code != http.StatusOK {
			t.Errorf("%s = %d", path, code)
		}
	}
	var job jobs.Job
	if code := api(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive?wait=true&timeout=60s", adminTok, `{"reason":"manual"}`, &job); code != http.StatusCreated || job.State != jobs.StateSucceeded {
		t.Fatalf("trigger: %d %+v", code, job)
	}
	var again jobs.Job
	if code := api(t, http.MethodGet, url+"/v1/jobs/"+job.ID, adminTok, "", &again); code != http.StatusOK || again.Result.Version != job.Result.Version {
		t.Fatalf("job lookup: %d %+v", code, again)
	}
	var rep archive.VerifyReport
	if code := api(t, http.MethodPost, url+"/v1/incidents/"+id+"/archives/latest/verify", adminTok, "", &rep); code != http.StatusOK || rep.Status != "ok" {
		t.Fatalf("verify: %d %+v", code, rep)
	}
	// Read a file back through the API and compare it with the tenant's bytes.
	var m archive.Manifest
	api(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives/latest", adminTok, "", &m)
	for _, o := range m.Objects {
		if o.EntryID == "" {
			continue
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/v1/incidents/"+id+"/archives/latest/objects/"+o.Path, nil)
		req.Header.Set("Authorization", "Bearer "+adminTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, _ = io.Copy(h, resp.Body)
		resp.Body.Close()
		want := sha256.New()
		_, _ = io.Copy(want, sim.OpenFile(o.EntryID))
		if hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
			t.Errorf("%s read back differs from the tenant's file", o.Path)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if !strings.Contains(logs.String(), `"message":"stopped"`) {
		t.Error("no stopped log line")
	}
}

func TestConfigRefusesToRunOpen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no auth", map[string]string{"CORTEX_API_URL": "https://api-x.example.com", "CORTEX_API_KEY_ID": "1", "CORTEX_API_KEY": "k"},
			[]string{"set ARCHIVER_TOKENS or WEBHOOK_SECRETS"}},
		{"everything wrong at once", map[string]string{"PORT": "x", "CORTEX_PRODUCT": "xdr", "CORTEX_API_KEY_TYPE": "weird",
			"ARCHIVER_TOKENS": "boss:short", "WEBHOOK_SECRETS": "nope", "QUEUE": "sqs", "LOG_FORMAT": "xml", "ARCHIVE_URL": "s3://b"},
			[]string{"PORT", "CORTEX_PRODUCT", "CORTEX_API_KEY_TYPE", "ARCHIVER_TOKENS", "WEBHOOK_SECRETS", "QUEUE", "LOG_FORMAT", "ARCHIVE_URL", "CORTEX_API_URL", "CORTEX_API_KEY"}},
		{"cloud tasks incomplete", map[string]string{"QUEUE": "cloudtasks", "ARCHIVER_TOKENS": "admin:" + adminTok,
			"CORTEX_API_URL": "https://api-x.example.com", "CORTEX_API_KEY_ID": "1", "CORTEX_API_KEY": "k"},
			[]string{"CLOUD_TASKS_QUEUE", "CLOUD_TASKS_TARGET_URL", "CLOUD_TASKS_SERVICE_ACCOUNT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, logs syncBuffer
			err := run(t.Context(), []string{"server"}, envFunc(tc.env), &out, &logs)
			if err == nil {
				t.Fatal("run started with an invalid configuration")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), adminTok) {
				t.Error("error echoes a secret")
			}
		})
	}
}

func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsoar8"})
	dir := t.TempDir()
	keyFile, tokFile := filepath.Join(dir, "key"), filepath.Join(dir, "tokens")
	if err := os.WriteFile(keyFile, []byte(sim.Key()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokFile, []byte("read:"+adminTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(sim, simURL, t.TempDir())
	delete(env, "CORTEX_API_KEY")
	delete(env, "ARCHIVER_TOKENS")
	env["CORTEX_API_KEY_FILE"], env["ARCHIVER_TOKENS_FILE"] = keyFile, tokFile
	url, _, _, stop := boot(t, env)
	if code := api(t, http.MethodGet, url+"/v1/whoami", adminTok, "", nil); code != http.StatusOK {
		t.Errorf("whoami with a token from a file: %d", code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestDemo runs the README's first command in-process: the demo archives its sample cases.
func TestDemo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, _, out, stop := boot(t, map[string]string{"PORT": "0", "ARCHIVE_URL": dir, "LOG_FORMAT": "json"}, "-demo")
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "Demo archives written") {
		if time.Now().After(deadline) {
			t.Fatalf("demo did not finish; output:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	o := out.String()
	for _, want := range []string{"Bearer token (admin):", "curl -s", "verified: ok", "incomplete (file_missing)"} {
		if !strings.Contains(o, want) {
			t.Errorf("demo output lacks %q:\n%s", want, o)
		}
	}
	if n := strings.Count(o, "archived "); n != 3 {
		t.Errorf("%d cases archived, want 3:\n%s", n, o)
	}
	manifests, _ := filepath.Glob(filepath.Join(dir, "objects", "incidents", "*", "*", "manifest.json"))
	if len(manifests) != 3 {
		t.Errorf("%d manifests on disk", len(manifests))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestEndToEndThroughGCSEmulator: simulated tenant → server over HTTP → fake-gcs-server on a real port
// through the real GCS client (STORAGE_EMULATOR_HOST), signed by a Standard Webhooks secret.
func TestEndToEndThroughGCSEmulator(t *testing.T) {
	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer gcs.Stop()
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "cases"})
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(gcs.URL(), "http://"))

	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 11})
	sim.SetRiskyUsers(2)
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_known_issue", Alerts: 4, EntriesPerInvestigation: 210,
		ContextKeys: 3, Files: []cortexsim.FileSpec{{Name: "x.bin", Size: 3 << 20}, {Name: "y.txt", Size: 10}}})
	url, _, _, stop := boot(t, baseEnv(sim, simURL, "gs://cases/tenant-a"))
	defer stop()

	var job jobs.Job
	if code := api(t, http.MethodPost, url+"/v1/incidents/INCIDENT-"+id+"/archive?wait=true&timeout=60s", adminTok, "", &job); code != http.StatusCreated || job.State != jobs.StateSucceeded {
		t.Fatalf("trigger: %d %+v", code, job)
	}
	truth := sim.Truth(id)
	var m archive.Manifest
	api(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives/"+job.Result.Version, adminTok, "", &m)
	if m.Source.AlertsArchived != truth.AlertsTotal || m.Source.FilesStored != 2 || m.Source.RiskyUsersCount != 2 || !m.Complete {
		t.Errorf("manifest source %+v", m.Source)
	}
	objs, err := gcs.ListObjectsWithOptionsPaginated("cases", fakestorage.ListOptions{Prefix: "tenant-a/incidents/" + id + "/" + job.Result.Version + "/"})
	if err != nil || len(objs.Objects) != len(m.Objects)+1 {
		t.Errorf("bucket has %d objects (%v), manifest lists %d + itself", len(objs.Objects), err, len(m.Objects))
	}
	var rep archive.VerifyReport
	if code := api(t, http.MethodPost, url+"/v1/incidents/"+id+"/archives/latest/verify", adminTok, "", &rep); code != http.StatusOK || rep.Status != "ok" {
		t.Errorf("verify: %d %+v", code, rep)
	}
}

// TestCrossLanguage has the XSOAR integration's own Python code trigger an archive on the real server
// and read the job back, proving the signature scheme and the API contract end to end.
func TestCrossLanguage(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 5})
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 2, EntriesPerInvestigation: 4,
		Files: []cortexsim.FileSpec{{Name: "n.txt", Size: 99}}})
	env := baseEnv(sim, simURL, t.TempDir())
	url, _, _, stop := boot(t, env)
	defer stop()
	cmd := exec.CommandContext(t.Context(), py, "../../xsoar-content/test_support/crosslang.py", "INCIDENT-"+id, "--verify")
	cmd.Env = append(os.Environ(), "ARCHIVER_URL="+url, "ARCHIVER_WEBHOOK_SECRET="+env["WEBHOOK_SECRETS"], "ARCHIVER_TIMEOUT=60")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("crosslang.py: %v\n%s\n%s", err, out, stderr)
	}
	if !strings.Contains(string(out), `"state": "succeeded"`) && !strings.Contains(string(out), `"state":"succeeded"`) {
		t.Errorf("job output: %s", out)
	}
}
