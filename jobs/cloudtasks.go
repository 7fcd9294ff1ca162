package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"github.com/googleapis/gax-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"casearchiver/archive"
	"casearchiver/store"
)

// TaskCreator is the part of the Cloud Tasks client (*cloudtasks.Client from
// cloud.google.com/go/cloudtasks/apiv2) the queue uses.
type TaskCreator interface {
	CreateTask(ctx context.Context, req *cloudtaskspb.CreateTaskRequest, opts ...gax.CallOption) (*cloudtaskspb.Task, error)
}

// CloudTasksConfig configures a [CloudTasks] queue. Client, Queue, TargetURL, ServiceAccount, Store,
// Runner and Logger are required.
type CloudTasksConfig struct {
	Client TaskCreator
	// Queue is the queue's full name: projects/<project>/locations/<location>/queues/<queue>.
	Queue string
	// TargetURL is where tasks are delivered: the service's POST /internal/tasks/archive.
	TargetURL string
	// ServiceAccount is the email of the service account Cloud Tasks signs OIDC tokens as. The caller
	// of CreateTask needs iam.serviceAccounts.actAs on it.
	ServiceAccount string
	// Audience of the OIDC token. Default TargetURL.
	Audience string
	// DispatchDeadline is how long Cloud Tasks waits for the handler (15 s to 30 min; the Cloud Run
	// request timeout must be at least as long). Default 30 min.
	DispatchDeadline time.Duration
	// CloseTimeGranularity is the precision of the close time in the name of an incident_closed task:
	// closes of one incident within the same interval are one task. Default 1 min.
	CloseTimeGranularity time.Duration

	Store  RecordStore
	Runner Runner
	Logger *slog.Logger
	// Registerer receives the queue's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Retryable reports whether a failed attempt may be retried (archive.Retryable). Nil retries nothing.
	Retryable func(error) bool
	// MaxAttempts bounds the attempts of a job; keep it at or below the queue's max_attempts so the
	// final failure is recorded by Execute rather than dropped by Cloud Tasks. Default 5.
	MaxAttempts int
	// MaxStarts is the number of started attempts after which Execute records the job as failed
	// without running it (its attempts never finish). Default 10.
	MaxStarts int
	// PollInterval is how often Wait re-reads the job's records. Default 1 s.
	PollInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *CloudTasksConfig) setDefaults() error {
	var errs []error
	for name, v := range map[string]string{"Queue": c.Queue, "TargetURL": c.TargetURL, "ServiceAccount": c.ServiceAccount} {
		if v == "" {
			errs = append(errs, fmt.Errorf("missing %s", name))
		}
	}
	if c.Queue != "" && !queueName.MatchString(c.Queue) {
		errs = append(errs, fmt.Errorf("queue %q is not projects/<p>/locations/<l>/queues/<q>", c.Queue))
	}
	if c.TargetURL != "" && !strings.HasPrefix(c.TargetURL, "https://") && !strings.HasPrefix(c.TargetURL, "http://") {
		errs = append(errs, fmt.Errorf("target URL %q is not an http(s) URL", c.TargetURL))
	}
	if c.Client == nil {
		errs = append(errs, errors.New("missing Client"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("missing Store"))
	}
	if c.Runner == nil {
		errs = append(errs, errors.New("missing Runner"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("missing Logger"))
	}
	if c.Audience == "" {
		c.Audience = c.TargetURL
	}
	if c.Retryable == nil {
		c.Retryable = func(error) bool { return false }
	}
	setDefault(&c.DispatchDeadline, 30*time.Minute)
	setDefault(&c.CloseTimeGranularity, time.Minute)
	setDefault(&c.MaxAttempts, 5)
	setDefault(&c.MaxStarts, 10)
	setDefault(&c.PollInterval, time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DispatchDeadline < 15*time.Second || c.DispatchDeadline > 30*time.Minute {
		errs = append(errs, errors.New("dispatch deadline must be between 15s and 30m"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jobs: cloud tasks config: %w", err)
	}
	return nil
}

var queueName = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/queues/[^/]+$`)

// maxTaskBody keeps task bodies well under the 100 KB Cloud Tasks limit on the whole task.
const maxTaskBody = 64 << 10

// CloudTasks is the Cloud Tasks queue (QUEUE=cloudtasks). Submit creates a named HTTP task that
// Cloud Tasks delivers, with an OIDC token, to the service's task route, whose handler calls
// Execute. State lives in the job records, so any instance can answer Get.
type CloudTasks struct {
	cfg CloudTasksConfig
	log *slog.Logger
	m   *metrics

	mu      sync.Mutex
	running map[string]*archive.Progress // jobs executing on this instance
}

// NewCloudTasks returns a CloudTasks queue.
func NewCloudTasks(cfg CloudTasksConfig) (*CloudTasks, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, "cloudtasks", gauges{})
	if err != nil {
		return nil, err
	}
	return &CloudTasks{
		cfg:     cfg,
		log:     cfg.Logger.With(slog.String("component", "jobs"), slog.String("queue", "cloudtasks")),
		m:       m,
		running: make(map[string]*archive.Progress),
	}, nil
}

var _ Queue = (*CloudTasks)(nil)

// taskBody is the body of a task: all Execute needs, so it does not depend on the record.
type taskBody struct {
	JobID     string          `json:"job_id"`
	CreatedAt time.Time       `json:"created_at"`
	Request   archive.Request `json:"request"`
}

// names returns the job id and the task id for req. A close of an incident gets names derived from
// the incident id and the close time, so that Cloud Tasks deduplicates repeated close hooks (for
// example one per alert of the case); anything else gets a unique job id. The task id starts with a
// hash, as Cloud Tasks recommends against sequential names.
func (q *CloudTasks) names(req archive.Request, now time.Time) (jobID, taskID string) {
	if req.Reason == archive.ReasonIncidentClosed && !req.ClosedAt.IsZero() {
		closed := req.ClosedAt.UTC().Truncate(q.cfg.CloseTimeGranularity)
		sum := sha256.Sum256([]byte(req.Reason + "\x00" + req.IncidentID + "\x00" + closed.Format(time.RFC3339Nano)))
		jobID = closed.Format(idTimeLayout) + "-" + hex.EncodeToString(sum[:4])
	} else {
		jobID = newID(now)
	}
	sum := sha256.Sum256([]byte(jobID))
	return jobID, hex.EncodeToString(sum[:8]) + "-" + jobID
}

// Submit creates the job's task and records its request. A close whose task already exists (same
// incident and close time) is coalesced: the existing job is returned with created=false.
func (q *CloudTasks) Submit(ctx context.Context, req archive.Request) (Job, bool, error) {
	if err := validateRequest(req); err != nil {
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, err
	}
	now := q.cfg.Now().UTC()
	id, taskID := q.names(req, now)
	body, err := json.Marshal(taskBody{JobID: id, CreatedAt: now, Request: req})
	if err != nil {
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, fmt.Errorf("jobs: submit %s: encode task: %w", req.IncidentID, err)
	}
	if len(body) > maxTaskBody {
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, fmt.Errorf("%w: request too large for a task (%d bytes)", ErrInvalid, len(body))
	}
	_, err = q.cfg.Client.CreateTask(ctx, q.taskRequest(taskID, body))
	switch status.Code(err) {
	case codes.OK:
	case codes.AlreadyExists:
		q.m.submits.WithLabelValues("coalesced").Inc()
		j, err := loadJob(ctx, q.cfg.Store, id)
		if errors.Is(err, ErrNotFound) {
			// The submit that created the task has not written the record yet.
			return Job{ID: id, IncidentID: req.IncidentID, State: StateQueued, CreatedAt: now, Request: req}, false, nil
		}
		if err != nil {
			return Job{}, false, fmt.Errorf("jobs: submit %s: %w", req.IncidentID, err)
		}
		return q.withProgress(j), false, nil
	default:
		q.m.submits.WithLabelValues("error").Inc()
		return Job{}, false, fmt.Errorf("jobs: submit %s: create task: %w", req.IncidentID, err)
	}
	switch err := putJSON(ctx, q.cfg.Store, requestKey(id), requestRecord{ID: id, CreatedAt: now, Request: req}); {
	case errors.Is(err, store.ErrExists):
		// The same close was archived before, beyond the dedup window of Cloud Tasks: the new task
		// finds the result and does nothing. Report the job that did the work.
		if j, err := loadJob(ctx, q.cfg.Store, id); err == nil {
			q.m.submits.WithLabelValues("coalesced").Inc()
			return q.withProgress(j), false, nil
		}
	case err != nil:
		// The task carries the request and Execute records it; until then Get reports not found.
		q.log.LogAttrs(ctx, slog.LevelWarn, "job request not recorded at submit", slog.String("job_id", id), slog.String("error", err.Error()))
	}
	q.m.submits.WithLabelValues("created").Inc()
	q.log.LogAttrs(ctx, slog.LevelInfo, "job accepted", slog.String("job_id", id), slog.String("task_id", taskID),
		slog.String("incident_id", req.IncidentID), slog.String("reason", req.Reason))
	return Job{ID: id, IncidentID: req.IncidentID, State: StateQueued, CreatedAt: now, Request: req}, true, nil
}

func (q *CloudTasks) taskRequest(taskID string, body []byte) *cloudtaskspb.CreateTaskRequest {
	return &cloudtaskspb.CreateTaskRequest{
		Parent: q.cfg.Queue,
		Task: &cloudtaskspb.Task{
			Name:             q.cfg.Queue + "/tasks/" + taskID,
			DispatchDeadline: durationpb.New(q.cfg.DispatchDeadline),
			MessageType: &cloudtaskspb.Task_HttpRequest{HttpRequest: &cloudtaskspb.HttpRequest{
				Url:        q.cfg.TargetURL,
				HttpMethod: cloudtaskspb.HttpMethod_POST,
				Headers:    map[string]string{"Content-Type": "application/json"},
				Body:       body,
				AuthorizationHeader: &cloudtaskspb.HttpRequest_OidcToken{OidcToken: &cloudtaskspb.OidcToken{
					ServiceAccountEmail: q.cfg.ServiceAccount,
					Audience:            q.cfg.Audience,
				}},
			}},
		},
	}
}

// Get returns the job from its records, with live progress if it runs on this instance.
func (q *CloudTasks) Get(ctx context.Context, id string) (Job, error) {
	j, err := loadJob(ctx, q.cfg.Store, id)
	if err != nil {
		return Job{}, err
	}
	return q.withProgress(j), nil
}

// Wait re-reads the job every PollInterval until it is finished or ctx is done.
func (q *CloudTasks) Wait(ctx context.Context, id string) (Job, error) {
	j, err := pollJob(ctx, q.cfg.Store, id, q.cfg.PollInterval)
	if err != nil {
		return Job{}, err
	}
	return q.withProgress(j), nil
}

func (q *CloudTasks) withProgress(j Job) Job {
	if j.State.Finished() {
		return j
	}
	q.mu.Lock()
	p := q.running[j.ID]
	q.mu.Unlock()
	if p != nil {
		j.Progress.Objects, j.Progress.Bytes = p.Snapshot()
	}
	return j
}

// ErrRetry matches (errors.Is) every Execute failure that Cloud Tasks should retry.
var ErrRetry = errors.New("jobs: retry the task later")

// retryableError marks an Execute failure that Cloud Tasks should retry.
type retryableError struct{ err error }

func (e *retryableError) Error() string        { return e.err.Error() }
func (e *retryableError) Unwrap() error        { return e.err }
func (e *retryableError) Is(target error) bool { return target == ErrRetry }

// IsRetryable reports whether an error from Execute asks for the task to be delivered again: the task
// handler answers 5xx (503) for it. Any other error is a final failure, already recorded in the job's
// result; the handler answers 2xx so that Cloud Tasks does not retry.
func IsRetryable(err error) bool { return errors.Is(err, ErrRetry) }

func retryable(err error) error { return &retryableError{err: err} }

// Execute runs the job carried by a task body (the task route's request body) to the end of one
// attempt and records the outcome: nil when the job succeeded or was already finished; an error for
// which IsRetryable is true when Cloud Tasks should deliver the task again (retryable archive
// failure below MaxAttempts, store trouble, ctx cancelled); any other error after recording a final
// failure. ctx is the request's context: the attempt stops with it.
func (q *CloudTasks) Execute(ctx context.Context, body []byte) error {
	var tb taskBody
	if err := json.Unmarshal(body, &tb); err != nil {
		return fmt.Errorf("jobs: execute: %w: decode task body: %w", ErrInvalid, err)
	}
	if !ValidID(tb.JobID) {
		return fmt.Errorf("jobs: execute: %w: bad job id %q", ErrInvalid, tb.JobID)
	}
	if err := validateRequest(tb.Request); err != nil {
		return fmt.Errorf("jobs: execute %s: %w", tb.JobID, err)
	}
	id := tb.JobID
	log := q.log.With(slog.String("job_id", id), slog.String("incident_id", tb.Request.IncidentID))
	wrap := func(err error) error { return fmt.Errorf("jobs: execute %s: %w", id, err) }

	keys, err := listJobs(ctx, q.cfg.Store, jobsPrefix+id+"/")
	if err != nil {
		return retryable(wrap(err))
	}
	k := keys[id]
	if k == nil {
		k = &jobKeys{}
	}
	if k.result {
		log.LogAttrs(ctx, slog.LevelInfo, "task for a finished job ignored")
		return nil
	}
	if !k.request {
		err := putJSON(ctx, q.cfg.Store, requestKey(id), requestRecord{ID: id, CreatedAt: tb.CreatedAt, Request: tb.Request})
		if err != nil && !errors.Is(err, store.ErrExists) {
			return retryable(wrap(err))
		}
	}
	job := Job{ID: id, IncidentID: tb.Request.IncidentID, CreatedAt: tb.CreatedAt, Request: tb.Request, Attempts: k.attempts}
	if k.attempts >= q.cfg.MaxStarts {
		log.LogAttrs(ctx, slog.LevelError, "job abandoned: its attempts never finished", slog.Int("attempts", k.attempts))
		return q.final(ctx, job, StateFailed, nil, fmt.Sprintf("abandoned after %d attempts that did not finish", k.attempts))
	}

	// Claim the next attempt number; a concurrent delivery of the same task takes another.
	started := q.cfg.Now().UTC()
	attempt := k.attempts + 1
	for ; ; attempt++ {
		err := putJSON(ctx, q.cfg.Store, attemptKey(id, attempt), attemptRecord{Attempt: attempt, StartedAt: started})
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrExists) || attempt > k.attempts+3 {
			return retryable(wrap(err))
		}
	}
	job.Attempts, job.StartedAt = attempt, started
	log = log.With(slog.Int("attempt", attempt))

	p := new(archive.Progress)
	q.mu.Lock()
	q.running[id] = p
	q.mu.Unlock()
	q.m.running.Inc()
	res, err := runArchive(ctx, log, q.cfg.Runner, tb.Request, p)
	q.m.running.Dec()
	q.mu.Lock()
	delete(q.running, id)
	q.mu.Unlock()
	job.Progress.Objects, job.Progress.Bytes = p.Snapshot()

	switch {
	case err == nil:
		log.LogAttrs(ctx, slog.LevelInfo, "job succeeded", slog.String("version", res.Version),
			slog.Bool("skipped", res.Skipped), slog.Int("objects", res.Objects), slog.Int64("bytes", res.Bytes))
		return q.final(ctx, job, StateSucceeded, &res, "")
	case ctx.Err() != nil:
		log.LogAttrs(ctx, slog.LevelWarn, "job attempt interrupted", slog.String("error", SafeMessage(err)))
		return retryable(wrap(err))
	case !errors.Is(err, errPanic) && q.cfg.Retryable(err) && attempt < q.cfg.MaxAttempts:
		log.LogAttrs(ctx, slog.LevelWarn, "job attempt failed; Cloud Tasks retries", slog.String("error", SafeMessage(err)))
		q.m.retries.Inc()
		return retryable(wrap(err))
	default:
		log.LogAttrs(ctx, slog.LevelError, "job failed", slog.String("error", SafeMessage(err)))
		if ferr := q.final(ctx, job, StateFailed, nil, SafeMessage(err)); ferr != nil {
			return ferr
		}
		return wrap(err)
	}
}

// final records the job's outcome; a failure to record it is retryable (the task runs again).
func (q *CloudTasks) final(ctx context.Context, j Job, state State, res *archive.Result, msg string) error {
	now := q.cfg.Now().UTC()
	j.State, j.FinishedAt, j.Result, j.Error = state, now, res, msg
	if err := writeResult(ctx, q.cfg.Store, j); err != nil {
		return retryable(fmt.Errorf("jobs: execute %s: record result: %w", j.ID, err))
	}
	q.m.outcomes.WithLabelValues(string(state)).Inc()
	if !j.CreatedAt.IsZero() {
		q.m.age.Observe(now.Sub(j.CreatedAt).Seconds())
	}
	return nil
}
