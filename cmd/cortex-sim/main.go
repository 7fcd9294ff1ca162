// Command cortex-sim runs the simulated Cortex tenant of package fetch/cortexsim on a port for the
// offline demo and manual testing. It prints the URL, the key id and the key.
//
//	go run ./cmd/cortex-sim -addr 127.0.0.1:0 -incidents 20 -product xsiam
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"casearchiver/fetch/cortexsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "cortex-sim: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8089", "listen address (port 0 picks a free port)")
	product := fs.String("product", "xsiam", "xsiam, xsoar8 or xsoar6")
	keyID := fs.String("key-id", "", "API key id (generated when empty)")
	key := fs.String("key", "", "API key (generated when empty)")
	advanced := fs.Bool("advanced", false, "the key is an advanced key (hashed auth only)")
	seed := fs.Int64("seed", 1, "scenario and fault seed")
	incidents := fs.Int("incidents", 20, "incidents to generate")
	maxAlerts := fs.Int("max-alerts", 3, "alerts per incident are 1..n (XSIAM)")
	entries := fs.Int("entries", 8, "war-room entries per investigation")
	files := fs.Int("files", 2, "file entries per incident")
	maxFile := fs.Int64("max-file-size", 256<<10, "file sizes are 0..n bytes")
	bigFile := fs.Int64("big-file", 0, "add one incident with a file of this many bytes (e.g. 1073741824)")
	truncateEvery := fs.Int("truncate-every", 0, "every n-th incident has more than 1000 alerts")
	risky := fs.Int("risky-users", 5, "risky users; negative turns the identity module off")
	rps := fs.Float64("rps", 10, "tenant-wide requests per second (0 = unlimited)")
	extraPerMin := fs.Int("extra-per-minute", 10, "get_incident_extra_data per minute (0 = unlimited)")
	latency := fs.Duration("latency", 0, "latency added to every request")
	errorRate := fs.Float64("error-rate", 0, "fault: share of requests answered 5xx")
	limitRate := fs.Float64("429-rate", 0, "fault: share of requests answered 429")
	retryAfter := fs.Duration("retry-after", 0, "fault: Retry-After of injected 429s")
	resetRate := fs.Float64("reset-rate", 0, "fault: share of answers reset mid-body")
	truncRate := fs.Float64("truncate-rate", 0, "fault: share of answers truncated")
	slow := fs.Duration("slow-body", 0, "fault: spread every body over this long")
	verbose := fs.Bool("v", false, "log every request")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch *product {
	case cortexsim.XSIAM, cortexsim.XSOAR8, cortexsim.XSOAR6:
	default:
		return fmt.Errorf("-product must be xsiam, xsoar8 or xsoar6, not %q", *product)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	sim := cortexsim.New(cortexsim.Options{Product: *product, KeyID: *keyID, Key: *key, Advanced: *advanced,
		Seed: *seed, Latency: *latency, RequestsPerSecond: *rps, ExtraDataPerMinute: *extraPerMin})
	sim.Generate(cortexsim.ScenarioOptions{Incidents: *incidents, MaxAlerts: *maxAlerts, Entries: *entries,
		Files: *files, MaxFileSize: *maxFile, TruncateEvery: *truncateEvery})
	if *bigFile > 0 {
		sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_true_positive", Alerts: 1, EntriesPerInvestigation: 3,
			Files: []cortexsim.FileSpec{{Name: "big.bin", Size: *bigFile}}})
	}
	sim.SetRiskyUsers(*risky)
	if f := (cortexsim.Faults{ErrorRate: *errorRate, RateLimitRate: *limitRate, RetryAfter: *retryAfter,
		ResetRate: *resetRate, TruncateRate: *truncRate, SlowBody: *slow}); f != (cortexsim.Faults{}) {
		sim.SetFaults(cortexsim.EPAll, f)
	}

	var h http.Handler = sim
	if *verbose {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sim.ServeHTTP(w, r)
			log.InfoContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start))
		})
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	_, _ = fmt.Fprintf(stdout, "url=http://%s\nproduct=%s\nkey_id=%s\nkey=%s\nkey_type=%s\nincidents=%d\n",
		ln.Addr(), *product, sim.KeyID(), sim.Key(), map[bool]string{false: "standard", true: "advanced"}[*advanced],
		len(sim.Incidents()))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
