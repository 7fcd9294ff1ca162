package handlers_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/archive"
	"casearchiver/handlers"
	"casearchiver/jobs"
)

const (
	triggerToken = "trigger-token-0123456789"
	readToken    = "read-token-0123456789abc"
	adminToken   = "admin-token-0123456789ab"
	secretA      = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB      = "whsec_c2Vjb25kLXJvdGF0ZWQtc2VjcmV0LWtleQ=="
)

var testNow = time.Date(2026, 12, 4, 15, 30, 0, 0, time.UTC)

// fakeJobs is an in-memory job queue.
type fakeJobs struct {
	mu        sync.Mutex
	jobs      map[string]jobs.Job
	submitted []archive.Request
	finish    bool // Wait returns the job finished
	block     bool // Wait blocks until its context is done
}

func (f *fakeJobs) Submit(_ context.Context, req archive.Request) (jobs.Job, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitted = append(f.submitted, req)
	for _, j := range f.jobs {
		if j.IncidentID == req.IncidentID && !j.State.Finished() {
			return j, false, nil
		}
	}
	id := fmt.Sprintf("20261204T153000Z-%08x", len(f.submitted))
	j := jobs.Job{ID: id, IncidentID: req.IncidentID, State: jobs.StateQueued, CreatedAt: testNow, Request: req}
	f.jobs[id] = j
	return j, true, nil
}

func (f *fakeJobs) Get(_ context.Context, id string) (jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return jobs.Job{}, jobs.ErrNotFound
	}
	return j, nil
}

func (f *fakeJobs) Wait(ctx context.Context, id string) (jobs.Job, error) {
	if f.block {
		<-ctx.Done()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[id]
	if f.finish {
		j.State, j.Attempts, j.FinishedAt = jobs.StateSucceeded, 1, testNow
		j.Result = &archive.Result{Version: "20261204T153001.000Z-0000abcd", ManifestPath: "incidents/" + j.IncidentID + "/20261204T153001.000Z-0000abcd/manifest.json", Objects: 3, Bytes: 42}
		f.jobs[id] = j
	}
	return j, nil
}

type fakePinger struct{ err error }

func (p fakePinger) Ping(context.Context) error { return p.err }

type env struct {
	h    http.Handler
	jobs *fakeJobs
	logs *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvAt(t, testNow)
}

func newEnvAt(t *testing.T, now time.Time) *env {
	t.Helper()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	keyA, err := handlers.ParseWebhookSecret(secretA)
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := handlers.ParseWebhookSecret(secretB)
	if err != nil {
		t.Fatal(err)
	}
	fj := &fakeJobs{jobs: map[string]jobs.Job{}}
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := handlers.NewServer(logger, handlers.Config{
		Tokens: []handlers.Token{
			{Role: handlers.RoleTrigger, Value: triggerToken},
			{Role: handlers.RoleRead, Value: readToken},
			{Role: handlers.RoleAdmin, Value: adminToken},
		},
		WebhookSecrets: [][]byte{keyA, keyB},
		Now:            func() time.Time { return now },
	}, prometheus.NewRegistry(), fj, nil, nil, nil, nil, fakePinger{}, spec)
	return &env{h: h, jobs: fj, logs: &logs}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// sign returns Standard Webhooks headers for body signed with secret at ts.
func sign(secret, id string, ts time.Time, body string) http.Header {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	stamp := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + stamp + "." + body))
	return http.Header{
		"Webhook-Id":        {id},
		"Webhook-Timestamp": {stamp},
		"Webhook-Signature": {"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

func (e *env) do(t *testing.T, method, target string, header http.Header, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	validateResponse(t, req, body, rec)
	return rec
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func jsonHeader(h http.Header) http.Header {
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/json")
	return h
}

var (
	specOnce   sync.Once
	specRouter routers.Router
	specErr    error
)

func loadSpec(t *testing.T) routers.Router {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile("../openapi.yaml")
		if err != nil {
			specErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = fmt.Errorf("openapi.yaml is invalid: %w", err)
			return
		}
		doc.Servers = nil
		specRouter, specErr = gorillamux.NewRouter(doc)
	})
	if specErr != nil {
		t.Fatal(specErr)
	}
	return specRouter
}

// validateResponse checks a response against openapi.yaml with kin-openapi.
func validateResponse(t *testing.T, req *http.Request, body string, rec *httptest.ResponseRecorder) {
	t.Helper()
	router := loadSpec(t)
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(strings.NewReader(body))
	// The spec's {path} of an archived object spans several segments; match it as one.
	if before, rest, ok := strings.Cut(r.URL.Path, "/objects/"); ok {
		u := *r.URL
		u.Path = before + "/objects/" + strings.ReplaceAll(rest, "/", "%2F")
		u.RawPath = ""
		r.URL = &u
	}
	route, params, err := router.FindRoute(r)
	if err != nil {
		if rec.Code == http.StatusNotFound || rec.Code == http.StatusMethodNotAllowed {
			return // no route: nothing to validate against
		}
		t.Fatalf("%s %s: not in openapi.yaml: %v", req.Method, req.URL.Path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Body:    io.NopCloser(bytes.NewReader(rec.Body.Bytes())),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s -> %d does not match openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, rec.Code, err, rec.Body.String())
	}
}

func decodeBody[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return v
}
