package archive_test

// A hostile tenant (issue 9, hostile input): alert ids, entry ids and file names chosen to escape
// the archive's prefix, and incident ids that reach the archiver from a tenant's search results or a
// task body. No object key may leave incidents/<id>/<version>/.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/store"
)

// evilTenant answers with the ids and names it is given.
type evilTenant struct {
	alerts []string
	files  map[string]string // entry id -> file name, all in every war room
	calls  atomic.Int64
}

func (e *evilTenant) Product() fetch.Product { return fetch.XSIAM }
func (e *evilTenant) Host() string           { return "evil.example" }

func (e *evilTenant) GetIncident(_ context.Context, id string) (fetch.Incident, error) {
	e.calls.Add(1)
	return fetch.Incident{ID: id, Status: "resolved_other", Raw: json.RawMessage(`{"incident_id":"` + id + `"}`)}, nil
}

func (e *evilTenant) GetExtraData(context.Context, string) (fetch.ExtraData, error) {
	e.calls.Add(1)
	x := fetch.ExtraData{Raw: json.RawMessage(`{}`), AlertsTotal: len(e.alerts)}
	for _, a := range e.alerts {
		x.Alerts = append(x.Alerts, fetch.Alert{ID: a, Raw: json.RawMessage(`{}`)})
	}
	return x, nil
}

func (e *evilTenant) GetEntries(_ context.Context, inv string) (fetch.Entries, error) {
	e.calls.Add(1)
	out := fetch.Entries{Raw: json.RawMessage(`[]`), Pages: 1}
	for id, name := range e.files {
		out.Entries = append(out.Entries, fetch.Entry{ID: id + "@" + inv, InvestigationID: inv, File: name, FileSize: 5})
	}
	return out, nil
}

func (e *evilTenant) GetContext(context.Context, string) (json.RawMessage, error) {
	e.calls.Add(1)
	return json.RawMessage(`{}`), nil
}

func (e *evilTenant) Download(_ context.Context, entryID string, fn func(fetch.FileMeta, io.Reader) error) error {
	e.calls.Add(1)
	return fn(fetch.FileMeta{Size: 5, Name: "../../" + entryID}, strings.NewReader("bytes"))
}

func (e *evilTenant) GetRiskyUsers(context.Context) (fetch.RiskyUsers, error) {
	e.calls.Add(1)
	return fetch.RiskyUsers{}, nil
}

func TestHostileTenantIDs(t *testing.T) {
	t.Parallel()
	st, err := store.NewLocal(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)

	// Incident ids that would shape keys: refused before the tenant is asked anything.
	ev := &evilTenant{alerts: []string{"1"}}
	arch := archive.New(logger, ev, st, archive.Config{})
	for _, id := range []string{"", "..", ".", "../jobs", "5/20261204T000000.000Z-00000000", "a\\b", "1\x00", "7/", "/7", ".7",
		"\xff", "é", strings.Repeat("9", 257), "1 2", "%2e%2e"} {
		_, err := arch.Archive(t.Context(), archive.Request{IncidentID: id, Reason: archive.ReasonManual}, nil)
		if err == nil || archive.Retryable(err) {
			t.Errorf("incident id %q: err = %v, want a final refusal", id, err)
		}
	}
	if n := ev.calls.Load(); n != 0 {
		t.Errorf("the tenant was called %d times for refused incident ids", n)
	}

	// Alert (war-room) ids, entry ids and file names from the tenant: sanitised into the prefix.
	ev = &evilTenant{
		alerts: []string{"../../../jobs/x", "a/b", "..", "NUL", "\x00", strings.Repeat("A", 600), "c\\d", ".hidden"},
		files: map[string]string{
			"1": "../../../../jobs/evil.json", "2/../..": "x", "..": "CON", "4": "a/b\\c", "5": "\xff\xfe", "6": strings.Repeat("n", 1000),
		},
	}
	arch = archive.New(logger, ev, st, archive.Config{})
	res, err := arch.Archive(t.Context(), archive.Request{IncidentID: "42", Reason: archive.ReasonManual}, nil)
	keys := map[string]bool{}
	for o, lerr := range st.List(t.Context(), "", "") {
		if lerr != nil {
			t.Fatal(lerr)
		}
		keys[o.Key] = true
	}
	for k := range keys {
		rest, ok := strings.CutPrefix(k, "incidents/42/")
		v, _, _ := strings.Cut(rest, "/")
		if !ok || !archive.ValidVersion(v) {
			t.Errorf("key %q outside incidents/42/<version>/", k)
		}
	}
	if err != nil {
		// Distinct hostile ids may sanitise to the same name; then the archive fails cleanly.
		for k := range keys {
			if strings.HasSuffix(k, "/manifest.json") {
				t.Errorf("failed archive (%v) left %s", err, k)
			}
		}
		t.Logf("hostile ids: archive failed cleanly: %v", err)
		return
	}
	rep, err := arch.Verify(t.Context(), "42", res.Version)
	if err != nil || rep.Status != "ok" {
		t.Errorf("verify = %+v, %v", rep, err)
	}
	raw, err := arch.Manifest(t.Context(), "42", res.Version)
	if err != nil || !bytes.Contains(raw, []byte(`../../../../jobs/evil.json`)) {
		t.Errorf("original name not in the manifest (%v)", err)
	}
	if res.Objects != 2+2*len(ev.alerts)+len(ev.alerts)*len(ev.files) {
		t.Errorf("%d objects, want %d", res.Objects, 2+2*len(ev.alerts)+len(ev.alerts)*len(ev.files))
	}
}
