package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch/cortexsim"
	"casearchiver/handlers"
)

// demoTenant is the simulated tenant of the offline demo, served on a loopback port.
type demoTenant struct {
	URL, KeyID, Key string
	Cases           []string
	srv             *http.Server
}

// startDemoTenant serves a simulated XSIAM tenant with a handful of closed sample cases: alerts with
// war rooms over several pages, files (one with a hostile name, one the tenant lost), context and
// risky users.
func startDemoTenant(ctx context.Context, logger *slog.Logger) (*demoTenant, error) {
	sim := cortexsim.New(cortexsim.Options{Product: "xsiam", Seed: 1})
	sim.SetRiskyUsers(3)
	closed := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Millisecond)
	specs := []cortexsim.IncidentSpec{
		{Status: "resolved_true_positive", Alerts: 3, EntriesPerInvestigation: 12, ContextKeys: 4,
			NetworkArtifacts: 2, FileArtifacts: 1, Created: closed.Add(-72 * time.Hour), Modified: closed,
			Files: []cortexsim.FileSpec{{Name: "phishing-email.eml", Size: 48 << 10}, {Name: "../../etc/passwd", Size: 900}}},
		{Status: "resolved_false_positive", Alerts: 1, EntriesPerInvestigation: 230, ContextKeys: 2,
			Created: closed.Add(-48 * time.Hour), Modified: closed,
			Files: []cortexsim.FileSpec{{Name: "memory-dump.bin", Size: 4 << 20}}},
		{Status: "resolved_other", Alerts: 2, EntriesPerInvestigation: 5, Created: closed.Add(-30 * time.Hour), Modified: closed,
			Files: []cortexsim.FileSpec{{Name: "report.pdf", Size: 120 << 10}, {Name: "purged.zip", Size: 10, Missing: true}}},
	}
	d := &demoTenant{KeyID: sim.KeyID(), Key: sim.Key()}
	for _, s := range specs {
		d.Cases = append(d.Cases, sim.AddIncident(s))
	}
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo tenant: %w", err)
	}
	d.URL = "http://" + ln.Addr().String()
	d.srv = &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.ErrorContext(ctx, "demo tenant stopped", "err", err)
		}
	}()
	return d, nil
}

func (d *demoTenant) Close() { _ = d.srv.Close() }

// runDemo prints how to talk to the server, archives the sample cases and prints where they went.
func runDemo(ctx context.Context, out io.Writer, logger *slog.Logger, d *demoTenant, q handlers.Jobs, arch *archive.Archiver, token string, port int) {
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	fmt.Fprintf(out, "\nCase Archiver demo: simulated XSIAM tenant at %s, API at %s\n", d.URL, base)
	fmt.Fprintf(out, "Bearer token (admin): %s\n\nTry:\n", token)
	fmt.Fprintf(out, "  export TOKEN=%s\n", token)
	fmt.Fprintf(out, "  curl -s -X POST -H \"Authorization: Bearer $TOKEN\" '%s/v1/incidents/%s/archive?wait=true'\n", base, d.Cases[0])
	fmt.Fprintf(out, "  curl -s -H \"Authorization: Bearer $TOKEN\" %s/v1/incidents/%s/archives\n", base, d.Cases[0])
	fmt.Fprintf(out, "  curl -s -H \"Authorization: Bearer $TOKEN\" %s/v1/incidents/%s/archives/latest\n", base, d.Cases[0])
	fmt.Fprintf(out, "  curl -s -X POST -H \"Authorization: Bearer $TOKEN\" %s/v1/incidents/%s/archives/latest/verify\n", base, d.Cases[0])
	fmt.Fprintf(out, "  curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"dry_run\":true}' %s/v1/backfill\n\n", base)

	for _, id := range d.Cases {
		job, _, err := q.Submit(ctx, archive.Request{IncidentID: id, Reason: archive.ReasonManual, RequestedBy: "demo"})
		if err != nil {
			logger.ErrorContext(ctx, "demo archive not accepted", "incident_id", id, "err", err)
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		job, err = q.Wait(wctx, job.ID)
		cancel()
		switch {
		case err != nil:
			fmt.Fprintf(out, "case %s: %v\n", id, err)
		case job.Result == nil:
			fmt.Fprintf(out, "case %s: job %s %s %s\n", id, job.ID, job.State, job.Error)
		default:
			fmt.Fprintf(out, "case %s: archived %d objects, %d bytes -> %s\n", id, job.Result.Objects, job.Result.Bytes, job.Result.ManifestPath)
			for _, in := range job.Result.Incomplete {
				fmt.Fprintf(out, "    incomplete (%s): %s\n", in.Kind, in.Detail)
			}
			if rep, err := arch.Verify(ctx, id, job.Result.Version); err == nil {
				fmt.Fprintf(out, "    verified: %s (%d/%d objects ok)\n", rep.Status, rep.OK, rep.Checked)
			}
		}
	}
	fmt.Fprintln(out, "\nDemo archives written. The server keeps serving; Ctrl-C stops it.")
}
