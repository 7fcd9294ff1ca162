package fetch_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
)

// heapSampler records the peak HeapInuse while a benchmark runs.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func sampleHeap(every time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	runtime.GC()
	h.done.Go(func() {
		var ms runtime.MemStats
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapInuse)
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	})
	return h
}

func (h *heapSampler) Peak() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak
}

// BenchmarkDownload1GiB streams a 1 GiB file from the simulator through Client.Download over
// loopback HTTP. It reports throughput and the peak heap in use, which must stay flat (a few MiB).
func BenchmarkDownload1GiB(b *testing.B) {
	const size = 1 << 30
	for _, verify := range []bool{false, true} {
		name := "discard"
		if verify {
			name = "sha256"
		}
		b.Run(name, func(b *testing.B) {
			sim := cortexsim.New(cortexsim.Options{Product: "xsoar8", Seed: 99})
			id := sim.AddIncident(cortexsim.IncidentSpec{Files: []cortexsim.FileSpec{{Name: "big.bin", Size: size}}})
			entry := sim.Files(id)[0].EntryID
			want := ""
			if verify {
				h := sha256.New()
				_, _ = io.Copy(h, sim.OpenFile(entry))
				want = hex.EncodeToString(h.Sum(nil))
			}
			srv := httptest.NewServer(sim)
			defer srv.Close()
			c, err := fetch.New(fetch.Config{BaseURL: srv.URL, KeyID: sim.KeyID(), Key: sim.Key(), Product: fetch.XSOAR8,
				RequestsPerSecond: -1}, srv.Client())
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 256<<10)
			hs := sampleHeap(10 * time.Millisecond)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				err := c.Download(b.Context(), entry, func(m fetch.FileMeta, r io.Reader) error {
					w := io.Writer(io.Discard)
					h := sha256.New()
					if verify {
						w = h
					}
					n, err := io.CopyBuffer(w, r, buf)
					if err != nil {
						return err
					}
					if n != size || m.Size != size || m.Name != "big.bin" {
						b.Fatalf("got %d bytes, meta %+v", n, m)
					}
					if verify && hex.EncodeToString(h.Sum(nil)) != want {
						b.Fatal("sha256 mismatch")
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(hs.Peak())/(1<<20), "peak-heap-MiB")
		})
	}
}
