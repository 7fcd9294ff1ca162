package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/archive"
	"casearchiver/store"
)

// LocalConfig configures a [Local] queue. Store, Runner and Logger are required; zero values of the
// other fields take the defaults named in their comments.
type LocalConfig struct {
	Store  RecordStore
	Runner Runner
	Logger *slog.Logger
	// Registerer receives the queue's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Retryable reports whether a failed attempt may be retried (archive.Retryable). Nil retries nothing.
	Retryable func(error) bool
	// Workers is the number of jobs run at once. Default 4.
	Workers int
	// MaxAttempts bounds the attempts of a job, counted across restarts. Default 5.
	MaxAttempts int
	// MaxStarts is the number of started attempts after which a job found unfinished at Start is
	// recorded as failed instead of run again (it probably brings the process down). Default 10.
	MaxStarts int
	// BackoffBase and BackoffMax shape the retry delay: BackoffBase·2^(attempt-1), capped at
	// BackoffMax, with jitter (uniform in [d/2, d]). Defaults 2 s and 2 min.
	BackoffBase, BackoffMax time.Duration
	// JobTimeout bounds one attempt. Default 30 min.
	JobTimeout time.Duration
	// RecoverWindow is how far back (by job id time) Start looks for unfinished jobs. Default 7 days.
	RecoverWindow time.Duration
	// KeepFinished is how many finished jobs stay in memory; older ones are read back from the
	// store by Get. Default 10,000.
	KeepFinished int
	// PollInterval is how often Wait re-reads a job that is not in memory. Default 1 s.
	PollInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *LocalConfig) setDefaults() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("missing Store"))
	}
	if c.Runner == nil {
		errs = append(errs, errors.New("missing Runner"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("missing Logger"))
	}
	if c.Retryable == nil {
		c.Retryable = func(error) bool { return false }
	}
	setDefault(&c.Workers, 4)
	setDefault(&c.MaxAttempts, 5)
	setDefault(&c.MaxStarts, 10)
	setDefault(&c.BackoffBase, 2*time.Second)
	setDefault(&c.BackoffMax, 2*time.Minute)
	setDefault(&c.JobTimeout, 30*time.Minute)
	setDefault(&c.RecoverWindow, 7*24*time.Hour)
	setDefault(&c.KeepFinished, 10_000)
	setDefault(&c.PollInterval, time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Workers < 0 || c.MaxAttempts < 0 || c.MaxStarts < 0 || c.BackoffBase < 0 || c.BackoffMax < c.BackoffBase {
		errs = append(errs, errors.New("negative Workers, MaxAttempts, MaxStarts or backoff, or BackoffMax < BackoffBase"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jobs: config: %w", err)
	}
	return nil
}

func setDefault[T int | time.Duration](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// Local is the in-process queue (QUEUE=local): a pool of workers fed from memory, with every job
// recorded in the store before Submit returns so that a restart resumes what was accepted.
//
// Call Start once to resume unfinished jobs and start the workers, and Stop to drain. Submit may be
// called before Start; its jobs wait for the workers.
type Local struct {
	cfg LocalConfig
	log *slog.Logger
	m   *metrics

	runCtx    context.Context // parent of every attempt; cancelled when Stop runs out of time
	cancelRun context.CancelFunc
	quit      chan struct{} // closed by Stop: workers take no more work
	wake      chan struct{} // nudges idle workers
	wg        sync.WaitGroup

	mu       sync.Mutex // guards everything below and the mutable fields of every localJob; never held during I/O
	started  bool
	stopping bool
	jobs     map[string]*localJob // by job id: accepted (or being accepted) and recently finished
	active   map[string]*localJob // by incident id: the queued or running job submits coalesce into
	pending  []*localJob          // FIFO of jobs ready to run
	backoff  map[*localJob]*time.Timer
	finished []string // ids of finished jobs in memory, oldest first
}

// localJob is a job in memory. The first block is fixed once the job is visible to other goroutines
// (except id, see Submit); the rest is guarded by Local.mu.
type localJob struct {
	id       string
	req      archive.Request
	created  time.Time
	ready    chan struct{} // closed once request.json is written (or failed to be: readyErr)
	readyErr error
	done     chan struct{} // closed when the job is finished

	state       State
	attempts    int
	started     time.Time
	finished    time.Time
	queuedSince time.Time
	progress    *archive.Progress
	result      *archive.Result
	errMsg      string
}

// NewLocal returns a Local queue. It does not touch the store; Start does.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	q := &Local{
		cfg:     cfg,
		log:     cfg.Logger.With(slog.String("component", "jobs"), slog.String("queue", "local")),
		quit:    make(chan struct{}),
		wake:    make(chan struct{}, cfg.Workers),
		jobs:    make(map[string]*localJob),
		active:  make(map[string]*localJob),
		backoff: make(map[*localJob]*time.Timer),
	}
	q.runCtx, q.cancelRun = context.WithCancel(context.Background())
	m, err := newMetrics(cfg.Registerer, "local", gauges{queued: q.queuedCount, oldestQueued: q.oldestQueuedAge})
	if err != nil {
		return nil, err
	}
	q.m = m
	return q, nil
}

var _ Queue = (*Local)(nil)

// Submit records a job for req (one create-only write) and queues it, or returns the queued or
// running job of the same incident with created=false. The returned job is durable: it runs even if
// the process dies before it starts.
func (q *Local) Submit(ctx context.Context, req archive.Request) (Job, bool, error) {
	if err := validateRequest(req); err != nil {
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, err
	}
	now := q.cfg.Now().UTC()
	q.mu.Lock()
	if q.stopping {
		q.mu.Unlock()
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, ErrStopped
	}
	if j := q.active[req.IncidentID]; j != nil {
		q.mu.Unlock()
		select {
		case <-j.ready:
		case <-ctx.Done():
			q.m.submits.WithLabelValues("error").Inc()
			return Job{}, false, fmt.Errorf("jobs: submit %s: %w", req.IncidentID, ctx.Err())
		}
		if j.readyErr != nil {
			q.m.submits.WithLabelValues("error").Inc()
			return Job{}, false, fmt.Errorf("jobs: submit %s: %w", req.IncidentID, j.readyErr)
		}
		q.m.submits.WithLabelValues("coalesced").Inc()
		return q.snapshot(j), false, nil
	}
	// Reserve the incident and the id before writing, so that concurrent submits coalesce and the
	// recovery scan in Start does not pick the job up a second time.
	j := &localJob{
		id: newID(now), req: req, created: now, ready: make(chan struct{}), done: make(chan struct{}),
		state: StateQueued, queuedSince: now, progress: new(archive.Progress),
	}
	q.jobs[j.id] = j
	q.active[req.IncidentID] = j
	q.mu.Unlock()

	err := q.writeRequest(ctx, j)
	if err != nil {
		q.mu.Lock()
		delete(q.jobs, j.id)
		if q.active[req.IncidentID] == j {
			delete(q.active, req.IncidentID)
		}
		q.mu.Unlock()
		j.readyErr = err
		close(j.ready)
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, fmt.Errorf("jobs: submit %s: %w", req.IncidentID, err)
	}
	close(j.ready)
	q.mu.Lock()
	q.enqueueLocked(j)
	snap := q.snapshotLocked(j)
	q.mu.Unlock()
	q.m.submits.WithLabelValues("created").Inc()
	q.log.LogAttrs(ctx, slog.LevelInfo, "job accepted", slog.String("job_id", snap.ID),
		slog.String("incident_id", req.IncidentID), slog.String("reason", req.Reason))
	return snap, true, nil
}

// writeRequest writes j's request.json. A random id that collides with an existing job is replaced.
func (q *Local) writeRequest(ctx context.Context, j *localJob) error {
	id := j.id
	for try := 0; ; try++ {
		err := putJSON(ctx, q.cfg.Store, requestKey(id), requestRecord{ID: id, CreatedAt: j.created, Request: j.req})
		if err == nil || !errors.Is(err, store.ErrExists) || try == 3 {
			return err
		}
		newid := newID(j.created)
		q.mu.Lock()
		delete(q.jobs, id)
		j.id, id = newid, newid
		q.jobs[id] = j
		q.mu.Unlock()
	}
}

// Get returns the job from memory, or from its records in the store.
func (q *Local) Get(ctx context.Context, id string) (Job, error) {
	q.mu.Lock()
	j := q.jobs[id]
	q.mu.Unlock()
	if j != nil {
		select {
		case <-j.ready:
			if j.readyErr == nil {
				return q.snapshot(j), nil
			}
			return Job{}, ErrNotFound
		default:
			// Still being accepted: Submit has not returned it to anyone yet.
			return Job{}, ErrNotFound
		}
	}
	return loadJob(ctx, q.cfg.Store, id)
}

// Wait returns the job once it is finished or when ctx is done, whichever comes first.
func (q *Local) Wait(ctx context.Context, id string) (Job, error) {
	q.mu.Lock()
	j := q.jobs[id]
	q.mu.Unlock()
	if j == nil {
		return pollJob(ctx, q.cfg.Store, id, q.cfg.PollInterval)
	}
	select {
	case <-j.done:
	case <-ctx.Done():
	}
	return q.Get(context.WithoutCancel(ctx), id)
}

// pollJob re-reads a job's records until it is finished or ctx is done.
func pollJob(ctx context.Context, rs RecordStore, id string, every time.Duration) (Job, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		j, err := loadJob(context.WithoutCancel(ctx), rs, id)
		if err != nil || j.State.Finished() {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, nil
		case <-t.C:
		}
	}
}

// Start resumes the unfinished jobs found in the store (request.json without result.json, ids
// within RecoverWindow) and starts the workers. ctx bounds the recovery scan only.
func (q *Local) Start(ctx context.Context) error {
	q.mu.Lock()
	if q.started || q.stopping {
		q.mu.Unlock()
		return errors.New("jobs: start: already started or stopped")
	}
	q.started = true
	q.mu.Unlock()
	n, err := q.recover(ctx)
	if err != nil {
		q.mu.Lock()
		q.started = false
		q.mu.Unlock()
		return fmt.Errorf("jobs: start: %w", err)
	}
	q.log.LogAttrs(ctx, slog.LevelInfo, "job queue started", slog.Int("workers", q.cfg.Workers), slog.Int("resumed", n))
	for range q.cfg.Workers {
		q.wg.Add(1)
		go q.worker()
	}
	return nil
}

// recover queues the unfinished jobs of the last RecoverWindow, oldest first.
func (q *Local) recover(ctx context.Context) (int, error) {
	now := q.cfg.Now().UTC()
	found := make(map[string]*jobKeys)
	// Job ids start with their UTC date, so one listing per day covers the window.
	for d := now.Add(-q.cfg.RecoverWindow).Truncate(24 * time.Hour); !d.After(now.Add(24 * time.Hour)); d = d.Add(24 * time.Hour) {
		keys, err := listJobs(ctx, q.cfg.Store, jobsPrefix+d.Format("20060102"))
		if err != nil {
			return 0, err
		}
		for id, k := range keys {
			if k.request && !k.result {
				found[id] = k
			}
		}
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range found {
			if !yield(id) {
				return
			}
		}
	})
	resumed := 0
	for _, id := range ids {
		q.mu.Lock()
		_, known := q.jobs[id]
		q.mu.Unlock()
		if known {
			continue
		}
		var rr requestRecord
		if err := getJSON(ctx, q.cfg.Store, requestKey(id), &rr); err != nil {
			return resumed, err
		}
		attempts := found[id].attempts
		j := &localJob{
			id: id, req: rr.Request, created: rr.CreatedAt, ready: make(chan struct{}), done: make(chan struct{}),
			state: StateQueued, attempts: attempts, queuedSince: rr.CreatedAt, progress: new(archive.Progress),
		}
		close(j.ready)
		q.mu.Lock()
		q.jobs[id] = j
		if q.active[j.req.IncidentID] == nil {
			q.active[j.req.IncidentID] = j
		}
		q.mu.Unlock()
		if attempts >= q.cfg.MaxStarts {
			q.log.LogAttrs(ctx, slog.LevelError, "job abandoned: its attempts never finished",
				slog.String("job_id", id), slog.String("incident_id", j.req.IncidentID), slog.Int("attempts", attempts))
			q.finish(j, StateFailed, nil, fmt.Sprintf("abandoned after %d attempts that did not finish (the process stopped during each)", attempts))
			continue
		}
		q.mu.Lock()
		q.enqueueLocked(j)
		q.mu.Unlock()
		resumed++
		q.log.LogAttrs(ctx, slog.LevelInfo, "job resumed", slog.String("job_id", id),
			slog.String("incident_id", j.req.IncidentID), slog.Int("attempts", attempts))
	}
	return resumed, nil
}

// Stop takes no more work and lets the running jobs finish until ctx is done; then it cancels them.
// Jobs that did not finish keep no result record and resume on the next Start. Submit fails with
// ErrStopped afterwards.
func (q *Local) Stop(ctx context.Context) error {
	q.mu.Lock()
	if q.stopping {
		q.mu.Unlock()
		return nil
	}
	q.stopping = true
	for j, t := range q.backoff {
		t.Stop()
		delete(q.backoff, j)
	}
	q.mu.Unlock()
	close(q.quit)

	done := make(chan struct{})
	go func() {
		q.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		q.cancelRun()
		q.log.LogAttrs(ctx, slog.LevelInfo, "job queue stopped")
		return nil
	case <-ctx.Done():
		q.cancelRun()
		<-done
		q.log.LogAttrs(ctx, slog.LevelWarn, "job queue stopped with jobs interrupted; they resume on the next start")
		return fmt.Errorf("jobs: stop: running jobs interrupted: %w", ctx.Err())
	}
}

func (q *Local) enqueueLocked(j *localJob) {
	j.state = StateQueued
	q.pending = append(q.pending, j)
	select {
	case q.wake <- struct{}{}:
	default: // every worker already has a wake-up pending
	}
}

func (q *Local) worker() {
	defer q.wg.Done()
	for {
		j, attempt, p := q.next()
		if j == nil {
			return
		}
		q.run(j, attempt, p)
	}
}

// next takes the oldest pending job and marks it running; nil once the queue stops.
func (q *Local) next() (*localJob, int, *archive.Progress) {
	for {
		q.mu.Lock()
		if q.stopping {
			q.mu.Unlock()
			return nil, 0, nil
		}
		if len(q.pending) > 0 {
			j := q.pending[0]
			q.pending[0] = nil
			q.pending = q.pending[1:]
			now := q.cfg.Now().UTC()
			j.state = StateRunning
			j.attempts++
			if j.started.IsZero() {
				j.started = now
			}
			j.progress = new(archive.Progress)
			attempt, p := j.attempts, j.progress
			q.mu.Unlock()
			return j, attempt, p
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.quit:
			return nil, 0, nil
		}
	}
}

// errPanic marks an attempt that panicked; it is never retried.
var errPanic = errors.New("archive panicked")

// run makes one attempt at j and records what follows from it.
func (q *Local) run(j *localJob, attempt int, p *archive.Progress) {
	q.m.running.Inc()
	defer q.m.running.Dec()
	log := q.log.With(slog.String("job_id", j.id), slog.String("incident_id", j.req.IncidentID), slog.Int("attempt", attempt))
	if err := putJSON(q.runCtx, q.cfg.Store, attemptKey(j.id, attempt), attemptRecord{Attempt: attempt, StartedAt: q.cfg.Now().UTC()}); err != nil && !errors.Is(err, store.ErrExists) {
		// Only the crash-loop guard depends on this record; the attempt goes ahead.
		log.LogAttrs(q.runCtx, slog.LevelWarn, "job attempt not recorded", slog.String("error", err.Error()))
	}
	ctx, cancel := context.WithTimeout(q.runCtx, q.cfg.JobTimeout)
	res, err := runArchive(ctx, log, q.cfg.Runner, j.req, p)
	cancel()
	switch {
	case q.runCtx.Err() != nil:
		q.mu.Lock()
		j.state = StateQueued
		q.mu.Unlock()
		log.LogAttrs(context.Background(), slog.LevelWarn, "job interrupted by shutdown; it resumes on the next start")
	case err == nil:
		log.LogAttrs(ctx, slog.LevelInfo, "job succeeded", slog.String("version", res.Version),
			slog.Bool("skipped", res.Skipped), slog.Int("objects", res.Objects), slog.Int64("bytes", res.Bytes))
		q.finish(j, StateSucceeded, &res, "")
	case !errors.Is(err, errPanic) && q.cfg.Retryable(err) && attempt < q.cfg.MaxAttempts:
		d := backoff(q.cfg.BackoffBase, q.cfg.BackoffMax, attempt)
		log.LogAttrs(ctx, slog.LevelWarn, "job attempt failed; retrying", slog.String("error", SafeMessage(err)), slog.Duration("backoff", d))
		q.m.retries.Inc()
		q.mu.Lock()
		j.state = StateQueued
		j.queuedSince = q.cfg.Now().UTC()
		if !q.stopping {
			q.backoff[j] = time.AfterFunc(d, func() { q.retry(j) })
		}
		q.mu.Unlock()
	default:
		log.LogAttrs(ctx, slog.LevelError, "job failed", slog.String("error", SafeMessage(err)))
		q.finish(j, StateFailed, nil, SafeMessage(err))
	}
}

// retry moves j from its backoff timer to the pending queue.
func (q *Local) retry(j *localJob) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.backoff[j]; !ok || q.stopping {
		return
	}
	delete(q.backoff, j)
	q.enqueueLocked(j)
}

// runArchive calls the runner and turns a panic into errPanic.
func runArchive(ctx context.Context, log *slog.Logger, r Runner, req archive.Request, p *archive.Progress) (res archive.Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			log.LogAttrs(ctx, slog.LevelError, "archive panicked", slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("%w: internal error", errPanic)
		}
	}()
	return r.Archive(ctx, req, p)
}

// backoff returns the delay before attempt+1: base·2^(attempt-1) capped at limit, jittered in [d/2, d].
func backoff(base, limit time.Duration, attempt int) time.Duration {
	d := limit
	if attempt-1 < 32 {
		if e := base << (attempt - 1); e > 0 && e < limit {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter needs no cryptographic randomness
}

// finish records j's outcome in the store (durably first, so that a Wait that returns has its
// result.json written), then in memory.
func (q *Local) finish(j *localJob, state State, res *archive.Result, msg string) {
	now := q.cfg.Now().UTC()
	q.mu.Lock()
	j.state, j.finished, j.result, j.errMsg = state, now, res, msg
	snap := q.snapshotLocked(j)
	q.mu.Unlock()

	// The outcome is recorded even while Stop cancels the attempts: it is a few bytes.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(q.runCtx), 30*time.Second)
	defer cancel()
	if err := writeResult(ctx, q.cfg.Store, snap); err != nil {
		q.log.LogAttrs(ctx, slog.LevelError, "job result not recorded; the job runs again after a restart",
			slog.String("job_id", j.id), slog.String("error", err.Error()))
	}

	q.mu.Lock()
	if q.active[j.req.IncidentID] == j {
		delete(q.active, j.req.IncidentID)
	}
	q.finished = append(q.finished, j.id)
	for len(q.finished) > q.cfg.KeepFinished {
		delete(q.jobs, q.finished[0])
		q.finished = q.finished[1:]
	}
	q.mu.Unlock()
	q.m.outcomes.WithLabelValues(string(state)).Inc()
	q.m.age.Observe(now.Sub(j.created).Seconds())
	close(j.done)
}

// writeResult writes result.json, retrying a few times: losing it means running the job again.
// An existing result (a concurrent or earlier run finished first) counts as written.
func writeResult(ctx context.Context, rs RecordStore, j Job) error {
	var err error
	for try := range 4 {
		if try > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(backoff(200*time.Millisecond, 2*time.Second, try)):
			}
		}
		err = putJSON(ctx, rs, resultKey(j.ID), j)
		if err == nil || errors.Is(err, store.ErrExists) {
			return nil
		}
	}
	return err
}

func (q *Local) snapshot(j *localJob) Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.snapshotLocked(j)
}

func (q *Local) snapshotLocked(j *localJob) Job {
	objects, bytes := j.progress.Snapshot()
	out := Job{
		ID: j.id, IncidentID: j.req.IncidentID, State: j.state, Attempts: j.attempts,
		CreatedAt: j.created, StartedAt: j.started, FinishedAt: j.finished, Request: j.req,
		Progress: Progress{Objects: objects, Bytes: bytes}, Error: j.errMsg,
	}
	if j.result != nil {
		r := *j.result
		out.Result = &r
	}
	return out
}

func (q *Local) queuedCount() float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return float64(len(q.pending) + len(q.backoff))
}

func (q *Local) oldestQueuedAge() float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var oldest time.Time
	for _, j := range q.pending {
		if oldest.IsZero() || j.queuedSince.Before(oldest) {
			oldest = j.queuedSince
		}
	}
	for j := range q.backoff {
		if oldest.IsZero() || j.queuedSince.Before(oldest) {
			oldest = j.queuedSince
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return q.cfg.Now().Sub(oldest).Seconds()
}
