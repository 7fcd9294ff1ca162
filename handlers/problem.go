package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/jobs"
	"casearchiver/store"
)

// Problem is an RFC 9457 problem details body. It is the only error shape the API emits.
type Problem struct {
	Type   string            `json:"type"`
	Title  string            `json:"title"`
	Status int               `json:"status"`
	Detail string            `json:"detail,omitempty"`
	Errors map[string]string `json:"errors,omitempty"`
	// Header carries response headers that belong to the problem (WWW-Authenticate, Allow).
	Header http.Header `json:"-"`
}

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

// problem builds a Problem with the status text as its title.
func problem(status int, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// invalid is the 422 answer for fields that decoded but failed validation, keyed by JSON field.
func invalid(fields map[string]string) *Problem {
	p := problem(http.StatusUnprocessableEntity, "one or more fields are invalid")
	p.Errors = fields
	return p
}

// handle adapts a handler that returns an error into an http.HandlerFunc. Every error becomes a
// problem+json response in exactly one place; 5xx causes are logged once and never sent to clients.
func handle(logger *slog.Logger, h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(r.Context(), logger, w, err)
		}
	}
}

// writeError maps an error to a problem through the project's error vocabulary.
func writeError(ctx context.Context, logger *slog.Logger, w http.ResponseWriter, err error) {
	p := toProblem(err)
	if p.Status >= 500 {
		logger.ErrorContext(ctx, "request failed", "status", p.Status, "err", err)
	}
	writeProblem(w, p)
}

func toProblem(err error) *Problem {
	var p *Problem
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &mbe):
		return problem(http.StatusRequestEntityTooLarge, "request body exceeds "+strconv.FormatInt(mbe.Limit, 10)+" bytes")
	case errors.Is(err, jobs.ErrNotFound), errors.Is(err, archive.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return problem(http.StatusNotFound, "no such resource")
	case errors.Is(err, fetch.ErrNotFound):
		return problem(http.StatusNotFound, "the tenant does not know this incident")
	case errors.Is(err, store.ErrInvalidKey):
		return problem(http.StatusBadRequest, "invalid object path")
	case errors.Is(err, fetch.ErrUnauthorized), errors.Is(err, fetch.ErrForbidden):
		return problem(http.StatusBadGateway, "the tenant refused our credentials")
	case errors.Is(err, fetch.ErrRateLimited):
		p := problem(http.StatusServiceUnavailable, "the tenant is rate limiting us; retry later")
		p.Header = http.Header{"Retry-After": {"30"}}
		return p
	case errors.Is(err, context.DeadlineExceeded):
		return problem(http.StatusGatewayTimeout, "the operation timed out")
	case errors.Is(err, store.ErrTransient):
		return problem(http.StatusServiceUnavailable, "the archive store is unavailable; retry later")
	default:
		return problem(http.StatusInternalServerError, "internal error")
	}
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	for k, vs := range p.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if p.Type == "" {
		p.Type = "about:blank"
	}
	writeJSON(w, p.Status, "application/problem+json", p)
}

// encode writes v as JSON with the given status. The body is encoded into a buffer first so that an
// encoding failure can still become a clean 500 instead of a truncated 200.
func encode(w http.ResponseWriter, status int, v any) {
	writeJSON(w, status, "application/json", v)
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status, contentType = http.StatusInternalServerError, "application/problem+json"
		buf.WriteString(`{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"internal error"}`)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
