package jobs

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"casearchiver/archive"
	"casearchiver/store"
)

// BenchmarkLocalSubmit measures the accept path (one create-only record on the local store) with
// the workers archiving (a no-op runner) at the same time. Run with -cpu 2 for the Cloud Run size.
func BenchmarkLocalSubmit(b *testing.B) {
	rs, err := store.NewLocal(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkSubmit(b, rs)
}

// BenchmarkLocalSubmitMemory is the same over an in-memory store: the queue's own cost.
func BenchmarkLocalSubmitMemory(b *testing.B) { benchmarkSubmit(b, newMemStore()) }

// BenchmarkStoreCreate is the local store's create-only write alone, for comparison.
func BenchmarkStoreCreate(b *testing.B) {
	rs, err := store.NewLocal(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := requestKey(fmt.Sprintf("20261204T153000Z-%08x", n.Add(1)))
			if _, err := rs.Create(context.Background(), key, strings.NewReader(`{"job_id":"x"}`), store.WriteOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

func benchmarkSubmit(b *testing.B, rs RecordStore) {
	b.Helper()
	r := newRunner(func(context.Context, archive.Request, *archive.Progress) (archive.Result, error) {
		return archive.Result{Version: "v1"}, nil
	})
	q, err := NewLocal(LocalConfig{Store: rs, Runner: r, Logger: testLogger(nil)})
	if err != nil {
		b.Fatal(err)
	}
	if err := q.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = q.Stop(context.Background()) }()
	var n atomic.Int64
	b.SetParallelism(16) // like concurrent HTTP requests
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := archive.Request{IncidentID: fmt.Sprint(n.Add(1)), Reason: archive.ReasonIncidentClosed}
			if _, _, err := q.Submit(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "submits/s")
}
