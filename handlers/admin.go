package handlers

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"casearchiver/jobs"
)

func (s *server) handleRiskySnapshot() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		p, _ := principalFrom(r.Context())
		snap, err := s.risky.SnapshotRiskyUsers(r.Context(), p.Subject)
		if err != nil {
			return err
		}
		encode(w, http.StatusCreated, snap)
		return nil
	})
}

// handleTask runs a job delivered by Cloud Tasks. 5xx asks Cloud Tasks to retry; a final failure is
// recorded in the job and answered 200 so that it is not retried.
func (s *server) handleTask() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		if err := s.tasks.Verify(r.Context(), r); err != nil {
			s.metrics.authFailures.WithLabelValues("bad_oidc").Inc()
			s.logger.WarnContext(r.Context(), "task authentication failed", "err", err)
			return unauthorized("a valid Cloud Tasks OIDC token is required")
		}
		body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
		if err != nil {
			return err
		}
		err = s.tasks.Execute(r.Context(), body)
		switch {
		case jobs.IsRetryable(err):
			s.logger.WarnContext(r.Context(), "task attempt failed; Cloud Tasks will retry", "err", err)
			return problem(http.StatusServiceUnavailable, "the attempt failed and will be retried")
		case errors.Is(err, jobs.ErrInvalid):
			return problem(http.StatusBadRequest, "the task body is not a valid job")
		case err != nil:
			s.logger.ErrorContext(r.Context(), "task failed for good", "err", err)
		}
		encode(w, http.StatusOK, map[string]string{"status": "done"})
		return nil
	})
}

func (s *server) handleStartBackfill() http.HandlerFunc {
	type request struct {
		Statuses       []string `json:"statuses" validate:"max=32,dive,max=64,slug"`
		CreatedFrom    string   `json:"created_from" validate:"omitempty,datetime=2006-01-02T15:04:05Z07:00"`
		CreatedTo      string   `json:"created_to" validate:"omitempty,datetime=2006-01-02T15:04:05Z07:00"`
		ModifiedFrom   string   `json:"modified_from" validate:"omitempty,datetime=2006-01-02T15:04:05Z07:00,excluded_with=ModifiedWithin"`
		ModifiedTo     string   `json:"modified_to" validate:"omitempty,datetime=2006-01-02T15:04:05Z07:00"`
		ModifiedWithin string   `json:"modified_within" validate:"omitempty,max=16"`
		IncidentIDs    []string `json:"incident_ids" validate:"max=1000"`
		DryRun         bool     `json:"dry_run"`
		Force          bool     `json:"force"`
	}
	parse := func(v string) time.Time { t, _ := time.Parse(time.RFC3339, v); return t } // validated
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		wait, timeout, err := s.parseWait(r)
		if err != nil {
			return err
		}
		body, err := decode[request](r, s.validate, true)
		if err != nil {
			return err
		}
		f := jobs.Filter{
			Statuses: body.Statuses, CreatedFrom: parse(body.CreatedFrom), CreatedTo: parse(body.CreatedTo),
			ModifiedFrom: parse(body.ModifiedFrom), ModifiedTo: parse(body.ModifiedTo),
			DryRun: body.DryRun, Force: body.Force,
		}
		if body.ModifiedWithin != "" {
			d, err := time.ParseDuration(body.ModifiedWithin)
			if err != nil || d <= 0 {
				return invalid(map[string]string{"modified_within": "must be a positive duration such as 24h"})
			}
			f.ModifiedFrom = s.cfg.Now().Add(-d)
		}
		for i, id := range body.IncidentIDs {
			n, err := ParseIncidentID(id)
			if err != nil {
				return invalid(map[string]string{fmt.Sprintf("incident_ids[%d]", i): err.Error()})
			}
			f.IDs = append(f.IDs, n)
		}
		st, err := s.backfills.Start(r.Context(), f)
		if err != nil {
			return err
		}
		if f.DryRun {
			encode(w, http.StatusOK, st)
			return nil
		}
		w.Header().Set("Location", "/v1/backfill/"+st.ID)
		if wait {
			// On Cloud Run with request-based billing the sweep only gets CPU while a request is
			// open: Cloud Scheduler calls with wait=true so that its request covers the sweep.
			ctx, cancel := s.waitContext(r, timeout)
			st, err = s.backfills.Wait(ctx, st.ID)
			cancel()
			if err != nil {
				return err
			}
			if st.State != jobs.BackfillRunning {
				encode(w, http.StatusOK, st)
				return nil
			}
		}
		encode(w, http.StatusAccepted, st)
		return nil
	})
}

func (s *server) handleGetBackfill() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id := chi.URLParam(r, "backfill_id")
		if !jobs.ValidID(id) {
			return invalid(map[string]string{"backfill_id": "is not a backfill id"})
		}
		st, err := s.backfills.Get(r.Context(), id)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, st)
		return nil
	})
}
