package cortexsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
)

type hdr map[string]string

func do(t *testing.T, s *Sim, method, target, body string, h hdr) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range h {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func standard(s *Sim) hdr { return hdr{"x-xdr-auth-id": s.KeyID(), "Authorization": s.Key()} }

func advanced(s *Sim, nonce string, ts time.Time) hdr {
	t := strconv.FormatInt(ts.UnixMilli(), 10)
	sum := sha256.Sum256([]byte(s.Key() + nonce + t))
	return hdr{"x-xdr-auth-id": s.KeyID(), "x-xdr-nonce": nonce, "x-xdr-timestamp": t, "Authorization": hex.EncodeToString(sum[:])}
}

const getIncidents = "/public_api/v1/incidents/get_incidents"

func TestAuthRejections(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	nonce := strings.Repeat("a1B2", 16)
	tests := []struct {
		name   string
		o      Options
		h      func(s *Sim) hdr
		status int
		reason string
	}{
		{"standard ok", Options{}, standard, 200, ""},
		{"wrong key", Options{}, func(s *Sim) hdr { return hdr{"x-xdr-auth-id": s.KeyID(), "Authorization": "nope"} }, 401, "key"},
		{"wrong key id", Options{}, func(s *Sim) hdr { return hdr{"x-xdr-auth-id": "x", "Authorization": s.Key()} }, 401, "key_id"},
		{"no headers", Options{}, func(*Sim) hdr { return nil }, 401, "key_id"},
		{"standard on an advanced key", Options{Advanced: true}, standard, 401, "headers"},
		{"advanced ok", Options{Advanced: true}, func(s *Sim) hdr { return advanced(s, nonce, now) }, 200, ""},
		{"advanced wrong key", Options{Advanced: true}, func(s *Sim) hdr {
			h := advanced(s, nonce, now)
			h["Authorization"] = strings.Repeat("0", 64)
			return h
		}, 401, "key"},
		{"advanced clock ahead", Options{Advanced: true}, func(s *Sim) hdr { return advanced(s, nonce, now.Add(6*time.Minute)) }, 401, "clock_skew"},
		{"advanced clock behind", Options{Advanced: true}, func(s *Sim) hdr { return advanced(s, nonce, now.Add(-6*time.Minute)) }, 401, "clock_skew"},
		{"advanced skew within window", Options{Advanced: true}, func(s *Sim) hdr { return advanced(s, nonce, now.Add(-4*time.Minute)) }, 200, ""},
		{"xsoar6 key only", Options{Product: XSOAR6}, func(s *Sim) hdr { return hdr{"Authorization": s.Key()} }, 200, ""},
		{"xsoar6 wrong key", Options{Product: XSOAR6}, func(s *Sim) hdr { return hdr{"Authorization": "x"} }, 401, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := tt.o
			o.Now = clock
			s := New(o)
			target, body := getIncidents, `{"request_data":{}}`
			if o.Product == XSOAR6 {
				target, body = "/incidents/search", `{"filter":{"size":10}}`
			}
			w := do(t, s, "POST", target, body, tt.h(s))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			st := s.Stats()
			if tt.reason != "" {
				if st.AuthFailureReasons[tt.reason] != 1 || st.AuthFailures != 1 {
					t.Errorf("reasons %v", st.AuthFailureReasons)
				}
				if o.Product != XSOAR6 && !strings.Contains(w.Body.String(), `"err_code":401`) {
					t.Errorf("body %s", w.Body)
				}
			}
		})
	}
}

func TestNonceReplay(t *testing.T) {
	t.Parallel()
	s := New(Options{Advanced: true})
	h := advanced(s, strings.Repeat("Z", 64), time.Now())
	if w := do(t, s, "POST", getIncidents, "{}", h); w.Code != 200 {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	if w := do(t, s, "POST", getIncidents, "{}", h); w.Code != 401 {
		t.Fatalf("replay: %d", w.Code)
	}
	if r := s.Stats().AuthFailureReasons["nonce_replay"]; r != 1 {
		t.Errorf("nonce_replay = %d", r)
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 1})
	id := s.AddIncident(IncidentSpec{Alerts: 1, EntriesPerInvestigation: 2, Files: []FileSpec{{Name: "a b.txt", Size: 5}}})
	alert := s.Truth(id).AlertIDs[0]
	entry := s.Truth(id).Investigations[alert].Files[0].EntryID
	n, inv, _ := strings.Cut(entry, "@")
	tests := []struct {
		method, target string
		status         int
	}{
		{"POST", "https://api-x.xdr.eu.paloaltonetworks.com" + getIncidents + "/", 200},
		{"POST", "http://x.xdr.us.paloaltonetworks.com" + getIncidents, 200},
		{"POST", "/xsoar/investigation/" + alert, 200},
		{"POST", "/xsoar/investigation/" + alert + "/", 200},
		{"POST", "/xsoar/investigation/" + alert + "/context", 200},
		{"GET", "/xsoar/entry/download/" + n + "%40" + inv, 200},
		{"GET", "/xsoar/entry/download/" + n + "@" + inv + "/", 200},
		{"GET", "/xsoar/entry/download/99@" + inv, 404},
		{"GET", getIncidents, 405},
		{"POST", "/xsoar/incidents/search", 404}, // not on XSIAM
		{"POST", "/public_api/v1/nope", 404},
		{"POST", "/investigation/" + alert, 404}, // XSOAR 6 route
	}
	for _, tt := range tests {
		w := do(t, s, tt.method, tt.target, `{}`, standard(s))
		if w.Code != tt.status {
			t.Errorf("%s %s: %d, want %d: %s", tt.method, tt.target, w.Code, tt.status, w.Body)
		}
	}
	w := do(t, s, "GET", "/xsoar/entry/download/"+n+"%40"+inv, "", standard(s))
	if cd := w.Header().Get("Content-Disposition"); cd != `attachment; filename="a b.txt"` || w.Header().Get("Content-Length") != "5" {
		t.Errorf("headers %v", w.Header())
	}
	w = do(t, s, "POST", "/public_api/v1/nope", "{}", standard(s))
	if !strings.Contains(w.Body.String(), `"reply"`) {
		t.Errorf("public_api 404 without envelope: %s", w.Body)
	}
}

func TestGetIncidentsShapes(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 2})
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		s.AddIncident(IncidentSpec{Status: []string{"new", "resolved_other"}[i%2], Created: start.Add(time.Duration(i) * time.Hour)})
	}
	body := `{"request_data":{"filters":[{"field":"status","operator":"in","value":["resolved_other"]},
		{"field":"creation_time","operator":"gte","value":` + strconv.FormatInt(start.UnixMilli(), 10) + `}],
		"search_from":0,"search_to":1,"sort":{"field":"creation_time","keyword":"ASC"}}}`
	w := do(t, s, "POST", getIncidents, body, standard(s))
	var got struct {
		Reply struct {
			TotalCount  int              `json:"total_count"`
			ResultCount int              `json:"result_count"`
			Incidents   []map[string]any `json:"incidents"`
		} `json:"reply"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Reply.TotalCount != 2 || got.Reply.ResultCount != 1 || got.Reply.Incidents[0]["incident_id"] != "2" {
		t.Errorf("got %+v", got.Reply)
	}
	for _, k := range []string{"creation_time", "modification_time", "status", "severity", "alert_count", "xdr_url", "resolved_timestamp", "tags"} {
		if _, ok := got.Reply.Incidents[0][k]; !ok {
			t.Errorf("incident has no %s", k)
		}
	}
	w = do(t, s, "POST", getIncidents, `{"request_data":{"filters":[{"field":"bogus","operator":"eq","value":1}]}}`, standard(s))
	if w.Code != 400 {
		t.Errorf("bad filter: %d", w.Code)
	}
}

func TestRateLimitAnswers429(t *testing.T) {
	t.Parallel()
	s := New(Options{RequestsPerSecond: 1, ExtraDataPerMinute: 1})
	id := s.AddIncident(IncidentSpec{})
	if w := do(t, s, "POST", getIncidents, "{}", standard(s)); w.Code != 200 {
		t.Fatalf("first: %d", w.Code)
	}
	w := do(t, s, "POST", getIncidents, "{}", standard(s))
	want := `{"reply":{"err_code":429,"err_extra":"Too many requests","err_msg":"Rate limit exceeded"}}`
	if w.Code != 429 || w.Body.String() != want {
		t.Errorf("second: %d %s", w.Code, w.Body)
	}
	if v := s.Stats().Violations; v != 1 {
		t.Errorf("violations %d", v)
	}
	_ = id
}

func TestFaultsAndStats(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 3, Product: XSOAR8})
	id := s.AddIncident(IncidentSpec{EntriesPerInvestigation: 3})
	s.SetFaults(EPInvestigation, Faults{ErrorRate: 1, Count: 2})
	codes := []int{}
	for range 3 {
		codes = append(codes, do(t, s, "POST", "/xsoar/investigation/"+id, "{}", standard(s)).Code)
	}
	if codes[0] < 500 || codes[1] < 500 || codes[2] != 200 {
		t.Errorf("codes %v", codes)
	}
	s.SetFaults(EPAll, Faults{RateLimitRate: 1, RetryAfter: 1500 * time.Millisecond})
	w := do(t, s, "POST", "/xsoar/investigation/"+id+"/context", `{"query":"${.}"}`, standard(s))
	if w.Code != 429 || w.Header().Get("Retry-After") != "2" {
		t.Errorf("429: %d %v", w.Code, w.Header())
	}
	st := s.Stats()
	if diff := cmp.Diff(map[string]int{"error": 2, "rate_limit": 1}, st.Injected); diff != "" || st.Violations != 0 {
		t.Errorf("injected (-want +got):\n%s", diff)
	}
	if st.Requests[EPInvestigation] != 3 || st.Requests[EPContext] != 1 {
		t.Errorf("requests %v", st.Requests)
	}
}

func TestContextQueries(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 4, Product: XSOAR6})
	id := s.AddIncident(IncidentSpec{ContextKeys: 2, Files: []FileSpec{{Name: "x.pdf", Size: 3}}})
	h := hdr{"Authorization": s.Key()}
	w := do(t, s, "POST", "/investigation/"+id+"/context", `{"query":"${.}"}`, h)
	var all map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &all); err != nil || all["Key1"] == nil || all["File"] == nil {
		t.Fatalf("context: %v %s", err, w.Body)
	}
	w = do(t, s, "POST", "/investigation/"+id+"/context", `{"query":"${Key1.Nested.Text}"}`, h)
	if w.Body.String() != fmt.Sprintf("%q", "value 1 of "+id) {
		t.Errorf("sub-path: %s", w.Body)
	}
}

func TestDeterminism(t *testing.T) {
	t.Parallel()
	gen := func() (*Sim, []string) {
		s := New(Options{Seed: 42})
		return s, s.Generate(ScenarioOptions{Incidents: 6, MaxFileSize: 10000})
	}
	a, ids := gen()
	b, ids2 := gen()
	if diff := cmp.Diff(ids, ids2); diff != "" {
		t.Fatal(diff)
	}
	for _, id := range ids {
		if diff := cmp.Diff(a.Truth(id), b.Truth(id)); diff != "" {
			t.Errorf("truth of %s differs:\n%s", id, diff)
		}
	}
	c := New(Options{Seed: 43})
	c.Generate(ScenarioOptions{Incidents: 6, MaxFileSize: 10000})
	if cmp.Equal(a.Truth(ids[0]), c.Truth(ids[0])) {
		t.Error("another seed gave the same scenario")
	}
}

func TestOpenFile(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 5})
	id := s.AddIncident(IncidentSpec{Files: []FileSpec{{Size: 100003}}})
	f := s.Truth(id).Investigations[s.Truth(id).AlertIDs[0]].Files[0]
	whole, err := io.ReadAll(s.OpenFile(f.EntryID))
	if err != nil || len(whole) != 100003 {
		t.Fatalf("read: %d %v", len(whole), err)
	}
	sum := sha256.Sum256(whole)
	if hex.EncodeToString(sum[:]) != f.SHA256 {
		t.Error("sha256 differs from truth")
	}
	// The bytes do not depend on read sizes.
	odd, err := io.ReadAll(iotest.OneByteReader(s.OpenFile(f.EntryID)))
	if err != nil || !bytes.Equal(odd, whole) {
		t.Error("one-byte reads give other bytes")
	}
	if err := iotest.TestReader(s.OpenFile(f.EntryID), whole); err != nil {
		t.Error(err)
	}
	if s.OpenFile("1@nope") != nil {
		t.Error("unknown entry opened")
	}
}

func BenchmarkStreamReader(b *testing.B) {
	s := New(Options{Seed: 6})
	id := s.AddIncident(IncidentSpec{Files: []FileSpec{{Size: 1 << 30}}})
	entry := s.Files(id)[0].EntryID
	buf := make([]byte, 256<<10)
	b.SetBytes(1 << 30)
	for b.Loop() {
		r := s.OpenFile(entry)
		if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
			b.Fatal(err)
		}
	}
}
