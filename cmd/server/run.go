package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"casearchiver"
	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/handlers"
	"casearchiver/jobs"
	"casearchiver/store"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// shutdownBudget is how long the server may take to stop after SIGTERM: Cloud Run kills it 10 s
// later. In-flight requests and running jobs get shutdownGrace of it; the rest is margin for a loaded
// machine. Jobs still running then are cancelled and resume from the store on the next start.
const (
	shutdownBudget = 8 * time.Second
	shutdownGrace  = shutdownBudget - 2*time.Second
)

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	demo := fs.Bool("demo", false, "run offline: simulated tenant with sample cases, archive into ARCHIVE_URL (default ./archive)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version)
		return nil
	}
	cfg, err := loadConfig(getenv, *demo, isTerminal(stderr))
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogFormat, cfg.LogLevel, cfg.Project)
	logger.InfoContext(ctx, "configuration loaded", "variables_set", configured(getenv), "demo", *demo)

	st, err := store.New(ctx, cfg.ArchiveURL, store.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("archive store: %w", err)
	}
	defer st.Close()

	var sample *demoTenant
	if *demo {
		if sample, err = startDemoTenant(ctx, logger); err != nil {
			return err
		}
		defer sample.Close()
		cfg.Cortex.BaseURL, cfg.Cortex.KeyID, cfg.Cortex.Key = sample.URL, sample.KeyID, sample.Key
		// The simulated tenant has no limits: keep the demo quick unless limits were set explicitly.
		if getenv("CORTEX_EXTRA_DATA_PER_MINUTE") == "" {
			cfg.Cortex.ExtraDataPerMinute = 600
		}
		if getenv("CORTEX_RATE_LIMIT") == "" {
			cfg.Cortex.RequestsPerSecond = 200
		}
		if len(cfg.Tokens) == 0 {
			cfg.Tokens = []handlers.Token{{Role: handlers.RoleAdmin, Value: randomToken()}}
		}
	}
	cfg.Cortex.Logger = logger
	tenant, err := fetch.New(cfg.Cortex, &http.Client{})
	if err != nil {
		return fmt.Errorf("tenant client: %w", err)
	}
	arch := archive.New(logger, tenant, st, archive.Config{Concurrency: cfg.Concurrency, ToolVersion: version})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	q, tasks, stopQueue, err := newQueue(ctx, cfg, logger, reg, st, arch)
	if err != nil {
		return err
	}
	backfill, err := jobs.NewBackfill(jobs.BackfillConfig{
		Store: st, Queue: q, Searcher: tenant, Currency: arch, Logger: logger, DefaultStatuses: closedStatuses(cfg.Cortex.Product),
	})
	if err != nil {
		return errors.Join(err, stopQueue(ctx))
	}

	draining := make(chan struct{})
	h := handlers.NewServer(logger, handlers.Config{Tokens: cfg.Tokens, WebhookSecrets: cfg.WebhookSecrets, Draining: draining},
		reg, q, arch, backfill, arch, tasks, st, casearchiver.OpenAPI)
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(draining) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	addr := ln.Addr().(*net.TCPAddr)
	logger.InfoContext(ctx, "server listening", "addr", addr.String(), "port", addr.Port, "version", version,
		"archive", st.String(), "product", string(cfg.Cortex.Product), "queue", cfg.Queue)

	if *demo {
		go runDemo(ctx, stdout, logger, sample, q, arch, cfg.Tokens[0].Value, addr.Port)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	logger.InfoContext(sctx, "shutting down")
	err = srv.Shutdown(sctx)
	err = errors.Join(err, backfill.Stop(sctx))
	if qerr := stopQueue(sctx); qerr != nil && !errors.Is(qerr, context.DeadlineExceeded) {
		err = errors.Join(err, qerr)
	}
	logger.InfoContext(sctx, "stopped")
	return err
}

// newQueue builds the configured job queue, started, and the function that stops it. With Cloud Tasks
// it also returns the task route's handler; with the local queue that route is not served.
func newQueue(ctx context.Context, cfg config, logger *slog.Logger, reg prometheus.Registerer, st *store.Store, arch *archive.Archiver) (handlers.Jobs, handlers.Tasks, func(context.Context) error, error) {
	if cfg.Queue == "cloudtasks" {
		client, err := cloudtasks.NewClient(ctx)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cloud tasks client: %w", err)
		}
		ct, err := jobs.NewCloudTasks(jobs.CloudTasksConfig{
			Client: client, Store: st, Runner: arch, Logger: logger, Registerer: reg, Retryable: archive.Retryable,
			Queue: cfg.CloudTasks.Queue, TargetURL: cfg.CloudTasks.TargetURL,
			ServiceAccount: cfg.CloudTasks.ServiceAccount, Audience: cfg.CloudTasks.Audience,
			MaxAttempts: cfg.MaxAttempts,
		})
		if err != nil {
			return nil, nil, nil, errors.Join(err, client.Close())
		}
		verifier, err := jobs.NewTaskVerifier(cfg.CloudTasks.Audience, cfg.CloudTasks.ServiceAccount)
		if err != nil {
			return nil, nil, nil, errors.Join(err, client.Close())
		}
		return ct, taskEndpoint{verifier, ct}, func(context.Context) error { return client.Close() }, nil
	}
	q, err := jobs.NewLocal(jobs.LocalConfig{
		Store: st, Runner: arch, Logger: logger, Registerer: reg, Retryable: archive.Retryable,
		Workers: cfg.Workers, MaxAttempts: cfg.MaxAttempts,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if err := q.Start(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("job queue: %w", err)
	}
	return q, nil, q.Stop, nil
}

// taskEndpoint joins the OIDC verifier and the Cloud Tasks executor behind handlers.Tasks.
type taskEndpoint struct {
	*jobs.TaskVerifier
	*jobs.CloudTasks
}

// closedStatuses are the statuses a backfill archives by default: XSIAM's resolved_* statuses, or
// XSOAR's closed status.
func closedStatuses(p fetch.Product) []string {
	if p == fetch.XSIAM {
		return nil // jobs.DefaultBackfillStatuses
	}
	return []string{"done"}
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
