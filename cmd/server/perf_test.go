package main

// Performance figures measured on the server process (issue 9, BENCHMARKS.md). They run only with
// -perf, never in CI:
//
//	go test -run TestPerfIntake -perf -v ./cmd/server/     # intake: cmd/loadgen against the binary
//	go test -run TestPerfRSS -perf -v ./cmd/server/        # peak RSS archiving one 1 GiB file
//
// The server is the real binary (serverBinary) on loopback with the local store and the local durable
// queue; the simulated tenant runs in the test process.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

var (
	perf         = flag.Bool("perf", false, "run the performance tests (TestPerf*)")
	perfRequests = flag.Int("perf.n", 30000, "TestPerfIntake: requests")
	perfConc     = flag.Int("perf.c", 32, "TestPerfIntake: concurrent requests")
)

func needPerf(t *testing.T) {
	t.Helper()
	if !*perf {
		t.Skip("performance test: run with -perf")
	}
}

// prodEnv is baseEnv with the production defaults for what the figures depend on: info logging
// and the default tenant limits and concurrency.
func prodEnv(sim *cortexsim.Sim, url, archiveURL string) map[string]string {
	env := baseEnv(sim, url, archiveURL)
	env["LOG_LEVEL"] = "info"
	delete(env, "CORTEX_RATE_LIMIT")
	delete(env, "CORTEX_EXTRA_DATA_PER_MINUTE")
	return env
}

// loadgenSummary mirrors cmd/loadgen's JSON summary.
type loadgenSummary struct {
	Requests, OK, Errors int
	ByStatus             map[string]int `json:"by_status"`
	Seconds, RPS         float64
	P50ms                float64 `json:"p50_ms"`
	P95ms                float64 `json:"p95_ms"`
	P99ms                float64 `json:"p99_ms"`
	MaxMs                float64 `json:"max_ms"`
	FirstErr             string  `json:"first_error"`
}

// TestPerfIntake measures authenticated POST /v1/incidents/{id}/archive against the server binary
// with the local durable queue on a local store on disk (target ≥ 2,000 requests/s with p99 ≤ 25 ms
// on 2 cores). Every request has a distinct incident id, so every one is a new job: one create-only
// request.json durable before the 202. The accepted jobs run in the background against the
// simulated tenant (default limits: 10 requests/s, 4 workers), as they would in production; the
// incidents are unknown to the tenant, so each job ends after one tenant call with its records.
func TestPerfIntake(t *testing.T) {
	needPerf(t)
	sim, url := tenant(t, cortexsim.Options{})
	dir := t.TempDir()
	p := startProc(t, prodEnv(sim, url, dir))
	lg := buildLoadgen(t)
	runLG := func(n int) loadgenSummary {
		out, err := exec.Command(lg, "-url", p.URL, "-token", adminTok, "-n", strconv.Itoa(n), "-c", strconv.Itoa(*perfConc),
			"-duration", "60s", "-json").Output()
		if err != nil {
			t.Fatalf("loadgen: %v\n%s", err, out)
		}
		var s loadgenSummary
		if err := json.Unmarshal(out, &s); err != nil {
			t.Fatalf("loadgen output %q: %v", out, err)
		}
		return s
	}
	runLG(500) // warm up connections and the runtime
	s := runLG(*perfRequests)
	ncpu := strings.TrimSpace(must(exec.Command("nproc").Output()))
	load := strings.TrimSpace(must(os.ReadFile("/proc/loadavg")))
	t.Logf("intake: %d requests in %.2fs = %.0f req/s, p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms, errors %d %v (concurrency %d, %s cores, loadavg %s)",
		s.Requests, s.Seconds, s.RPS, s.P50ms, s.P95ms, s.P99ms, s.MaxMs, s.Errors, s.ByStatus, *perfConc, ncpu, load)
	if s.Errors > 0 {
		t.Errorf("%d errors, first: %s", s.Errors, s.FirstErr)
	}
	if s.RPS < 2000 || s.P99ms > 25 {
		t.Errorf("target missed: %.0f req/s (want ≥ 2000), p99 %.2f ms (want ≤ 25)", s.RPS, s.P99ms)
	}
	// Every accepted job is durable: its request.json is on disk.
	n := 0
	_ = filepath.WalkDir(filepath.Join(dir, "objects", "jobs"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "request.json" {
			n++
		}
		return nil
	})
	if n < s.OK+500 {
		t.Errorf("%d request.json records on disk, want at least %d", n, s.OK+500)
	}
}

func must[T []byte](b T, err error) string {
	if err != nil {
		return "?"
	}
	return string(b)
}

// buildLoadgen builds cmd/loadgen into the test's temp dir.
func buildLoadgen(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "loadgen")
	if out, err := exec.Command("go", "build", "-o", bin, "../loadgen").CombinedOutput(); err != nil {
		t.Fatalf("go build loadgen: %v\n%s", err, out)
	}
	return bin
}

// procStatus reads one kB field (VmHWM, VmRSS) of /proc/<pid>/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestPerfRSS archives an incident with one 1 GiB file through the server binary (local store,
// production defaults) and reads the process's peak RSS (VmHWM) afterwards: target ≤ 64 MiB.
func TestPerfRSS(t *testing.T) {
	needPerf(t)
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc")
	}
	const size = 1 << 30
	sim, url := tenant(t, cortexsim.Options{Seed: 17})
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1, EntriesPerInvestigation: 10,
		Files: []cortexsim.FileSpec{{Name: "memory.dmp", Size: size}}})
	sim.Files(id)
	_ = sim.Truth(id) // hash the file once here, not while the server waits for its entries
	p := startProc(t, prodEnv(sim, url, t.TempDir()))
	pid := p.cmd.Process.Pid
	idle := procStatus(t, pid, "VmHWM")
	start := time.Now()
	var job jobs.Job
	code := api(t, http.MethodPost, p.URL+"/v1/incidents/"+id+"/archive?wait=true&timeout=300s", adminTok, `{"reason":"manual"}`, &job)
	if code != http.StatusCreated || job.State != jobs.StateSucceeded {
		t.Fatalf("archive: %d %+v\n%s", code, job, p.logs.String())
	}
	took := time.Since(start)
	if job.Result == nil || job.Result.Bytes < size {
		t.Fatalf("archived %+v", job.Result)
	}
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("server peak RSS (VmHWM) %.1f MiB archiving a 1 GiB file in %.1fs (%.0f MB/s); idle peak before %.1f MiB",
		float64(peak)/(1<<20), took.Seconds(), float64(size)/took.Seconds()/1e6, float64(idle)/(1<<20))
	if peak > 64<<20 {
		t.Errorf("peak RSS %.1f MiB, target ≤ 64 MiB", float64(peak)/(1<<20))
	}
}
