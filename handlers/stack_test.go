package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
	"casearchiver/handlers"
	"casearchiver/jobs"
	"casearchiver/store"
)

// stack is the real pipeline behind the handlers: simulated tenant, tenant client, local store,
// archiver, local job queue and backfill. Every response is validated against openapi.yaml.
func newStack(t *testing.T) (*env, *cortexsim.Sim) {
	t.Helper()
	sim := cortexsim.New(cortexsim.Options{Product: "xsiam", Seed: 4})
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	logger := slog.New(slog.DiscardHandler)
	client, err := fetch.New(fetch.Config{BaseURL: ts.URL, KeyID: sim.KeyID(), Key: sim.Key(),
		RequestsPerSecond: 1000, ExtraDataPerMinute: 6000}, ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.NewLocal(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	arch := archive.New(logger, client, st, archive.Config{})
	q, err := jobs.NewLocal(jobs.LocalConfig{Store: st, Runner: arch, Logger: logger, Retryable: archive.Retryable})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	bf, err := jobs.NewBackfill(jobs.BackfillConfig{Searcher: client, Currency: arch, Queue: q, Store: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bf.Stop(ctx)
		_ = q.Stop(ctx)
	})
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := handlers.NewServer(logger, handlers.Config{Tokens: []handlers.Token{
		{Role: handlers.RoleAdmin, Value: adminToken}, {Role: handlers.RoleRead, Value: readToken}}},
		prometheus.NewRegistry(), q, arch, bf, arch, nil, st, spec)
	return &env{h: h}, sim
}

func TestArchiveRoutesOnTheRealPipeline(t *testing.T) {
	t.Parallel()
	e, sim := newStack(t)
	sim.SetRiskyUsers(2)
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 2, EntriesPerInvestigation: 3,
		Files: []cortexsim.FileSpec{{Name: "kept.txt", Size: 10}, {Name: "lost.txt", Size: 10, Missing: true}}})

	rec := e.do(t, http.MethodPost, "/v1/incidents/"+id+"/archive?wait=true&timeout=30s", bearer(adminToken), "")
	job := decodeBody[jobs.Job](t, rec)
	if rec.Code != http.StatusCreated || job.State != jobs.StateSucceeded || len(job.Result.Incomplete) != 1 {
		t.Fatalf("archive: %d %+v", rec.Code, job)
	}
	v := job.Result.Version
	for _, tc := range []struct {
		method, target string
		want           int
	}{
		{http.MethodGet, "/v1/jobs/" + job.ID, 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives", 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives?include_incomplete=true", 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/latest", 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/" + v, 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/" + v + "/objects/incident.json", 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/latest/objects/manifest.json", 200},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/latest/objects/../../jobs", 404},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/latest/objects/nope.json", 404},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/20200101T000000.000Z-00000000", 404},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/v1", 422},
		{http.MethodGet, "/v1/incidents/999999/archives/latest", 404},
		{http.MethodGet, "/v1/incidents/" + id + "/archives/latest/objects/" + strings.ReplaceAll(filePath(t, e, id), "@", "%40"), 200},
		{http.MethodPost, "/v1/incidents/" + id + "/archives/latest/verify", 200},
		{http.MethodPost, "/v1/risky-users/snapshot", 201},
	} {
		if rec := e.do(t, tc.method, tc.target, bearer(adminToken), ""); rec.Code != tc.want {
			t.Errorf("%s %s = %d, want %d: %s", tc.method, tc.target, rec.Code, tc.want, rec.Body)
		}
	}
	if rec := e.do(t, http.MethodPost, "/v1/risky-users/snapshot", bearer(readToken), ""); rec.Code != http.StatusForbidden {
		t.Errorf("snapshot with a read token: %d", rec.Code)
	}
	rep := decodeBody[archive.VerifyReport](t, e.do(t, http.MethodPost, "/v1/incidents/"+id+"/archives/"+v+"/verify", bearer(readToken), ""))
	if rep.Status != "ok" || rep.OK != rep.Checked {
		t.Errorf("verify: %+v", rep)
	}
}

func TestBackfillRoutes(t *testing.T) {
	t.Parallel()
	e, sim := newStack(t)
	for i := range 5 {
		sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_false_positive", Alerts: 1, EntriesPerInvestigation: 1})
		sim.AddIncident(cortexsim.IncidentSpec{Status: "under_investigation", Alerts: 1, EntriesPerInvestigation: 1, ContextKeys: i})
	}
	dry := e.do(t, http.MethodPost, "/v1/backfill", jsonHeader(bearer(adminToken)), `{"dry_run":true}`)
	st := decodeBody[jobs.BackfillStatus](t, dry)
	if dry.Code != http.StatusOK || st.WouldEnqueue != 5 || len(st.IncidentIDs) != 5 {
		t.Fatalf("dry run: %d %+v", dry.Code, st)
	}
	rec := e.do(t, http.MethodPost, "/v1/backfill", jsonHeader(bearer(adminToken)), `{"modified_within":"8760h"}`)
	st = decodeBody[jobs.BackfillStatus](t, rec)
	if rec.Code != http.StatusAccepted || rec.Header().Get("Location") != "/v1/backfill/"+st.ID {
		t.Fatalf("backfill: %d %+v", rec.Code, st)
	}
	deadline := time.Now().Add(30 * time.Second)
	for st.State == jobs.BackfillRunning && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		st = decodeBody[jobs.BackfillStatus](t, e.do(t, http.MethodGet, "/v1/backfill/"+st.ID, bearer(adminToken), ""))
	}
	if st.State != jobs.BackfillSucceeded || st.Enqueued != 5 {
		t.Errorf("backfill status %+v", st)
	}
	// The Cloud Scheduler form: the request stays open until the sweep is done.
	rec = e.do(t, http.MethodPost, "/v1/backfill?wait=true&timeout=30s", jsonHeader(bearer(adminToken)), `{"force":true}`)
	if st = decodeBody[jobs.BackfillStatus](t, rec); rec.Code != http.StatusOK || st.State != jobs.BackfillSucceeded || st.Found != 5 {
		t.Errorf("backfill with wait: %d %+v", rec.Code, st)
	}
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"modified_within":"yesterday"}`, 422},
		{`{"modified_within":"24h","modified_from":"2026-01-01T00:00:00Z"}`, 422},
		{`{"incident_ids":["x"]}`, 422},
		{`{"statuses":["a b"]}`, 422},
		{`{"dry_run":"yes"}`, 422},
		{`{`, 400},
	} {
		if rec := e.do(t, http.MethodPost, "/v1/backfill", jsonHeader(bearer(adminToken)), tc.body); rec.Code != tc.want {
			t.Errorf("backfill %s = %d, want %d: %s", tc.body, rec.Code, tc.want, rec.Body)
		}
	}
	if rec := e.do(t, http.MethodPost, "/v1/backfill", jsonHeader(bearer(readToken)), `{}`); rec.Code != http.StatusForbidden {
		t.Errorf("backfill with a read token: %d", rec.Code)
	}
	if rec := e.do(t, http.MethodGet, "/v1/backfill/20261204T000000Z-00000000", bearer(adminToken), ""); rec.Code != http.StatusNotFound {
		t.Errorf("unknown backfill: %d", rec.Code)
	}
}

// scriptedTasks answers the task route with a chosen verification and execution outcome.
type scriptedTasks struct {
	verify, execute error
}

func (s scriptedTasks) Verify(context.Context, *http.Request) error { return s.verify }
func (s scriptedTasks) Execute(context.Context, []byte) error       { return s.execute }

// TestTaskRouteRetrySemantics: 5xx asks Cloud Tasks to retry, a final failure is 200 (recorded, not
// retried), a bad body is 400, a bad token 401.
func TestTaskRouteRetrySemantics(t *testing.T) {
	t.Parallel()
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		tasks scriptedTasks
		want  int
	}{
		{"done", scriptedTasks{}, 200},
		{"retryable failure", scriptedTasks{execute: fmt.Errorf("archive 1: %w", jobs.ErrRetry)}, 503},
		{"final failure", scriptedTasks{execute: errors.New("incident not found")}, 200},
		{"bad body", scriptedTasks{execute: fmt.Errorf("decode: %w", jobs.ErrInvalid)}, 400},
		{"bad token", scriptedTasks{verify: jobs.ErrUnauthenticated}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := handlers.NewServer(slog.New(slog.DiscardHandler), handlers.Config{}, prometheus.NewRegistry(),
				&fakeJobs{}, nil, nil, nil, tc.tasks, fakePinger{}, spec)
			e := &env{h: h}
			rec := e.do(t, http.MethodPost, "/internal/tasks/archive", http.Header{"Content-Type": {"application/json"}},
				`{"job_id":"20261204T153000Z-00000001","request":{"incident_id":"1"}}`)
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
		})
	}
}

// filePath returns the path of the first archived file of the incident's latest archive.
func filePath(t *testing.T, e *env, id string) string {
	t.Helper()
	m := decodeBody[archive.Manifest](t, e.do(t, http.MethodGet, "/v1/incidents/"+id+"/archives/latest", bearer(adminToken), ""))
	for _, o := range m.Objects {
		if o.EntryID != "" {
			return o.Path
		}
	}
	t.Fatal("no file in the manifest")
	return ""
}
