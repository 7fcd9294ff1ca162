package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Alert is one alert of an incident's extra data.
type Alert struct {
	ID  string          // alert_id, also the id of the alert's war room on XSIAM
	Raw json.RawMessage // the alert object as returned
}

// ExtraData is the reply of get_incident_extra_data.
type ExtraData struct {
	Raw              json.RawMessage // the reply object as returned (without the "reply" envelope)
	Incident         Incident
	Alerts           []Alert
	AlertsTotal      int  // alerts.total_count: every alert of the incident
	Truncated        bool // AlertsTotal > len(Alerts): the tenant returned fewer alerts than exist
	NetworkArtifacts int  // network_artifacts.total_count
	FileArtifacts    int  // file_artifacts.total_count
}

// alertsLimit is the alerts_limit sent with get_incident_extra_data (the documented default).
const alertsLimit = 1000

// GetExtraData returns an incident with its alerts (up to 1000) and artifacts. Each call takes a
// token of the extra-data limiter as well as the tenant-wide one. ErrNotFound for an unknown
// incident.
//
// XSOAR has no extra-data API and no alerts: on XSOAR 8/6 the result holds the incident from
// incidents/search, Raw is {"incident": <that object>} and there are no alerts.
func (c *Client) GetExtraData(ctx context.Context, incidentID string) (ExtraData, error) {
	op := "get extra data " + incidentID
	if c.cfg.Product != XSIAM {
		inc, err := c.GetIncident(ctx, incidentID)
		if err != nil {
			return ExtraData{}, err
		}
		raw, err := json.Marshal(map[string]json.RawMessage{"incident": inc.Raw})
		if err != nil {
			return ExtraData{}, fmt.Errorf("fetch: %s: %w", op, err)
		}
		return ExtraData{Raw: raw, Incident: inc, Alerts: []Alert{}}, nil
	}
	body := map[string]any{"request_data": map[string]any{"incident_id": incidentID, "alerts_limit": alertsLimit}}
	reply, err := c.postJSON(ctx, op, c.public+"/incidents/get_incident_extra_data", body, true, true)
	if err != nil {
		return ExtraData{}, fmt.Errorf("fetch: %s: %w", op, err)
	}
	x, err := decodeExtraData(reply)
	if err != nil {
		return ExtraData{}, fmt.Errorf("fetch: %s: %w", op, err)
	}
	return x, nil
}

// Entry is one war-room entry.
type Entry struct {
	ID              string // "<n>@<investigation id>"
	InvestigationID string
	Type            int    // EntryType: 1 note/command output, 3 file, 4 error, 7 image, ...
	File            string // file name of file-bearing entries
	FileID          string
	FileSize        int64  // fileMetadata.size, -1 when unknown
	FileSHA256      string // fileMetadata.sha256 (lowercase hex), may be ""
	Note            bool   // analyst note flag
	Created         time.Time
	Raw             json.RawMessage // the entry object as returned
}

// HasFile reports whether the entry carries a downloadable file.
func (e Entry) HasFile() bool { return e.File != "" || e.FileID != "" }

// Entries is the whole war room of one investigation.
type Entries struct {
	Raw     json.RawMessage // JSON array of every entry object, in order
	Entries []Entry
	Total   int // totalEntries reported by the tenant
	Pages   int // requests it took
}

// GetEntries returns every entry of an investigation, oldest first, paging with pageSize and a
// lastID cursor (see the package documentation). ErrNotFound for an unknown investigation.
func (c *Client) GetEntries(ctx context.Context, investigationID string) (Entries, error) {
	op := "get entries " + investigationID
	wrap := func(err error) error { return fmt.Errorf("fetch: %s: %w", op, err) }
	u := c.server + "/investigation/" + escapeID(investigationID)
	out := Entries{Entries: []Entry{}}
	var buf bytes.Buffer
	buf.WriteByte('[')
	seen := make(map[string]struct{})
	cursor := ""
	for {
		req := map[string]any{"pageSize": c.cfg.PageSize}
		if cursor != "" {
			req["lastID"] = cursor
		}
		b, err := c.postJSON(ctx, op, u, req, false, false)
		if err != nil {
			return Entries{}, wrap(err)
		}
		out.Pages++
		var w struct {
			ID           flexString        `json:"id"`
			Entries      []json.RawMessage `json:"entries"`
			TotalEntries *flexInt          `json:"totalEntries"`
		}
		if err := json.Unmarshal(b, &w); err != nil {
			return Entries{}, wrap(fmt.Errorf("decode investigation: %w", err))
		}
		if w.TotalEntries != nil {
			out.Total = int(*w.TotalEntries)
		}
		for _, raw := range w.Entries {
			e, err := decodeEntry(raw)
			if err != nil {
				return Entries{}, wrap(err)
			}
			if _, dup := seen[e.ID]; dup {
				return Entries{}, wrap(fmt.Errorf("entry %s returned twice: the tenant ignored the lastID cursor", e.ID))
			}
			seen[e.ID] = struct{}{}
			if len(out.Entries) > 0 {
				buf.WriteByte(',')
			}
			buf.Write(raw)
			out.Entries = append(out.Entries, e)
		}
		// totalEntries decides when present (a tenant may serve smaller pages than asked for); a
		// short page decides otherwise; an empty page always ends.
		if len(w.Entries) == 0 || (w.TotalEntries != nil && len(out.Entries) >= out.Total) ||
			(w.TotalEntries == nil && len(w.Entries) < c.cfg.PageSize) {
			break
		}
		cursor = out.Entries[len(out.Entries)-1].ID
	}
	buf.WriteByte(']')
	out.Raw = buf.Bytes()
	if out.Total < len(out.Entries) {
		out.Total = len(out.Entries)
	}
	return out, nil
}

// GetContext returns the whole context of an investigation ({"query": "${.}"}) as returned.
func (c *Client) GetContext(ctx context.Context, investigationID string) (json.RawMessage, error) {
	op := "get context " + investigationID
	u := c.server + "/investigation/" + escapeID(investigationID) + "/context"
	b, err := c.postJSON(ctx, op, u, map[string]string{"query": "${.}"}, false, false)
	if err != nil {
		return nil, fmt.Errorf("fetch: %s: %w", op, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return json.RawMessage("{}"), nil
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("fetch: %s: context is not JSON", op)
	}
	return b, nil
}

// FileMeta describes a downloaded file.
type FileMeta struct {
	Name        string // from Content-Disposition; "" when absent
	Size        int64  // Content-Length, -1 when unknown
	ContentType string
}

// callbackError carries an error of the Download callback through the retry loop untouched.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

// bodyReader turns body read failures into *BodyError and remembers the first one.
type bodyReader struct {
	r   io.Reader
	err *BodyError
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = &BodyError{Err: err}
		return n, b.err
	}
	return n, err
}

// Download streams the file of a war-room entry ("<n>@<inv>") to fn. When the body breaks
// mid-way and fn returns an error caused by that (it wraps the reader's *BodyError), the download
// is retried from the start and fn is called again with a fresh reader: fn must discard what it
// got. fn's own errors are returned as they are, without retry. ErrNotFound for an unknown entry.
// If fn returns nil although the reader failed, Download reports an error rather than success.
func (c *Client) Download(ctx context.Context, entryID string, fn func(FileMeta, io.Reader) error) error {
	op := "download " + entryID
	u := c.server + "/entry/download/" + escapeID(entryID)
	err := c.retry(ctx, call{op: op, method: http.MethodGet, url: u, stream: true}, func(resp *http.Response) error {
		meta := FileMeta{Size: resp.ContentLength, ContentType: resp.Header.Get("Content-Type")}
		if meta.Size < 0 {
			meta.Size = -1
		}
		if cd := resp.Header.Get("Content-Disposition"); cd != "" {
			meta.Name = dispositionName(cd)
		}
		br := &bodyReader{r: resp.Body}
		err := fn(meta, br)
		switch {
		case br.err != nil && err == nil:
			return fmt.Errorf("callback returned success after a body error: %w", br.err)
		case br.err != nil && (IsBodyError(err) || errors.Is(err, br.err.Err)):
			return &transportError{err: br.err}
		case err != nil:
			return &callbackError{err: err}
		}
		return nil
	})
	var cbErr *callbackError
	if errors.As(err, &cbErr) {
		return cbErr.err
	}
	if err != nil {
		return fmt.Errorf("fetch: %s: %w", op, err)
	}
	return nil
}

// dispositionName extracts the file name of a Content-Disposition header, quoted or not.
func dispositionName(cd string) string {
	if _, params, err := mime.ParseMediaType(cd); err == nil && params["filename"] != "" {
		return params["filename"]
	}
	// Lenient fallback for values mime rejects (e.g. unquoted names with spaces).
	i := strings.Index(strings.ToLower(cd), "filename=")
	if i < 0 {
		return ""
	}
	v, _, _ := strings.Cut(cd[i+len("filename="):], ";")
	v = strings.TrimSpace(v)
	if uq, err := strconv.Unquote(v); err == nil {
		return uq
	}
	return strings.Trim(v, `"' `)
}

// RiskyUsers is the reply of get_risky_users.
type RiskyUsers struct {
	Raw     json.RawMessage // the reply array as returned; the error body when the module is off; nil on XSOAR
	Enabled bool            // false when the identity-threat module is off ("No identity threat") or on XSOAR
	Count   int
}

// GetRiskyUsers returns the risky-user cards. The "No identity threat" 500 means the module is not
// licensed or enabled: that is a result (Enabled false), not an error. XSOAR has no such API:
// Enabled is false and nothing is called.
func (c *Client) GetRiskyUsers(ctx context.Context) (RiskyUsers, error) {
	const op = "get risky users"
	if c.cfg.Product != XSIAM {
		return RiskyUsers{}, nil
	}
	reply, err := c.postJSON(ctx, op, c.public+"/get_risky_users", map[string]any{}, true, false)
	var ae *APIError
	if errors.As(err, &ae) && ae.moduleDisabled() {
		type apiErr struct {
			Code  int    `json:"err_code"`
			Msg   string `json:"err_msg"`
			Extra string `json:"err_extra"`
		}
		raw, err := json.Marshal(struct {
			Reply apiErr `json:"reply"`
		}{apiErr{ae.Code, ae.Msg, ae.Extra}})
		if err != nil {
			return RiskyUsers{}, fmt.Errorf("fetch: %s: %w", op, err)
		}
		return RiskyUsers{Raw: raw, Enabled: false}, nil
	}
	if err != nil {
		return RiskyUsers{}, fmt.Errorf("fetch: %s: %w", op, err)
	}
	r, err := decodeRiskyUsers(reply)
	if err != nil {
		return RiskyUsers{}, fmt.Errorf("fetch: %s: %w", op, err)
	}
	return r, nil
}
