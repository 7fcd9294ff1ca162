package handlers_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"casearchiver/handlers"
)

type fakeTasks struct{}

func (fakeTasks) Verify(context.Context, *http.Request) error { return nil }
func (fakeTasks) Execute(context.Context, []byte) error       { return nil }

// TestRoutesMatchSpec walks the chi router and fails when a served route is missing from openapi.yaml
// or the spec lists a route that is not served.
func TestRoutesMatchSpec(t *testing.T) {
	t.Parallel()
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// With Cloud Tasks every route is registered.
	h := handlers.NewServer(slog.New(slog.DiscardHandler), handlers.Config{}, prometheus.NewRegistry(),
		&fakeJobs{}, nil, nil, nil, fakeTasks{}, fakePinger{}, spec)
	var served []string
	err = chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.ReplaceAll(route, "/*", "/{path}")
		served = append(served, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(spec)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if diff := cmp.Diff(documented, served); diff != "" {
		t.Errorf("routes (-openapi.yaml +served):\n%s", diff)
	}
}

var digits = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)

func FuzzParseIncidentID(f *testing.F) {
	for _, s := range []string{"1", "INCIDENT-5", "incident-0", "00", "", "12345678901234567890", "123456789012345678901", "1e3", "-1", "INCIDENT-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := handlers.ParseIncidentID(s)
		if err != nil {
			return
		}
		if !digits.MatchString(id) || !strings.HasSuffix(s, id) {
			t.Fatalf("ParseIncidentID(%q) = %q", s, id)
		}
	})
}

// FuzzTriggerBody drives the one decode path through the trigger route: whatever the body, the
// answer is 202 or a 4xx problem, and only a 202 enqueues.
func FuzzTriggerBody(f *testing.F) {
	for _, s := range []string{"", "{}", `{"reason":"manual"}`, `{"force":true,"closed_at":"2026-01-01T00:00:00Z"}`, `{"x":1}`, `[]`, `null`, `{"reason":1}`, "{\"reason\":\"\xff\"}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		e := newEnv(t)
		rec := e.do(t, http.MethodPost, "/v1/incidents/42/archive", jsonHeader(bearer(triggerToken)), body)
		switch {
		case rec.Code == http.StatusAccepted:
			if len(e.jobs.submitted) != 1 {
				t.Fatalf("202 but %d submits", len(e.jobs.submitted))
			}
		case rec.Code >= 400 && rec.Code < 500:
			if len(e.jobs.submitted) != 0 || rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d with %d submits, content type %q", rec.Code, len(e.jobs.submitted), rec.Header().Get("Content-Type"))
			}
		default:
			t.Fatalf("body %q: status %d: %s", body, rec.Code, rec.Body)
		}
	})
}
