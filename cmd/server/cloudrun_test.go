package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

// The Cloud Run container contract, proven on the real binary run as a subprocess: it listens on
// $PORT, answers /healthz, logs JSON with Cloud Logging keys, and on SIGTERM finishes the requests
// in flight and exits 0 before Cloud Run's SIGKILL (10 s; the server's budget is shutdownBudget).

const cloudRunToken = "cloudrun-admin-0123456789"

// cloudRunEnv is a valid configuration against a simulated tenant, archiving into a temporary
// directory, listening on a free port chosen here (as Cloud Run sets PORT).
func cloudRunEnv(t *testing.T, sim *cortexsim.Sim, tenantURL string) (map[string]string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"PORT":                         strconv.Itoa(port),
		"CORTEX_API_URL":               tenantURL,
		"CORTEX_API_KEY_ID":            sim.KeyID(),
		"CORTEX_API_KEY":               sim.Key(),
		"ARCHIVE_URL":                  t.TempDir(),
		"ARCHIVER_TOKENS":              "admin:" + cloudRunToken,
		"LOG_FORMAT":                   "json",
		"CORTEX_RATE_LIMIT":            "1000",
		"CORTEX_EXTRA_DATA_PER_MINUTE": "1000",
		"GOOGLE_CLOUD_PROJECT":         "proj",
	}, port
}

func simTenant(t *testing.T, o cortexsim.Options) (*cortexsim.Sim, string) {
	t.Helper()
	sim := cortexsim.New(o)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

func TestCloudRunPortHealthAndTraceLogs(t *testing.T) {
	t.Parallel()
	sim, tenantURL := simTenant(t, cortexsim.Options{Product: "xsiam"})
	env, port := cloudRunEnv(t, sim, tenantURL)
	p := startProc(t, env)
	if want := ":" + strconv.Itoa(port); !strings.HasSuffix(p.URL, want) {
		t.Fatalf("server listens on %s, want PORT %d", p.URL, port)
	}

	// /healthz answers without credentials.
	resp, err := http.Get(p.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("/healthz: %d %s", resp.StatusCode, body)
	}

	// A request carrying Cloud Run's trace header is logged with the Cloud Logging trace key.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, p.URL+"/v1/whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cloudRunToken)
	req.Header.Set("X-Cloud-Trace-Context", traceID+"/123;o=1")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/whoami: %d", resp.StatusCode)
	}

	wantTrace := "projects/proj/traces/" + traceID
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := logLines(p.logs.String())
		var found map[string]any
		for _, l := range lines {
			if l["message"] == "request" && l["path"] == "/v1/whoami" {
				found = l
			}
		}
		if found != nil {
			if found["logging.googleapis.com/trace"] != wantTrace {
				t.Errorf("request log trace = %v, want %s; line: %v", found["logging.googleapis.com/trace"], wantTrace, found)
			}
			if found["severity"] != "INFO" {
				t.Errorf("request log severity = %v, want INFO", found["severity"])
			}
			if _, ok := found["level"]; ok {
				t.Error(`request log has "level"; Cloud Logging reads "severity"`)
			}
			for _, l := range lines {
				if s, _ := l["severity"].(string); s == "" || l["message"] == nil {
					t.Errorf("log line without severity or message: %v", l)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request log line for /v1/whoami; logs:\n%s", p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCloudRunSIGTERMFinishesSlowRequest sends an archive request that takes seconds (every tenant
// call is 1.5 s late), sends SIGTERM while it runs, and checks that the client still gets its
// complete answer and that the process then exits 0 within Cloud Run's grace period.
func TestCloudRunSIGTERMFinishesSlowRequest(t *testing.T) {
	t.Parallel()
	sim, tenantURL := simTenant(t, cortexsim.Options{Product: "xsiam", Latency: 1500 * time.Millisecond})
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1, EntriesPerInvestigation: 2})
	env, _ := cloudRunEnv(t, sim, tenantURL)
	p := startProc(t, env)

	type answer struct {
		code int
		body []byte
		err  error
		at   time.Time
	}
	answers := make(chan answer, 1)
	sent := time.Now()
	go func() {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost,
			p.URL+"/v1/incidents/"+id+"/archive?wait=true&timeout=7s", strings.NewReader(`{"reason":"sigterm_test"}`))
		if err != nil {
			answers <- answer{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+cloudRunToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			answers <- answer{err: err, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		answers <- answer{code: resp.StatusCode, body: body, err: err, at: time.Now()}
	}()

	time.Sleep(300 * time.Millisecond)
	select {
	case a := <-answers:
		t.Fatalf("the request finished before SIGTERM (%d %s, %v): it is not slow enough to prove anything", a.code, a.body, a.err)
	default:
	}
	signalled := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	var a answer
	select {
	case a = <-answers:
	case <-time.After(15 * time.Second):
		t.Fatalf("no answer 15 s after SIGTERM; logs:\n%s", p.logs)
	}
	if a.err != nil {
		t.Fatalf("the request in flight at SIGTERM failed: %v; logs:\n%s", a.err, p.logs)
	}
	if a.code != http.StatusCreated && a.code != http.StatusAccepted {
		t.Fatalf("answer %d %s, want 201 or 202; logs:\n%s", a.code, a.body, p.logs)
	}
	var job jobs.Job
	if err := json.Unmarshal(a.body, &job); err != nil || job.ID == "" || job.IncidentID != id {
		t.Fatalf("answer is not the job of incident %s: %v %s", id, err, a.body)
	}

	select {
	case <-p.done:
	case <-time.After(shutdownBudget + 2*time.Second):
		t.Fatalf("still running %v after SIGTERM; logs:\n%s", shutdownBudget+2*time.Second, p.logs)
	}
	exited := time.Now()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0; logs:\n%s", code, p.logs)
	}
	if d := exited.Sub(signalled); d > shutdownBudget {
		t.Errorf("exited %v after SIGTERM, want within %v (Cloud Run kills at 10 s)", d.Round(time.Millisecond), shutdownBudget)
	}
	if !a.at.After(signalled) {
		t.Error("the answer came before SIGTERM: the request was not in flight")
	}
	t.Logf("request sent %v before SIGTERM; answer %d (job %s, state %s) %v after SIGTERM; exit 0 %v after SIGTERM",
		signalled.Sub(sent).Round(time.Millisecond), a.code, job.ID, job.State,
		a.at.Sub(signalled).Round(time.Millisecond), exited.Sub(signalled).Round(time.Millisecond))
	if !strings.Contains(p.logs.String(), `"message":"stopped"`) {
		t.Errorf("no %q log line: the shutdown did not complete; logs:\n%s", "stopped", p.logs)
	}
}
