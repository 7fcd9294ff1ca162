package handlers_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/handlers"
	"casearchiver/jobs"
)

func TestAuthentication(t *testing.T) {
	t.Parallel()
	const body = `{"reason":"incident_closed","alert_id":"77"}`
	signed := func(secret, id string, ts time.Time, b string) http.Header {
		return jsonHeader(sign(secret, id, ts, b))
	}
	tampered := signed(secretA, "msg_tampered", testNow, body)
	stale := signed(secretA, "msg_stale", testNow.Add(-6*time.Minute), body)
	future := signed(secretA, "msg_future", testNow.Add(6*time.Minute), body)
	missingSig := signed(secretA, "msg_nosig", testNow, body)
	missingSig.Del("Webhook-Signature")
	missingID := signed(secretA, "msg_noid", testNow, body)
	missingID.Del("Webhook-Id")
	multi := signed(secretA, "msg_multi", testNow, body)
	multi.Set("Webhook-Signature", "v1,AAAA v2,zzz "+multi.Get("Webhook-Signature"))
	tests := []struct {
		name       string
		header     http.Header
		body       string
		wantStatus int
		wantReason string // auth failure metric reason
	}{
		{"valid trigger token", jsonHeader(bearer(triggerToken)), body, http.StatusAccepted, ""},
		{"valid admin token", jsonHeader(bearer(adminToken)), body, http.StatusAccepted, ""},
		{"wrong token", jsonHeader(bearer("nope-nope-nope-nope-nope")), body, http.StatusUnauthorized, "bad_token"},
		{"wrong role", jsonHeader(bearer(readToken)), body, http.StatusForbidden, "forbidden"},
		{"no credentials", jsonHeader(nil), body, http.StatusUnauthorized, "missing"},
		{"basic auth", jsonHeader(http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}), body, http.StatusUnauthorized, "malformed"},
		{"valid signature", signed(secretA, "msg_ok", testNow, body), body, http.StatusAccepted, ""},
		{"rotated second secret", signed(secretB, "msg_rotated", testNow, body), body, http.StatusAccepted, ""},
		{"several signatures, one valid", multi, body, http.StatusAccepted, ""},
		{"tampered body", tampered, strings.Replace(body, "77", "78", 1), http.StatusUnauthorized, "bad_signature"},
		{"stale timestamp", stale, body, http.StatusUnauthorized, "stale_timestamp"},
		{"future timestamp", future, body, http.StatusUnauthorized, "stale_timestamp"},
		{"missing signature", missingSig, body, http.StatusUnauthorized, "missing_header"},
		{"missing id", missingID, body, http.StatusUnauthorized, "missing_header"},
		{"unknown secret", signed("whsec_dW5rbm93bi1zZWNyZXQta2V5LTEyMzQ1Ng==", "msg_unknown", testNow, body), body, http.StatusUnauthorized, "bad_signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rec := e.do(t, http.MethodPost, "/v1/incidents/42/archive", tc.header, tc.body)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if rec.Code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("content type %q, want problem+json", rec.Header().Get("Content-Type"))
			}
			if tc.wantReason != "" {
				m := e.do(t, http.MethodGet, "/metrics", nil, "")
				want := `archiver_auth_failures_total{reason="` + tc.wantReason + `"} 1`
				if !strings.Contains(m.Body.String(), want) {
					t.Errorf("metrics lack %s", want)
				}
			}
			if got := len(e.jobs.submitted); (tc.wantStatus == http.StatusAccepted) != (got == 1) {
				t.Errorf("submitted %d jobs", got)
			}
		})
	}
}

func TestWebhookReplayRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const body = `{"reason":"incident_closed"}`
	h := jsonHeader(sign(secretA, "msg_once", testNow, body))
	if rec := e.do(t, http.MethodPost, "/v1/incidents/42/archive", h, body); rec.Code != http.StatusAccepted {
		t.Fatalf("first delivery: %d %s", rec.Code, rec.Body)
	}
	rec := e.do(t, http.MethodPost, "/v1/incidents/42/archive", h, body)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "already used") {
		t.Fatalf("replay: %d %s", rec.Code, rec.Body)
	}
	if len(e.jobs.submitted) != 1 {
		t.Errorf("replay enqueued: %d submits", len(e.jobs.submitted))
	}
}

// TestSharedSigningVector checks the vector that the Python integration tests check too.
func TestSharedSigningVector(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/webhook_vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Secret, ID, Timestamp, Body, Signature string }
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	ts, _ := time.ParseDuration(v.Timestamp + "s")
	h := sign(v.Secret, v.ID, time.Unix(int64(ts.Seconds()), 0), v.Body)
	if got := h.Get("Webhook-Signature"); got != v.Signature {
		t.Fatalf("signature = %s, want %s", got, v.Signature)
	}
	// The server accepts the vector's signature at its time: the request gets past authentication
	// and fails only on the body, which is not an archive request.
	e := newEnvAt(t, time.Unix(int64(ts.Seconds()), 0))
	h.Set("Content-Type", "application/json")
	rec := e.do(t, http.MethodPost, "/v1/incidents/42/archive", h, v.Body)
	if p := decodeBody[handlers.Problem](t, rec); rec.Code != http.StatusUnprocessableEntity || p.Errors["test"] != "unknown field" {
		t.Fatalf("vector request: %d %s", rec.Code, rec.Body)
	}
}

func TestTrigger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		target     string
		header     http.Header
		body       string
		wantStatus int
		wantErrors map[string]string
	}{
		{"no body", "/v1/incidents/42/archive", bearer(triggerToken), "", http.StatusAccepted, nil},
		{"xsiam case id", "/v1/incidents/INCIDENT-42/archive", bearer(triggerToken), "", http.StatusAccepted, nil},
		{"full body", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)),
			`{"reason":"manual","alert_id":"9","closed_at":"2026-12-01T10:00:00Z","requested_by":"alice","force":true}`, http.StatusAccepted, nil},
		{"bad id", "/v1/incidents/abc/archive", bearer(triggerToken), "", http.StatusUnprocessableEntity,
			map[string]string{"incident_id": "must be a decimal id of 1 to 20 digits, or INCIDENT-<n>"}},
		{"21 digits", "/v1/incidents/123456789012345678901/archive", bearer(triggerToken), "", http.StatusUnprocessableEntity,
			map[string]string{"incident_id": "must be a decimal id of 1 to 20 digits, or INCIDENT-<n>"}},
		{"unknown field", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), `{"reasn":"x"}`, http.StatusUnprocessableEntity,
			map[string]string{"reasn": "unknown field"}},
		{"wrong type", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), `{"force":"yes"}`, http.StatusUnprocessableEntity,
			map[string]string{"force": "must be a bool"}},
		{"bad time", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), `{"closed_at":"yesterday"}`, http.StatusUnprocessableEntity,
			map[string]string{"closed_at": "must be an RFC 3339 time"}},
		{"bad reason", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), `{"reason":"a b"}`, http.StatusUnprocessableEntity,
			map[string]string{"reason": "may contain only letters, digits, '_', '-' and '.'"}},
		{"malformed", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), `{"reason":`, http.StatusBadRequest, nil},
		{"trailing data", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), `{} {}`, http.StatusBadRequest, nil},
		{"wrong content type", "/v1/incidents/42/archive", http.Header{"Authorization": {"Bearer " + triggerToken}, "Content-Type": {"text/plain"}},
			`{}`, http.StatusUnsupportedMediaType, nil},
		{"too large", "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)),
			`{"requested_by":"` + strings.Repeat("a", 70<<10) + `"}`, http.StatusRequestEntityTooLarge, nil},
		{"bad wait", "/v1/incidents/42/archive?wait=maybe", bearer(triggerToken), "", http.StatusUnprocessableEntity,
			map[string]string{"wait": "must be true or false"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rec := e.do(t, http.MethodPost, tc.target, tc.header, tc.body)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantStatus == http.StatusAccepted {
				j := decodeBody[jobs.Job](t, rec)
				if j.IncidentID != "42" || rec.Header().Get("Location") != "/v1/jobs/"+j.ID {
					t.Errorf("job %+v location %q", j, rec.Header().Get("Location"))
				}
				return
			}
			if len(e.jobs.submitted) != 0 {
				t.Errorf("a rejected request enqueued %d jobs", len(e.jobs.submitted))
			}
			p := decodeBody[handlers.Problem](t, rec)
			if diff := cmp.Diff(tc.wantErrors, p.Errors); tc.wantErrors != nil && diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTriggerDefaultsAndWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do(t, http.MethodPost, "/v1/incidents/7/archive", bearer(triggerToken), "")
	e.do(t, http.MethodPost, "/v1/incidents/8/archive", jsonHeader(sign(secretA, "msg_d", testNow, "")), "")
	want := []struct{ reason, by, webhook string }{{"manual", "token:trigger", ""}, {"incident_closed", "webhook", "msg_d"}}
	for i, w := range want {
		got := e.jobs.submitted[i]
		if got.Reason != w.reason || got.RequestedBy != w.by || got.WebhookID != w.webhook {
			t.Errorf("submit %d = %+v, want %+v", i, got, w)
		}
	}
	e.jobs.finish = true
	rec := e.do(t, http.MethodPost, "/v1/incidents/9/archive?wait=true&timeout=5s", bearer(triggerToken), "")
	if rec.Code != http.StatusCreated {
		t.Fatalf("wait: %d %s", rec.Code, rec.Body)
	}
	if j := decodeBody[jobs.Job](t, rec); j.State != jobs.StateSucceeded || j.Result == nil {
		t.Errorf("waited job = %+v", j)
	}
}

func TestJobLookup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.do(t, http.MethodPost, "/v1/incidents/42/archive", bearer(triggerToken), "")
	j := decodeBody[jobs.Job](t, rec)
	for _, tc := range []struct {
		name   string
		target string
		tok    string
		want   int
	}{
		{"read", "/v1/jobs/" + j.ID, readToken, http.StatusOK},
		{"admin", "/v1/jobs/" + j.ID, adminToken, http.StatusOK},
		{"trigger may not read", "/v1/jobs/" + j.ID, triggerToken, http.StatusForbidden},
		{"unknown", "/v1/jobs/20261204T153000Z-ffffffff", readToken, http.StatusNotFound},
		{"malformed id", "/v1/jobs/..%2f..", readToken, http.StatusUnprocessableEntity},
	} {
		rec := e.do(t, http.MethodGet, tc.target, bearer(tc.tok), "")
		if rec.Code != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, rec.Code, tc.want, rec.Body)
		}
	}
}

func TestOpsRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		target string
		want   int
		ctype  string
	}{
		{"/healthz", 200, "application/json"},
		{"/readyz", 200, "application/json"},
		{"/metrics", 200, "text/plain"},
		{"/openapi.yaml", 200, "application/yaml"},
		{"/nope", 404, "application/problem+json"},
	} {
		rec := e.do(t, http.MethodGet, tc.target, nil, "")
		if rec.Code != tc.want || !strings.HasPrefix(rec.Header().Get("Content-Type"), tc.ctype) {
			t.Errorf("%s: %d %q", tc.target, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
	rec := e.do(t, http.MethodDelete, "/v1/incidents/42/archive", bearer(adminToken), "")
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("DELETE: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	rec = e.do(t, http.MethodGet, "/v1/whoami", sign(secretA, "msg_who", testNow, ""), "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"webhook"`) {
		t.Errorf("whoami: %d %s", rec.Code, rec.Body)
	}
}

func TestNoSecretInLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do(t, http.MethodPost, "/v1/incidents/42/archive", bearer(triggerToken), "")
	e.do(t, http.MethodPost, "/v1/incidents/42/archive", bearer("wrong-token-0123456789"), "")
	e.do(t, http.MethodPost, "/v1/incidents/42/archive", jsonHeader(sign(secretA, "msg_l", testNow, "{}")), "{}")
	e.do(t, http.MethodPost, "/v1/incidents/42/archive", jsonHeader(sign(secretA, "msg_l", testNow, "{}")), "{}")
	logs := e.logs.String()
	for _, s := range []string{triggerToken, readToken, adminToken, "wrong-token-0123456789", secretA, strings.TrimPrefix(secretA, "whsec_"), secretB} {
		if strings.Contains(logs, s) {
			t.Errorf("log output contains a secret %q", s)
		}
	}
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Error("no request log line")
	}
}

// TestDrainingEndsWaits: when shutdown starts, a request waiting for its job answers 202 at once
// instead of holding the shutdown up.
func TestDrainingEndsWaits(t *testing.T) {
	t.Parallel()
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	draining := make(chan struct{})
	fj := &fakeJobs{jobs: map[string]jobs.Job{}, block: true}
	h := handlers.NewServer(slog.New(slog.DiscardHandler), handlers.Config{
		Tokens: []handlers.Token{{Role: handlers.RoleTrigger, Value: triggerToken}}, Draining: draining,
	}, prometheus.NewRegistry(), fj, nil, nil, nil, nil, fakePinger{}, spec)
	e := &env{h: h, jobs: fj}
	done := make(chan int)
	go func() {
		done <- e.do(t, http.MethodPost, "/v1/incidents/42/archive?wait=true&timeout=60s", bearer(triggerToken), "").Code
	}()
	time.Sleep(50 * time.Millisecond)
	close(draining)
	select {
	case code := <-done:
		if code != http.StatusAccepted {
			t.Errorf("status %d, want 202", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request did not end when the server started draining")
	}
}
