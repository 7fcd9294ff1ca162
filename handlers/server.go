// Package handlers is the HTTP surface of the archiver: authentication, routes, problem+json errors,
// request logging and metrics. It declares the small interfaces it needs; cmd/server wires them.
package handlers

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-playground/validator/v10"
	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/archive"
	"casearchiver/jobs"
)

// Jobs accepts archive requests and reports on them.
type Jobs interface {
	Submit(ctx context.Context, req archive.Request) (jobs.Job, bool, error)
	Get(ctx context.Context, id string) (jobs.Job, error)
	Wait(ctx context.Context, id string) (jobs.Job, error)
}

// Archives reads back and verifies what is stored.
type Archives interface {
	Versions(ctx context.Context, incidentID string, includeIncomplete bool) ([]archive.Version, error)
	Manifest(ctx context.Context, incidentID, version string) (json.RawMessage, error)
	OpenObject(ctx context.Context, incidentID, version, path string) (io.ReadCloser, archive.ObjectInfo, error)
	Verify(ctx context.Context, incidentID, version string) (archive.VerifyReport, error)
}

// Backfills sweeps the tenant for closed cases and enqueues their archives.
type Backfills interface {
	Start(ctx context.Context, f jobs.Filter) (jobs.BackfillStatus, error)
	Get(ctx context.Context, id string) (jobs.BackfillStatus, error)
	Wait(ctx context.Context, id string) (jobs.BackfillStatus, error)
}

// RiskyUsers snapshots the tenant's risky-user cards.
type RiskyUsers interface {
	SnapshotRiskyUsers(ctx context.Context, requestedBy string) (archive.Snapshot, error)
}

// Tasks runs archive jobs delivered by Cloud Tasks; nil when the queue is local.
type Tasks interface {
	Verify(ctx context.Context, r *http.Request) error
	Execute(ctx context.Context, body []byte) error
}

// Pinger reports whether a dependency is reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config holds the settings of the HTTP layer.
type Config struct {
	Tokens         []Token
	WebhookSecrets [][]byte
	// MaxWait bounds ?wait=true on the trigger route.
	MaxWait time.Duration
	// Now is the clock for webhook timestamps; time.Now when nil.
	Now func() time.Time
	// Draining is closed when the server starts shutting down: requests waiting for a job stop
	// waiting and answer 202 at once, so that shutdown is not held up by them. May be nil.
	Draining <-chan struct{}
}

type server struct {
	logger    *slog.Logger
	validate  *validator.Validate
	auth      *authenticator
	metrics   *metrics
	cfg       Config
	jobs      Jobs
	archives  Archives
	backfills Backfills
	risky     RiskyUsers
	tasks     Tasks
	ready     Pinger
	gatherer  prometheus.Gatherer
	spec      []byte
}

// NewServer returns the archiver's HTTP handler. Every dependency is a parameter; tasks may be nil
// when Cloud Tasks is not the queue, and then its route is not registered.
func NewServer(
	logger *slog.Logger,
	cfg Config,
	reg *prometheus.Registry,
	jobQueue Jobs,
	archives Archives,
	backfills Backfills,
	risky RiskyUsers,
	tasks Tasks,
	ready Pinger,
	spec []byte,
) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Minute
	}
	s := &server{
		logger:    logger,
		validate:  newValidator(),
		auth:      newAuthenticator(cfg.Tokens, cfg.WebhookSecrets, cfg.Now),
		metrics:   newMetrics(reg),
		cfg:       cfg,
		jobs:      jobQueue,
		archives:  archives,
		backfills: backfills,
		risky:     risky,
		tasks:     tasks,
		ready:     ready,
		gatherer:  reg,
		spec:      spec,
	}
	r := chi.NewRouter()
	r.Use(s.observe)
	r.NotFound(handle(logger, func(http.ResponseWriter, *http.Request) error {
		return problem(http.StatusNotFound, "no such route")
	}))
	r.MethodNotAllowed(handle(logger, func(http.ResponseWriter, *http.Request) error {
		return problem(http.StatusMethodNotAllowed, "method not allowed on this route")
	}))
	s.addRoutes(r)
	return r
}
