package store

import (
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Group commit of the local backend.
//
// A local Create needs two durability barriers: its content and sidecar files durable before the
// link that commits the object (so that no crash can expose a partial object), and the link, the
// sidecar's name and any directories it created durable before Create returns. Each barrier is a
// handful of fsyncs of a few milliseconds, and concurrent fsyncs of the same directory serialise
// on its lock, so Creates that each synced on their own topped out at a few hundred per second.
//
// Instead, Creates hand their barrier to a syncGroup: one of the waiting Creates (the leader) takes
// every barrier queued so far and issues the union of their fsyncs at once, in parallel, each
// directory once. From syncfsMin items on, one syncfs(2) of the file system replaces them: a single
// journal commit instead of one per file (measured: about 40 % more accepted jobs per second on
// this machine's disk); its failure fails every Create of the batch. Creates that arrive while a
// batch is being synced queue for the next one. Every Create still returns only after its own
// files and directories were fsynced successfully after it wrote them; a failed fsync fails exactly
// the Creates that needed it.

// groupSyncMax is the content size above which a Create fsyncs its content itself rather than in
// the shared batch, so that small Creates (job records, JSON documents) never wait for a large
// file's flush.
const groupSyncMax = 1 << 20

// maxParallelSyncs bounds the fsyncs a leader has in flight.
const maxParallelSyncs = 64

// syncfsMin is the batch size from which one syncfs(2) of the whole file system replaces the
// batch's individual fsyncs: one journal commit instead of one per file.
const syncfsMin = 8

func syncWhole(f *os.File, dir string) error {
	if f == nil {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		f = d
	}
	return syncAll(f)
}

// syncFile and syncPath are the fsyncs; tests replace them to inject failures.
var (
	syncFile = func(f *os.File) error { return f.Sync() }
	syncPath = syncDir
	syncAll  = func(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
)

// syncReq is one Create's barrier.
type syncReq struct {
	files []*os.File // fsynced (data and inode)
	dirs  []string   // fsynced (entries)
	// fresh are directories this process created whose parent is in dirs: once the barrier
	// succeeds their entries are durable and later Creates need not sync their parents.
	fresh []string
}

type waiter struct {
	req  syncReq
	err  error
	wake chan bool // true: lead the next batch; false: done, err is set
}

// syncGroup batches barriers. The zero value is not usable; see newSyncGroup.
type syncGroup struct {
	mu      sync.Mutex
	busy    bool // a leader is syncing a batch
	pending []*waiter
	fresh   map[string]struct{} // directories created by this process, not yet known durable
	batches int                 // batches synced (tests)
}

func newSyncGroup() *syncGroup { return &syncGroup{fresh: make(map[string]struct{})} }

// barrier returns once every file and directory of req has been fsynced after the call began.
func (g *syncGroup) barrier(req syncReq) error {
	if len(req.files) == 0 && len(req.dirs) == 0 {
		return nil
	}
	w := &waiter{req: req, wake: make(chan bool, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, w)
	if g.busy {
		g.mu.Unlock()
		if lead := <-w.wake; !lead {
			return w.err
		}
		g.mu.Lock() // leadership was handed over: busy is still true
	}
	g.busy = true
	batch := g.pending
	g.pending = nil
	g.mu.Unlock()

	g.sync(batch)

	g.mu.Lock()
	g.batches++
	for _, o := range batch {
		if o.err == nil {
			for _, d := range o.req.fresh {
				delete(g.fresh, d)
			}
		}
	}
	if len(g.pending) > 0 {
		g.pending[0].wake <- true // the first waiter leads the next batch
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	for _, o := range batch {
		if o != w {
			o.wake <- false
		}
	}
	return w.err
}

// sync fsyncs the union of the batch's files and directories in parallel and sets each waiter's
// error to the first failure among its own items.
func (g *syncGroup) sync(batch []*waiter) {
	type item struct {
		f   *os.File
		dir string
		err error
	}
	var items []*item
	dirs := make(map[string]*item)
	owned := make([][]*item, len(batch))
	for i, w := range batch {
		for _, f := range w.req.files {
			it := &item{f: f}
			items = append(items, it)
			owned[i] = append(owned[i], it)
		}
		for _, d := range w.req.dirs {
			it := dirs[d]
			if it == nil {
				it = &item{dir: d}
				dirs[d] = it
				items = append(items, it)
			}
			owned[i] = append(owned[i], it)
		}
	}
	if len(items) >= syncfsMin && syncAll != nil {
		err := syncWhole(items[0].f, items[0].dir)
		for _, it := range items {
			it.err = err
		}
		items = nil
	}
	sem := make(chan struct{}, maxParallelSyncs)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if it.f != nil {
				it.err = syncFile(it.f)
			} else {
				it.err = syncPath(it.dir)
			}
		})
	}
	wg.Wait()
	for i, w := range batch {
		var errs []error
		for _, it := range owned[i] {
			if it.err != nil {
				errs = append(errs, it.err)
			}
		}
		if len(errs) > 0 {
			w.err = errs[0]
		}
	}
}

// prepareDir makes dir (below base) exist and returns the directories a barrier must fsync for a
// new entry in dir to be durable: dir itself and the parent of every directory on the path that
// this process created and has not seen durable yet (by this Create or a concurrent one), and those
// fresh directories. Directories that existed when the process started are taken as durable.
func (l *localBackend) prepareDir(base, dir string) (syncDirs, fresh []string, err error) {
	var missing []string
	for d := dir; d != base && len(d) > len(base); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil && fi.IsDir() {
			break
		}
		missing = append(missing, d)
	}
	g := l.group
	if len(missing) > 0 {
		// Marked before they are created, so that a concurrent Create that finds them existing
		// also syncs their parents until a barrier has.
		g.mu.Lock()
		for _, d := range missing {
			g.fresh[d] = struct{}{}
		}
		g.mu.Unlock()
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, nil, err
		}
	}
	syncDirs = []string{dir}
	g.mu.Lock()
	for d := dir; d != base && len(d) > len(base); d = filepath.Dir(d) {
		if _, ok := g.fresh[d]; ok {
			fresh = append(fresh, d)
			syncDirs = append(syncDirs, filepath.Dir(d))
		}
	}
	g.mu.Unlock()
	return syncDirs, fresh, nil
}
