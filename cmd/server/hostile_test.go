package main

// Hostile input against the running server (issue 9, reliability): refused requests leave no record
// in the store, and tenant-supplied file names archived through the whole pipeline never put a key
// outside its prefix.
//
//	go test -race ./cmd/server -run TestHostile

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"casearchiver/archive"
	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

// storeKeys lists the object keys of a local store directory (its objects/ tree).
func storeKeys(t *testing.T, dir string) []string {
	t.Helper()
	var keys []string
	root := filepath.Join(dir, "objects")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestHostileRequestsEnqueueNothing(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 21})
	dir := t.TempDir()
	env := baseEnv(sim, simURL, dir)
	env["LOG_LEVEL"] = "info"
	env["ARCHIVER_TOKENS"] = "admin:" + adminTok + ",read:read-token-0123456789"
	url, _, _, stop := boot(t, env)
	defer stop()
	tr := &transcript{}
	adm := http.Header{"Authorization": {"Bearer " + adminTok}, "Content-Type": {"application/json"}}
	with := func(h http.Header, kv ...string) http.Header {
		h = h.Clone()
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	big := `{"requested_by":"` + strings.Repeat("x", 70<<10) + `"}`
	type req struct {
		method, path, body string
		h                  http.Header
	}
	var reqs []req
	for _, id := range []string{"abc", "0", "01", "-1", "1e3", "INCIDENT-", "123456789012345678901", "%2e%2e", "1%00", "%2e%2e%2fjobs", "1%2F2", "%EF%BC%91"} {
		reqs = append(reqs, req{http.MethodPost, "/v1/incidents/" + id + "/archive", "{}", adm})
	}
	for _, b := range []string{"{", "[]", `{"reason":"../x"}`, `{"alert_id":"1/2"}`, `{"closed_at":"never"}`, `{"x":1}`, `{}{}`, big} {
		reqs = append(reqs, req{http.MethodPost, "/v1/incidents/7/archive", b, adm})
	}
	for _, ct := range []string{"text/plain", "application/xml", "multipart/form-data; boundary=x"} {
		reqs = append(reqs, req{http.MethodPost, "/v1/incidents/7/archive", "{}", with(adm, "Content-Type", ct)})
	}
	reqs = append(reqs,
		req{http.MethodPost, "/v1/incidents/7/archive", "{}", http.Header{"Content-Type": {"application/json"}}},
		req{http.MethodPost, "/v1/incidents/7/archive", "{}", with(adm, "Authorization", "Bearer wrong-token-0123456789")},
		req{http.MethodPost, "/v1/incidents/7/archive", "{}", with(adm, "Authorization", "Bearer read-token-0123456789")},
		req{http.MethodPost, "/v1/incidents/7/archive", "{}", signWebhook("whsec_"+strings.Repeat("QUFB", 8), "m1", time.Now(), "{}")},
		req{http.MethodPost, "/v1/incidents/7/archive", "{}", signWebhook(env["WEBHOOK_SECRETS"], "m2", time.Now().Add(-time.Hour), "{}")},
		req{http.MethodPost, "/v1/incidents/7/archive?wait=maybe", "{}", adm},
		req{http.MethodPost, "/v1/incidents/7/archive?wait=true&timeout=999h", "{}", adm},
		req{http.MethodGet, "/v1/incidents/7/archive", "", adm},
		req{http.MethodPost, "/v1/backfill", `{"incident_ids":["../1"]}`, adm},
		req{http.MethodPost, "/v1/backfill", `{"statuses":["a b"]}`, adm},
		req{http.MethodPost, "/v1/backfill", `{"modified_within":"-1h"}`, adm},
		req{http.MethodPost, "/v1/backfill", big, adm},
		req{http.MethodPost, "/v1/backfill", "{}", with(adm, "Authorization", "Bearer read-token-0123456789")},
		req{http.MethodGet, "/v1/jobs/..%2f..%2fjobs", "", adm},
		req{http.MethodGet, "/v1/incidents/7/archives/latest/objects/../../../jobs/x", "", adm},
		req{http.MethodGet, "/v1/incidents/7/archives/20261204T153000.000Z-00000000/objects/%2e%2e/%2e%2e/x", "", adm},
	)
	for _, r := range reqs {
		code, body := tr.do(t, r.method, url+r.path, r.h, r.body)
		if code < 400 || code > 499 {
			t.Errorf("%s %s (%.40q): %d, want 4xx: %s", r.method, r.path, r.body, code, body)
		}
	}
	if n := strings.Count(string(tr.bytes()), "Content-Type: application/problem+json"); n != len(reqs) {
		t.Errorf("%d of %d answers are application/problem+json:\n%.4000s", n, len(reqs), tr.bytes())
	}
	// Header blocks beyond MaxHeaderBytes are refused by net/http itself (431, plain text: the
	// handler never runs, so there is no problem+json); nothing is enqueued either.
	code, _ := tr.do(t, http.MethodPost, url+"/v1/incidents/7/archive", with(adm, "X-Pad", strings.Repeat("p", 128<<10)), "{}")
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header block: %d, want 431", code)
	}
	var m struct{}
	if c := api(t, http.MethodGet, url+"/healthz", "", "", &m); c != http.StatusOK {
		t.Errorf("server unhealthy after the hostile requests: %d", c)
	}
	if keys := storeKeys(t, dir); len(keys) != 0 {
		t.Errorf("hostile requests left records in the store: %v", keys)
	}
}

// TestHostileFileNamesThroughServer archives tenant-supplied file names through the whole server and
// lists the store: every key is under incidents/<id>/<version>/ or jobs/<job_id>/, and every file's
// original name is kept in the manifest.
func TestHostileFileNamesThroughServer(t *testing.T) {
	t.Parallel()
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsoar8", Seed: 22})
	names := []string{"../../../../jobs/evil.json", "..\\..\\windows\\system32", "nul\x00byte.txt", strings.Repeat("long", 300) + ".txt",
		strings.Repeat("é", 400), "bad\xff\xfeutf8.bin", "CON", "NUL", "con.txt", "aux.tar.gz", "LPT1", "COM9.log", "..", ".", "",
		".htaccess", "a/b/c.txt", "/etc/passwd", "C:\\boot.ini", "trailing. . ", "\u202eexe.txt", "new\nline.txt", "%2e%2e%2fx",
		"x:y*z?<>|\".txt", "\ufeffbom.txt"}
	var specs []cortexsim.FileSpec
	for i, n := range names {
		specs = append(specs, cortexsim.FileSpec{Name: n, Size: int64(100 + i)})
	}
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 2, Files: specs})
	dir := t.TempDir()
	env := baseEnv(sim, simURL, dir)
	env["LOG_LEVEL"] = "info"
	url, _, _, stop := boot(t, env)
	defer stop()
	var j jobs.Job
	if code := api(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive?wait=true&timeout=60s", adminTok, "", &j); code != http.StatusCreated || j.State != jobs.StateSucceeded {
		t.Fatalf("archive: %d %+v", code, j)
	}
	var m archive.Manifest
	api(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives/latest", adminTok, "", &m)
	var rep archive.VerifyReport
	if code := api(t, http.MethodPost, url+"/v1/incidents/"+id+"/archives/latest/verify", adminTok, "", &rep); code != http.StatusOK || rep.Status != "ok" {
		t.Errorf("verify: %d %+v", code, rep)
	}
	if m.Source.FilesStored != len(names) || !m.Complete {
		t.Errorf("files stored %d of %d, complete %v: %+v", m.Source.FilesStored, len(names), m.Complete, m.Incomplete)
	}
	kept := map[string]bool{}
	for _, o := range m.Objects {
		kept[o.OriginalName] = true
	}
	for _, n := range names {
		b, _ := json.Marshal(n) // as it arrives through the tenant's JSON: each invalid byte is U+FFFD
		var want string
		_ = json.Unmarshal(b, &want)
		if n == "" {
			continue // no name: the file id stands in
		}
		if !kept[want] {
			t.Errorf("original name %q not kept in the manifest", n)
		}
	}
	okKey := regexp.MustCompile(`^(incidents/` + id + `/` + j.Result.Version + `/|jobs/` + j.ID + `/)[^\x00-\x1f\\]+$`)
	keys := storeKeys(t, dir)
	for _, k := range keys {
		segs := strings.Split(k, "/")
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || len(s) > 255 {
				t.Errorf("key %q has segment %q", k, s)
			}
		}
		if !okKey.MatchString(k) {
			t.Errorf("key %q is outside incidents/%s/%s/ and jobs/%s/", k, id, j.Result.Version, j.ID)
		}
	}
	if len(keys) < len(names)+4 {
		t.Errorf("only %d keys in the store", len(keys))
	}
}
