package handlers

import (
	"github.com/go-chi/chi/v5"
)

// addRoutes maps the entire API surface. openapi.yaml describes exactly these routes (a test checks).
func (s *server) addRoutes(r chi.Router) {
	r.Get("/healthz", s.handleHealthz())
	r.Get("/readyz", s.handleReadyz())
	r.Get("/metrics", s.handleMetrics())
	r.Get("/openapi.yaml", s.handleOpenAPI())

	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)

		r.With(s.require(roleAny)).Get("/v1/whoami", s.handleWhoami())
		r.With(s.require(RoleTrigger)).Post("/v1/incidents/{incident_id}/archive", s.handleTrigger())

		r.Group(func(r chi.Router) {
			r.Use(s.require(RoleRead))
			r.Get("/v1/jobs/{job_id}", s.handleGetJob())
			r.Get("/v1/incidents/{incident_id}/archives", s.handleListArchives())
			r.Get("/v1/incidents/{incident_id}/archives/{version}", s.handleGetManifest())
			r.Get("/v1/incidents/{incident_id}/archives/{version}/objects/*", s.handleGetObject())
			r.Post("/v1/incidents/{incident_id}/archives/{version}/verify", s.handleVerify())
		})

		r.Group(func(r chi.Router) {
			r.Use(s.require(RoleAdmin))
			r.Post("/v1/backfill", s.handleStartBackfill())
			r.Get("/v1/backfill/{backfill_id}", s.handleGetBackfill())
			r.Post("/v1/risky-users/snapshot", s.handleRiskySnapshot())
		})
	})

	if s.tasks != nil {
		r.Post("/internal/tasks/archive", s.handleTask())
	}
}
