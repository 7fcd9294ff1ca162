package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Incident is an incident (XSIAM/XDR case or XSOAR incident) as the search APIs return it.
type Incident struct {
	ID       string
	Status   string // XDR status ("new", "resolved_true_positive", ...); on XSOAR "pending", "active", "done", "archive"
	Created  time.Time
	Modified time.Time
	Resolved time.Time // resolved_timestamp (XSIAM) or closed (XSOAR); zero when open or unknown
	// AlertCount is alert_count (XSIAM); 0 on XSOAR.
	AlertCount int
	// InvestigationID is the XSOAR investigationId (usually the incident id); "" on XSIAM, where
	// every alert is its own investigation.
	InvestigationID string
	Raw             json.RawMessage // the incident object as returned
}

// SearchFilter selects incidents. Zero fields do not filter. Time bounds are inclusive and
// compared at millisecond precision.
type SearchFilter struct {
	Statuses                 []string // XSIAM status strings; on XSOAR names or numbers (see XSOARStatus)
	CreatedFrom, CreatedTo   time.Time
	ModifiedFrom, ModifiedTo time.Time
	IDs                      []string
}

// GetIncident returns one incident. ErrNotFound when the tenant has no such incident.
func (c *Client) GetIncident(ctx context.Context, id string) (Incident, error) {
	if id == "" {
		return Incident{}, fmt.Errorf("fetch: get incident: empty id")
	}
	page, err := c.searchPage(ctx, "get incident "+id, SearchFilter{IDs: []string{id}}, 0, 1, false)
	if err != nil {
		return Incident{}, fmt.Errorf("fetch: get incident %s: %w", id, err)
	}
	for _, inc := range page.incidents {
		if inc.ID == id {
			return inc, nil
		}
	}
	return Incident{}, fmt.Errorf("fetch: get incident %s: %w", id, ErrNotFound)
}

// SearchIncidents calls fn for every incident matching f, oldest creation first within each time
// window, each incident once. It pages by 100 and splits the creation-time range whenever a query
// reports the 10,000 total_count ceiling, so nothing is skipped. An error from fn stops the search
// and is returned as is.
func (c *Client) SearchIncidents(ctx context.Context, f SearchFilter, fn func(Incident) error) error {
	s := &search{c: c, fn: fn, seen: make(map[string]struct{})}
	if len(f.IDs) > searchPageSize {
		// incident_id_list takes at most 100 ids.
		for i := 0; i < len(f.IDs); i += searchPageSize {
			g := f
			g.IDs = f.IDs[i:min(i+searchPageSize, len(f.IDs))]
			if err := s.window(ctx, g, 0); err != nil {
				return err
			}
		}
		return nil
	}
	return s.window(ctx, f, 0)
}

type search struct {
	c    *Client
	fn   func(Incident) error
	seen map[string]struct{}
}

type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

func (s *search) emit(incs []Incident) error {
	for _, inc := range incs {
		if _, dup := s.seen[inc.ID]; dup {
			continue
		}
		s.seen[inc.ID] = struct{}{}
		if err := s.fn(inc); err != nil {
			return &fnError{err}
		}
	}
	return nil
}

func (s *search) window(ctx context.Context, f SearchFilter, depth int) error {
	err := s.windowErr(ctx, f, depth)
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return err
}

func (s *search) windowErr(ctx context.Context, f SearchFilter, depth int) error {
	op := "search incidents"
	wrap := func(err error) error { return fmt.Errorf("fetch: %s: %w", op, err) }
	first, err := s.c.searchPage(ctx, op, f, 0, searchPageSize, false)
	if err != nil {
		return wrap(err)
	}
	if first.total < searchCap {
		if err := s.emit(first.incidents); err != nil {
			return err
		}
		total := first.total
		for from := searchPageSize; from < total; from += searchPageSize {
			page, err := s.c.searchPage(ctx, op, f, from, searchPageSize, false)
			if err != nil {
				return wrap(err)
			}
			if len(page.incidents) == 0 {
				break
			}
			if err := s.emit(page.incidents); err != nil {
				return err
			}
			total = max(total, page.total)
		}
		return nil
	}
	// Too many to page: split the creation-time range in halves.
	lo, hi := f.CreatedFrom, f.CreatedTo
	if lo.IsZero() {
		if len(first.incidents) == 0 {
			return wrap(fmt.Errorf("total_count %d but no incidents returned", first.total))
		}
		lo = first.incidents[0].Created
	}
	if hi.IsZero() {
		last, err := s.c.searchPage(ctx, op, f, 0, 1, true)
		if err != nil {
			return wrap(err)
		}
		if len(last.incidents) == 0 {
			return wrap(fmt.Errorf("total_count %d but no newest incident returned", first.total))
		}
		hi = last.incidents[0].Created
	}
	loMs, hiMs := lo.UnixMilli(), hi.UnixMilli()
	if hiMs <= loMs || depth > 64 {
		return wrap(fmt.Errorf("%d or more incidents created within one millisecond (%s): cannot split further", searchCap, lo.UTC().Format(time.RFC3339Nano)))
	}
	mid := loMs + (hiMs-loMs)/2
	s.c.log.DebugContext(ctx, "fetch: splitting incident search window", "from", lo, "to", hi, "depth", depth)
	left, right := f, f
	left.CreatedFrom, left.CreatedTo = time.UnixMilli(loMs).UTC(), time.UnixMilli(mid).UTC()
	right.CreatedFrom, right.CreatedTo = time.UnixMilli(mid+1).UTC(), time.UnixMilli(hiMs).UTC()
	if err := s.windowErr(ctx, left, depth+1); err != nil {
		return err
	}
	return s.windowErr(ctx, right, depth+1)
}

type incidentPage struct {
	total     int
	incidents []Incident
}

// searchPage fetches size incidents from offset from, by creation time (descending if desc).
func (c *Client) searchPage(ctx context.Context, op string, f SearchFilter, from, size int, desc bool) (incidentPage, error) {
	if c.cfg.Product == XSIAM {
		return c.getIncidentsPage(ctx, op, f, from, size, desc)
	}
	return c.xsoarSearchPage(ctx, op, f, from, size, desc)
}

type xdrFilter struct {
	Field    string `json:"field"`
	Operator string `json:"operator"`
	Value    any    `json:"value"`
}

func (c *Client) getIncidentsPage(ctx context.Context, op string, f SearchFilter, from, size int, desc bool) (incidentPage, error) {
	filters := []xdrFilter{}
	if len(f.IDs) > 0 {
		filters = append(filters, xdrFilter{"incident_id_list", "in", f.IDs})
	}
	if len(f.Statuses) > 0 {
		filters = append(filters, xdrFilter{"status", "in", f.Statuses})
	}
	for _, b := range []struct {
		field, op string
		t         time.Time
	}{
		{"creation_time", "gte", f.CreatedFrom}, {"creation_time", "lte", f.CreatedTo},
		{"modification_time", "gte", f.ModifiedFrom}, {"modification_time", "lte", f.ModifiedTo},
	} {
		if !b.t.IsZero() {
			filters = append(filters, xdrFilter{b.field, b.op, b.t.UnixMilli()})
		}
	}
	keyword := "asc"
	if desc {
		keyword = "desc"
	}
	body := map[string]any{"request_data": map[string]any{
		"filters":     filters,
		"search_from": from,
		"search_to":   from + size,
		"sort":        map[string]string{"field": "creation_time", "keyword": keyword},
	}}
	reply, err := c.postJSON(ctx, op, c.public+"/incidents/get_incidents", body, true, false)
	if err != nil {
		return incidentPage{}, err
	}
	var w struct {
		TotalCount  flexInt           `json:"total_count"`
		ResultCount flexInt           `json:"result_count"`
		Incidents   []json.RawMessage `json:"incidents"`
	}
	if err := json.Unmarshal(reply, &w); err != nil {
		return incidentPage{}, fmt.Errorf("decode get_incidents reply: %w", err)
	}
	return decodePage(int(w.TotalCount), w.Incidents)
}

func decodePage(total int, raws []json.RawMessage) (incidentPage, error) {
	p := incidentPage{total: total, incidents: make([]Incident, 0, len(raws))}
	for _, raw := range raws {
		inc, err := decodeIncident(raw)
		if err != nil {
			return incidentPage{}, err
		}
		p.incidents = append(p.incidents, inc)
	}
	return p, nil
}

// xsoarTime formats a filter time the way demisto-sdk does (milliseconds, UTC offset).
func xsoarTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func (c *Client) xsoarSearchPage(ctx context.Context, op string, f SearchFilter, from, size int, desc bool) (incidentPage, error) {
	filter := map[string]any{
		"page": from / size,
		"size": size,
		"sort": []map[string]any{{"field": "created", "asc": !desc}},
	}
	if len(f.IDs) > 0 {
		filter["id"] = f.IDs
	}
	if len(f.Statuses) > 0 {
		st := make([]int, 0, len(f.Statuses))
		for _, s := range f.Statuses {
			n, ok := XSOARStatus(s)
			if !ok {
				return incidentPage{}, fmt.Errorf("unknown XSOAR status %q", s)
			}
			st = append(st, n)
		}
		filter["status"] = st
	}
	if !f.CreatedFrom.IsZero() {
		filter["fromDate"] = xsoarTime(f.CreatedFrom)
	}
	if !f.CreatedTo.IsZero() {
		filter["toDate"] = xsoarTime(f.CreatedTo)
	}
	var q []string
	if !f.ModifiedFrom.IsZero() {
		q = append(q, fmt.Sprintf("modified:>=%q", xsoarTime(f.ModifiedFrom)))
	}
	if !f.ModifiedTo.IsZero() {
		q = append(q, fmt.Sprintf("modified:<=%q", xsoarTime(f.ModifiedTo)))
	}
	if len(q) > 0 {
		query := q[0]
		if len(q) == 2 {
			query += " and " + q[1]
		}
		filter["query"] = query
	}
	b, err := c.postJSON(ctx, op, c.server+"/incidents/search", map[string]any{"filter": filter}, false, false)
	if err != nil {
		return incidentPage{}, err
	}
	var w struct {
		Total flexInt           `json:"total"`
		Data  []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return incidentPage{}, fmt.Errorf("decode incidents/search answer: %w", err)
	}
	return decodePage(int(w.Total), w.Data)
}
