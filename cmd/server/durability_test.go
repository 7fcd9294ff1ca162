package main

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

// TestJobsSurviveSIGKILL accepts 50 jobs, kills the server with SIGKILL mid-way, starts it again on the
// same store, and checks that every accepted job ends complete and verified.
func TestJobsSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 9, Latency: 20 * time.Millisecond})
	var ids []string
	for range 50 {
		ids = append(ids, sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1, EntriesPerInvestigation: 3,
			Files: []cortexsim.FileSpec{{Name: "f.bin", Size: 64 << 10}}}))
	}
	env := baseEnv(sim, simURL, t.TempDir())
	env["JOB_WORKERS"] = "2"
	p := startProc(t, env)

	jobIDs := map[string]string{}
	for _, id := range ids {
		var j jobs.Job
		if code := api(t, http.MethodPost, p.URL+"/v1/incidents/"+id+"/archive", adminTok, "", &j); code != http.StatusAccepted {
			t.Fatalf("trigger %s: %d", id, code)
		}
		jobIDs[id] = j.ID
	}
	// Kill once some, but not all, jobs are done.
	deadline := time.Now().Add(60 * time.Second)
	done := 0
	for done < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("no progress; logs:\n%s", p.logs)
		}
		done = 0
		for _, jid := range jobIDs {
			var j jobs.Job
			api(t, http.MethodGet, p.URL+"/v1/jobs/"+jid, adminTok, "", &j)
			if j.State == jobs.StateSucceeded {
				done++
			}
		}
	}
	if done == len(ids) {
		t.Fatal("every job finished before the kill; the test proves nothing")
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done

	p2 := startProc(t, env)
	finished := 0
	for id, jid := range jobIDs {
		var j jobs.Job
		for {
			if code := api(t, http.MethodGet, p2.URL+"/v1/jobs/"+jid, adminTok, "", &j); code != http.StatusOK {
				t.Fatalf("job %s after restart: %d", jid, code)
			}
			if j.State.Finished() {
				break
			}
			if time.Now().After(deadline.Add(60 * time.Second)) {
				t.Fatalf("job %s still %s after restart", jid, j.State)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if j.State != jobs.StateSucceeded {
			t.Errorf("job %s for %s: %s %s", jid, id, j.State, j.Error)
			continue
		}
		var rep archive.VerifyReport
		if code := api(t, http.MethodPost, p2.URL+"/v1/incidents/"+id+"/archives/latest/verify", adminTok, "", &rep); code != http.StatusOK || rep.Status != "ok" {
			t.Errorf("verify %s: %d %+v", id, code, rep)
		}
		finished++
	}
	if finished != len(ids) {
		t.Errorf("%d of %d accepted jobs complete after the crash", finished, len(ids))
	}
}

// TestConcurrentTriggersCoalesce: XSIAM fires the close hook once per alert; 20 concurrent triggers
// for one incident cost one job and one archive.
func TestConcurrentTriggersCoalesce(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 2, Latency: 30 * time.Millisecond})
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 20, EntriesPerInvestigation: 2})
	url, _, _, stop := boot(t, baseEnv(sim, simURL, t.TempDir()))
	defer stop()
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range 20 {
		wg.Go(func() {
			var j jobs.Job
			api(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive", adminTok, `{"reason":"incident_closed"}`, &j)
			got[i] = j.ID
		})
	}
	wg.Wait()
	for _, g := range got {
		if g != got[0] || g == "" {
			t.Fatalf("job ids differ: %v", got)
		}
	}
	var j jobs.Job
	for j.State = jobs.StateQueued; !j.State.Finished(); time.Sleep(50 * time.Millisecond) {
		api(t, http.MethodGet, url+"/v1/jobs/"+got[0], adminTok, "", &j)
	}
	var list struct{ Versions []archive.Version }
	api(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives?include_incomplete=true", adminTok, "", &list)
	if j.State != jobs.StateSucceeded || len(list.Versions) != 1 {
		t.Errorf("job %s, %d versions; want one archive", j.State, len(list.Versions))
	}
}
