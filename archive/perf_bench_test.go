package archive_test

// Performance figures of issue 9 (see BENCHMARKS.md). They are benchmarks, not tests: CI does not
// run them. Run one with, for example,
//
//	go test -run '^$' -bench BenchmarkLargeCase -benchtime 1x ./archive/
//
// Traffic stays on loopback; every case is bounded in size and time.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
	"casearchiver/store"
)

func newLoopback(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// Large case of the issue: 200 alerts × 50 entries, 100 files totalling 512 MiB, 25 ms per request.
const (
	largeAlerts    = 200
	largeEntries   = 50
	largeFiles     = 100
	largeFileBytes = 512 << 20
	largeLatency   = 25 * time.Millisecond
	firstAlertID   = 1000001 // the simulator numbers the alerts of a fresh Sim from here
)

// Tuning of the archiver side (what an operator sets through CORTEX_MAX_CONCURRENCY and
// ARCHIVE_CONCURRENCY). The defaults are 8 and 8.
const (
	benchMaxConcurrent = 32
	benchConcurrency   = 32
)

// largeCase adds the large case to sim: the files are spread over every other alert.
func largeCase(sim *cortexsim.Sim) string {
	files := make([]cortexsim.FileSpec, largeFiles)
	per := int64(largeFileBytes / largeFiles)
	for i := range files {
		files[i] = cortexsim.FileSpec{Investigation: strconv.Itoa(firstAlertID + 2*i), Size: per, Name: fmt.Sprintf("evidence-%03d.bin", i)}
	}
	files[largeFiles-1].Size += largeFileBytes - per*largeFiles
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_true_positive", Alerts: largeAlerts,
		EntriesPerInvestigation: largeEntries, ContextKeys: 4, Files: files})
	sim.SetRiskyUsers(20)
	_ = sim.Truth(id) // the simulator hashes its files once, on first use: not part of any timing
	return id
}

func requests(st cortexsim.Stats) int {
	n := 0
	for _, v := range st.Requests {
		n += v
	}
	return n
}

// newArchiver wires a tenant client and an archiver the way cmd/server does (an http.Client with
// the default transport), against a local store in dir.
func newArchiver(tb testing.TB, sim *cortexsim.Sim, url, dir string, cfg fetch.Config, conc int) (*archive.Archiver, *store.Store) {
	tb.Helper()
	logger := slog.New(slog.DiscardHandler)
	cfg.BaseURL, cfg.KeyID, cfg.Key, cfg.Logger = url, sim.KeyID(), sim.Key(), logger
	client, err := fetch.New(cfg, &http.Client{})
	if err != nil {
		tb.Fatal(err)
	}
	st, err := store.NewLocal(dir, store.Options{Logger: logger})
	if err != nil {
		tb.Fatal(err)
	}
	return archive.New(logger, client, st, archive.Config{Concurrency: conc, ToolVersion: "bench"}), st
}

// tmpfsDir returns a fresh directory on tmpfs (/dev/shm), or "" when there is none.
func tmpfsDir(tb testing.TB) string {
	tb.Helper()
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		return ""
	}
	d, err := os.MkdirTemp("/dev/shm", "archiver-bench-")
	if err != nil {
		return ""
	}
	tb.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// BenchmarkLargeCase archives the large case three ways in one run and reports wall times and
// ratios side by side:
//
//   - baseline-s: the naive sequential client (baseline_test.go), answers and files written to disk;
//   - archiver-s: the archiver into the local store on disk (create-only, fsynced: durable);
//   - archiver-tmpfs-s: the same archiver into a local store on tmpfs, where fsync costs nothing:
//     the pipeline without the disk's flush bandwidth.
//
// ratio = archiver / baseline (target ≤ 0.1).
func BenchmarkLargeCase(b *testing.B) {
	sim := cortexsim.New(cortexsim.Options{Seed: 9, Latency: largeLatency})
	id := largeCase(sim)
	srv := newLoopback(b, sim)
	shm := tmpfsDir(b)
	for b.Loop() {
		b.StopTimer()
		sim.ResetStats()
		bl := &baseline{base: srv.URL, keyID: sim.KeyID(), key: sim.Key(), hc: &http.Client{}, dir: b.TempDir(), pageSize: 100}
		start := time.Now()
		res, err := bl.run(b.Context(), id)
		if err != nil {
			b.Fatal(err)
		}
		baseT := time.Since(start)
		baseReq := requests(sim.Stats())
		if res.Files != largeFiles || res.FileBytes != largeFileBytes || res.Alerts != largeAlerts {
			b.Fatalf("baseline fetched %+v", res)
		}

		run := func(dir string) (time.Duration, int) {
			sim.ResetStats()
			arch, _ := newArchiver(b, sim, srv.URL, dir, fetch.Config{RequestsPerSecond: -1, ExtraDataPerMinute: -1,
				MaxConcurrent: benchMaxConcurrent}, benchConcurrency)
			syncDisk() // start from a clean page cache state: earlier runs' dirty pages are not ours to flush
			start := time.Now()
			r, err := arch.Archive(b.Context(), archive.Request{IncidentID: id, Reason: archive.ReasonManual}, &archive.Progress{})
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			if len(r.Incomplete) > 0 || r.Objects != 2+2*largeAlerts+largeFiles+1 {
				b.Fatalf("archive: %d objects, incomplete %v", r.Objects, r.Incomplete)
			}
			return d, requests(sim.Stats())
		}
		syncDisk()
		archT, archReq := run(b.TempDir())
		b.ReportMetric(baseT.Seconds(), "baseline-s")
		b.ReportMetric(archT.Seconds(), "archiver-s")
		b.ReportMetric(archT.Seconds()/baseT.Seconds(), "ratio")
		b.Logf("baseline %.2fs (%d requests), archiver on disk %.2fs (%d requests), ratio %.3f",
			baseT.Seconds(), baseReq, archT.Seconds(), archReq, archT.Seconds()/baseT.Seconds())
		if shm != "" {
			d, err := os.MkdirTemp(shm, "run-")
			if err != nil {
				b.Fatal(err)
			}
			tmpT, _ := run(d)
			_ = os.RemoveAll(d)
			b.ReportMetric(tmpT.Seconds(), "archiver-tmpfs-s")
			b.ReportMetric(tmpT.Seconds()/baseT.Seconds(), "ratio-tmpfs")
			b.Logf("archiver on tmpfs %.2fs, ratio %.3f", tmpT.Seconds(), tmpT.Seconds()/baseT.Seconds())
		}
		b.StartTimer()
	}
}

// syncDisk flushes the page cache (other processes' and earlier runs' dirty data) before a timing.
func syncDisk() { syscall.Sync() }

// BenchmarkRateLimits runs with the tenant's limits on (scaled: 100 requests/s, 60 extra-data calls
// per minute; the client configured the same) and reports the achieved request rate as a share of
// the limit and the 429s provoked (target ≥ 90 %, zero 429s):
//
//   - tenant: one case of 300 alerts (about 630 requests, over six seconds);
//   - extra_data: 10 small cases archived at once, so the extra-data limit (1/s) binds.
func BenchmarkRateLimits(b *testing.B) {
	for _, tc := range []struct {
		name      string
		incidents int
		alerts    int
		ep        string
		limit     float64 // per second
	}{
		{"tenant", 1, 300, "", 100},
		{"extra_data", 10, 1, cortexsim.EPExtraData, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sim := cortexsim.New(cortexsim.Options{Seed: 11, Latency: largeLatency, RequestsPerSecond: 100, ExtraDataPerMinute: 60})
			var ids []string
			for range tc.incidents {
				ids = append(ids, sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: tc.alerts,
					EntriesPerInvestigation: 20, ContextKeys: 2, Files: []cortexsim.FileSpec{{Size: 64 << 10}, {Size: 1 << 20}}}))
			}
			rec := &stamps{h: sim}
			srv := newLoopback(b, rec)
			for b.Loop() {
				b.StopTimer()
				sim.ResetStats()
				rec.reset()
				arch, _ := newArchiver(b, sim, srv.URL, b.TempDir(), fetch.Config{RequestsPerSecond: 100, ExtraDataPerMinute: 60,
					MaxConcurrent: benchMaxConcurrent}, benchConcurrency)
				var wg sync.WaitGroup
				errs := make([]error, len(ids))
				start := time.Now()
				for i, id := range ids {
					wg.Go(func() {
						_, errs[i] = arch.Archive(b.Context(), archive.Request{IncidentID: id, Reason: archive.ReasonManual}, &archive.Progress{})
					})
				}
				wg.Wait()
				wall := time.Since(start)
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				st := sim.Stats()
				n := requests(st)
				if tc.ep != "" {
					n = st.Requests[tc.ep]
				}
				first, last := rec.span(tc.ep)
				// Rate over the run: n requests need (n-1)/limit seconds at the limit, so the share of
				// the limit is (n-1)/limit over the span from the first to the last request.
				share := float64(n-1) / tc.limit / last.Sub(first).Seconds()
				b.ReportMetric(float64(n), "requests")
				b.ReportMetric(wall.Seconds(), "wall-s")
				b.ReportMetric(float64(n-1)/last.Sub(first).Seconds(), "req/s")
				b.ReportMetric(100*share, "%-of-limit")
				b.ReportMetric(float64(st.Violations), "429s")
				b.Logf("%s: %d requests in %.2fs (first to last %.2fs): %.1f/s = %.1f%% of %.0f/s; 429s %d (%v)",
					tc.name, n, wall.Seconds(), last.Sub(first).Seconds(), float64(n-1)/last.Sub(first).Seconds(),
					100*share, tc.limit, st.Violations, st.ViolationsByLimit)
				if st.Violations != 0 {
					b.Errorf("%d requests answered 429", st.Violations)
				}
				b.StartTimer()
			}
		})
	}
}

// stamps records when each request reached the simulator, by endpoint path kind.
type stamps struct {
	h  http.Handler
	mu sync.Mutex
	t  map[string][]time.Time
}

func (s *stamps) reset() { s.mu.Lock(); s.t = map[string][]time.Time{}; s.mu.Unlock() }

func (s *stamps) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	ep := ""
	if r.URL.Path == "/public_api/v1/incidents/get_incident_extra_data" {
		ep = cortexsim.EPExtraData
	}
	s.mu.Lock()
	s.t[""] = append(s.t[""], now)
	if ep != "" {
		s.t[ep] = append(s.t[ep], now)
	}
	s.mu.Unlock()
	s.h.ServeHTTP(w, r)
}

func (s *stamps) span(ep string) (first, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.t[ep]
	if len(ts) == 0 {
		return
	}
	return ts[0], ts[len(ts)-1]
}

// Streaming figure: one file of streamBytes from the simulator.
const streamBytes = 512 << 20

// BenchmarkStreaming compares moving one 512 MiB file from the simulated tenant (loopback HTTP,
// the same generator on every side) through Client.Download into the local store (SHA-256 and
// CRC32C while streaming, create-only, fsynced) with a raw loopback io.Copy of the same bytes:
//
//	raw-discard    GET → io.Discard
//	raw-file       GET → a file (no fsync, like curl -o)
//	raw-file-sync  GET → a file, then fsync (the same durability as the store)
//	store          Download → store.Create on disk
//	store-tmpfs    Download → store.Create on tmpfs (no flush cost)
//
// Each reports MB/s (10^6 bytes per second).
func BenchmarkStreaming(b *testing.B) {
	sim := cortexsim.New(cortexsim.Options{Product: cortexsim.XSOAR8, Seed: 5})
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "done", Files: []cortexsim.FileSpec{{Name: "big.bin", Size: streamBytes}}})
	entry := sim.Files(id)[0].EntryID
	srv := newLoopback(b, sim)
	url := srv.URL + "/xsoar/entry/download/" + escapeEntry(entry)
	get := func(ctx context.Context, w io.Writer) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("x-xdr-auth-id", sim.KeyID())
		req.Header.Set("Authorization", sim.Key())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(w, resp.Body)
		if err != nil || n != streamBytes {
			b.Fatalf("raw copy: %d bytes, %v", n, err)
		}
	}
	mbps := func(b *testing.B) {
		b.Helper()
		b.ReportMetric(float64(streamBytes)*float64(b.N)/b.Elapsed().Seconds()/1e6, "MB/s")
	}
	b.Run("raw-discard", func(b *testing.B) {
		b.SetBytes(streamBytes)
		for b.Loop() {
			get(b.Context(), io.Discard)
		}
		mbps(b)
	})
	for _, fsync := range []bool{false, true} {
		name := "raw-file"
		if fsync {
			name = "raw-file-sync"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(streamBytes)
			i := 0
			for b.Loop() {
				b.StopTimer()
				syncDisk()
				b.StartTimer()
				i++
				f, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
				if err != nil {
					b.Fatal(err)
				}
				get(b.Context(), f)
				if fsync {
					if err := f.Sync(); err != nil {
						b.Fatal(err)
					}
				}
				_ = f.Close()
			}
			mbps(b)
		})
	}
	stores := map[string]string{"store": ""}
	if shm := tmpfsDir(b); shm != "" {
		stores["store-tmpfs"] = shm
	}
	for _, name := range []string{"store", "store-tmpfs"} {
		dir, ok := stores[name]
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			if dir == "" {
				dir = b.TempDir()
			}
			logger := slog.New(slog.DiscardHandler)
			client, err := fetch.New(fetch.Config{BaseURL: srv.URL, KeyID: sim.KeyID(), Key: sim.Key(), Product: fetch.XSOAR8,
				RequestsPerSecond: -1, Logger: logger}, &http.Client{})
			if err != nil {
				b.Fatal(err)
			}
			st, err := store.NewLocal(dir, store.Options{Logger: logger})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(streamBytes)
			i := 0
			for b.Loop() {
				b.StopTimer()
				syncDisk()
				b.StartTimer()
				i++
				err := client.Download(b.Context(), entry, func(_ fetch.FileMeta, r io.Reader) error {
					w, err := st.Create(b.Context(), fmt.Sprintf("stream/%d/big.bin", i), r, store.WriteOptions{})
					if err == nil && w.Size != streamBytes {
						err = fmt.Errorf("stored %d bytes", w.Size)
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			mbps(b)
			b.StopTimer()
			_ = os.RemoveAll(filepath.Join(dir, "objects", "stream"))
		})
	}
}

func escapeEntry(id string) string { return strings.ReplaceAll(id, "@", "%40") }
