package archive_test

// Fault campaign (issue 9, reliability): many small archives through a simulated tenant that answers
// 5xx, 429, resets and truncated bodies, into fake-gcs-server behind a transport that answers 503 and
// drops connections. Every archive must end either complete and byte-exact against the simulator's
// ground truth (and archive.Verify ok), or failed with a reason and no manifest.
//
//	CI (short):  go test -race ./archive -run TestFaultCampaign            (100 archives)
//	long:        go test ./archive -run TestFaultCampaign -campaign.long   (1,000 archives)
//	             or CAMPAIGN_LONG=1; CAMPAIGN_SEED=<n> replays a seed.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
	"casearchiver/store"
)

var campaignLong = flag.Bool("campaign.long", false, "run the long reliability campaigns (also CAMPAIGN_LONG=1)")

func longCampaign() bool { return *campaignLong || os.Getenv("CAMPAIGN_LONG") == "1" }

// campaignSeed is CAMPAIGN_SEED when set, else def: the campaigns are reproducible by default.
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

// gcsChaos sits between the GCS client and fake-gcs-server and, per request, answers 503 without
// forwarding, drops the connection before forwarding (the server saw nothing), or forwards and then
// drops the connection (the server committed, the client never hears it).
type gcsChaos struct {
	base                         http.RoundTripper
	rate503, rateReset, rateLost float64

	mu       sync.Mutex
	rng      *mrand.Rand
	injected map[string]int
	requests int
}

func (c *gcsChaos) roll() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	x := c.rng.Float64()
	kind := ""
	switch {
	case x < c.rate503:
		kind = "503"
	case x < c.rate503+c.rateReset:
		kind = "reset"
	case x < c.rate503+c.rateReset+c.rateLost:
		kind = "lost_response"
	}
	if kind != "" {
		c.injected[kind]++
	}
	return kind
}

func (c *gcsChaos) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	forward := func() (*http.Response, error) {
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		return c.base.RoundTrip(r)
	}
	switch c.roll() {
	case "503":
		return &http.Response{
			StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
			Header:  http.Header{"Content-Type": {"application/json"}},
			Body:    io.NopCloser(strings.NewReader(`{"error":{"code":503,"message":"injected"}}`)),
			Request: req,
		}, nil
	case "reset":
		return nil, reset
	case "lost_response":
		resp, err := forward()
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return nil, reset
	}
	return forward()
}

func (c *gcsChaos) stats() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.injected {
		out[k] = v
	}
	return out, c.requests
}

// campaignOutcome is what one archive of the campaign came to.
type campaignOutcome struct {
	id       string
	err      error    // the archive's error, nil when it reported success
	problems []string // violations of the campaign's invariant (must stay empty)
}

func TestFaultCampaign(t *testing.T) {
	t.Parallel()
	n, workers := 100, 6
	if longCampaign() {
		n, workers = 1000, 8
	}
	seed := campaignSeed(t, 9_2026)
	t.Logf("fault campaign: %d archives, seed %d (replay with CAMPAIGN_SEED=%d)", n, seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, 0xca3e)) //nolint:gosec // reproducible scenario

	sim := cortexsim.New(cortexsim.Options{Product: cortexsim.XSIAM, Seed: int64(seed)})
	sim.SetRiskyUsers(3)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	logger := slog.New(slog.DiscardHandler)
	client, err := fetch.New(fetch.Config{
		BaseURL: ts.URL, KeyID: sim.KeyID(), Key: sim.Key(), Product: fetch.XSIAM,
		RequestsPerSecond: -1, ExtraDataPerMinute: -1, MaxConcurrent: 16,
		// A tight budget on purpose: 4 attempts per call lets a few archives run out of retries, so
		// both outcomes of the invariant are exercised, and millisecond backoff keeps the run short.
		MaxAttempts: 4, RetryBaseDelay: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		MaxRetryWait: 5 * time.Second, RequestTimeout: 20 * time.Second, Logger: logger,
	}, ts.Client())
	if err != nil {
		t.Fatal(err)
	}

	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	chaos := &gcsChaos{base: gcs.HTTPClient().Transport, rate503: 0.08, rateReset: 0.04, rateLost: 0.04,
		rng: mrand.New(mrand.NewPCG(seed, 0x6c5)), injected: map[string]int{}} //nolint:gosec // reproducible faults
	sc, err := storage.NewClient(t.Context(), option.WithHTTPClient(&http.Client{Transport: chaos}), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	// fake-gcs-server finds objects by a linear scan of its bucket, so the campaign spreads its
	// incidents over buckets of at most perBucket archives to stay linear in n.
	const perBucket = 20
	type rigB struct {
		arch, checker *archive.Archiver
		clean         *store.Store
	}
	rigs := make([]rigB, (n+perBucket-1)/perBucket)
	for b := range rigs {
		name := fmt.Sprintf("campaign-%03d", b)
		gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name})
		faulty := store.NewGCS(sc, name, "tenant-a", store.Options{Logger: logger, MaxAttempts: 4,
			RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 5 * time.Millisecond, ChunkRetryDeadline: 2 * time.Second})
		// The checks read through a second, fault-free client: a verdict must not depend on injected faults.
		clean := store.NewGCS(gcs.Client(), name, "tenant-a", store.Options{Logger: logger})
		rigs[b] = rigB{
			arch:    archive.New(logger, client, faulty, archive.Config{Concurrency: 4, ToolVersion: "campaign"}),
			checker: archive.New(logger, client, clean, archive.Config{ToolVersion: "campaign"}),
			clean:   clean,
		}
	}

	ids := make([]string, n)
	for i := range ids {
		var files []cortexsim.FileSpec
		for j := range rng.IntN(3) {
			files = append(files, cortexsim.FileSpec{Name: fmt.Sprintf("evidence-%d.bin", j), Size: int64(rng.IntN(24 << 10))})
		}
		ids[i] = sim.AddIncident(cortexsim.IncidentSpec{
			Status: "resolved_true_positive", Alerts: 1 + rng.IntN(3), EntriesPerInvestigation: 1 + rng.IntN(40),
			ContextKeys: rng.IntN(4), NetworkArtifacts: rng.IntN(3), Files: files,
		})
	}
	sim.ResetStats()
	sim.SetFaults(cortexsim.EPAll, cortexsim.Faults{ErrorRate: 0.10, RateLimitRate: 0.05, ResetRate: 0.03, TruncateRate: 0.03})

	start := time.Now()
	outcomes := make([]campaignOutcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
				rb := rigs[i/perBucket]
				res, err := rb.arch.Archive(ctx, archive.Request{IncidentID: ids[i], Reason: archive.ReasonManual, RequestedBy: "campaign"}, &archive.Progress{})
				cancel()
				o := campaignOutcome{id: ids[i], err: err}
				if err == nil {
					o.problems = checkComplete(t.Context(), sim, rb.clean, rb.checker, ids[i], res)
				} else {
					o.problems = checkFailed(t.Context(), rb.clean, ids[i], err)
				}
				outcomes[i] = o
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	sim.SetFaults(cortexsim.EPAll, cortexsim.Faults{})

	complete, failed := 0, map[string]int{}
	for _, o := range outcomes {
		for _, p := range o.problems {
			t.Errorf("incident %s: %s", o.id, p)
		}
		if o.err == nil {
			complete++
		} else {
			failed[failureReason(o.err)]++
		}
	}
	st := sim.Stats()
	gInj, gReq := chaos.stats()
	nFailed := n - complete
	t.Logf("fault campaign result: %d archives in %s: %d complete and byte-exact, %d failed with no manifest %v",
		n, elapsed.Round(time.Millisecond), complete, nFailed, sortedCounts(failed))
	t.Logf("tenant: %d requests, faults injected %v (retries observed = %d)", sum(st.Requests), sortedCounts(st.Injected), sum(st.Injected))
	t.Logf("gcs: %d requests, faults injected %v", gReq, sortedCounts(gInj))
	for _, o := range outcomes {
		if o.err != nil {
			t.Logf("failed %s: %v", o.id, o.err)
		}
	}
	// The campaign must exercise what it claims to: faults on both sides, mostly recovered.
	if sum(st.Injected) < n || sum(gInj) < n/4 {
		t.Errorf("too few faults injected: tenant %v gcs %v", st.Injected, gInj)
	}
	if complete < n*85/100 {
		t.Errorf("only %d of %d archives complete: the retries do not absorb the faults", complete, n)
	}
}

// checkComplete holds a successful archive against the simulator's truth, reading through the clean store.
func checkComplete(ctx context.Context, sim *cortexsim.Sim, st *store.Store, checker *archive.Archiver, id string, res archive.Result) []string {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if res.Skipped || len(res.Incomplete) != 0 {
		bad("result skipped=%v incomplete=%+v", res.Skipped, res.Incomplete)
	}
	raw, err := checker.Manifest(ctx, id, res.Version)
	if err != nil {
		return append(problems, fmt.Sprintf("success reported but no manifest: %v", err))
	}
	var m archive.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return append(problems, fmt.Sprintf("manifest: %v", err))
	}
	if !m.Complete {
		bad("manifest not complete: %+v", m.Incomplete)
	}
	truth := sim.Truth(id)
	if m.Source.AlertsReported != truth.AlertsTotal || m.Source.AlertsArchived != truth.AlertsReturned {
		bad("alerts %d/%d, truth %d/%d", m.Source.AlertsReported, m.Source.AlertsArchived, truth.AlertsTotal, truth.AlertsReturned)
	}
	base := "incidents/" + id + "/" + res.Version + "/"
	var invs []string
	for _, inv := range m.Source.Investigations {
		invs = append(invs, inv.ID)
		ti := truth.Investigations[inv.ID]
		if inv.Entries != ti.Entries || inv.FilesReferenced != len(ti.Files) || inv.FilesStored != len(ti.Files) {
			bad("investigation %s: entries %d files %d/%d, truth %d %d", inv.ID, inv.Entries, inv.FilesStored, inv.FilesReferenced, ti.Entries, len(ti.Files))
		}
		var es []json.RawMessage
		if b, err := readKey(ctx, st, base+"investigations/"+archive.SafeName(inv.ID)+"/entries.json"); err != nil {
			bad("entries.json of %s: %v", inv.ID, err)
		} else if err := json.Unmarshal(b, &es); err != nil || len(es) != ti.Entries {
			bad("entries.json of %s: %d entries (%v), truth %d", inv.ID, len(es), err, ti.Entries)
		}
		for _, f := range ti.Files {
			i := slices.IndexFunc(m.Objects, func(o archive.ManifestObject) bool { return o.EntryID == f.EntryID })
			if i < 0 {
				bad("file %s not in the manifest", f.EntryID)
				continue
			}
			o := m.Objects[i]
			if o.Size != f.Size || o.SHA256 != f.SHA256 {
				bad("file %s: manifest size %d sha256 %s, truth %d %s", f.EntryID, o.Size, o.SHA256, f.Size, f.SHA256)
			}
			rc, err := st.Open(ctx, base+o.Path)
			if err != nil {
				bad("file %s: %v", f.EntryID, err)
				continue
			}
			same, err := sameBytes(rc, sim.OpenFile(f.EntryID))
			_ = rc.Close()
			if err != nil || !same {
				bad("file %s: stored bytes differ from the tenant's (%v)", f.EntryID, err)
			}
		}
	}
	if want := truth.AlertIDs[:truth.AlertsReturned]; !slices.Equal(invs, want) {
		bad("investigations %v, truth %v", invs, want)
	}
	rep, err := checker.Verify(ctx, id, res.Version)
	if err != nil || rep.Status != "ok" || rep.OK != len(m.Objects) {
		bad("verify = %+v, %v", rep, err)
	}
	problems = append(problems, checkKeys(ctx, st, id)...)
	return problems
}

// checkFailed: a failed archive states a reason and leaves no manifest in any version of the incident.
func checkFailed(ctx context.Context, st *store.Store, id string, archErr error) []string {
	var problems []string
	if strings.TrimSpace(archErr.Error()) == "" {
		problems = append(problems, "failed without a reason")
	}
	for o, err := range st.List(ctx, "incidents/"+id+"/", "") {
		if err != nil {
			return append(problems, err.Error())
		}
		if strings.HasSuffix(o.Key, "/manifest.json") {
			problems = append(problems, fmt.Sprintf("failed archive (%v) left a manifest: %s", archErr, o.Key))
		}
	}
	return append(problems, checkKeys(ctx, st, id)...)
}

// checkKeys: every object of the incident is under incidents/<id>/<version>/.
func checkKeys(ctx context.Context, st *store.Store, id string) []string {
	var problems []string
	for o, err := range st.List(ctx, "incidents/"+id+"/", "") {
		if err != nil {
			return append(problems, err.Error())
		}
		rest := strings.TrimPrefix(o.Key, "incidents/"+id+"/")
		v, _, ok := strings.Cut(rest, "/")
		if !ok || !archive.ValidVersion(v) {
			problems = append(problems, "key outside incidents/<id>/<version>/: "+o.Key)
		}
	}
	return problems
}

func readKey(ctx context.Context, st *store.Store, key string) ([]byte, error) {
	rc, err := st.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// failureReason names the class of a failed archive for the report.
func failureReason(err error) string {
	switch {
	case errors.Is(err, fetch.ErrRateLimited):
		return "tenant_rate_limited"
	case errors.Is(err, fetch.ErrUpstream):
		return "tenant_upstream"
	case errors.Is(err, store.ErrTransient):
		return "store_transient"
	case errors.Is(err, store.ErrExists):
		return "store_exists"
	case errors.Is(err, store.ErrIntegrity):
		return "store_integrity"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "other"
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}
