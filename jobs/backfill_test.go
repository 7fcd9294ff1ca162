package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
)

// currencyMap reports the incidents it holds as current.
type currencyMap struct {
	mu      sync.Mutex
	current map[string]bool
	calls   int
}

func (c *currencyMap) IsCurrent(_ context.Context, id string, modified time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if modified.IsZero() {
		return false, fmt.Errorf("incident %s: no modification time", id)
	}
	return c.current[id], nil
}

// countingSearcher counts SearchIncidents calls and the incidents they yield.
type countingSearcher struct {
	Searcher
	mu      sync.Mutex
	filters []fetch.SearchFilter
}

func (s *countingSearcher) SearchIncidents(ctx context.Context, f fetch.SearchFilter, fn func(fetch.Incident) error) error {
	s.mu.Lock()
	s.filters = append(s.filters, f)
	s.mu.Unlock()
	return s.Searcher.SearchIncidents(ctx, f, fn)
}

// simTenant is a simulated XSIAM tenant with 250 closed incidents (every resolved_* status in turn)
// and 30 open ones, served through the real fetch client. It returns the client, the closed ids
// and the open ids.
func simTenant(t *testing.T) (*fetch.Client, []string, []string) {
	t.Helper()
	sim := cortexsim.New(cortexsim.Options{Seed: 6, Lean: true})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	start := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	var closed, open []string
	for i := range 280 {
		created := start.Add(time.Duration(i) * 13 * time.Minute)
		spec := cortexsim.IncidentSpec{Created: created, Modified: created.Add(time.Hour), Alerts: 1}
		if i%28 == 5 || i >= 260 {
			spec.Status = []string{"new", "under_investigation"}[i%2]
			open = append(open, sim.AddIncident(spec))
			continue
		}
		spec.Status = DefaultBackfillStatuses[i%len(DefaultBackfillStatuses)]
		closed = append(closed, sim.AddIncident(spec))
	}
	if len(closed) != 250 {
		t.Fatalf("scenario has %d closed incidents, want 250", len(closed))
	}
	c, err := fetch.New(fetch.Config{
		BaseURL: srv.URL, KeyID: sim.KeyID(), Key: sim.Key(), Product: fetch.XSIAM,
		RequestsPerSecond: -1, ExtraDataPerMinute: -1, RetryBaseDelay: time.Millisecond,
	}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return c, closed, open
}

func TestBackfillArchivesClosedIncidentsWithoutCurrentArchive(t *testing.T) {
	t.Parallel()
	client, closed, open := simTenant(t)
	searcher := &countingSearcher{Searcher: client}
	cur := &currencyMap{current: map[string]bool{}}
	var wantArchived []string
	for i, id := range closed {
		if i%5 == 0 {
			cur.current[id] = true // archived already, nothing changed since
			continue
		}
		wantArchived = append(wantArchived, id)
	}
	cur.current[open[0]] = true
	slices.Sort(wantArchived)

	rs := newMemStore()
	runner := okRunner()
	q := newTestLocal(t, rs, runner, nil)
	b, err := NewBackfill(BackfillConfig{Searcher: searcher, Currency: cur, Queue: q, Store: rs, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })

	// Dry run: the same answer, nothing written, nothing run.
	dry, err := b.Start(t.Context(), Filter{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := BackfillStatus{
		State: BackfillSucceeded, DryRun: true, Filter: Filter{Statuses: DefaultBackfillStatuses, DryRun: true},
		Found: 250, SkippedCurrent: 50, WouldEnqueue: 200, IncidentIDs: wantArchived,
	}
	if diff := cmp.Diff(want, dry, cmpIgnoreBackfillTimes); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if keys := rs.keys(""); len(keys) != 0 {
		t.Errorf("dry run wrote %d records: %v", len(keys), keys[:min(5, len(keys))])
	}
	if got := runner.callCount(); len(got) != 0 {
		t.Errorf("dry run archived %d incidents", len(got))
	}

	// The real run.
	st, err := b.Start(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != BackfillRunning || !ValidID(st.ID) {
		t.Fatalf("Start = %+v; want running with an id", st)
	}
	st, err = b.Wait(waitCtx(t, 10*time.Second), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	want = BackfillStatus{
		ID: st.ID, State: BackfillSucceeded, Filter: Filter{Statuses: DefaultBackfillStatuses},
		Found: 250, SkippedCurrent: 50, Enqueued: 200,
	}
	if diff := cmp.Diff(want, st, cmpIgnoreBackfillTimes); diff != "" {
		t.Errorf("backfill (-want +got):\n%s", diff)
	}
	eventually(t, "the backfill's jobs to finish", func() bool {
		return len(rs.keys(jobsPrefix)) == 3*200 // request, attempt, result each
	})
	calls := runner.callCount()
	if diff := cmp.Diff(wantArchived, slices.Sorted(mapsKeys(calls))); diff != "" {
		t.Errorf("archived incidents (-want +got):\n%s", diff)
	}
	for id, n := range calls {
		if n != 1 {
			t.Errorf("incident %s archived %d times", id, n)
		}
	}
	// Three pages of incidents were searched with the default closed statuses.
	for _, f := range searcher.filters {
		if diff := cmp.Diff(DefaultBackfillStatuses, f.Statuses); diff != "" {
			t.Errorf("search statuses (-want +got):\n%s", diff)
		}
	}

	// The records tell the same story to another instance.
	b2, err := NewBackfill(BackfillConfig{Searcher: searcher, Currency: cur, Queue: q, Store: rs, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b2.Get(t.Context(), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("Get from the records (-live +stored):\n%s", diff)
	}
	if _, err := b2.Get(t.Context(), "20260101T000000Z-00000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown = %v, want ErrNotFound", err)
	}
}

var cmpIgnoreBackfillTimes = cmp.FilterPath(func(p cmp.Path) bool {
	s := p.String()
	return s == "StartedAt" || s == "FinishedAt"
}, cmp.Ignore())

func mapsKeys(m map[string]int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// pagedSearcher yields incidents in pages, applying only the id filter, so that the backfill's own
// status check is exercised; it can fail after a number of incidents.
type pagedSearcher struct {
	incidents []fetch.Incident
	failAfter int
}

func (s pagedSearcher) SearchIncidents(ctx context.Context, f fetch.SearchFilter, fn func(fetch.Incident) error) error {
	for i, inc := range s.incidents {
		if s.failAfter > 0 && i == s.failAfter {
			return errors.New("fetch: search incidents: 502 bad gateway")
		}
		if len(f.IDs) > 0 && !slices.Contains(f.IDs, inc.ID) {
			continue
		}
		if err := fn(inc); err != nil {
			return err
		}
	}
	return nil
}

// submitFunc adapts a function to Submitter.
type submitFunc func(ctx context.Context, req archive.Request) (Job, bool, error)

func (f submitFunc) Submit(ctx context.Context, req archive.Request) (Job, bool, error) {
	return f(ctx, req)
}

func TestBackfillCounts(t *testing.T) {
	t.Parallel()
	mod := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	incidents := []fetch.Incident{
		{ID: "1", Status: "resolved_other", Modified: mod},
		{ID: "2", Status: "RESOLVED_DUPLICATE", Modified: mod},
		{ID: "3", Status: "new", Modified: mod},
		{ID: "4", Status: "resolved_auto", Modified: mod}, // current
		{ID: "5", Status: "resolved_auto"},                // currency check fails
		{ID: "6", Status: "resolved_auto", Modified: mod}, // already queued: coalesced
		{ID: "7", Status: "resolved_auto", Modified: mod}, // submit fails
	}
	cur := &currencyMap{current: map[string]bool{"4": true}}
	var mu sync.Mutex
	var submitted []archive.Request
	queue := submitFunc(func(_ context.Context, req archive.Request) (Job, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		submitted = append(submitted, req)
		switch req.IncidentID {
		case "6":
			return Job{}, false, nil
		case "7":
			return Job{}, false, errors.New("jobs: queue stopped")
		}
		return Job{}, true, nil
	})
	tests := []struct {
		name   string
		s      Searcher
		filter Filter
		want   BackfillStatus
		submit []string
	}{
		{
			name: "mixed", s: pagedSearcher{incidents: incidents},
			want: BackfillStatus{
				State: BackfillSucceeded, Found: 7, Enqueued: 2, Coalesced: 1, SkippedCurrent: 1, SkippedOpen: 1, Failed: 2,
				Errors: []string{"incident 5: incident 5: no modification time", "incident 7: jobs: queue stopped"},
			},
			submit: []string{"1", "2", "6", "7"},
		},
		{
			name: "force skips the currency check", s: pagedSearcher{incidents: incidents[:4]}, filter: Filter{Force: true},
			want:   BackfillStatus{State: BackfillSucceeded, Found: 4, Enqueued: 3, SkippedOpen: 1},
			submit: []string{"1", "2", "4"},
		},
		{
			name: "ids", s: pagedSearcher{incidents: incidents}, filter: Filter{IDs: []string{"2", "3"}},
			want:   BackfillStatus{State: BackfillSucceeded, Found: 2, Enqueued: 1, SkippedOpen: 1},
			submit: []string{"2"},
		},
		{
			name: "search fails", s: pagedSearcher{incidents: incidents[:2], failAfter: 1},
			want:   BackfillStatus{State: BackfillFailed, Found: 1, Enqueued: 1, Error: "search: fetch: search incidents: 502 bad gateway"},
			submit: []string{"1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			submitted = nil
			mu.Unlock()
			rs := newMemStore()
			b, err := NewBackfill(BackfillConfig{Searcher: tt.s, Currency: cur, Queue: queue, Store: rs, Logger: testLogger(t), Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			st, err := b.Start(t.Context(), tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			st, err = b.Wait(waitCtx(t, 5*time.Second), st.ID)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.ID = st.ID
			tt.want.Filter = tt.filter
			tt.want.Filter.Statuses = DefaultBackfillStatuses
			if diff := cmp.Diff(tt.want, st, cmpIgnoreBackfillTimes); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			mu.Lock()
			var ids []string
			for _, r := range submitted {
				ids = append(ids, r.IncidentID)
				if r.Reason != archive.ReasonBackfill || r.Force != tt.filter.Force || r.RequestedBy != "backfill/"+st.ID {
					t.Errorf("submitted %+v", r)
				}
			}
			mu.Unlock()
			if diff := cmp.Diff(tt.submit, ids); diff != "" {
				t.Errorf("submitted (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{backfillKey(st.ID, requestName), backfillKey(st.ID, resultName)}, rs.keys("backfills/")); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBackfillInvalidFilter(t *testing.T) {
	t.Parallel()
	b, err := NewBackfill(BackfillConfig{Searcher: pagedSearcher{}, Currency: &currencyMap{}, Queue: submitFunc(nil), Store: newMemStore(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, f := range []Filter{
		{CreatedFrom: now, CreatedTo: now.Add(-time.Hour)},
		{ModifiedFrom: now, ModifiedTo: now.Add(-time.Hour)},
		{IDs: []string{"1", ""}},
	} {
		if _, err := b.Start(t.Context(), f); !errors.Is(err, ErrInvalid) {
			t.Errorf("Start(%+v) = %v, want ErrInvalid", f, err)
		}
	}
}
