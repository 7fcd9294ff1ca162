package fetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
)

// newPair starts a simulator and a client for it. mod adjusts the client config.
func newPair(t *testing.T, o cortexsim.Options, mod func(*fetch.Config)) (*cortexsim.Sim, *fetch.Client) {
	t.Helper()
	sim := cortexsim.New(o)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	keyType := fetch.Standard
	if o.Advanced {
		keyType = fetch.Advanced
	}
	product := fetch.Product(o.Product)
	if product == "" {
		product = fetch.XSIAM
	}
	cfg := fetch.Config{BaseURL: srv.URL, KeyID: sim.KeyID(), Key: sim.Key(), KeyType: keyType, Product: product,
		RequestsPerSecond: -1, ExtraDataPerMinute: -1, RetryBaseDelay: time.Millisecond, MaxRetryWait: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := fetch.New(cfg, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readAll(t *testing.T, c *fetch.Client, entryID string) (fetch.FileMeta, []byte, error) {
	t.Helper()
	var meta fetch.FileMeta
	var got []byte
	err := c.Download(t.Context(), entryID, func(m fetch.FileMeta, r io.Reader) error {
		meta = m
		b, err := io.ReadAll(r)
		got = b
		return err
	})
	return meta, got, err
}

// TestEveryCall runs every call against every product and both key types, and compares with the
// simulator's ground truth.
func TestEveryCall(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    cortexsim.Options
	}{
		{"xsiam standard", cortexsim.Options{Product: "xsiam", Seed: 1}},
		{"xsiam advanced", cortexsim.Options{Product: "xsiam", Seed: 2, Advanced: true}},
		{"xsiam drift", cortexsim.Options{Product: "xsiam", Seed: 3, Drift: true}},
		{"xsoar8 standard", cortexsim.Options{Product: "xsoar8", Seed: 4}},
		{"xsoar8 advanced", cortexsim.Options{Product: "xsoar8", Seed: 5, Advanced: true}},
		{"xsoar6", cortexsim.Options{Product: "xsoar6", Seed: 6, Drift: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, c := newPair(t, tt.o, nil)
			ids := sim.Generate(cortexsim.ScenarioOptions{Incidents: 4, MaxFileSize: 64 << 10, RiskyUsers: 3})
			missing := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 2, EntriesPerInvestigation: 3,
				Files: []cortexsim.FileSpec{{Name: "gone.pdf", Size: 10, Missing: true}, {Name: "ok.txt", Size: 1}}})
			ids = append(ids, missing)
			ctx := t.Context()

			var found []string
			if err := c.SearchIncidents(ctx, fetch.SearchFilter{}, func(inc fetch.Incident) error {
				found = append(found, inc.ID)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(ids, found); diff != "" {
				t.Errorf("search (-want +got):\n%s", diff)
			}
			for _, id := range ids {
				truth := sim.Truth(id)
				inc, err := c.GetIncident(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if inc.ID != id || !inc.Created.Equal(truth.Created) || !inc.Modified.Equal(truth.Modified) || !json.Valid(inc.Raw) {
					t.Errorf("incident %s: got %+v want created %v modified %v", id, inc, truth.Created, truth.Modified)
				}
				x, err := c.GetExtraData(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				var alertIDs []string
				for _, a := range x.Alerts {
					alertIDs = append(alertIDs, a.ID)
				}
				if diff := cmp.Diff(truth.AlertIDs, alertIDs, cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })); diff != "" || x.AlertsTotal != truth.AlertsTotal || x.Truncated {
					t.Errorf("extra data %s alerts (-want +got):\n%s total %d", id, diff, x.AlertsTotal)
				}
				for invID, it := range truth.Investigations {
					es, err := c.GetEntries(ctx, invID)
					if err != nil {
						t.Fatal(err)
					}
					var raw []json.RawMessage
					if err := json.Unmarshal(es.Raw, &raw); err != nil || len(raw) != it.Entries || len(es.Entries) != it.Entries {
						t.Fatalf("entries of %s: %d raw, %d decoded, want %d (%v)", invID, len(raw), len(es.Entries), it.Entries, err)
					}
					var files []cortexsim.FileTruth
					for _, e := range es.Entries {
						if e.HasFile() {
							files = append(files, cortexsim.FileTruth{EntryID: e.ID, Name: e.File, Size: e.FileSize, SHA256: e.FileSHA256})
						}
					}
					want := slices.Clone(it.Files)
					for i := range want {
						want[i].Missing, want[i].AlwaysFail = false, false
					}
					if diff := cmp.Diff(want, files); diff != "" {
						t.Errorf("files of %s (-want +got):\n%s", invID, diff)
					}
					cx, err := c.GetContext(ctx, invID)
					if err != nil {
						t.Fatal(err)
					}
					var tree map[string]any
					if err := json.Unmarshal(cx, &tree); err != nil || tree["incident"] == nil {
						t.Errorf("context of %s: %v %s", invID, err, cx)
					}
					for _, f := range it.Files {
						meta, got, err := readAll(t, c, f.EntryID)
						if f.Missing {
							if !errors.Is(err, fetch.ErrNotFound) {
								t.Errorf("download missing %s: %v", f.EntryID, err)
							}
							continue
						}
						if err != nil {
							t.Fatal(err)
						}
						if meta.Name != f.Name || meta.Size != f.Size || sha(got) != f.SHA256 {
							t.Errorf("download %s: meta %+v sha %s, want %s %d %s", f.EntryID, meta, sha(got), f.Name, f.Size, f.SHA256)
						}
					}
				}
			}
			if _, err := c.GetIncident(ctx, "999999"); !errors.Is(err, fetch.ErrNotFound) {
				t.Errorf("unknown incident: %v", err)
			}
			if _, err := c.GetExtraData(ctx, "999999"); !errors.Is(err, fetch.ErrNotFound) {
				t.Errorf("unknown incident extra data: %v", err)
			}
			if _, err := c.GetEntries(ctx, "999999"); !errors.Is(err, fetch.ErrNotFound) {
				t.Errorf("unknown investigation: %v", err)
			}
			if _, err := c.GetContext(ctx, "999999"); !errors.Is(err, fetch.ErrNotFound) {
				t.Errorf("unknown context: %v", err)
			}
			if err := c.Download(ctx, "1@999999", func(fetch.FileMeta, io.Reader) error { return nil }); !errors.Is(err, fetch.ErrNotFound) {
				t.Errorf("unknown file: %v", err)
			}
			ru, err := c.GetRiskyUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tt.o.Product == "xsiam" {
				if !ru.Enabled || ru.Count != 3 || !json.Valid(ru.Raw) {
					t.Errorf("risky users: %+v", ru)
				}
				sim.SetRiskyUsers(-1)
				ru, err = c.GetRiskyUsers(ctx)
				if err != nil || ru.Enabled || !bytes.Contains(ru.Raw, []byte("No identity threat")) {
					t.Errorf("risky users module off: %+v %v", ru, err)
				}
			} else if ru.Enabled || sim.Stats().Requests[cortexsim.EPRiskyUsers] != 0 {
				t.Errorf("risky users on %s: %+v", tt.o.Product, ru)
			}
			if st := sim.Stats(); st.AuthFailures != 0 || st.Violations != 0 {
				t.Errorf("stats: %+v", st)
			}
		})
	}
}

func TestExtraDataTruncated(t *testing.T) {
	t.Parallel()
	sim, c := newPair(t, cortexsim.Options{Seed: 7}, nil)
	id := sim.AddIncident(cortexsim.IncidentSpec{Alerts: 1200})
	x, err := c.GetExtraData(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Alerts) != 1000 || x.AlertsTotal != 1200 || !x.Truncated || x.Incident.AlertCount != 1200 {
		t.Errorf("got %d alerts, total %d, truncated %v", len(x.Alerts), x.AlertsTotal, x.Truncated)
	}
}

func TestSearchPaging(t *testing.T) {
	t.Parallel()
	for _, product := range []string{"xsiam", "xsoar8"} {
		for _, n := range []int{0, 1, 100, 101, 250} {
			t.Run(fmt.Sprintf("%s/%d", product, n), func(t *testing.T) {
				t.Parallel()
				sim, c := newPair(t, cortexsim.Options{Product: product, Seed: int64(n)}, nil)
				start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
				var want []string
				for i := range n {
					// Every third pair shares a creation time: ties must neither repeat nor vanish.
					want = append(want, sim.AddIncident(cortexsim.IncidentSpec{Created: start.Add(time.Duration(i/3) * time.Minute)}))
				}
				var got []string
				err := c.SearchIncidents(t.Context(), fetch.SearchFilter{}, func(inc fetch.Incident) error {
					got = append(got, inc.ID)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				ep := cortexsim.EPGetIncidents
				if product != "xsiam" {
					ep = cortexsim.EPIncidentsSearch
				}
				if reqs, want := sim.Stats().Requests[ep], max(1, (n+99)/100); reqs != want {
					t.Errorf("%d requests, want %d", reqs, want)
				}
			})
		}
	}
}

// TestSearchOver10000 checks that a range with more matches than the 10,000 ceiling is split and
// nothing is skipped or repeated.
func TestSearchOver10000(t *testing.T) {
	t.Parallel()
	for _, product := range []string{"xsiam", "xsoar8"} {
		t.Run(product, func(t *testing.T) {
			t.Parallel()
			sim, c := newPair(t, cortexsim.Options{Product: product, Seed: 9, Lean: true}, nil)
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			const n = 10050
			for i := range n {
				sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Created: start.Add(time.Duration(i) * time.Minute)})
			}
			seen := map[string]int{}
			err := c.SearchIncidents(t.Context(), fetch.SearchFilter{}, func(inc fetch.Incident) error {
				seen[inc.ID]++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != n {
				t.Errorf("got %d distinct incidents, want %d", len(seen), n)
			}
			for id, k := range seen {
				if k != 1 {
					t.Errorf("incident %s seen %d times", id, k)
				}
			}
			// A bounded range inside the set.
			var count int
			f := fetch.SearchFilter{CreatedFrom: start.Add(20 * time.Minute), CreatedTo: start.Add(10039 * time.Minute)}
			if err := c.SearchIncidents(t.Context(), f, func(fetch.Incident) error { count++; return nil }); err != nil {
				t.Fatal(err)
			}
			if count != 10020 {
				t.Errorf("bounded range: %d incidents, want 10020", count)
			}
		})
	}
}

func TestSearchFilters(t *testing.T) {
	t.Parallel()
	for _, product := range []string{"xsiam", "xsoar8", "xsoar6"} {
		t.Run(product, func(t *testing.T) {
			t.Parallel()
			sim, c := newPair(t, cortexsim.Options{Product: product, Seed: 11}, nil)
			start := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
			var all []string
			for i := range 150 {
				status := "resolved_true_positive"
				if product != "xsiam" {
					status = "done"
				}
				if i%3 == 0 {
					status = map[bool]string{true: "new", false: "active"}[product == "xsiam"]
				}
				all = append(all, sim.AddIncident(cortexsim.IncidentSpec{Status: status,
					Created: start.Add(time.Duration(i) * time.Hour), Modified: start.Add(time.Duration(i) * time.Hour)}))
			}
			sim.Touch(all[0], start.Add(1000*time.Hour))
			collect := func(f fetch.SearchFilter) []string {
				var got []string
				if err := c.SearchIncidents(t.Context(), f, func(inc fetch.Incident) error { got = append(got, inc.ID); return nil }); err != nil {
					t.Fatal(err)
				}
				return got
			}
			closed := "resolved_true_positive"
			if product != "xsiam" {
				closed = "done"
			}
			if got := collect(fetch.SearchFilter{Statuses: []string{closed}}); len(got) != 100 {
				t.Errorf("status filter: %d", len(got))
			}
			got := collect(fetch.SearchFilter{ModifiedFrom: start.Add(999 * time.Hour)})
			if diff := cmp.Diff([]string{all[0]}, got); diff != "" {
				t.Errorf("modified filter (-want +got):\n%s", diff)
			}
			got = collect(fetch.SearchFilter{CreatedFrom: start.Add(10 * time.Hour), CreatedTo: start.Add(19 * time.Hour), ModifiedTo: start.Add(15 * time.Hour)})
			if diff := cmp.Diff(all[10:16], got); diff != "" {
				t.Errorf("created+modified filter (-want +got):\n%s", diff)
			}
			// More than 100 ids are sent in chunks.
			ids := append(slices.Clone(all[:120]), "no-such-id")
			if got := collect(fetch.SearchFilter{IDs: ids}); len(got) != 120 {
				t.Errorf("ids filter: %d", len(got))
			}
			stop := errors.New("stop")
			n := 0
			if err := c.SearchIncidents(t.Context(), fetch.SearchFilter{}, func(fetch.Incident) error { n++; return stop }); !errors.Is(err, stop) || err.Error() != "stop" || n != 1 {
				t.Errorf("callback error: %v after %d", err, n)
			}
		})
	}
}

func TestEntriesPaging(t *testing.T) {
	t.Parallel()
	tests := []struct {
		entries, pageSize, serverMax, pages int
	}{{0, 100, 0, 1}, {1, 100, 0, 1}, {100, 100, 0, 1}, {200, 100, 0, 2}, {250, 100, 0, 3}, {250, 7, 0, 36},
		{95, 100, 30, 4}} // the tenant serves smaller pages than asked for
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d_by_%d_max_%d", tt.entries, tt.pageSize, tt.serverMax), func(t *testing.T) {
			t.Parallel()
			sim, c := newPair(t, cortexsim.Options{Product: "xsoar8", Seed: 12, MaxPageSize: tt.serverMax}, func(c *fetch.Config) { c.PageSize = tt.pageSize })
			id := sim.AddIncident(cortexsim.IncidentSpec{EntriesPerInvestigation: tt.entries})
			es, err := c.GetEntries(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if len(es.Entries) != tt.entries || es.Pages != tt.pages || es.Total != tt.entries {
				t.Fatalf("got %d entries in %d pages (total %d), want %d in %d", len(es.Entries), es.Pages, es.Total, tt.entries, tt.pages)
			}
			for i, e := range es.Entries {
				if want := fmt.Sprintf("%d@%s", i+1, id); e.ID != want {
					t.Fatalf("entry %d is %s, want %s", i, e.ID, want)
				}
			}
			var raw []map[string]any
			if err := json.Unmarshal(es.Raw, &raw); err != nil || len(raw) != tt.entries {
				t.Fatalf("raw: %v, %d", err, len(raw))
			}
		})
	}
}

// TestRetries injects faults and counts the attempts the simulator saw.
func TestRetries(t *testing.T) {
	t.Parallel()
	type result struct {
		requests int
		err      error
	}
	tests := []struct {
		name     string
		ep       string
		f        cortexsim.Faults
		advanced bool
		attempts int
		wantReqs int
		check    func(t *testing.T, r result)
	}{
		{"5xx then success", cortexsim.EPGetIncidents, cortexsim.Faults{ErrorRate: 1, Count: 2}, false, 6, 3, nil},
		{"5xx then success advanced fresh nonce", cortexsim.EPGetIncidents, cortexsim.Faults{ErrorRate: 1, Count: 3}, true, 6, 4, nil},
		{"5xx exhausted", cortexsim.EPGetIncidents, cortexsim.Faults{ErrorRate: 1}, false, 3, 3, func(t *testing.T, r result) {
			t.Helper()
			if !fetch.Retryable(r.err) || !errors.Is(r.err, fetch.ErrUpstream) || errors.Is(r.err, fetch.ErrNotFound) {
				t.Errorf("want retryable upstream error, got %v", r.err)
			}
		}},
		{"429 exhausted", cortexsim.EPExtraData, cortexsim.Faults{RateLimitRate: 1}, false, 2, 2, func(t *testing.T, r result) {
			t.Helper()
			if !errors.Is(r.err, fetch.ErrRateLimited) || !fetch.Retryable(r.err) {
				t.Errorf("want rate limited, got %v", r.err)
			}
		}},
		{"429 with Retry-After honoured", cortexsim.EPGetIncidents, cortexsim.Faults{RateLimitRate: 1, RetryAfter: time.Second, Count: 1}, false, 6, 2, nil},
		{"reset mid-body", cortexsim.EPInvestigation, cortexsim.Faults{ResetRate: 1, Count: 2}, false, 6, 3, nil},
		{"truncated body", cortexsim.EPContext, cortexsim.Faults{TruncateRate: 1, Count: 2}, false, 6, 3, nil},
		{"slow body and latency", cortexsim.EPExtraData, cortexsim.Faults{SlowBody: 50 * time.Millisecond, Latency: 20 * time.Millisecond}, false, 6, 1, nil},
		{"mixed faults", cortexsim.EPAll, cortexsim.Faults{ErrorRate: 0.3, ResetRate: 0.3, TruncateRate: 0.3, Count: 20}, false, 20, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, c := newPair(t, cortexsim.Options{Seed: 13, Advanced: tt.advanced}, func(c *fetch.Config) { c.MaxAttempts = tt.attempts })
			id := sim.AddIncident(cortexsim.IncidentSpec{Alerts: 2, EntriesPerInvestigation: 5, ContextKeys: 3})
			inv := sim.Truth(id).AlertIDs[0]
			sim.SetFaults(tt.ep, tt.f)
			ctx := t.Context()
			start := time.Now()
			var err error
			switch tt.ep {
			case cortexsim.EPGetIncidents:
				_, err = c.GetIncident(ctx, id)
			case cortexsim.EPExtraData:
				_, err = c.GetExtraData(ctx, id)
			case cortexsim.EPInvestigation:
				_, err = c.GetEntries(ctx, inv)
			case cortexsim.EPContext:
				_, err = c.GetContext(ctx, inv)
			case cortexsim.EPAll:
				for _, f := range []func() error{
					func() error { _, err := c.GetIncident(ctx, id); return err },
					func() error { _, err := c.GetExtraData(ctx, id); return err },
					func() error { _, err := c.GetEntries(ctx, inv); return err },
					func() error { _, err := c.GetContext(ctx, inv); return err },
				} {
					if err = f(); err != nil {
						break
					}
				}
			}
			st := sim.Stats()
			r := result{requests: st.Requests[tt.ep], err: err}
			if tt.check != nil {
				tt.check(t, r)
			} else if err != nil {
				t.Fatalf("want success, got %v (stats %+v)", err, st)
			}
			if tt.wantReqs >= 0 && r.requests != tt.wantReqs {
				t.Errorf("%d requests, want %d (stats %+v)", r.requests, tt.wantReqs, st)
			}
			if tt.f.RetryAfter > 0 && time.Since(start) < tt.f.RetryAfter {
				t.Errorf("Retry-After not honoured: done after %v", time.Since(start))
			}
			if st.AuthFailures != 0 {
				t.Errorf("auth failures under retries: %+v", st.AuthFailureReasons)
			}
		})
	}
}

func TestNoRetryOnPermanentErrors(t *testing.T) {
	t.Parallel()
	sim, c := newPair(t, cortexsim.Options{Seed: 14}, nil)
	if _, err := c.GetExtraData(t.Context(), "424242"); !errors.Is(err, fetch.ErrNotFound) || fetch.Retryable(err) {
		t.Errorf("business not found: %v", err)
	}
	if n := sim.Stats().Requests[cortexsim.EPExtraData]; n != 1 {
		t.Errorf("not found retried: %d requests", n)
	}
	var ae *fetch.APIError
	_, err := c.GetExtraData(t.Context(), "424242")
	if !errors.As(err, &ae) || ae.Status != 500 || ae.Extra != "Incident not found" || !strings.HasPrefix(err.Error(), "fetch: get extra data 424242: ") {
		t.Errorf("APIError: %#v / %v", ae, err)
	}

	bad, err := fetch.New(fetch.Config{BaseURL: "http://" + strings.TrimPrefix(c.Host(), "http://"), KeyID: sim.KeyID(), Key: "wrong-key",
		RetryBaseDelay: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.GetIncident(t.Context(), "1")
	if !errors.Is(err, fetch.ErrUnauthorized) || fetch.Retryable(err) {
		t.Errorf("wrong key: %v", err)
	}
	if st := sim.Stats(); st.AuthFailures != 1 {
		t.Errorf("401 retried: %+v", st)
	}
}

// TestDownloadBrokenBodyRetried breaks downloads mid-body and checks the callback's final bytes.
func TestDownloadBrokenBodyRetried(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		f     cortexsim.Faults
		calls int
	}{
		{"reset", cortexsim.Faults{ResetRate: 1, Count: 1}, 2},
		{"truncated", cortexsim.Faults{TruncateRate: 1, Count: 2}, 3},
		{"5xx before body", cortexsim.Faults{ErrorRate: 1, Count: 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, c := newPair(t, cortexsim.Options{Product: "xsoar8", Seed: 15}, nil)
			id := sim.AddIncident(cortexsim.IncidentSpec{Files: []cortexsim.FileSpec{{Name: "dump.bin", Size: 3<<20 + 7}}})
			f := sim.Truth(id).Investigations[id].Files[0]
			sim.SetFaults(cortexsim.EPDownload, tt.f)
			calls := 0
			var final []byte
			err := c.Download(t.Context(), f.EntryID, func(m fetch.FileMeta, r io.Reader) error {
				calls++
				var buf bytes.Buffer
				if _, err := io.Copy(&buf, r); err != nil {
					if !fetch.IsBodyError(err) {
						t.Errorf("body error not recognisable: %v", err)
					}
					return fmt.Errorf("store: write aborted: %w", err)
				}
				final = buf.Bytes()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if calls != tt.calls || sha(final) != f.SHA256 || int64(len(final)) != f.Size {
				t.Errorf("calls %d (want %d), %d bytes sha %s, want %d %s", calls, tt.calls, len(final), sha(final), f.Size, f.SHA256)
			}
		})
	}
}

func TestDownloadErrors(t *testing.T) {
	t.Parallel()
	sim, c := newPair(t, cortexsim.Options{Seed: 16}, func(c *fetch.Config) { c.MaxAttempts = 3 })
	id := sim.AddIncident(cortexsim.IncidentSpec{Alerts: 1, Files: []cortexsim.FileSpec{
		{Name: "bad.bin", Size: 1 << 20, AlwaysFail: true}, {Name: "fine.bin", Size: 100}}})
	files := sim.Truth(id).Investigations[sim.Truth(id).AlertIDs[0]].Files
	ctx := t.Context()

	calls := 0
	err := c.Download(ctx, files[0].EntryID, func(_ fetch.FileMeta, r io.Reader) error {
		calls++
		_, err := io.Copy(io.Discard, r)
		return err
	})
	if !fetch.Retryable(err) || !fetch.IsBodyError(err) || calls != 3 {
		t.Errorf("always failing download: %v after %d calls", err, calls)
	}

	own := errors.New("disk full")
	calls = 0
	err = c.Download(ctx, files[1].EntryID, func(fetch.FileMeta, io.Reader) error { calls++; return own })
	if !errors.Is(err, own) || err.Error() != own.Error() || calls != 1 {
		t.Errorf("callback error: got %v after %d calls", err, calls)
	}

	sim.SetFaults(cortexsim.EPDownload, cortexsim.Faults{TruncateRate: 1, Count: 1})
	err = c.Download(ctx, files[1].EntryID, func(_ fetch.FileMeta, r io.Reader) error {
		_, _ = io.Copy(io.Discard, r) // swallows the body error
		return nil
	})
	if err == nil || !fetch.IsBodyError(err) {
		t.Errorf("swallowed body error: %v", err)
	}
}

// TestRateLimitSharedByConcurrentCallers: 32 goroutines share one client; the simulator enforces
// the same limits and must never have to refuse a request.
func TestRateLimitSharedByConcurrentCallers(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, o cortexsim.Options, clientRPS float64, clientExtra int) cortexsim.Stats {
		t.Helper()
		sim, c := newPair(t, o,
			func(c *fetch.Config) {
				c.RequestsPerSecond, c.ExtraDataPerMinute, c.MaxAttempts = clientRPS, clientExtra, 1
			})
		ids := sim.Generate(cortexsim.ScenarioOptions{Incidents: 4, Entries: 2, Files: 1, MaxFileSize: 100})
		var wg sync.WaitGroup
		var failed atomic.Int64
		for g := range 32 {
			wg.Go(func() {
				for i := range 6 {
					id := ids[(g+i)%len(ids)]
					var err error
					if i%3 == 0 {
						_, err = c.GetExtraData(t.Context(), id)
					} else {
						_, err = c.GetIncident(t.Context(), id)
					}
					if err != nil {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		st := sim.Stats()
		st.Requests["failed"] = int(failed.Load())
		return st
	}
	t.Run("limited", func(t *testing.T) {
		t.Parallel()
		// Buckets tolerate about 250 ms of scheduling jitter between the client's token and the
		// simulator's check (race detector, parallel tests).
		st := run(t, cortexsim.Options{Seed: 17, RequestsPerSecond: 120, RateBurst: 30, ExtraDataPerMinute: 1800, ExtraDataBurst: 8}, 120, 1800)
		if st.Violations != 0 || st.Requests["failed"] != 0 {
			t.Errorf("violations %v, failed calls %d", st.ViolationsByLimit, st.Requests["failed"])
		}
		if st.Requests[cortexsim.EPGetIncidents]+st.Requests[cortexsim.EPExtraData] != 192 {
			t.Errorf("requests: %v", st.Requests)
		}
	})
	t.Run("unlimited client trips the simulator", func(t *testing.T) {
		t.Parallel()
		// 192 requests against 20/s with a burst of 5: only a client slower than 20/s would pass.
		if st := run(t, cortexsim.Options{Seed: 17, RequestsPerSecond: 20, RateBurst: 5, ExtraDataPerMinute: 60, ExtraDataBurst: 2}, -1, -1); st.Violations == 0 {
			t.Errorf("an unlimited client caused no violation: the test would prove nothing")
		}
	})
}

func TestConcurrencyCap(t *testing.T) {
	t.Parallel()
	var inflight, peak atomic.Int64
	sim := cortexsim.New(cortexsim.Options{Seed: 18, Latency: 20 * time.Millisecond})
	id := sim.AddIncident(cortexsim.IncidentSpec{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := fetch.New(fetch.Config{BaseURL: srv.URL, KeyID: sim.KeyID(), Key: sim.Key(), RequestsPerSecond: -1, MaxConcurrent: 3}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			if _, err := c.GetIncident(t.Context(), id); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak in-flight %d, want 2..3", p)
	}
}

// TestExtraDataQueueDoesNotBlockOtherCalls: callers waiting on the 20/min extra-data bucket must not
// hold the in-flight slots.
func TestExtraDataQueueDoesNotBlockOtherCalls(t *testing.T) {
	t.Parallel()
	sim, c := newPair(t, cortexsim.Options{Seed: 20}, func(c *fetch.Config) { c.ExtraDataPerMinute, c.MaxConcurrent = 20, 2 })
	id := sim.AddIncident(cortexsim.IncidentSpec{Alerts: 1})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _, _ = c.GetExtraData(ctx, id) })
	}
	time.Sleep(50 * time.Millisecond) // one extra-data call went out, three wait for tokens
	start := time.Now()
	if _, err := c.GetIncident(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond { // blocked, it would wait 3 s for a slot
		t.Errorf("GetIncident waited %v behind queued extra-data calls", d)
	}
	cancel()
	wg.Wait()
}

// TestKeyNeverInErrors provokes every kind of error, including a tenant that echoes the key, and
// checks neither errors nor debug logs contain it.
func TestKeyNeverInErrors(t *testing.T) {
	t.Parallel()
	const key = "S3CRET-KEY-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789-abcdefghijklmnopqrstuvwxyz-XYZ"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, `{"reply":{"err_code":500,"err_msg":"bad key %s","err_extra":"header was %s"}}`, r.Header.Get("Authorization"), r.Header.Get("Authorization"))
	}))
	t.Cleanup(echo.Close)
	sim := cortexsim.New(cortexsim.Options{Seed: 19})
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	for _, base := range []string{echo.URL, simSrv.URL, closedURL} {
		for _, kt := range []fetch.KeyType{fetch.Standard, fetch.Advanced} {
			c, err := fetch.New(fetch.Config{BaseURL: base, KeyID: "1", Key: key, KeyType: kt, Logger: logger,
				MaxAttempts: 2, RetryBaseDelay: time.Millisecond}, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetIncident(t.Context(), "1")
			errs = append(errs, err)
			errs = append(errs, c.Download(t.Context(), "1@2", func(fetch.FileMeta, io.Reader) error { return nil }))
		}
	}
	_, err := fetch.New(fetch.Config{BaseURL: "ftp://x", Key: key, KeyType: "weird"}, nil)
	errs = append(errs, err)
	cfg := fetch.Config{BaseURL: "https://h", KeyID: "1", Key: key}
	errs = append(errs, errors.New(cfg.String()), fmt.Errorf("%v %+v", cfg, cfg))
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if strings.Contains(err.Error(), key) {
			t.Errorf("case %d: key in error: %v", i, err)
		}
	}
	logger.Info("config", "cfg", cfg)
	mu.Lock()
	defer mu.Unlock()
	if logs.Len() == 0 || strings.Contains(logs.String(), key) {
		t.Errorf("key in logs (%d bytes)", logs.Len())
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  fetch.Config
		ok   bool
	}{
		{"minimal xsiam", fetch.Config{BaseURL: "https://api-t.xdr.eu.paloaltonetworks.com/", KeyID: "1", Key: "k"}, true},
		{"xsoar6 without key id", fetch.Config{BaseURL: "https://xsoar.corp", Key: "k", Product: fetch.XSOAR6}, true},
		{"no base url", fetch.Config{KeyID: "1", Key: "k"}, false},
		{"credentials in url", fetch.Config{BaseURL: "https://u:p@h", KeyID: "1", Key: "k"}, false},
		{"no key", fetch.Config{BaseURL: "https://h", KeyID: "1"}, false},
		{"no key id", fetch.Config{BaseURL: "https://h", Key: "k"}, false},
		{"bad product", fetch.Config{BaseURL: "https://h", KeyID: "1", Key: "k", Product: "xdr"}, false},
		{"advanced on xsoar6", fetch.Config{BaseURL: "https://h", Key: "k", Product: fetch.XSOAR6, KeyType: fetch.Advanced}, false},
		{"page size", fetch.Config{BaseURL: "https://h", KeyID: "1", Key: "k", PageSize: 5000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := fetch.New(tt.cfg, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if c != nil && (c.Host() == "" || c.Product() == "") {
				t.Errorf("host %q product %q", c.Host(), c.Product())
			}
		})
	}
}

func TestAdvancedHeaders(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce, ts := r.Header.Get("x-xdr-nonce"), r.Header.Get("x-xdr-timestamp")
		mu.Lock()
		defer mu.Unlock()
		ok := len(nonce) == 64 && strings.Trim(nonce, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") == "" &&
			!seen[nonce] && r.Header.Get("Authorization") == fetch.AdvancedSignature("k", nonce, ts) && r.Header.Get("x-xdr-auth-id") == "9"
		seen[nonce] = true
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable) // force retries: each must be signed afresh
	}))
	t.Cleanup(srv.Close)
	c, err := fetch.New(fetch.Config{BaseURL: srv.URL, KeyID: "9", Key: "k", KeyType: fetch.Advanced, MaxAttempts: 4,
		RetryBaseDelay: time.Millisecond, RequestsPerSecond: -1}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetIncident(context.Background(), "1")
	if !errors.Is(err, fetch.ErrUpstream) || len(seen) != 4 {
		t.Errorf("got %v after %d distinct nonces", err, len(seen))
	}
	want := sha256.Sum256([]byte("key" + "nonce" + "123"))
	if got := fetch.AdvancedSignature("key", "nonce", "123"); got != hex.EncodeToString(want[:]) {
		t.Errorf("signature %s", got)
	}
}
