package cortexsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	maxPage     = 100
	resultCap   = 10000
	xsoarZero   = "0001-01-01T00:00:00Z"
	notFoundMsg = "An error occurred while processing XDR public API"
)

// sortedLocked returns the incidents sorted by creation time then numeric id.
func (s *Sim) sortedLocked() []*incident {
	if !s.sorted {
		slices.SortStableFunc(s.incidents, func(a, b *incident) int {
			if c := a.created.Compare(b.created); c != 0 {
				return c
			}
			return cmpID(a, b)
		})
		s.sorted = true
	}
	return s.incidents
}

func cmpID(a, b *incident) int {
	if a.num != b.num {
		if a.num < b.num {
			return -1
		}
		return 1
	}
	return strings.Compare(a.id, b.id)
}

// jsonMs reads epoch milliseconds given as a number or a string.
func jsonMs(v any) (time.Time, bool) {
	switch x := v.(type) {
	case float64:
		return time.UnixMilli(int64(x)), true
	case json.Number:
		n, err := x.Int64()
		return time.UnixMilli(n), err == nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return time.UnixMilli(n), err == nil
	}
	return time.Time{}, false
}

func stringList(v any) ([]string, bool) {
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			switch y := e.(type) {
			case string:
				out = append(out, y)
			case json.Number:
				out = append(out, y.String())
			default:
				return nil, false
			}
		}
		return out, true
	case string:
		return []string{x}, true
	case json.Number:
		return []string{x.String()}, true
	}
	return nil, false
}

func decodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return dec.Decode(v)
}

type incMatch func(*incident) bool

func (s *Sim) getIncidents(body []byte) answer {
	var req struct {
		RequestData struct {
			Filters []struct {
				Field    string `json:"field"`
				Operator string `json:"operator"`
				Value    any    `json:"value"`
			} `json:"filters"`
			SearchFrom *int `json:"search_from"`
			SearchTo   *int `json:"search_to"`
			Sort       *struct {
				Field   string `json:"field"`
				Keyword string `json:"keyword"`
			} `json:"sort"`
		} `json:"request_data"`
	}
	if err := decodeBody(body, &req); err != nil {
		return badJSON(err)
	}
	var preds []incMatch
	for _, f := range req.RequestData.Filters {
		field, op := strings.ToLower(f.Field), strings.ToLower(f.Operator)
		switch field {
		case "incident_id_list", "incident_id":
			ids, ok := stringList(f.Value)
			if !ok || (op != "in" && op != "eq") {
				return badJSON(fmt.Errorf("bad %s filter", field))
			}
			preds = append(preds, func(i *incident) bool { return slices.Contains(ids, i.id) })
		case "status":
			vals, ok := stringList(f.Value)
			if !ok || (op != "in" && op != "eq" && op != "neq") {
				return badJSON(fmt.Errorf("bad status filter"))
			}
			neg := op == "neq"
			preds = append(preds, func(i *incident) bool { return slices.Contains(vals, i.status) != neg })
		case "creation_time", "modification_time":
			t, ok := jsonMs(f.Value)
			if !ok || (op != "gte" && op != "lte") {
				return badJSON(fmt.Errorf("bad %s filter", field))
			}
			mod := field == "modification_time"
			gte := op == "gte"
			preds = append(preds, func(i *incident) bool {
				v := i.created
				if mod {
					v = i.modified
				}
				if gte {
					return !v.Before(t)
				}
				return !v.After(t)
			})
		default:
			return errAnswer(http.StatusBadRequest, "Bad Request. Got an invalid JSON.", "unsupported filter field "+f.Field)
		}
	}
	sortField, desc := "creation_time", true
	if srt := req.RequestData.Sort; srt != nil {
		if srt.Field != "" {
			sortField = strings.ToLower(srt.Field)
		}
		desc = !strings.EqualFold(srt.Keyword, "asc")
		if sortField != "creation_time" && sortField != "modification_time" {
			return badJSON(fmt.Errorf("unsupported sort field %s", srt.Field))
		}
	}
	from, to := 0, 0
	if req.RequestData.SearchFrom != nil {
		from = max(0, *req.RequestData.SearchFrom)
	}
	if req.RequestData.SearchTo != nil {
		to = *req.RequestData.SearchTo
	}
	if to <= from {
		to = from + maxPage
	}
	size := min(to-from, maxPage)

	s.mu.Lock()
	matched := s.match(preds)
	sortIncidents(matched, sortField == "modification_time", desc)
	page := window(matched, from, size)
	out := make([]any, len(page))
	for i, inc := range page {
		out[i] = s.xdrIncident(inc)
	}
	s.mu.Unlock()
	return answer{json: map[string]any{"reply": map[string]any{
		"total_count": min(len(matched), resultCap), "result_count": len(out), "incidents": out}}}
}

func (s *Sim) match(preds []incMatch) []*incident {
	var out []*incident
	for _, inc := range s.sortedLocked() {
		ok := true
		for _, p := range preds {
			if !p(inc) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, inc)
		}
	}
	return out
}

// sortIncidents orders incidents that are already in creation order (see match).
func sortIncidents(incs []*incident, byModified, desc bool) {
	if !byModified {
		if desc {
			slices.Reverse(incs)
		}
		return
	}
	slices.SortStableFunc(incs, func(a, b *incident) int {
		ta, tb := a.created, b.created
		if byModified {
			ta, tb = a.modified, b.modified
		}
		c := ta.Compare(tb)
		if c == 0 {
			c = cmpID(a, b)
		}
		if desc {
			return -c
		}
		return c
	})
}

// window returns incs[from:from+size]; results beyond the 10,000th are not served.
func window(incs []*incident, from, size int) []*incident {
	if from >= len(incs) || from >= resultCap {
		return nil
	}
	end := min(from+size, len(incs), resultCap)
	return incs[from:end]
}

// xsoarStatus maps a status string to the XSOAR number.
func xsoarStatus(status string) int {
	switch {
	case status == "pending":
		return 0
	case status == "done" || status == "closed" || strings.HasPrefix(status, "resolved"):
		return 2
	case status == "archive":
		return 3
	}
	return 1
}

func parseXSOARTime(v string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(v))
	return t, err == nil
}

func (s *Sim) incidentsSearch(body []byte) answer {
	var req struct {
		Filter struct {
			ID       []any  `json:"id"`
			Status   []any  `json:"status"`
			FromDate string `json:"fromDate"`
			ToDate   string `json:"toDate"`
			Query    string `json:"query"`
			Page     int    `json:"page"`
			Size     int    `json:"size"`
			Sort     []struct {
				Field string `json:"field"`
				Asc   bool   `json:"asc"`
			} `json:"sort"`
		} `json:"filter"`
	}
	if err := decodeBody(body, &req); err != nil {
		return badJSON(err)
	}
	f := req.Filter
	var preds []incMatch
	if len(f.ID) > 0 {
		ids, ok := stringList(f.ID)
		if !ok {
			return badJSON(fmt.Errorf("bad id filter"))
		}
		preds = append(preds, func(i *incident) bool { return slices.Contains(ids, i.id) })
	}
	if len(f.Status) > 0 {
		var sts []int
		for _, v := range f.Status {
			n, err := strconv.Atoi(fmt.Sprint(v))
			if err != nil {
				return badJSON(fmt.Errorf("bad status %v", v))
			}
			sts = append(sts, n)
		}
		preds = append(preds, func(i *incident) bool { return slices.Contains(sts, xsoarStatus(i.status)) })
	}
	for _, b := range []struct {
		v   string
		gte bool
	}{{f.FromDate, true}, {f.ToDate, false}} {
		if b.v == "" {
			continue
		}
		t, ok := parseXSOARTime(b.v)
		if !ok {
			return badJSON(fmt.Errorf("bad date %q", b.v))
		}
		gte := b.gte
		preds = append(preds, func(i *incident) bool {
			if gte {
				return !i.created.Before(t)
			}
			return !i.created.After(t)
		})
	}
	if q := strings.TrimSpace(f.Query); q != "" {
		// The subset of the query language the client sends: modified:>="T" and modified:<="T".
		for _, clause := range strings.Split(q, " and ") {
			clause = strings.TrimSpace(clause)
			rest, ok := strings.CutPrefix(clause, "modified:")
			if !ok {
				return badJSON(fmt.Errorf("unsupported query %q", clause))
			}
			gte := strings.HasPrefix(rest, ">=")
			if !gte && !strings.HasPrefix(rest, "<=") {
				return badJSON(fmt.Errorf("unsupported query %q", clause))
			}
			t, ok := parseXSOARTime(strings.Trim(rest[2:], `"`))
			if !ok {
				return badJSON(fmt.Errorf("bad time in %q", clause))
			}
			preds = append(preds, func(i *incident) bool {
				if gte {
					return !i.modified.Before(t)
				}
				return !i.modified.After(t)
			})
		}
	}
	byModified, desc := false, true
	if len(f.Sort) > 0 {
		byModified = f.Sort[0].Field == "modified"
		desc = !f.Sort[0].Asc
	}
	size := min(f.Size, 1000)
	s.mu.Lock()
	matched := s.match(preds)
	sortIncidents(matched, byModified, desc)
	var data []any // null when empty, like the server
	if size > 0 {
		for _, inc := range window(matched, f.Page*size, size) {
			data = append(data, s.xsoarIncident(inc))
		}
	}
	s.mu.Unlock()
	return answer{json: map[string]any{"total": len(matched), "data": data}}
}

func (s *Sim) extraData(body []byte) answer {
	var req struct {
		RequestData struct {
			IncidentID  any  `json:"incident_id"`
			AlertsLimit *int `json:"alerts_limit"`
		} `json:"request_data"`
	}
	if err := decodeBody(body, &req); err != nil {
		return badJSON(err)
	}
	id := fmt.Sprint(req.RequestData.IncidentID)
	limit := 1000
	if l := req.RequestData.AlertsLimit; l != nil && *l > 0 {
		limit = min(*l, 1000)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inc := s.byID[id]
	if inc == nil || req.RequestData.IncidentID == nil {
		return errAnswer(http.StatusInternalServerError, notFoundMsg, "Incident not found")
	}
	alerts := make([]any, 0, min(limit, len(inc.alerts)))
	for i, aid := range inc.alerts {
		if i >= limit {
			break
		}
		alerts = append(alerts, s.xdrAlert(inc, aid, i))
	}
	net := make([]any, inc.netArtifacts)
	for i := range net {
		net[i] = map[string]any{"type": []string{"IP", "DOMAIN"}[i%2], "alert_count": 1 + i%3, "is_manual": false,
			"network_domain": fmt.Sprintf("c2-%s-%d.example.net", inc.id, i), "network_remote_ip": fmt.Sprintf("203.0.113.%d", (inc.num+int64(i))%250+1),
			"network_remote_port": 443 + i, "network_country": "UNKNOWN"}
	}
	files := make([]any, inc.fileArtifacts)
	for i := range files {
		files[i] = map[string]any{"type": "HASH", "alert_count": 1, "is_manual": false, "is_malicious": i%2 == 0,
			"is_process": true, "file_name": fmt.Sprintf("payload-%s-%d.exe", inc.id, i),
			"file_sha256": fmt.Sprintf("%064x", inc.num*1000+int64(i)), "file_signature_status": "SIGNATURE_UNSIGNED",
			"file_signature_vendor_name": nil, "file_wildfire_verdict": "UNKNOWN", "low_confidence": false}
	}
	return answer{json: map[string]any{"reply": map[string]any{
		"incident":          s.xdrIncident(inc),
		"alerts":            map[string]any{"total_count": len(inc.alerts), "data": alerts},
		"network_artifacts": map[string]any{"total_count": len(net), "data": net},
		"file_artifacts":    map[string]any{"total_count": len(files), "data": files},
	}}}
}

func (s *Sim) riskyUsers() answer {
	s.mu.Lock()
	n := s.risky
	s.mu.Unlock()
	if n < 0 {
		return errAnswer(http.StatusInternalServerError, notFoundMsg, "No identity threat")
	}
	dateKey := "date created"
	if s.o.Drift {
		dateKey = "date_created"
	}
	sev := []string{"SEV_020_LOW", "SEV_030_MEDIUM", "SEV_040_HIGH", "SEV_050_CRITICAL"}
	cards := make([]any, n)
	for i := range cards {
		r := s.rngFor("risky", strconv.Itoa(i))
		score := r.IntN(100)
		cards[i] = map[string]any{"type": "user", "id": fmt.Sprintf("user%03d", i), "score": score,
			"norm_risk_score": score, "risk_level": []string{"LOW", "MEDIUM", "HIGH"}[score*3/100],
			"email": fmt.Sprintf("user%03d@example.com", i),
			"reasons": []any{map[string]any{dateKey: "2026-01-" + fmt.Sprintf("%02d", 1+r.IntN(28)),
				"description": fmt.Sprintf("'Impossible traveler' generated by XDR Analytics involving user user%03d", i),
				"severity":    sev[r.IntN(len(sev))], "status": "STATUS_010_NEW", "points": score}}}
	}
	return answer{json: map[string]any{"reply": cards}}
}

func (s *Sim) investigation(id string, body []byte) answer {
	var req struct {
		PageSize any    `json:"pageSize"`
		LastID   string `json:"lastID"`
		FromTime string `json:"fromTime"`
	}
	if err := decodeBody(body, &req); err != nil {
		return badJSON(err)
	}
	pageSize := 100
	if req.PageSize != nil {
		n, err := strconv.Atoi(fmt.Sprint(req.PageSize))
		if err != nil {
			return badJSON(fmt.Errorf("bad pageSize"))
		}
		if n > 0 {
			pageSize = min(n, s.o.MaxPageSize)
		}
	}
	after := 0
	if req.LastID != "" {
		seq, inv, ok := strings.Cut(req.LastID, "@")
		n, err := strconv.Atoi(seq)
		if !ok || err != nil || inv != id {
			return badJSON(fmt.Errorf("bad lastID %q", req.LastID))
		}
		after = n
	}
	var from time.Time
	if req.FromTime != "" {
		t, ok := parseXSOARTime(req.FromTime)
		if !ok {
			return badJSON(fmt.Errorf("bad fromTime"))
		}
		from = t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inv := s.invs[id]
	if inv == nil {
		return errAnswer(http.StatusBadRequest, "Could not find investigations", "Could not find investigations with id ["+id+"]")
	}
	entries := []any{}
	for _, e := range inv.entries {
		if len(entries) >= pageSize {
			break
		}
		if e.n <= after || (!from.IsZero() && s.entryTime(inv, e).Before(from)) {
			continue
		}
		entries = append(entries, s.entryJSON(inv, e))
	}
	o := s.invObject(inv)
	o["entries"] = entries
	o["totalEntries"] = len(inv.entries)
	return answer{json: o}
}

func (s *Sim) context(id string, body []byte) answer {
	var req struct {
		Query string `json:"query"`
	}
	if err := decodeBody(body, &req); err != nil {
		return badJSON(err)
	}
	s.mu.Lock()
	inv := s.invs[id]
	var ctx map[string]any
	if inv != nil {
		ctx = s.contextTree(inv)
	}
	s.mu.Unlock()
	if inv == nil {
		return errAnswer(http.StatusBadRequest, "Could not find investigations", "Could not find investigations with id ["+id+"]")
	}
	q := strings.TrimSpace(req.Query)
	if q == "" {
		q = "${.}"
	}
	if !strings.HasPrefix(q, "${") || !strings.HasSuffix(q, "}") {
		return badJSON(fmt.Errorf("query must be a DT expression ${...}"))
	}
	path := strings.TrimSpace(q[2 : len(q)-1])
	if path == "." || path == "" {
		return answer{json: ctx}
	}
	var cur any = ctx
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			cur = nil
			break
		}
		cur = m[part]
	}
	if cur == nil {
		return answer{json: json.RawMessage("null")}
	}
	return answer{json: cur}
}

func (s *Sim) download(id string) answer {
	s.mu.Lock()
	f := s.files[id]
	s.mu.Unlock()
	if f == nil || f.missing {
		return errAnswer(http.StatusNotFound, "Not Found", "Entry "+id+" not found or has no file")
	}
	h := http.Header{}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", f.name))
	body := s.fileReader(f)
	a := answer{body: body, size: f.size, header: h}
	if f.alwaysFail {
		a.size = f.size
		a.body = &cutReader{r: body, left: f.size / 2}
	}
	return a
}

// cutReader ends early: with the full Content-Length announced the client sees a truncated body.
type cutReader struct {
	r    interface{ Read([]byte) (int, error) }
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errCut
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

var errCut = fmt.Errorf("cortexsim: body cut")
