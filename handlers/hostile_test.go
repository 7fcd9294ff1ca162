package handlers_test

// Hostile input (issue 9, reliability): bad incident ids, bodies, headers, content types, query
// parameters and oversized bodies on the routes that enqueue work. Every answer is a 4xx
// application/problem+json that matches openapi.yaml, and nothing reaches the queue or the backfill.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/handlers"
	"casearchiver/jobs"
)

// fakeBackfills records the filters it was started with.
type fakeBackfills struct {
	mu      sync.Mutex
	started []jobs.Filter
}

func (f *fakeBackfills) Start(_ context.Context, fl jobs.Filter) (jobs.BackfillStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = append(f.started, fl)
	st := jobs.BackfillStatus{State: jobs.BackfillRunning, DryRun: fl.DryRun, Filter: fl, StartedAt: testNow}
	if !fl.DryRun {
		st.ID = fmt.Sprintf("20261204T153000Z-%08x", len(f.started))
	}
	return st, nil
}

func (f *fakeBackfills) Get(context.Context, string) (jobs.BackfillStatus, error) {
	return jobs.BackfillStatus{}, jobs.ErrNotFound
}

func (f *fakeBackfills) Wait(ctx context.Context, id string) (jobs.BackfillStatus, error) {
	return f.Get(ctx, id)
}

func (f *fakeBackfills) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.started)
}

// newHostileEnv is newEnv with a backfill behind the admin routes.
func newHostileEnv(t *testing.T) (*env, *fakeBackfills) {
	t.Helper()
	keyA, err := handlers.ParseWebhookSecret(secretA)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fj, fb := &fakeJobs{jobs: map[string]jobs.Job{}}, &fakeBackfills{}
	h := handlers.NewServer(slog.New(slog.DiscardHandler), handlers.Config{
		Tokens: []handlers.Token{
			{Role: handlers.RoleTrigger, Value: triggerToken},
			{Role: handlers.RoleRead, Value: readToken},
			{Role: handlers.RoleAdmin, Value: adminToken},
		},
		WebhookSecrets: [][]byte{keyA},
		Now:            func() time.Time { return testNow },
	}, prometheus.NewRegistry(), fj, nil, fb, nil, nil, fakePinger{}, spec)
	return &env{h: h, jobs: fj}, fb
}

func withHeader(h http.Header, kv ...string) http.Header {
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// hostileCase is one request that must be refused.
type hostileCase struct {
	name, method, target string
	header               http.Header
	body                 string
	want                 int // expected 4xx status; 0 = any 4xx
}

// hostileCases is the table shared by the handler test and the process test in cmd/server.
func hostileCases() []hostileCase {
	trig := jsonHeader(bearer(triggerToken))
	admin := jsonHeader(bearer(adminToken))
	arch := func(id string) string { return "/v1/incidents/" + id + "/archive" }
	big := `{"reason":"manual","requested_by":"` + strings.Repeat("x", 70<<10) + `"}`
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	var cs []hostileCase
	// Incident ids.
	for _, id := range []string{"abc", "0", "01", "-1", "%2B1", "1e3", "1.0", "0x10", "INCIDENT-", "INCIDENT-0", "INCIDENT--1",
		"123456789012345678901", strings.Repeat("9", 4000), "%2e%2e", "..", "1%00", "1%0A", "%20%201", "1%20",
		"%D9%A1%D9%A2", "%EF%BC%91", "1%2F2", "1;2", "1%3Bdrop", "%FF%FE", "null", "undefined", "INCIDENT-%FF"} {
		cs = append(cs, hostileCase{name: "incident id " + id, method: http.MethodPost, target: arch(id), header: trig, body: "{}"})
	}
	cs = append(cs,
		hostileCase{name: "traversal in path", method: http.MethodPost, target: "/v1/incidents/../jobs/archive", header: trig, want: 404},
		hostileCase{name: "encoded traversal", method: http.MethodPost, target: "/v1/incidents/%2e%2e%2fjobs/archive", header: trig},
		hostileCase{name: "GET on the trigger", method: http.MethodGet, target: arch("7"), header: trig, want: 405},
		hostileCase{name: "PUT on the trigger", method: http.MethodPut, target: arch("7"), header: trig, body: "{}", want: 405},
	)
	// Bodies.
	for _, b := range []string{"{", "}", "[]", `"manual"`, "1", "true", `{"reason":"manual"}{}`, `{"reason":"manual"} x`,
		`{"reason":1}`, `{"force":"yes"}`, `{"closed_at":"yesterday"}`, `{"closed_at":"2026-13-45T99:99:99Z"}`,
		`{"reason":"a b"}`, `{"reason":"../../jobs"}`, `{"reason":"` + strings.Repeat("r", 65) + `"}`, "{\"reason\":\"\xff\xfe\"}",
		`{"reason":"manual\u0000"}`, `{"alert_id":"1/2"}`, `{"alert_id":"..\\x"}`, `{"requested_by":"` + strings.Repeat("u", 257) + `"}`,
		`{"unknown":1}`, `{"reason":"manual","reason":"x y"}`, `{"__proto__":{}}`, deep,
		"\xef\xbb\xbf{}", "{\"reason\":\"manual\"}\x00"} {
		cs = append(cs, hostileCase{name: fmt.Sprintf("body %.40q", b), method: http.MethodPost, target: arch("7"), header: trig, body: b})
	}
	cs = append(cs,
		hostileCase{name: "oversized body", method: http.MethodPost, target: arch("7"), header: trig, body: big, want: 413},
		hostileCase{name: "oversized webhook body", method: http.MethodPost, target: arch("7"),
			header: jsonHeader(sign(secretA, "msg_big", testNow, big)), body: big, want: 413},
	)
	// Content types.
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
		"application/jsonx", "application/xml", "json", "application/json;;", "*/*", "application/problem+json"} {
		h := bearer(triggerToken)
		if ct != "" {
			h = withHeader(h, "Content-Type", ct)
		}
		cs = append(cs, hostileCase{name: "content type " + ct, method: http.MethodPost, target: arch("7"), header: h, body: `{"reason":"manual"}`})
	}
	// Headers and credentials.
	for name, h := range map[string]http.Header{
		"no credentials":           jsonHeader(nil),
		"empty bearer":             withHeader(jsonHeader(nil), "Authorization", "Bearer "),
		"basic auth":               withHeader(jsonHeader(nil), "Authorization", "Basic YWRtaW46YWRtaW4="),
		"unknown token":            jsonHeader(bearer("not-a-token-0123456789")),
		"token prefix":             jsonHeader(bearer(triggerToken[:len(triggerToken)-1])),
		"token with suffix":        jsonHeader(bearer(triggerToken + "x")),
		"read role triggers":       jsonHeader(bearer(readToken)),
		"newline in token":         withHeader(jsonHeader(nil), "Authorization", "Bearer "+triggerToken+"\tx"),
		"webhook wrong secret":     jsonHeader(sign(secretB, "msg_1", testNow, "{}")),
		"webhook other body":       jsonHeader(sign(secretA, "msg_2", testNow, `{"force":true}`)),
		"webhook stale":            jsonHeader(sign(secretA, "msg_3", testNow.Add(-6*time.Minute), "{}")),
		"webhook future":           jsonHeader(sign(secretA, "msg_4", testNow.Add(6*time.Minute), "{}")),
		"webhook id too long":      jsonHeader(sign(secretA, strings.Repeat("i", 300), testNow, "{}")),
		"webhook no signature":     withHeader(jsonHeader(nil), "webhook-id", "msg_5", "webhook-timestamp", fmt.Sprint(testNow.Unix())),
		"webhook bad timestamp":    withHeader(jsonHeader(sign(secretA, "msg_6", testNow, "{}")), "webhook-timestamp", "now"),
		"webhook v2 signature":     withHeader(jsonHeader(sign(secretA, "msg_7", testNow, "{}")), "webhook-signature", "v2,AAAA"),
		"webhook garbage base64":   withHeader(jsonHeader(sign(secretA, "msg_8", testNow, "{}")), "webhook-signature", "v1,!!!"),
		"webhook and bad bearer":   withHeader(jsonHeader(sign(secretB, "msg_9", testNow, "{}")), "Authorization", "Bearer "+triggerToken),
		"webhook timestamp digits": withHeader(jsonHeader(sign(secretA, "msg_10", testNow, "{}")), "webhook-timestamp", strings.Repeat("9", 40)),
	} {
		cs = append(cs, hostileCase{name: "header " + name, method: http.MethodPost, target: arch("7"), header: h, body: "{}"})
	}
	// Query parameters.
	for _, q := range []string{"wait=maybe", "wait=1&timeout=-1s", "wait=true&timeout=0", "wait=true&timeout=9999h", "wait=true&timeout=abc", "wait=true&timeout=1e9"} {
		cs = append(cs, hostileCase{name: "query " + q, method: http.MethodPost, target: arch("7") + "?" + q, header: trig, body: "{}"})
	}
	// Backfill bodies (admin).
	for _, b := range []string{"{", "[]", `{"statuses":"resolved"}`, `{"statuses":["a b"]}`, `{"statuses":["../x"]}`,
		`{"statuses":[` + strings.Repeat(`"s",`, 32) + `"s"]}`, `{"incident_ids":["../1"]}`, `{"incident_ids":["0"]}`,
		`{"incident_ids":[1]}`, `{"incident_ids":["` + strings.Repeat("1", 21) + `"]}`, `{"incident_ids":[` + strings.Repeat(`"1",`, 1000) + `"1"]}`,
		`{"created_from":"yesterday"}`, `{"created_to":"2026-02-30T00:00:00Z"}`, `{"modified_within":"-1h"}`, `{"modified_within":"forever"}`,
		`{"modified_within":"0s"}`, `{"modified_within":"` + strings.Repeat("1", 17) + `"}`,
		`{"modified_from":"2026-01-01T00:00:00Z","modified_within":"24h"}`, `{"dry_run":"no"}`, `{"x":1}`, `{"dry_run":true}{}`, deep} {
		cs = append(cs, hostileCase{name: fmt.Sprintf("backfill body %.40q", b), method: http.MethodPost, target: "/v1/backfill", header: admin, body: b})
	}
	cs = append(cs,
		hostileCase{name: "backfill by trigger token", method: http.MethodPost, target: "/v1/backfill", header: trig, body: "{}", want: 403},
		hostileCase{name: "backfill by webhook", method: http.MethodPost, target: "/v1/backfill", header: jsonHeader(sign(secretA, "msg_bf", testNow, "{}")), body: "{}", want: 403},
		hostileCase{name: "backfill text/plain", method: http.MethodPost, target: "/v1/backfill", header: withHeader(bearer(adminToken), "Content-Type", "text/plain"), body: "{}", want: 415},
		hostileCase{name: "backfill oversized", method: http.MethodPost, target: "/v1/backfill", header: admin, body: big, want: 413},
		hostileCase{name: "snapshot by trigger token", method: http.MethodPost, target: "/v1/risky-users/snapshot", header: trig, want: 403},
	)
	return cs
}

func TestHostileRequests(t *testing.T) {
	t.Parallel()
	e, fb := newHostileEnv(t)
	for _, tc := range hostileCases() {
		req := httptest.NewRequestWithContext(t.Context(), tc.method, "http://archiver.test"+tc.target, strings.NewReader(tc.body))
		for k, v := range tc.header {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code > 499 || (tc.want != 0 && rec.Code != tc.want) {
			t.Errorf("%s: status %d, want 4xx (%d): %s", tc.name, rec.Code, tc.want, rec.Body)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: %d with Content-Type %q", tc.name, rec.Code, ct)
		}
		p := decodeBody[handlers.Problem](t, rec)
		if p.Status != rec.Code || p.Title == "" {
			t.Errorf("%s: problem %+v for status %d", tc.name, p, rec.Code)
		}
		if len(tc.body) < 8<<10 && !strings.Contains(tc.target, strings.Repeat("9", 100)) {
			validateResponse(t, req, tc.body, rec)
		}
	}
	if n := len(e.jobs.submitted); n != 0 {
		t.Errorf("%d hostile requests reached the queue: %+v", n, e.jobs.submitted)
	}
	if n := fb.count(); n != 0 {
		t.Errorf("%d hostile requests started a backfill", n)
	}
}

// FuzzBackfillBody drives the backfill route's decoder: whatever the body, the answer is 200/202 or
// a 4xx problem, and only an accepted body starts a backfill, with valid incident ids only.
func FuzzBackfillBody(f *testing.F) {
	for _, s := range []string{"", "{}", `{"dry_run":true}`, `{"statuses":["resolved_other"],"created_from":"2026-01-01T00:00:00Z"}`,
		`{"incident_ids":["1","INCIDENT-2"]}`, `{"incident_ids":["../1"]}`, `{"modified_within":"24h"}`, `{"modified_within":"-1h"}`,
		`{"modified_from":"2026-01-01T00:00:00Z","modified_within":"24h"}`, `{"statuses":[1]}`, `[]`, `null`, "{\"statuses\":[\"\xff\"]}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		e, fb := newHostileEnv(t)
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/backfill", strings.NewReader(body))
		req.Header = jsonHeader(bearer(adminToken))
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusOK || rec.Code == http.StatusAccepted:
			if fb.count() != 1 {
				t.Fatalf("%d but %d backfills started", rec.Code, fb.count())
			}
			for _, id := range fb.started[0].IDs {
				if got, err := handlers.ParseIncidentID(id); err != nil || got != id {
					t.Fatalf("backfill started with incident id %q", id)
				}
			}
		case rec.Code >= 400 && rec.Code < 500:
			if fb.count() != 0 || rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d with %d backfills, content type %q", rec.Code, fb.count(), rec.Header().Get("Content-Type"))
			}
		default:
			t.Fatalf("body %q: status %d: %s", body, rec.Code, rec.Body)
		}
		if len(e.jobs.submitted) != 0 {
			t.Fatal("the backfill route submitted a job itself")
		}
	})
}

// FuzzWebhookHeaders: arbitrary webhook headers never authenticate without the secret and never
// enqueue; the answer is always a 4xx problem.
func FuzzWebhookHeaders(f *testing.F) {
	f.Add("msg_1", "1796225400", "v1,AAAA", "{}")
	f.Add("", "", "", "")
	f.Add(strings.Repeat("i", 300), "-1", "v1,"+strings.Repeat("A", 44), `{"reason":"manual"}`)
	f.Add("msg\n2", "1796225400.5", "v1,a v1,b v2,c", "\xff")
	f.Fuzz(func(t *testing.T, id, ts, sig, body string) {
		e, _ := newHostileEnv(t)
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/incidents/7/archive", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header["Webhook-Id"] = []string{id}
		req.Header["Webhook-Timestamp"] = []string{ts}
		req.Header["Webhook-Signature"] = []string{sig}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code > 499 || rec.Header().Get("Content-Type") != "application/problem+json" || len(e.jobs.submitted) != 0 {
			t.Fatalf("forged webhook (%q, %q, %q): %d %q, %d submits", id, ts, sig, rec.Code, rec.Header().Get("Content-Type"), len(e.jobs.submitted))
		}
	})
}
