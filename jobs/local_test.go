package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/archive"
	"casearchiver/store"
)

func TestLocalSubmitRunsAndRecords(t *testing.T) {
	t.Parallel()
	rs := newMemStore()
	q := newTestLocal(t, rs, okRunner(), nil)
	req := archive.Request{IncidentID: "42", Reason: archive.ReasonManual, RequestedBy: "alice"}
	j, created, err := q.Submit(t.Context(), req)
	if err != nil || !created {
		t.Fatalf("Submit = %v, %v; want created", created, err)
	}
	if !ValidID(j.ID) || j.State != StateQueued && j.State != StateRunning {
		t.Fatalf("Submit job = %+v", j)
	}
	if _, err := rs.Open(t.Context(), requestKey(j.ID)); err != nil {
		t.Fatalf("request.json not written before Submit returned: %v", err)
	}
	done, err := q.Wait(waitCtx(t, 5*time.Second), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Job{
		ID: j.ID, IncidentID: "42", State: StateSucceeded, Attempts: 1, Request: req,
		Progress: Progress{Objects: 1, Bytes: 10},
		Result:   &archive.Result{Version: "v1", ManifestPath: "incidents/42/v1/manifest.json", Objects: 1, Bytes: 10},
	}
	ignoreTimes := cmpopts.IgnoreFields(Job{}, "CreatedAt", "StartedAt", "FinishedAt")
	if diff := cmp.Diff(want, done, ignoreTimes); diff != "" {
		t.Errorf("Wait (-want +got):\n%s", diff)
	}
	if done.CreatedAt.IsZero() || done.StartedAt.Before(done.CreatedAt) || done.FinishedAt.Before(done.StartedAt) {
		t.Errorf("times out of order: %+v", done)
	}
	rec, ok := readResult(t, rs, j.ID)
	if !ok {
		t.Fatal("no result.json")
	}
	if diff := cmp.Diff(done, rec); diff != "" {
		t.Errorf("result.json differs from Wait (-wait +record):\n%s", diff)
	}
	if diff := cmp.Diff([]string{attemptKey(j.ID, 1), requestKey(j.ID), resultKey(j.ID)}, rs.keys(jobsPrefix)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	// Get agrees, from memory and from the store alone.
	got, err := q.Get(t.Context(), j.ID)
	if err != nil || !cmp.Equal(done, got) {
		t.Errorf("Get = %+v, %v; want %+v", got, err, done)
	}
	loaded, err := loadJob(t.Context(), rs, j.ID)
	if err != nil || !cmp.Equal(done, loaded) {
		t.Errorf("loadJob = %+v, %v; want %+v", loaded, err, done)
	}
}

func TestLocalErrors(t *testing.T) {
	t.Parallel()
	rs := newMemStore()
	q := newTestLocal(t, rs, okRunner(), nil)
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"empty incident", func() error { _, _, err := q.Submit(t.Context(), archive.Request{Reason: "manual"}); return err }, ErrInvalid},
		{"unknown job", func() error { _, err := q.Get(t.Context(), "20260101T000000Z-00000000"); return err }, ErrNotFound},
		{"malformed id", func() error { _, err := q.Get(t.Context(), "../../etc/passwd"); return err }, ErrNotFound},
		{"wait unknown", func() error { _, err := q.Wait(t.Context(), "20260101T000000Z-00000000"); return err }, ErrNotFound},
	}
	for _, tt := range tests {
		if err := tt.do(); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := q.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "1"}); !errors.Is(err, ErrStopped) {
		t.Errorf("Submit after Stop: err = %v, want ErrStopped", err)
	}
}

func TestLocalSubmitStoreFailure(t *testing.T) {
	t.Parallel()
	rs := newMemStore()
	rs.failCreate = func(key string) error { return fmt.Errorf("store: create %s: %w", key, store.ErrTransient) }
	q := newTestLocal(t, rs, okRunner(), nil)
	_, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "7"})
	if !errors.Is(err, store.ErrTransient) {
		t.Fatalf("Submit err = %v, want ErrTransient", err)
	}
	// The failed accept leaves nothing behind: the next submit of the incident is a new job.
	rs.mu.Lock()
	rs.failCreate = nil
	rs.mu.Unlock()
	j, created, err := q.Submit(t.Context(), archive.Request{IncidentID: "7"})
	if err != nil || !created {
		t.Fatalf("Submit after recovery = %v, %v", created, err)
	}
	if j, err = q.Wait(waitCtx(t, 5*time.Second), j.ID); err != nil || j.State != StateSucceeded {
		t.Fatalf("Wait = %+v, %v", j, err)
	}
}

func TestLocalCoalescesConcurrentSubmits(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	r := newRunner(func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return archive.Result{}, ctx.Err()
		}
		return archive.Result{Version: "v1"}, nil
	})
	rs := newMemStore()
	q := newTestLocal(t, rs, r, nil)

	const n = 20
	var wg sync.WaitGroup
	jobs := make([]Job, n)
	created := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			jobs[i], created[i], errs[i] = q.Submit(t.Context(), archive.Request{
				IncidentID: "100", Reason: archive.ReasonIncidentClosed, AlertID: fmt.Sprint("alert-", i),
			})
		})
	}
	wg.Wait()
	nCreated := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Submit %d: %v", i, errs[i])
		}
		if created[i] {
			nCreated++
		}
		if jobs[i].ID != jobs[0].ID {
			t.Errorf("Submit %d returned job %s, want %s", i, jobs[i].ID, jobs[0].ID)
		}
	}
	if nCreated != 1 {
		t.Errorf("%d submits created a job, want 1", nCreated)
	}
	// A different incident is not coalesced.
	other, created2, err := q.Submit(t.Context(), archive.Request{IncidentID: "101"})
	if err != nil || !created2 || other.ID == jobs[0].ID {
		t.Errorf("Submit other incident = %+v, %v, %v", other, created2, err)
	}
	close(release)
	for _, id := range []string{jobs[0].ID, other.ID} {
		if j, err := q.Wait(waitCtx(t, 5*time.Second), id); err != nil || j.State != StateSucceeded {
			t.Fatalf("Wait %s = %+v, %v", id, j, err)
		}
	}
	if diff := cmp.Diff(map[string]int{"100": 1, "101": 1}, r.callCount()); diff != "" {
		t.Errorf("runner calls (-want +got):\n%s", diff)
	}
	if got := len(rs.keys(jobsPrefix)); got != 6 {
		t.Errorf("%d records, want 6 (2 jobs × request, attempt, result): %v", got, rs.keys(jobsPrefix))
	}
	// Once finished, the incident takes a new job.
	again, created3, err := q.Submit(t.Context(), archive.Request{IncidentID: "100"})
	if err != nil || !created3 || again.ID == jobs[0].ID {
		t.Errorf("Submit after finish = %+v, %v, %v; want a new job", again, created3, err)
	}
}

// errTransient is what a retryable archive failure looks like to the queue in these tests.
var errTransient = errors.New("tenant: 503 service unavailable")

func TestLocalRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		failures     int   // attempts that fail before success
		err          error // what they fail with
		panics       bool
		wantState    State
		wantAttempts int
		wantRetries  float64
		wantError    string
	}{
		{name: "succeeds first time", wantState: StateSucceeded, wantAttempts: 1},
		{name: "retryable then succeeds", failures: 2, err: errTransient, wantState: StateSucceeded, wantAttempts: 3, wantRetries: 2},
		{
			name: "retryable until MaxAttempts", failures: 100, err: errTransient,
			wantState: StateFailed, wantAttempts: 4, wantRetries: 3, wantError: "tenant: 503 service unavailable",
		},
		{
			name: "not retryable", failures: 100, err: errors.New("fetch: incident 9: not found"),
			wantState: StateFailed, wantAttempts: 1, wantError: "fetch: incident 9: not found",
		},
		{
			name: "error text made safe", failures: 100,
			err:       errors.New(`fetch: GET https://api-x.xdr.us.paloaltonetworks.com/public_api/v1/incidents?key=abc123: authorization: Bearer-xyz refused`),
			wantState: StateFailed, wantAttempts: 1,
			wantError: "fetch: GET https://api-x.xdr.us.paloaltonetworks.com/public_api/v1/incidents authorization: [redacted] refused",
		},
		{name: "panic", failures: 100, panics: true, wantState: StateFailed, wantAttempts: 1, wantError: "archive panicked: internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			calls := 0
			r := newRunner(func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
				mu.Lock()
				calls++
				n := calls
				mu.Unlock()
				if n <= tt.failures {
					if tt.panics {
						panic("boom")
					}
					return archive.Result{}, fmt.Errorf("archive %s: %w", req.IncidentID, tt.err)
				}
				return archive.Result{Version: "v1"}, nil
			})
			reg := prometheus.NewRegistry()
			rs := newMemStore()
			q := newTestLocal(t, rs, r, func(c *LocalConfig) {
				c.MaxAttempts = 4
				c.Registerer = reg
				c.Retryable = func(err error) bool { return errors.Is(err, errTransient) }
			})
			j, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "9"})
			if err != nil {
				t.Fatal(err)
			}
			j, err = q.Wait(waitCtx(t, 5*time.Second), j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != tt.wantState || j.Attempts != tt.wantAttempts || (tt.wantError != "" && !strings.HasSuffix(j.Error, tt.wantError)) {
				t.Errorf("job = state %s attempts %d error %q; want %s %d %q", j.State, j.Attempts, j.Error, tt.wantState, tt.wantAttempts, tt.wantError)
			}
			rec, ok := readResult(t, rs, j.ID)
			if !ok || rec.State != tt.wantState || rec.Attempts != tt.wantAttempts || rec.Error != j.Error {
				t.Errorf("result.json = %+v (present %v)", rec, ok)
			}
			if got := len(rs.keys(jobsPrefix + j.ID + "/" + attemptPrefix)); got != tt.wantAttempts {
				t.Errorf("%d attempt records, want %d", got, tt.wantAttempts)
			}
			m := gather(t, reg)
			if got := m[`casearchiver_job_retries_total{backend="local"}`]; got != tt.wantRetries {
				t.Errorf("retries metric = %v, want %v", got, tt.wantRetries)
			}
			if got := m[fmt.Sprintf(`casearchiver_job_outcomes_total{backend="local",state="%s"}`, tt.wantState)]; got != 1 {
				t.Errorf("outcome metric = %v, want 1", got)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{3, 2 * time.Second, 4 * time.Second},
		{10, 5 * time.Second, 10 * time.Second}, // capped
		{100, 5 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			if d := backoff(time.Second, 10*time.Second, tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("backoff(attempt %d) = %v, want in [%v, %v]", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

func TestLocalWait(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	r := newRunner(func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
		p.Add(5)
		started <- struct{}{}
		select {
		case <-release:
			return archive.Result{Version: "v1"}, nil
		case <-ctx.Done():
			return archive.Result{}, ctx.Err()
		}
	})
	q := newTestLocal(t, newMemStore(), r, nil)
	j, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "5"})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	got, err := q.Wait(ctx, j.ID)
	if err != nil {
		t.Fatalf("Wait on timeout: err = %v, want nil", err)
	}
	if got.State != StateRunning || got.Progress != (Progress{Objects: 1, Bytes: 5}) || got.Attempts != 1 {
		t.Errorf("Wait on timeout = %+v; want running with live progress", got)
	}
	close(release)
	got, err = q.Wait(waitCtx(t, 5*time.Second), j.ID)
	if err != nil || got.State != StateSucceeded {
		t.Errorf("Wait = %+v, %v; want succeeded", got, err)
	}
}

// TestLocalResumesAfterCrash stops a queue without letting its jobs finish (as a crash would: no
// result records for them) and checks that a new queue on the same store completes each unfinished
// job exactly once and leaves the finished ones alone.
func TestLocalResumesAfterCrash(t *testing.T) {
	t.Parallel()
	const total, quick = 30, 10
	rs := newMemStore()
	// First life: the first `quick` incidents archive at once, the rest hang until cancelled.
	r1 := newRunner(func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
		var n int
		_, _ = fmt.Sscanf(req.IncidentID, "inc-%d", &n)
		if n < quick {
			return archive.Result{Version: "v1"}, nil
		}
		<-ctx.Done()
		return archive.Result{}, fmt.Errorf("archive: %w", ctx.Err())
	})
	q1, err := NewLocal(LocalConfig{Store: rs, Runner: r1, Logger: testLogger(t), Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // incident → job id
	for i := range total {
		inc := fmt.Sprintf("inc-%d", i)
		j, _, err := q1.Submit(t.Context(), archive.Request{IncidentID: inc, Reason: archive.ReasonIncidentClosed})
		if err != nil {
			t.Fatal(err)
		}
		ids[inc] = j.ID
	}
	if err := q1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "quick jobs to finish and the workers to hang", func() bool {
		return len(rs.keys(jobsPrefix)) >= total+quick+quick+4 // requests + attempts + results + 4 hanging attempts
	})
	stopCtx, cancel := context.WithCancel(t.Context())
	cancel() // no grace: the hanging jobs are interrupted
	if err := q1.Stop(stopCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want context.Canceled", err)
	}
	finished := 0
	for _, id := range ids {
		if _, ok := readResult(t, rs, id); ok {
			finished++
		}
	}
	if finished != quick {
		t.Fatalf("%d jobs finished before the crash, want %d", finished, quick)
	}

	// Second life on the same store.
	r2 := okRunner()
	q2 := newTestLocal(t, rs, r2, nil)
	for inc, id := range ids {
		j, err := q2.Wait(waitCtx(t, 5*time.Second), id)
		if err != nil || j.State != StateSucceeded {
			t.Fatalf("job %s (%s) after restart = %+v, %v", id, inc, j, err)
		}
		if rec, ok := readResult(t, rs, id); !ok || rec.State != StateSucceeded {
			t.Errorf("job %s: result.json = %+v, %v", id, rec, ok)
		}
	}
	want := map[string]int{}
	for i := quick; i < total; i++ {
		want[fmt.Sprintf("inc-%d", i)] = 1
	}
	if diff := cmp.Diff(want, r2.callCount()); diff != "" {
		t.Errorf("runs after restart (-want +got):\n%s", diff)
	}
	// A hanging job had one interrupted attempt before this one.
	j, err := q2.Get(t.Context(), ids[fmt.Sprintf("inc-%d", quick)])
	if err != nil || j.Attempts != 2 {
		t.Errorf("first hanging job = %+v, %v; want 2 attempts", j, err)
	}

	// A third life finds nothing to do.
	r3 := okRunner()
	_ = newTestLocal(t, rs, r3, nil)
	time.Sleep(20 * time.Millisecond)
	if got := r3.callCount(); len(got) != 0 {
		t.Errorf("third start ran %v, want nothing", got)
	}
}

func TestLocalGracefulStopLetsJobsFinish(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	r := newRunner(func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
		close(started)
		time.Sleep(30 * time.Millisecond)
		return archive.Result{Version: "v1"}, nil
	})
	rs := newMemStore()
	q, err := NewLocal(LocalConfig{Store: rs, Runner: r, Logger: testLogger(t), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	j, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "1"})
	if err != nil {
		t.Fatal(err)
	}
	queued, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "2"})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := q.Stop(waitCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if rec, ok := readResult(t, rs, j.ID); !ok || rec.State != StateSucceeded {
		t.Errorf("running job after graceful stop: %+v, %v; want succeeded", rec, ok)
	}
	if _, ok := readResult(t, rs, queued.ID); ok {
		t.Errorf("queued job ran after Stop")
	}
}

func TestLocalAbandonsCrashLoopingJob(t *testing.T) {
	t.Parallel()
	rs := newMemStore()
	now := time.Now().UTC()
	id := newID(now)
	rs.put(t, requestKey(id), requestRecord{ID: id, CreatedAt: now, Request: archive.Request{IncidentID: "13"}})
	for n := 1; n <= 3; n++ {
		rs.put(t, attemptKey(id, n), attemptRecord{Attempt: n, StartedAt: now})
	}
	r := okRunner()
	q := newTestLocal(t, rs, r, func(c *LocalConfig) { c.MaxStarts = 3 })
	j, err := q.Wait(waitCtx(t, 5*time.Second), id)
	if err != nil || j.State != StateFailed || !strings.Contains(j.Error, "abandoned after 3 attempts") {
		t.Fatalf("job = %+v, %v; want abandoned", j, err)
	}
	if len(r.callCount()) != 0 {
		t.Errorf("runner called: %v", r.callCount())
	}
}

// TestLocalOnRealStore runs the queue over the local backend of casearchiver/store.
func TestLocalOnRealStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rs, err := store.NewLocal(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := okRunner()
	q := newTestLocal(t, rs, r, nil)
	var ids []string
	for i := range 5 {
		j, created, err := q.Submit(t.Context(), archive.Request{IncidentID: fmt.Sprint(i), Reason: archive.ReasonManual})
		if err != nil || !created {
			t.Fatalf("Submit: %v, %v", created, err)
		}
		ids = append(ids, j.ID)
	}
	for _, id := range ids {
		if j, err := q.Wait(waitCtx(t, 5*time.Second), id); err != nil || j.State != StateSucceeded {
			t.Fatalf("Wait %s = %+v, %v", id, j, err)
		}
	}
	if err := q.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A restart finds every job finished and reads them back from disk.
	rs2, err := store.NewLocal(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2 := okRunner()
	q2 := newTestLocal(t, rs2, r2, nil)
	for _, id := range ids {
		j, err := q2.Get(t.Context(), id)
		if err != nil || j.State != StateSucceeded || j.Result == nil || j.Result.Version != "v1" {
			t.Errorf("Get %s after restart = %+v, %v", id, j, err)
		}
	}
	if len(r2.callCount()) != 0 {
		t.Errorf("restart re-ran %v", r2.callCount())
	}
}

func TestSafeMessage(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"plain failure", "plain failure"},
		{"GET https://h.example/p?x-xdr-auth-id=7&k=v failed", "GET https://h.example/p failed"},
		{`header Authorization: "abc"`, `header Authorization: "[redacted]"`},
		{"api_key=s3cr3t token=abc", "api_key=[redacted] token=[redacted]"},
		{strings.Repeat("x", 600), strings.Repeat("x", 500) + "…"},
	}
	for _, tt := range tests {
		if got := SafeMessage(errors.New(tt.in)); got != tt.want {
			t.Errorf("SafeMessage(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// gather returns every sample of reg keyed like `name{label="value",...}`.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
