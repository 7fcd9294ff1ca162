package fetch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// flexString decodes a JSON string, number or null (ids drift between the two).
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = ""
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want string or number, got %.40s", b)
		}
		*s = flexString(n.String())
	}
	return nil
}

// flexInt decodes a JSON number (integral or not), a numeric string or null.
type flexInt int64

// scalarText returns the trimmed text of a JSON number or string, and "" for null or an empty string.
func scalarText(b []byte) (string, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return "", nil
	}
	s := string(b)
	if b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return "", err
		}
	}
	return strings.TrimSpace(s), nil
}

func (i *flexInt) UnmarshalJSON(b []byte) error {
	s, err := scalarText(b)
	if err != nil {
		return err
	}
	if s == "" {
		*i = 0
		return nil
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*i = flexInt(v)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("want integer, got %.40s", b)
	}
	*i = flexInt(f)
	return nil
}

// flexBool decodes true/false, "yes"/"no"/"true"/"false" in any case, 0/1 and null.
type flexBool bool

func (v *flexBool) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	s := strings.ToLower(strings.Trim(string(b), `"`))
	switch s {
	case "true", "yes", "y", "1":
		*v = true
	case "false", "no", "n", "0", "", "null":
		*v = false
	default:
		return fmt.Errorf("want boolean, got %.40s", b)
	}
	return nil
}

// flexTime decodes epoch milliseconds (number or numeric string), RFC 3339 text or null. The
// XSOAR "unset" value 0001-01-01T00:00:00Z and 0 decode to the zero time.
type flexTime time.Time

func (t *flexTime) UnmarshalJSON(b []byte) error {
	s, err := scalarText(b)
	if err != nil {
		return err
	}
	if s == "" {
		*t = flexTime{}
		return nil
	}
	if ms, err := strconv.ParseFloat(s, 64); err == nil {
		if ms <= 0 {
			*t = flexTime{}
		} else {
			*t = flexTime(time.UnixMilli(int64(ms)).UTC())
		}
		return nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05", "2006-01-02"} {
		if v, err := time.Parse(layout, s); err == nil {
			if v.Year() <= 1 {
				*t = flexTime{}
			} else {
				*t = flexTime(v)
			}
			return nil
		}
	}
	return fmt.Errorf("want time, got %.60s", b)
}

// Time returns the decoded time (zero when unset).
func (t flexTime) Time() time.Time { return time.Time(t) }

// xsoarStatusNames maps the XSOAR incident status numbers to names.
var xsoarStatusNames = map[int64]string{0: "pending", 1: "active", 2: "done", 3: "archive"}

// XSOARStatus converts an XSOAR status name ("pending", "active", "done" or "closed", "archive") or
// a number in text to the number the XSOAR API uses.
func XSOARStatus(name string) (int, bool) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "pending", "0":
		return 0, true
	case "active", "1":
		return 1, true
	case "done", "closed", "2":
		return 2, true
	case "archive", "archived", "3":
		return 3, true
	}
	return 0, false
}

// wireIncident is the part of an XDR/XSIAM or XSOAR incident object the client reads.
type wireIncident struct {
	IncidentID        flexString      `json:"incident_id"`
	ID                flexString      `json:"id"`
	Status            json.RawMessage `json:"status"`
	CreationTime      flexTime        `json:"creation_time"`
	ModificationTime  flexTime        `json:"modification_time"`
	ResolvedTimestamp flexTime        `json:"resolved_timestamp"`
	Created           flexTime        `json:"created"`
	Modified          flexTime        `json:"modified"`
	Closed            flexTime        `json:"closed"`
	AlertCount        flexInt         `json:"alert_count"`
	InvestigationID   flexString      `json:"investigationId"`
}

// decodeIncident reads an incident object of any product, keeping raw as Incident.Raw.
func decodeIncident(raw json.RawMessage) (Incident, error) {
	var w wireIncident
	if err := json.Unmarshal(raw, &w); err != nil {
		return Incident{}, fmt.Errorf("decode incident: %w", err)
	}
	inc := Incident{
		ID:              string(w.IncidentID),
		Created:         w.CreationTime.Time(),
		Modified:        w.ModificationTime.Time(),
		Resolved:        w.ResolvedTimestamp.Time(),
		AlertCount:      int(w.AlertCount),
		InvestigationID: string(w.InvestigationID),
		Raw:             append(json.RawMessage(nil), raw...),
	}
	if inc.ID == "" {
		inc.ID = string(w.ID)
	}
	if inc.Created.IsZero() {
		inc.Created = w.Created.Time()
	}
	if inc.Modified.IsZero() {
		inc.Modified = w.Modified.Time()
	}
	if inc.Resolved.IsZero() {
		inc.Resolved = w.Closed.Time()
	}
	if len(w.Status) > 0 && string(w.Status) != "null" {
		var s string
		if json.Unmarshal(w.Status, &s) == nil {
			inc.Status = s
		} else {
			var n flexInt
			if err := json.Unmarshal(w.Status, &n); err != nil {
				return Incident{}, fmt.Errorf("decode incident %s: status: %w", inc.ID, err)
			}
			if name, ok := xsoarStatusNames[int64(n)]; ok {
				inc.Status = name
			} else {
				inc.Status = strconv.FormatInt(int64(n), 10)
			}
		}
	}
	if inc.ID == "" {
		return Incident{}, fmt.Errorf("decode incident: no incident_id or id")
	}
	return inc, nil
}

// counted is the {"total_count", "data"} shape of extra-data sections.
type counted struct {
	TotalCount *flexInt          `json:"total_count"`
	Data       []json.RawMessage `json:"data"`
}

func (c counted) total() int {
	if c.TotalCount != nil {
		return int(*c.TotalCount)
	}
	return len(c.Data)
}

// decodeExtraData reads the reply of get_incident_extra_data.
func decodeExtraData(reply json.RawMessage) (ExtraData, error) {
	var w struct {
		Incident         json.RawMessage `json:"incident"`
		Alerts           counted         `json:"alerts"`
		NetworkArtifacts counted         `json:"network_artifacts"`
		FileArtifacts    counted         `json:"file_artifacts"`
	}
	if err := json.Unmarshal(reply, &w); err != nil {
		return ExtraData{}, fmt.Errorf("decode extra data: %w", err)
	}
	if len(w.Incident) == 0 || string(w.Incident) == "null" {
		return ExtraData{}, fmt.Errorf("decode extra data: no incident")
	}
	inc, err := decodeIncident(w.Incident)
	if err != nil {
		return ExtraData{}, fmt.Errorf("decode extra data: %w", err)
	}
	x := ExtraData{
		Raw:              append(json.RawMessage(nil), reply...),
		Incident:         inc,
		Alerts:           make([]Alert, 0, len(w.Alerts.Data)),
		AlertsTotal:      w.Alerts.total(),
		NetworkArtifacts: w.NetworkArtifacts.total(),
		FileArtifacts:    w.FileArtifacts.total(),
	}
	for i, raw := range w.Alerts.Data {
		var a struct {
			AlertID flexString `json:"alert_id"`
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			return ExtraData{}, fmt.Errorf("decode extra data: alert %d: %w", i, err)
		}
		x.Alerts = append(x.Alerts, Alert{ID: string(a.AlertID), Raw: raw})
	}
	if x.AlertsTotal < inc.AlertCount && w.Alerts.TotalCount == nil {
		x.AlertsTotal = inc.AlertCount
	}
	if x.AlertsTotal < len(x.Alerts) {
		x.AlertsTotal = len(x.Alerts)
	}
	x.Truncated = x.AlertsTotal > len(x.Alerts)
	return x, nil
}

// decodeEntry reads one war-room entry object.
func decodeEntry(raw json.RawMessage) (Entry, error) {
	var w struct {
		ID              flexString `json:"id"`
		InvestigationID flexString `json:"investigationId"`
		Type            flexInt    `json:"type"`
		File            string     `json:"file"`
		FileID          string     `json:"fileID"`
		Note            flexBool   `json:"note"`
		Created         flexTime   `json:"created"`
		FileMetadata    *struct {
			Size   *flexInt `json:"size"`
			SHA256 string   `json:"sha256"`
		} `json:"fileMetadata"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return Entry{}, fmt.Errorf("decode entry: %w", err)
	}
	e := Entry{
		ID:              string(w.ID),
		InvestigationID: string(w.InvestigationID),
		Type:            int(w.Type),
		File:            w.File,
		FileID:          w.FileID,
		FileSize:        -1,
		Note:            bool(w.Note),
		Created:         w.Created.Time(),
		Raw:             raw,
	}
	if m := w.FileMetadata; m != nil {
		if m.Size != nil && (*m.Size > 0 || e.HasFile()) {
			e.FileSize = int64(*m.Size)
		}
		e.FileSHA256 = strings.ToLower(m.SHA256)
	}
	if e.ID == "" {
		return Entry{}, fmt.Errorf("decode entry: no id")
	}
	return e, nil
}

// decodeRiskyUsers reads the reply of get_risky_users: an array of user cards (a single object,
// as get_risk_score answers, counts as one).
func decodeRiskyUsers(reply json.RawMessage) (RiskyUsers, error) {
	type reason struct {
		DateCreated  string  `json:"date created"`
		DateCreated2 string  `json:"date_created"`
		Points       flexInt `json:"points"`
	}
	type card struct {
		ID      flexString `json:"id"`
		Score   flexInt    `json:"score"`
		Reasons []reason   `json:"reasons"`
	}
	r := RiskyUsers{Raw: append(json.RawMessage(nil), reply...), Enabled: true}
	trimmed := bytes.TrimSpace(reply)
	switch {
	case len(trimmed) == 0 || string(trimmed) == "null":
		return r, nil
	case trimmed[0] == '{':
		var c card
		if err := json.Unmarshal(trimmed, &c); err != nil {
			return RiskyUsers{}, fmt.Errorf("decode risky users: %w", err)
		}
		r.Count = 1
	default:
		var cards []card
		if err := json.Unmarshal(trimmed, &cards); err != nil {
			return RiskyUsers{}, fmt.Errorf("decode risky users: %w", err)
		}
		r.Count = len(cards)
	}
	return r, nil
}
