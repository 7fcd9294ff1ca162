package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"casearchiver/archive"
	"casearchiver/jobs"
)

func (s *server) handleWhoami() http.HandlerFunc {
	type response struct {
		Subject string `json:"subject"`
		Roles   []Role `json:"roles"`
	}
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		p, _ := principalFrom(r.Context())
		encode(w, http.StatusOK, response{Subject: p.Subject, Roles: p.Roles})
		return nil
	})
}

func (s *server) handleTrigger() http.HandlerFunc {
	type request struct {
		Reason      string `json:"reason" validate:"omitempty,max=64,slug"`
		AlertID     string `json:"alert_id" validate:"omitempty,max=64,slug"`
		ClosedAt    string `json:"closed_at" validate:"omitempty,datetime=2006-01-02T15:04:05Z07:00"`
		RequestedBy string `json:"requested_by" validate:"omitempty,max=256"`
		Force       bool   `json:"force"`
	}
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id, err := ParseIncidentID(chi.URLParam(r, "incident_id"))
		if err != nil {
			return invalid(map[string]string{"incident_id": err.Error()})
		}
		wait, timeout, err := s.parseWait(r)
		if err != nil {
			return err
		}
		body, err := decode[request](r, s.validate, true)
		if err != nil {
			return err
		}
		p, _ := principalFrom(r.Context())
		req := archive.Request{
			IncidentID:  id,
			Reason:      body.Reason,
			AlertID:     body.AlertID,
			RequestedBy: body.RequestedBy,
			WebhookID:   p.WebhookID,
			Force:       body.Force,
		}
		if req.Reason == "" {
			req.Reason = archive.ReasonManual
			if p.WebhookID != "" {
				req.Reason = archive.ReasonIncidentClosed
			}
		}
		if req.RequestedBy == "" {
			req.RequestedBy = p.Subject
		}
		if body.ClosedAt != "" {
			req.ClosedAt, _ = time.Parse(time.RFC3339, body.ClosedAt) // validated above
		}
		job, created, err := s.jobs.Submit(r.Context(), req)
		if err != nil {
			return err
		}
		s.logger.InfoContext(r.Context(), "archive accepted", "incident_id", id, "job_id", job.ID,
			"new_job", created, "reason", req.Reason)
		w.Header().Set("Location", "/v1/jobs/"+job.ID)
		if wait && !job.State.Finished() {
			ctx, cancel := s.waitContext(r, timeout)
			job, err = s.jobs.Wait(ctx, job.ID)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
		}
		status := http.StatusAccepted
		if wait && job.State.Finished() {
			status = http.StatusCreated
		}
		encode(w, status, job)
		return nil
	})
}

// waitContext bounds a ?wait=true request: it ends after timeout, with the request, or as soon as
// the server starts draining, so that waiting requests never hold up a shutdown.
func (s *server) waitContext(r *http.Request, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	go func() {
		select {
		case <-s.cfg.Draining:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// parseWait reads ?wait=true and ?timeout= (a Go duration or seconds, at most MaxWait).
func (s *server) parseWait(r *http.Request) (bool, time.Duration, error) {
	q := r.URL.Query()
	wait := false
	if v := q.Get("wait"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, 0, invalid(map[string]string{"wait": "must be true or false"})
		}
		wait = b
	}
	timeout := min(60*time.Second, s.cfg.MaxWait)
	if v := q.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			secs, serr := strconv.Atoi(v)
			d, err = time.Duration(secs)*time.Second, serr
		}
		if err != nil || d <= 0 || d > s.cfg.MaxWait {
			return false, 0, invalid(map[string]string{"timeout": "must be a duration between 1s and " + s.cfg.MaxWait.String()})
		}
		timeout = d
	}
	return wait, timeout, nil
}

func (s *server) handleGetJob() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id := chi.URLParam(r, "job_id")
		if !jobs.ValidID(id) {
			return invalid(map[string]string{"job_id": "is not a job id"})
		}
		job, err := s.jobs.Get(r.Context(), id)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, job)
		return nil
	})
}
