package archive_test

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch/cortexsim"
)

// BenchmarkArchive1GiBFile archives a case whose war room holds one 1 GiB file into the local store
// and reports the peak Go heap while it streams (the process-level RSS figure is TestPerfRSS in
// cmd/server). Run: go test -run '^$' -bench Archive1GiB -benchtime 1x ./archive/
func BenchmarkArchive1GiBFile(b *testing.B) {
	r := newRig(b, "xsoar8", "local")
	const size = 1 << 30
	for b.Loop() {
		b.StopTimer()
		id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 3,
			Files: []cortexsim.FileSpec{{Name: "disk.img", Size: size}}})
		r.sim.Truth(id) // hash the file up front so the simulator's first-use hashing is not measured
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			var m runtime.MemStats
			for {
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		b.StartTimer()
		res, err := r.arch.Archive(b.Context(), archive.Request{IncidentID: id, Reason: archive.ReasonManual}, nil)
		b.StopTimer()
		close(stop)
		<-done
		if err != nil || len(res.Incomplete) != 0 || res.Bytes < size {
			b.Fatalf("archive: %v %+v", err, res)
		}
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), before.HeapInuse))/(1<<20), "peak-heap-growth-MiB")
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		b.SetBytes(size)
		b.StartTimer()
	}
}
