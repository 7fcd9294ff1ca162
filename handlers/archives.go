package handlers

import (
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	"casearchiver/archive"
)

// archivePath parses and validates the incident id and, when present, the version of a route.
func archivePath(r *http.Request) (incidentID, version string, err error) {
	incidentID, err = ParseIncidentID(chi.URLParam(r, "incident_id"))
	if err != nil {
		return "", "", invalid(map[string]string{"incident_id": err.Error()})
	}
	version = chi.URLParam(r, "version")
	if version != "" && version != archive.Latest && !archive.ValidVersion(version) {
		return "", "", invalid(map[string]string{"version": "must be a version id or latest"})
	}
	return incidentID, version, nil
}

func (s *server) handleListArchives() http.HandlerFunc {
	type response struct {
		IncidentID string            `json:"incident_id"`
		Versions   []archive.Version `json:"versions"`
	}
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id, _, err := archivePath(r)
		if err != nil {
			return err
		}
		all := false
		if v := r.URL.Query().Get("include_incomplete"); v != "" {
			if all, err = strconv.ParseBool(v); err != nil {
				return invalid(map[string]string{"include_incomplete": "must be true or false"})
			}
		}
		versions, err := s.archives.Versions(r.Context(), id, all)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, response{IncidentID: id, Versions: versions})
		return nil
	})
}

func (s *server) handleGetManifest() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id, version, err := archivePath(r)
		if err != nil {
			return err
		}
		m, err := s.archives.Manifest(r.Context(), id, version)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Length", strconv.Itoa(len(m)))
		_, _ = w.Write(m) //nolint:gosec // a JSON manifest served as application/json with nosniff

		return nil
	})
}

// handleGetObject streams one archived object, so a case can be read back after the tenant deleted it.
func (s *server) handleGetObject() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id, version, err := archivePath(r)
		if err != nil {
			return err
		}
		// chi matches on the raw path when the client escaped characters such as '@'.
		rel, err := url.PathUnescape(chi.URLParam(r, "*"))
		if err != nil {
			return invalid(map[string]string{"path": "is not a valid escaped path"})
		}
		rc, info, err := s.archives.OpenObject(r.Context(), id, version, rel)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := w.Header()
		h.Set("Content-Type", info.ContentType)
		h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Disposition", "attachment")
		if info.SHA256 != "" {
			h.Set("X-Archive-SHA256", info.SHA256)
		}
		if _, err := io.Copy(w, rc); err != nil {
			s.logger.WarnContext(r.Context(), "object stream interrupted", "incident_id", id, "err", err)
		}
		return nil
	})
}

func (s *server) handleVerify() http.HandlerFunc {
	return handle(s.logger, func(w http.ResponseWriter, r *http.Request) error {
		id, version, err := archivePath(r)
		if err != nil {
			return err
		}
		rep, err := s.archives.Verify(r.Context(), id, version)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, rep)
		return nil
	})
}
