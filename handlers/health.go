package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (s *server) handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		encode(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz answers 200 only when the archive store is reachable.
func (s *server) handleReadyz() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.ready.Ping(ctx); err != nil {
			s.logger.WarnContext(r.Context(), "not ready", "err", err)
			return problem(http.StatusServiceUnavailable, "the archive store is not reachable")
		}
		encode(w, http.StatusOK, map[string]string{"status": "ready"})
		return nil
	})
}

func (s *server) handleMetrics() http.HandlerFunc {
	return promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP
}

func (s *server) handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(s.spec)
	}
}
