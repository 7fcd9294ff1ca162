// Package jobs runs archive requests as durable jobs.
//
// A job is accepted by writing jobs/<job_id>/request.json, create-only, to the record store (the
// archive store under its own prefix). Each attempt writes jobs/<job_id>/attempt-NNN.json and the
// outcome is jobs/<job_id>/result.json. Nothing is overwritten or deleted, so the service account
// needs no delete right, and a restart finds unfinished jobs by listing: a job with a request and no
// result runs again (at-least-once; the archive's skip rule and create-only writes make reruns cheap
// and safe).
//
// Two backends implement [Queue]: [Local] runs jobs on in-process workers, [CloudTasks] hands each job
// to a Cloud Tasks queue whose HTTP target calls back into [CloudTasks.Execute]. [Backfill] sweeps
// the tenant for closed incidents that have no current archive and submits them to a Queue.
package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"regexp"
	"strings"
	"time"

	"casearchiver/archive"
	"casearchiver/store"
)

// Errors returned by the queues.
var (
	// ErrNotFound reports an unknown job or backfill id.
	ErrNotFound = errors.New("jobs: not found")
	// ErrInvalid reports a request that cannot become a job (for example an empty incident id).
	ErrInvalid = errors.New("jobs: invalid request")
	// ErrStopped reports a Submit after Stop.
	ErrStopped = errors.New("jobs: queue stopped")
)

// State is where a job is in its life.
type State string

// Job states.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
)

// Finished reports whether the state is final.
func (s State) Finished() bool { return s == StateSucceeded || s == StateFailed }

// Progress is what a running job has written so far.
type Progress struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// Job is the API view of one archive job. It is also the content of the job's result.json record.
type Job struct {
	ID         string          `json:"job_id"`
	IncidentID string          `json:"incident_id"`
	State      State           `json:"state"`
	Attempts   int             `json:"attempts"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
	Request    archive.Request `json:"request"`
	Progress   Progress        `json:"progress"`
	Result     *archive.Result `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// Queue accepts archive requests and reports on the jobs they become.
type Queue interface {
	// Submit records a job for req durably and returns it. created is false when req was coalesced
	// into an existing queued or running job for the same incident, which is returned instead.
	Submit(ctx context.Context, req archive.Request) (j Job, created bool, err error)
	// Get returns the job's current state, or ErrNotFound.
	Get(ctx context.Context, id string) (Job, error)
	// Wait blocks until the job is finished or ctx is done, and returns its latest state; a ctx
	// timeout is not an error (the caller sees a queued or running job).
	Wait(ctx context.Context, id string) (Job, error)
}

// RecordStore is the part of the archive store (casearchiver/store.*Store) that holds job records.
type RecordStore interface {
	// Create writes key only if it does not exist yet (store.ErrExists otherwise).
	Create(ctx context.Context, key string, r io.Reader, o store.WriteOptions) (store.Written, error)
	// Open reads key (store.ErrNotFound if absent).
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// List yields the objects under prefix; with a delimiter, common prefixes come back with IsPrefix.
	List(ctx context.Context, prefix, delimiter string) iter.Seq2[store.Object, error]
}

// Runner archives one incident (casearchiver/archive.*Archiver).
type Runner interface {
	Archive(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error)
}

// Record keys under the record store.
const (
	jobsPrefix     = "jobs/"
	requestName    = "request.json"
	resultName     = "result.json"
	attemptPrefix  = "attempt-"
	maxRecordBytes = 1 << 20
)

func requestKey(id string) string { return jobsPrefix + id + "/" + requestName }
func resultKey(id string) string  { return jobsPrefix + id + "/" + resultName }
func attemptKey(id string, n int) string {
	return fmt.Sprintf("%s%s/%s%03d.json", jobsPrefix, id, attemptPrefix, n)
}

// idTimeLayout is the time part of job and backfill ids: ids sort by time.
const idTimeLayout = "20060102T150405Z"

var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// newID returns "<UTC time>-<8 random hex digits>", for example 20261204T153000Z-1a2b3c4d.
func newID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return now.UTC().Format(idTimeLayout) + "-" + hex.EncodeToString(b[:])
}

// ValidID reports whether id has the shape of a job or backfill id, so that it is safe in a key.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// requestRecord is the content of request.json: what was accepted.
type requestRecord struct {
	ID        string          `json:"job_id"`
	CreatedAt time.Time       `json:"created_at"`
	Request   archive.Request `json:"request"`
}

// attemptRecord is the content of attempt-NNN.json: an attempt started.
type attemptRecord struct {
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at"`
}

func validateRequest(req archive.Request) error {
	switch {
	case strings.TrimSpace(req.IncidentID) == "":
		return fmt.Errorf("%w: incident_id is required", ErrInvalid)
	case len(req.IncidentID) > 256:
		return fmt.Errorf("%w: incident_id is too long", ErrInvalid)
	case !archive.ValidIncidentID(req.IncidentID):
		return fmt.Errorf("%w: incident_id %q is not letters, digits, '_', '-' and '.'", ErrInvalid, req.IncidentID)
	}
	return nil
}

// putJSON creates key with v encoded as JSON; store.ErrExists if it is already there.
func putJSON(ctx context.Context, rs RecordStore, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if _, err := rs.Create(ctx, key, bytes.NewReader(b), store.WriteOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("create %s: %w", key, err)
	}
	return nil
}

// getJSON reads key into v.
func getJSON(ctx context.Context, rs RecordStore, key string, v any) error {
	rc, err := rs.Open(ctx, key)
	if err != nil {
		return fmt.Errorf("open %s: %w", key, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(io.LimitReader(rc, maxRecordBytes))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// jobKeys summarises the records of one job found by listing.
type jobKeys struct {
	request, result bool
	attempts        int
}

// listJobs groups the records under prefix (which starts with "jobs/") by job id.
func listJobs(ctx context.Context, rs RecordStore, prefix string) (map[string]*jobKeys, error) {
	out := make(map[string]*jobKeys)
	for o, err := range rs.List(ctx, prefix, "") {
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		id, name, ok := strings.Cut(strings.TrimPrefix(o.Key, jobsPrefix), "/")
		if !ok || !ValidID(id) {
			continue
		}
		k := out[id]
		if k == nil {
			k = &jobKeys{}
			out[id] = k
		}
		switch {
		case name == requestName:
			k.request = true
		case name == resultName:
			k.result = true
		case strings.HasPrefix(name, attemptPrefix):
			k.attempts++
		}
	}
	return out, nil
}

// loadJob rebuilds a job from its records: request.json, then result.json if present, else the
// attempt markers (queued without any, running with some).
func loadJob(ctx context.Context, rs RecordStore, id string) (Job, error) {
	if !ValidID(id) {
		return Job{}, ErrNotFound
	}
	var rr requestRecord
	if err := getJSON(ctx, rs, requestKey(id), &rr); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Job{}, ErrNotFound
		}
		return Job{}, fmt.Errorf("jobs: load %s: %w", id, err)
	}
	var res Job
	switch err := getJSON(ctx, rs, resultKey(id), &res); {
	case err == nil:
		res.ID, res.IncidentID, res.CreatedAt, res.Request = id, rr.Request.IncidentID, rr.CreatedAt, rr.Request
		return res, nil
	case !errors.Is(err, store.ErrNotFound):
		return Job{}, fmt.Errorf("jobs: load %s: %w", id, err)
	}
	keys, err := listJobs(ctx, rs, jobsPrefix+id+"/")
	if err != nil {
		return Job{}, fmt.Errorf("jobs: load %s: %w", id, err)
	}
	j := Job{ID: id, IncidentID: rr.Request.IncidentID, State: StateQueued, CreatedAt: rr.CreatedAt, Request: rr.Request}
	if k := keys[id]; k != nil && k.attempts > 0 {
		j.State, j.Attempts = StateRunning, k.attempts
		var ar attemptRecord
		if err := getJSON(ctx, rs, attemptKey(id, k.attempts), &ar); err == nil {
			j.StartedAt = ar.StartedAt
		}
	}
	return j, nil
}

var (
	urlQuery   = regexp.MustCompile(`(https?://[^\s?#"']+)[?#][^\s"']*`)
	secretLike = regexp.MustCompile(`(?i)((?:api[_-]?key|authorization|x-xdr-auth-id|token|secret|password|signature)["']?\s*[:=]\s*["']?)[^\s"',;&]+`)
)

// maxErrorLen bounds the error text kept in a result record.
const maxErrorLen = 500

// SafeMessage turns an error into the short reason stored in a failed job's record and shown by the
// API: query strings are cut from URLs, values that look like credentials are masked, and the text
// is bounded.
func SafeMessage(err error) string {
	if err == nil {
		return ""
	}
	s := urlQuery.ReplaceAllString(err.Error(), "$1")
	s = secretLike.ReplaceAllString(s, "${1}[redacted]")
	if len(s) > maxErrorLen {
		s = s[:maxErrorLen] + "…"
	}
	return s
}
