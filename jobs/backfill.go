package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/store"
)

// Searcher lists the tenant's incidents (casearchiver/fetch.*Client).
type Searcher interface {
	SearchIncidents(ctx context.Context, f fetch.SearchFilter, fn func(fetch.Incident) error) error
}

// Currency tells whether an incident's newest complete archive is at least as recent as modified.
type Currency interface {
	IsCurrent(ctx context.Context, incidentID string, modified time.Time) (bool, error)
}

// Submitter is the part of a Queue a backfill uses.
type Submitter interface {
	Submit(ctx context.Context, req archive.Request) (Job, bool, error)
}

// DefaultBackfillStatuses are the XSIAM statuses of a closed incident.
var DefaultBackfillStatuses = []string{
	"resolved_threat_handled", "resolved_known_issue", "resolved_duplicate", "resolved_false_positive",
	"resolved_true_positive", "resolved_security_testing", "resolved_other", "resolved_auto",
}

// Filter selects the incidents a backfill archives. Zero fields do not filter, except Statuses,
// which defaults to the configured closed statuses. Time bounds are inclusive.
type Filter struct {
	Statuses     []string  `json:"statuses,omitempty"`
	CreatedFrom  time.Time `json:"created_from,omitzero"`
	CreatedTo    time.Time `json:"created_to,omitzero"`
	ModifiedFrom time.Time `json:"modified_from,omitzero"`
	ModifiedTo   time.Time `json:"modified_to,omitzero"`
	IDs          []string  `json:"incident_ids,omitempty"`
	// DryRun reports what would be enqueued and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Force enqueues incidents whose archive is current too (and makes the archive ignore the skip rule).
	Force bool `json:"force,omitempty"`
}

// BackfillState is where a backfill is.
type BackfillState string

// Backfill states. Incomplete is a backfill that started but has no result record and is not running
// on this instance: it runs on another instance or was interrupted; the next sweep covers what it
// missed.
const (
	BackfillRunning    BackfillState = "running"
	BackfillSucceeded  BackfillState = "succeeded"
	BackfillFailed     BackfillState = "failed"
	BackfillIncomplete BackfillState = "incomplete"
)

// BackfillStatus is the API view of a backfill, and the content of its records.
type BackfillStatus struct {
	ID         string        `json:"backfill_id,omitempty"` // empty for a dry run
	State      BackfillState `json:"state"`
	DryRun     bool          `json:"dry_run"`
	Filter     Filter        `json:"filter"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt time.Time     `json:"finished_at,omitzero"`
	// Found counts the incidents the search returned.
	Found int `json:"found"`
	// Enqueued counts new jobs; Coalesced the incidents that already had a queued or running job.
	Enqueued  int `json:"enqueued"`
	Coalesced int `json:"coalesced"`
	// SkippedCurrent counts incidents whose archive is current; SkippedOpen those not in a closed status.
	SkippedCurrent int `json:"skipped_current"`
	SkippedOpen    int `json:"skipped_open"`
	// Failed counts incidents that could not be checked or submitted; Errors has the first few reasons.
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
	// WouldEnqueue and IncidentIDs report a dry run: how many incidents would be enqueued, and which
	// (at most MaxDryRunIDs; IDsTruncated says when there were more).
	WouldEnqueue int      `json:"would_enqueue,omitempty"`
	IncidentIDs  []string `json:"incident_ids,omitempty"`
	IDsTruncated bool     `json:"ids_truncated,omitempty"`
	// Error says why a failed backfill stopped.
	Error string `json:"error,omitempty"`
}

// BackfillConfig configures a [Backfill]. Searcher, Currency, Queue, Store and Logger are required.
type BackfillConfig struct {
	Searcher Searcher
	Currency Currency
	Queue    Submitter
	Store    RecordStore
	Logger   *slog.Logger
	// DefaultStatuses replaces DefaultBackfillStatuses when a filter names none (for example
	// []string{"done"} on XSOAR).
	DefaultStatuses []string
	// Concurrency is the number of incidents checked and submitted at once. Default 8.
	Concurrency int
	// MaxDryRunIDs bounds the ids a dry run returns. Default 10,000.
	MaxDryRunIDs int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// maxBackfillErrors bounds the reasons kept in a status.
const maxBackfillErrors = 10

// Backfill sweeps the tenant for closed incidents without a current archive and submits them (reason
// "backfill"). A run is recorded create-only under backfills/<id>/ (request.json at the start,
// result.json at the end). Run daily (Cloud Scheduler) it reconciles what the close hook missed.
type Backfill struct {
	cfg BackfillConfig
	log *slog.Logger

	runCtx    context.Context
	cancelRun context.CancelFunc
	wg        sync.WaitGroup

	mu      sync.Mutex
	stopped bool
	runs    map[string]*backfillRun
}

type backfillRun struct {
	done chan struct{}
	mu   sync.Mutex
	st   BackfillStatus
}

func (r *backfillRun) status() BackfillStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Errors = slices.Clone(st.Errors)
	st.IncidentIDs = slices.Clone(st.IncidentIDs)
	return st
}

// NewBackfill returns a Backfill.
func NewBackfill(cfg BackfillConfig) (*Backfill, error) {
	var errs []error
	if cfg.Searcher == nil || cfg.Currency == nil || cfg.Queue == nil || cfg.Store == nil || cfg.Logger == nil {
		errs = append(errs, errors.New("missing Searcher, Currency, Queue, Store or Logger"))
	}
	setDefault(&cfg.Concurrency, 8)
	setDefault(&cfg.MaxDryRunIDs, 10_000)
	if len(cfg.DefaultStatuses) == 0 {
		cfg.DefaultStatuses = DefaultBackfillStatuses
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("jobs: backfill config: %w", err)
	}
	b := &Backfill{
		cfg:  cfg,
		log:  cfg.Logger.With(slog.String("component", "backfill")),
		runs: make(map[string]*backfillRun),
	}
	b.runCtx, b.cancelRun = context.WithCancel(context.Background())
	return b, nil
}

func backfillKey(id, name string) string { return "backfills/" + id + "/" + name }

// Start runs a backfill. A dry run is done synchronously, within ctx, and its status returned
// finished; nothing is written or submitted. Otherwise the backfill is recorded and runs in the
// background; the returned status is running and carries the id for Get and Wait.
func (b *Backfill) Start(ctx context.Context, f Filter) (BackfillStatus, error) {
	if len(f.Statuses) == 0 {
		f.Statuses = slices.Clone(b.cfg.DefaultStatuses)
	}
	if err := validateFilter(f); err != nil {
		return BackfillStatus{}, err
	}
	now := b.cfg.Now().UTC()
	run := &backfillRun{done: make(chan struct{}), st: BackfillStatus{State: BackfillRunning, DryRun: f.DryRun, Filter: f, StartedAt: now}}
	if f.DryRun {
		b.sweep(ctx, run)
		return run.status(), nil
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return BackfillStatus{}, ErrStopped
	}
	b.mu.Unlock()
	run.st.ID = newID(now)
	if err := putJSON(ctx, b.cfg.Store, backfillKey(run.st.ID, requestName), run.st); err != nil {
		return BackfillStatus{}, fmt.Errorf("jobs: backfill: record: %w", err)
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return BackfillStatus{}, ErrStopped
	}
	b.runs[run.st.ID] = run
	b.wg.Add(1)
	b.mu.Unlock()
	st := run.status()
	b.log.LogAttrs(ctx, slog.LevelInfo, "backfill started", slog.String("backfill_id", st.ID), slog.Bool("force", f.Force))
	go func() {
		defer b.wg.Done()
		b.sweep(b.runCtx, run)
	}()
	return st, nil
}

func validateFilter(f Filter) error {
	switch {
	case !f.CreatedFrom.IsZero() && !f.CreatedTo.IsZero() && f.CreatedTo.Before(f.CreatedFrom):
		return fmt.Errorf("%w: created_to is before created_from", ErrInvalid)
	case !f.ModifiedFrom.IsZero() && !f.ModifiedTo.IsZero() && f.ModifiedTo.Before(f.ModifiedFrom):
		return fmt.Errorf("%w: modified_to is before modified_from", ErrInvalid)
	case slices.Contains(f.IDs, ""):
		return fmt.Errorf("%w: empty incident id", ErrInvalid)
	}
	return nil
}

// sweep searches, checks and submits, updating run as it goes, and records the outcome of a real run.
func (b *Backfill) sweep(ctx context.Context, run *backfillRun) {
	f := run.st.Filter
	closed := newStatusSet(f.Statuses)
	incidents := make(chan fetch.Incident)
	var wg sync.WaitGroup
	for range b.cfg.Concurrency {
		wg.Go(func() {
			for inc := range incidents {
				b.one(ctx, run, closed, inc)
			}
		})
	}
	err := b.cfg.Searcher.SearchIncidents(ctx, fetch.SearchFilter{
		Statuses: f.Statuses, CreatedFrom: f.CreatedFrom, CreatedTo: f.CreatedTo,
		ModifiedFrom: f.ModifiedFrom, ModifiedTo: f.ModifiedTo, IDs: f.IDs,
	}, func(inc fetch.Incident) error {
		run.mu.Lock()
		run.st.Found++
		run.mu.Unlock()
		select {
		case incidents <- inc:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(incidents)
	wg.Wait()

	run.mu.Lock()
	run.st.FinishedAt = b.cfg.Now().UTC()
	run.st.State = BackfillSucceeded
	if err != nil {
		run.st.State, run.st.Error = BackfillFailed, "search: "+SafeMessage(err)
	}
	slices.Sort(run.st.IncidentIDs)
	run.mu.Unlock()
	st := run.status()
	log := b.log.With(slog.String("backfill_id", st.ID), slog.Bool("dry_run", st.DryRun))
	log.LogAttrs(ctx, slog.LevelInfo, "backfill finished", slog.String("state", string(st.State)), slog.Int("found", st.Found),
		slog.Int("enqueued", st.Enqueued), slog.Int("would_enqueue", st.WouldEnqueue), slog.Int("coalesced", st.Coalesced),
		slog.Int("skipped_current", st.SkippedCurrent), slog.Int("skipped_open", st.SkippedOpen), slog.Int("failed", st.Failed),
		slog.String("error", st.Error))
	if !st.DryRun {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := writeBackfillResult(wctx, b.cfg.Store, st); err != nil {
			log.LogAttrs(wctx, slog.LevelError, "backfill result not recorded", slog.String("error", err.Error()))
		}
	}
	close(run.done)
}

func writeBackfillResult(ctx context.Context, rs RecordStore, st BackfillStatus) error {
	err := putJSON(ctx, rs, backfillKey(st.ID, resultName), st)
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	return err
}

// one decides about one incident: open, current, or submitted.
func (b *Backfill) one(ctx context.Context, run *backfillRun, closed statusSet, inc fetch.Incident) {
	f := run.st.Filter // immutable after Start
	count := func(apply func(*BackfillStatus)) {
		run.mu.Lock()
		apply(&run.st)
		run.mu.Unlock()
	}
	fail := func(err error) {
		count(func(st *BackfillStatus) {
			st.Failed++
			if len(st.Errors) < maxBackfillErrors {
				st.Errors = append(st.Errors, fmt.Sprintf("incident %s: %s", inc.ID, SafeMessage(err)))
			}
		})
	}
	if !closed.has(inc.Status) {
		count(func(st *BackfillStatus) { st.SkippedOpen++ })
		return
	}
	if !f.Force {
		current, err := b.cfg.Currency.IsCurrent(ctx, inc.ID, inc.Modified)
		if err != nil {
			fail(err)
			return
		}
		if current {
			count(func(st *BackfillStatus) { st.SkippedCurrent++ })
			return
		}
	}
	if f.DryRun {
		count(func(st *BackfillStatus) {
			st.WouldEnqueue++
			if len(st.IncidentIDs) < b.cfg.MaxDryRunIDs {
				st.IncidentIDs = append(st.IncidentIDs, inc.ID)
			} else {
				st.IDsTruncated = true
			}
		})
		return
	}
	_, created, err := b.cfg.Queue.Submit(ctx, archive.Request{
		IncidentID: inc.ID, Reason: archive.ReasonBackfill, ClosedAt: inc.Resolved, Force: f.Force,
		RequestedBy: "backfill/" + run.st.ID,
	})
	switch {
	case err != nil:
		fail(err)
	case created:
		count(func(st *BackfillStatus) { st.Enqueued++ })
	default:
		count(func(st *BackfillStatus) { st.Coalesced++ })
	}
}

// statusSet matches incident statuses against a filter's: by name, case-insensitively, or by the
// XSOAR status number (so "done", "closed" and "2" are the same).
type statusSet struct {
	names map[string]bool
	nums  map[int]bool
}

func newStatusSet(ss []string) statusSet {
	s := statusSet{names: map[string]bool{}, nums: map[int]bool{}}
	for _, v := range ss {
		s.names[strings.ToLower(strings.TrimSpace(v))] = true
		if n, ok := fetch.XSOARStatus(v); ok {
			s.nums[n] = true
		}
	}
	return s
}

func (s statusSet) has(status string) bool {
	if s.names[strings.ToLower(strings.TrimSpace(status))] {
		return true
	}
	n, ok := fetch.XSOARStatus(status)
	return ok && s.nums[n]
}

// Get returns a backfill's status: live if it runs here, else from its records.
func (b *Backfill) Get(ctx context.Context, id string) (BackfillStatus, error) {
	b.mu.Lock()
	run := b.runs[id]
	b.mu.Unlock()
	if run != nil {
		return run.status(), nil
	}
	if !ValidID(id) {
		return BackfillStatus{}, ErrNotFound
	}
	var st BackfillStatus
	err := getJSON(ctx, b.cfg.Store, backfillKey(id, resultName), &st)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return BackfillStatus{}, fmt.Errorf("jobs: backfill %s: %w", id, err)
	}
	if err := getJSON(ctx, b.cfg.Store, backfillKey(id, requestName), &st); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return BackfillStatus{}, ErrNotFound
		}
		return BackfillStatus{}, fmt.Errorf("jobs: backfill %s: %w", id, err)
	}
	st.State = BackfillIncomplete
	return st, nil
}

// Wait returns the backfill's status once it is finished here or ctx is done.
func (b *Backfill) Wait(ctx context.Context, id string) (BackfillStatus, error) {
	b.mu.Lock()
	run := b.runs[id]
	b.mu.Unlock()
	if run != nil {
		select {
		case <-run.done:
		case <-ctx.Done():
		}
	}
	return b.Get(context.WithoutCancel(ctx), id)
}

// Stop cancels running backfills (each records how far it got) and waits for them until ctx is done.
func (b *Backfill) Stop(ctx context.Context) error {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.cancelRun()
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs: backfill stop: %w", ctx.Err())
	}
}
