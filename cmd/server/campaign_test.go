package main

// Reliability campaigns against the server process (issue 9):
//
//	crash:    SIGKILL the server at random points while it archives, restart it on the same local
//	          store; every accepted job completes and verifies.
//	shutdown: SIGTERM while jobs run; the process exits within 8 s and no accepted job is lost.
//
//	CI (short):  go test -race ./cmd/server -run 'TestCrashCampaign|TestShutdownCampaign'   (3 kills)
//	long:        go test ./cmd/server -run TestCrashCampaign -campaign.long                  (20 kills)
//	             or CAMPAIGN_LONG=1; CAMPAIGN_SEED=<n> replays a seed.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

var campaignLong = flag.Bool("campaign.long", false, "run the long reliability campaigns (also CAMPAIGN_LONG=1)")

func longCampaign() bool { return *campaignLong || os.Getenv("CAMPAIGN_LONG") == "1" }

func campaignSeed(t *testing.T, def uint64) uint64 {
	t.Helper()
	if v := os.Getenv("CAMPAIGN_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CAMPAIGN_SEED=%q: %v", v, err)
		}
		return n
	}
	return def
}

// tryAPI is api without t.Fatal: the server may be dead. It decodes a 2xx JSON answer into out.
func tryAPI(method, url, token, body string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s: %w", method, url, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, nil
}

// acceptedJob is a job the server answered 202 for: it must complete whatever happens next.
type acceptedJob struct{ incident, job string }

// awaitAndVerify waits until every accepted job has finished and checks that each succeeded and that
// the incident's latest archive verifies.
func awaitAndVerify(t *testing.T, url string, accepted []acceptedJob, within time.Duration, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, a := range accepted {
		var j jobs.Job
		for {
			code, err := tryAPI(http.MethodGet, url+"/v1/jobs/"+a.job, adminTok, "", &j)
			if err != nil || code != http.StatusOK {
				t.Fatalf("job %s (incident %s): %d %v", a.job, a.incident, code, err)
			}
			if j.State.Finished() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s (incident %s) still %s after %s; logs:\n%s", a.job, a.incident, j.State, within, tail(logs.String(), 4000))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if j.State != jobs.StateSucceeded {
			t.Errorf("accepted job %s (incident %s) ended %s: %s", a.job, a.incident, j.State, j.Error)
			continue
		}
		var rep archive.VerifyReport
		if code, err := tryAPI(http.MethodPost, url+"/v1/incidents/"+a.incident+"/archives/latest/verify", adminTok, "", &rep); err != nil || code != http.StatusOK || rep.Status != "ok" {
			t.Errorf("verify incident %s: %d %v %+v", a.incident, code, err, rep)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// TestCrashCampaign kills the server process with SIGKILL at seeded random points while it accepts
// and archives, restarting it on the same local store each time. After every restart each job
// accepted so far must still be known and not failed; after the last, every accepted job must have
// succeeded and its archive must verify.
func TestCrashCampaign(t *testing.T) {
	t.Parallel()
	kills, perRound := 3, 6
	if longCampaign() {
		kills, perRound = 20, 8
	}
	seed := campaignSeed(t, 20_2026)
	t.Logf("crash campaign: %d SIGKILLs, %d jobs per round, seed %d (replay with CAMPAIGN_SEED=%d)", kills, perRound, seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, 0xdead)) //nolint:gosec // reproducible kill points

	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: int64(seed), Latency: 15 * time.Millisecond})
	sim.SetRiskyUsers(2)
	env := baseEnv(sim, simURL, t.TempDir())
	env["JOB_WORKERS"] = "2"
	env["LOG_LEVEL"] = "info"

	var accepted []acceptedJob
	runningAtKill, finishedAtKill, lostSubmits := 0, 0, 0
	for round := range kills {
		p := startProc(t, env)
		// Every job accepted before this restart is known to the new process and not failed.
		for _, a := range accepted {
			var j jobs.Job
			if code, err := tryAPI(http.MethodGet, p.URL+"/v1/jobs/"+a.job, adminTok, "", &j); err != nil || code != http.StatusOK || j.State == jobs.StateFailed {
				t.Fatalf("round %d: accepted job %s after restart: %d %v %+v", round, a.job, code, err, j)
			}
		}
		ids := make([]string, perRound)
		for i := range ids {
			var files []cortexsim.FileSpec
			for k := range rng.IntN(3) {
				files = append(files, cortexsim.FileSpec{Name: fmt.Sprintf("f%d.bin", k), Size: int64(rng.IntN(256 << 10))})
			}
			ids[i] = sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1 + rng.IntN(4),
				EntriesPerInvestigation: 1 + rng.IntN(150), ContextKeys: rng.IntN(3), Files: files})
		}
		// Submit in the background and kill at a random point: during the submits, during the
		// archives, or after some have finished.
		killAfter := time.Duration(rng.IntN(1500)) * time.Millisecond
		var mu sync.Mutex
		var wg sync.WaitGroup
		var roundJobs []acceptedJob
		wg.Go(func() {
			for _, id := range ids {
				var j jobs.Job
				code, err := tryAPI(http.MethodPost, p.URL+"/v1/incidents/"+id+"/archive", adminTok, "", &j)
				mu.Lock()
				switch {
				case err == nil && code == http.StatusAccepted:
					roundJobs = append(roundJobs, acceptedJob{id, j.ID})
				default:
					lostSubmits++ // not accepted (the server died first): nothing was promised
				}
				mu.Unlock()
				if err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		time.Sleep(killAfter)
		mu.Lock()
		snapshot := append([]acceptedJob(nil), roundJobs...)
		mu.Unlock()
		for _, a := range append(accepted, snapshot...) {
			var j jobs.Job
			if _, err := tryAPI(http.MethodGet, p.URL+"/v1/jobs/"+a.job, adminTok, "", &j); err == nil {
				switch {
				case j.State == jobs.StateRunning:
					runningAtKill++
				case j.State.Finished():
					finishedAtKill++
				}
			}
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		wg.Wait()
		accepted = append(accepted, roundJobs...)
		t.Logf("round %d: killed after %s, %d of %d submits accepted", round, killAfter, len(roundJobs), perRound)
	}

	p := startProc(t, env)
	awaitAndVerify(t, p.URL, accepted, 3*time.Minute, p.logs)
	t.Logf("crash campaign result: %d SIGKILLs, %d jobs accepted, all %d succeeded and verified after the last restart (%d job observations running and %d finished at the kills; %d submits cut off by a kill before acceptance)",
		kills, len(accepted), len(accepted), runningAtKill, finishedAtKill, lostSubmits)
	if t.Failed() {
		t.Logf("logs of the last process:\n%s", tail(p.logs.String(), 8000))
	}
	if runningAtKill == 0 {
		t.Error("no kill landed while a job was running: the campaign proves nothing")
	}
}

// TestShutdownCampaign sends SIGTERM while several accepted jobs are archiving (their downloads are
// slowed so they outlast the shutdown budget). The process must exit within 8 s; after a restart
// every accepted job completes and verifies.
func TestShutdownCampaign(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 41, Latency: 5 * time.Millisecond})
	env := baseEnv(sim, simURL, t.TempDir())
	env["JOB_WORKERS"] = "3"
	env["LOG_LEVEL"] = "info"
	var ids []string
	for i := range 6 {
		ids = append(ids, sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 2, EntriesPerInvestigation: 20,
			Files: []cortexsim.FileSpec{{Name: "big.bin", Size: int64(512<<10 + i)}}}))
	}
	// Every download trickles over 20 s: the running jobs cannot finish inside the shutdown budget.
	sim.SetFaults(cortexsim.EPDownload, cortexsim.Faults{SlowBody: 20 * time.Second})

	p := startProc(t, env)
	var accepted []acceptedJob
	for _, id := range ids {
		var j jobs.Job
		if code, err := tryAPI(http.MethodPost, p.URL+"/v1/incidents/"+id+"/archive", adminTok, `{"reason":"incident_closed"}`, &j); err != nil || code != http.StatusAccepted {
			t.Fatalf("trigger %s: %d %v", id, code, err)
		}
		accepted = append(accepted, acceptedJob{id, j.ID})
	}
	// Wait until the workers are busy with downloads.
	deadline := time.Now().Add(30 * time.Second)
	for {
		running := 0
		for _, a := range accepted {
			var j jobs.Job
			if _, err := tryAPI(http.MethodGet, p.URL+"/v1/jobs/"+a.job, adminTok, "", &j); err == nil && j.State == jobs.StateRunning {
				running++
			}
		}
		if running == 3 && sim.Stats().Requests[cortexsim.EPDownload] >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs never ran; logs:\n%s", p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case exitErr = <-p.done:
	case <-time.After(8 * time.Second):
		t.Fatalf("the server did not exit within 8 s of SIGTERM; logs:\n%s", tail(p.logs.String(), 6000))
	}
	took := time.Since(start)
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v; logs:\n%s", exitErr, tail(p.logs.String(), 4000))
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "job interrupted by shutdown") || !strings.Contains(logs, `"message":"stopped"`) {
		t.Errorf("no interrupted job or no stopped line in the logs:\n%s", tail(logs, 4000))
	}

	sim.SetFaults(cortexsim.EPDownload, cortexsim.Faults{})
	p2 := startProc(t, env)
	awaitAndVerify(t, p2.URL, accepted, 2*time.Minute, p2.logs)
	t.Logf("shutdown campaign result: SIGTERM with 3 jobs running and %d queued; exited in %s (budget 8 s); after restart %d of %d accepted jobs succeeded and verified",
		len(accepted)-3, took.Round(time.Millisecond), len(accepted), len(accepted))
}
