package handlers

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

type traceKey struct{}

// traceID extracts the trace id from traceparent, or from X-Cloud-Trace-Context as a fallback.
func traceID(r *http.Request) string {
	if tp := r.Header.Get("traceparent"); tp != "" {
		if parts := strings.Split(tp, "-"); len(parts) == 4 && len(parts[1]) == 32 {
			return parts[1]
		}
	}
	if xc := r.Header.Get("X-Cloud-Trace-Context"); xc != "" {
		id, _, _ := strings.Cut(xc, "/")
		if len(id) == 32 && isHex(id) {
			return id
		}
	}
	return ""
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// LogHandler adds the request's trace to every record logged with a request context, under the
// Cloud Logging key when the project is known.
type LogHandler struct {
	slog.Handler
	project string
}

// NewLogHandler wraps h so that records carry the trace of the request in their context.
func NewLogHandler(h slog.Handler, project string) *LogHandler {
	return &LogHandler{Handler: h, project: project}
}

// Handle implements slog.Handler.
func (h *LogHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id, ok := ctx.Value(traceKey{}).(string); ok && id != "" {
		if h.project != "" {
			rec.AddAttrs(slog.String("logging.googleapis.com/trace", //nolint:sloglint // Cloud Logging's special key
				"projects/"+h.project+"/traces/"+id))
		} else {
			rec.AddAttrs(slog.String("trace_id", id))
		}
	}
	return h.Handler.Handle(ctx, rec)
}

// WithAttrs implements slog.Handler.
func (h *LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogHandler{Handler: h.Handler.WithAttrs(as), project: h.project}
}

// WithGroup implements slog.Handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{Handler: h.Handler.WithGroup(name), project: h.project}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// observe logs one line per request, records metrics and turns panics into 500s.
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if id := traceID(r); id != "" {
			r = r.WithContext(context.WithValue(r.Context(), traceKey{}, id))
		}
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				s.logger.ErrorContext(r.Context(), "panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if rec.status == 0 {
					writeProblem(rec, problem(http.StatusInternalServerError, "internal error"))
				}
			}
			route := chi.RouteContext(r.Context()).RoutePattern()
			if route == "" {
				route = "unmatched"
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			code := strconv.Itoa(status)
			s.metrics.requests.WithLabelValues(route, r.Method, code).Inc()
			s.metrics.latency.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			switch {
			case status >= 500:
				level = slog.LevelError
			case status >= 400:
				level = slog.LevelWarn
			case route == "/healthz" || route == "/readyz" || route == "/metrics":
				level = slog.LevelDebug
			}
			s.logger.Log(r.Context(), level, "request",
				"method", r.Method, "route", route, "path", r.URL.Path, "status", status,
				"latency_ms", float64(elapsed.Microseconds())/1000, "bytes", rec.bytes)
		}()
		next.ServeHTTP(rec, r)
	})
}
