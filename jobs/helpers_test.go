package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"casearchiver/archive"
	"casearchiver/store"
)

// memStore is an in-memory RecordStore with the create-only semantics of store.Store.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	creates int
	// failCreate, when set, may fail a Create before anything is stored.
	failCreate func(key string) error
}

func newMemStore() *memStore { return &memStore{objects: make(map[string][]byte)} }

func (s *memStore) Create(ctx context.Context, key string, r io.Reader, _ store.WriteOptions) (store.Written, error) {
	if err := ctx.Err(); err != nil {
		return store.Written{}, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return store.Written{}, fmt.Errorf("store: create %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failCreate != nil {
		if err := s.failCreate(key); err != nil {
			return store.Written{}, err
		}
	}
	if _, ok := s.objects[key]; ok {
		return store.Written{}, fmt.Errorf("store: create %s: %w", key, store.ErrExists)
	}
	s.objects[key] = b
	s.creates++
	return store.Written{Key: key, Size: int64(len(b))}, nil
}

func (s *memStore) Open(_ context.Context, key string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return nil, fmt.Errorf("store: open %s: %w", key, store.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) List(_ context.Context, prefix, delimiter string) iter.Seq2[store.Object, error] {
	return func(yield func(store.Object, error) bool) {
		s.mu.Lock()
		var keys []string
		for k := range s.objects {
			if strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
		}
		s.mu.Unlock()
		slices.Sort(keys)
		seen := map[string]bool{}
		for _, k := range keys {
			o := store.Object{Key: k}
			if delimiter != "" {
				if i := strings.Index(k[len(prefix):], delimiter); i >= 0 {
					p := k[:len(prefix)+i+len(delimiter)]
					if seen[p] {
						continue
					}
					seen[p] = true
					o = store.Object{Key: p, IsPrefix: true}
				}
			}
			if !yield(o, nil) {
				return
			}
		}
	}
}

func (s *memStore) keys(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (s *memStore) put(t *testing.T, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = b
}

// readResult reads a job's result.json from rs.
func readResult(t *testing.T, rs RecordStore, id string) (Job, bool) {
	t.Helper()
	var j Job
	err := getJSON(t.Context(), rs, resultKey(id), &j)
	if err != nil {
		if strings.Contains(err.Error(), store.ErrNotFound.Error()) {
			return Job{}, false
		}
		t.Fatalf("read result of %s: %v", id, err)
	}
	return j, true
}

// runnerFunc adapts a function to Runner and counts calls by incident.
type runnerFunc struct {
	fn    func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error)
	mu    sync.Mutex
	calls map[string]int
}

func newRunner(fn func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error)) *runnerFunc {
	return &runnerFunc{fn: fn, calls: make(map[string]int)}
}

func (r *runnerFunc) Archive(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
	r.mu.Lock()
	r.calls[req.IncidentID]++
	r.mu.Unlock()
	return r.fn(ctx, req, p)
}

func (r *runnerFunc) callCount() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.calls)
}

// okRunner archives instantly: one object of 10 bytes.
func okRunner() *runnerFunc {
	return newRunner(func(_ context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
		p.Add(10)
		return archive.Result{Version: "v1", ManifestPath: "incidents/" + req.IncidentID + "/v1/manifest.json", Objects: 1, Bytes: 10}, nil
	})
}

func testLogger(testing.TB) *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// newTestLocal returns a started Local with fast backoff, stopped at the end of the test.
func newTestLocal(t *testing.T, rs RecordStore, r Runner, mod func(*LocalConfig)) *Local {
	t.Helper()
	cfg := LocalConfig{
		Store: rs, Runner: r, Logger: testLogger(t), Workers: 4,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, PollInterval: 10 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	q, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = q.Stop(ctx)
	})
	return q
}

func waitCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it is true or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
