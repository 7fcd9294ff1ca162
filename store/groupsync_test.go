package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestLocalGroupCommit runs many concurrent Creates, some racing for the same keys: each key is
// created exactly once, every object reads back with its sidecar, and the barriers were shared
// (fewer fsync batches than barriers).
func TestLocalGroupCommit(t *testing.T) { //nolint:paralleltest // counts the store's batches
	s, err := NewLocal(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	g := s.b.(*localBackend).group
	const n, racers = 64, 3
	var created, exists atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		for r := range racers {
			wg.Go(func() {
				key := fmt.Sprintf("jobs/2026120%d/job-%03d/request.json", i%3, i)
				_, err := s.Create(t.Context(), key, strings.NewReader(fmt.Sprintf(`{"i":%d,"r":%d}`, i, r)), WriteOptions{ContentType: "application/json"})
				switch {
				case err == nil:
					created.Add(1)
				case errors.Is(err, ErrExists):
					exists.Add(1)
				default:
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if created.Load() != n || exists.Load() != n*(racers-1) {
		t.Fatalf("created %d, exists %d; want %d and %d", created.Load(), exists.Load(), n, n*(racers-1))
	}
	for i := range n {
		key := fmt.Sprintf("jobs/2026120%d/job-%03d/request.json", i%3, i)
		o, err := s.Stat(t.Context(), key)
		if err != nil || o.ContentType != "application/json" || o.SHA256 == "" {
			t.Fatalf("stat %s: %+v %v", key, o, err)
		}
	}
	g.mu.Lock()
	batches := g.batches
	g.mu.Unlock()
	// Each Create took two barriers (losers of a race one).
	if barriers := 2*n + n*(racers-1); batches >= barriers {
		t.Errorf("%d fsync batches for %d barriers: not shared", batches, barriers)
	}
	// A Create that made new directories leaves none pending once it returned.
	if _, err := s.Create(t.Context(), "a/b/c/d", strings.NewReader("x"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	for d := range g.fresh {
		if strings.Contains(d, "/a") {
			t.Errorf("directory %s still pending durability after its Create returned", d)
		}
	}
	g.mu.Unlock()
	t.Logf("%d Creates, %d batches", n*racers, batches)
	tmp, _ := os.ReadDir(filepath.Join(s.b.(*localBackend).tmp))
	if len(tmp) != 0 {
		t.Errorf("%d temporary files left", len(tmp))
	}
}

// TestLocalGroupCommitErrors fails the fsync of one directory: exactly the Creates that needed it
// fail, the others in the same batches succeed.
func TestLocalGroupCommitErrors(t *testing.T) { //nolint:paralleltest // replaces syncPath
	s, err := NewLocal(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	old, oldAll := syncPath, syncAll
	t.Cleanup(func() { syncPath, syncAll = old, oldAll })
	syncAll = nil // per-item fsyncs, so that failures can be attributed
	syncPath = func(dir string) error {
		if strings.Contains(dir, "bad") {
			return syscall.EIO
		}
		return old(dir)
	}
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			dir := "good"
			if i%4 == 0 {
				dir = "bad"
			}
			_, errs[i] = s.Create(t.Context(), fmt.Sprintf("%s/%d", dir, i), strings.NewReader("x"), WriteOptions{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (i%4 == 0) != errors.Is(err, syscall.EIO) {
			t.Errorf("create %d: %v", i, err)
		}
	}
}

// TestLocalGroupCommitSyncfsError: when a large batch is flushed with one syncfs(2) and it fails,
// every Create of that batch fails; none reports success without durability.
func TestLocalGroupCommitSyncfsError(t *testing.T) { //nolint:paralleltest // replaces syncAll
	s, err := NewLocal(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	oldAll, oldFile := syncAll, syncFile
	t.Cleanup(func() { syncAll, syncFile = oldAll, oldFile })
	var calls atomic.Int64
	syncAll = func(*os.File) error { calls.Add(1); return syscall.EIO }
	// Slow the individual fsyncs so that concurrent Creates pile up into large batches.
	syncFile = func(f *os.File) error { time.Sleep(5 * time.Millisecond); return oldFile(f) }
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Create(t.Context(), fmt.Sprintf("k/%d", i), strings.NewReader("x"), WriteOptions{})
		})
	}
	wg.Wait()
	if calls.Load() == 0 {
		t.Fatal("no batch was large enough for syncfs")
	}
	failed := 0
	for i, err := range errs {
		if err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("create %d: %v", i, err)
			}
			failed++
			if _, serr := s.Stat(t.Context(), fmt.Sprintf("k/%d", i)); serr == nil {
				t.Logf("create %d failed after its link was made; a retry meets ErrExists and the archive fails, never silently", i)
			}
		}
	}
	if failed == 0 {
		t.Error("a failed syncfs failed no Create")
	}
}
