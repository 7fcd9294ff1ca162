package fetch

// Fuzz targets for every decoder of tenant answers (issue 9, hostile input). The tenant is
// untrusted: whatever it sends, decoding returns a value or an error, never panics, keeps what it
// returned byte-exact for the archive, and never lets the API key into an error. The seed inputs run
// as ordinary tests; `go test ./fetch -run '^$' -fuzz FuzzDecodeEntry` explores further.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var tenantSeeds = []string{
	``, `null`, `{}`, `[]`, `"x"`, `1`, `{"id":1}`, `{"incident_id":"12","status":"resolved_other","creation_time":1764860000000}`,
	`{"id":"7","status":2,"created":"2026-01-01T00:00:00Z","modified":"0001-01-01T00:00:00Z","investigationId":"7"}`,
	`{"incident_id":null,"id":null}`, `{"incident_id":1e400}`, `{"incident_id":"1","status":{"x":1}}`,
	`{"incident_id":"1","creation_time":"yesterday"}`, `{"incident_id":"1","alert_count":"-5"}`, `{"incident_id":"1","alert_count":1e30}`,
	`{"incident":{"incident_id":"1","alert_count":5},"alerts":{"total_count":2,"data":[{"alert_id":1},{"alert_id":"2"}]}}`,
	`{"incident":{"incident_id":"1"},"alerts":{"total_count":-3,"data":[]}}`, `{"incident":null}`,
	`{"incident":{"incident_id":"1"},"alerts":{"data":[1,2]}}`, `{"incident":{"incident_id":"1"},"alerts":{"total_count":"NaN"}}`,
	`{"id":"3@7","type":3,"file":"../../x","fileID":"f","fileMetadata":{"size":-1,"sha256":"AB"}}`, `{"id":"","file":"x"}`,
	`{"id":"1@1","note":"maybe"}`, `{"id":"1@1","created":1e300}`, `{"id":"1@1","fileMetadata":{"size":"big"}}`,
	`[{"id":"u","score":"9","reasons":[{"points":"x"}]}]`, `{"id":"u","score":1}`, "{\"id\":\"\xff\"}", `{"a":` + strings.Repeat(`[`, 5000),
}

func FuzzDecodeIncident(f *testing.F) {
	for _, s := range tenantSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		inc, err := decodeIncident(b)
		if err != nil {
			return
		}
		if inc.ID == "" || !bytes.Equal(inc.Raw, b) {
			t.Fatalf("decodeIncident(%q) = id %q raw %q", b, inc.ID, inc.Raw)
		}
	})
}

func FuzzDecodeExtraData(f *testing.F) {
	for _, s := range tenantSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := decodeExtraData(b)
		if err != nil {
			return
		}
		if !bytes.Equal(x.Raw, b) || x.Incident.ID == "" || x.AlertsTotal < len(x.Alerts) || x.Truncated != (x.AlertsTotal > len(x.Alerts)) {
			t.Fatalf("decodeExtraData(%q) = %+v", b, x)
		}
	})
}

func FuzzDecodeEntry(f *testing.F) {
	for _, s := range tenantSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		if e.ID == "" || !bytes.Equal(e.Raw, b) || e.FileSHA256 != strings.ToLower(e.FileSHA256) {
			t.Fatalf("decodeEntry(%q) = %+v", b, e)
		}
	})
}

func FuzzDecodeRiskyUsers(f *testing.F) {
	for _, s := range tenantSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRiskyUsers(b)
		if err != nil {
			return
		}
		if !r.Enabled || r.Count < 0 || !bytes.Equal(r.Raw, b) {
			t.Fatalf("decodeRiskyUsers(%q) = %+v", b, r)
		}
	})
}

// FuzzParseAPIError: an error answer of any shape becomes an APIError whose text never carries the key,
// even when the tenant echoes it back.
func FuzzParseAPIError(f *testing.F) {
	const key = "Sup3rS3cretTenantKey0123456789abcdefABCDEF"
	for _, s := range append(tenantSeeds,
		`{"reply":{"err_code":500,"err_msg":"bad key `+key+`","err_extra":{"k":"`+key+`"}}}`,
		`{"status":401,"title":"`+key+`","detail":"x","error":"`+key+`"}`, `{"errorCode":"E1","message":"`+key+`"}`,
		"<html>"+key+"</html>", `{"reply":"`+key+`"}`) {
		f.Add(500, []byte(s), "")
		f.Add(429, []byte(s), "3")
	}
	redact := func(s string) string { return strings.ReplaceAll(s, key, "[redacted]") }
	f.Fuzz(func(t *testing.T, status int, b []byte, retryAfter string) {
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		e := parseAPIError("get incident 1", status, h, b, redact)
		if e == nil || e.Status != status || e.retryAfter < 0 || e.retryAfter > 24*time.Hour+time.Second {
			t.Fatalf("parseAPIError(%d, %q, %q) = %+v", status, b, retryAfter, e)
		}
		if strings.Contains(e.Error(), key) {
			t.Fatalf("the key leaked into %q", e.Error())
		}
	})
}

func FuzzDispositionName(f *testing.F) {
	for _, s := range []string{`attachment; filename="a.txt"`, `attachment; filename=a b.txt`, `attachment; filename*=UTF-8''%e2%82%ac.txt`,
		`filename="../../etc/passwd"`, `filename=`, `inline`, "filename=\"\x00\"", `filename="` + strings.Repeat("x", 5000) + `"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cd string) {
		_ = dispositionName(cd) // the name is informational; SafeName sanitises whatever is used in a key
	})
}

// FuzzEntriesPages serves one fuzzed body for every page of a war room: GetEntries terminates (no
// endless paging on a cursor that does not advance) and what it keeps is the entries it decoded.
func FuzzEntriesPages(f *testing.F) {
	for _, s := range []string{`{"entries":[{"id":"1@7"},{"id":"2@7"}],"totalEntries":2}`, `{"entries":[{"id":"1@7"}],"totalEntries":99}`,
		`{"entries":[],"totalEntries":5}`, `{"entries":null}`, `{"entries":[{"id":"1@7"},{"id":"1@7"}]}`, `{"totalEntries":"x"}`, `[]`, `{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		}))
		defer ts.Close()
		c, err := New(Config{BaseURL: ts.URL, KeyID: "1", Key: "k", Product: XSOAR8, RequestsPerSecond: -1, PageSize: 1,
			MaxAttempts: 1, RequestTimeout: 5 * time.Second}, ts.Client())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		es, err := c.GetEntries(ctx, "7")
		if ctx.Err() != nil {
			t.Fatalf("GetEntries did not terminate on %q", body)
		}
		if err != nil {
			return
		}
		var raws []json.RawMessage
		if json.Unmarshal(es.Raw, &raws) != nil || len(raws) != len(es.Entries) || es.Total < len(es.Entries) {
			t.Fatalf("GetEntries(%q) = raw %q, %d entries, total %d", body, es.Raw, len(es.Entries), es.Total)
		}
	})
}

// TestAPIErrorRedactsBeforeTruncating: a key echoed across the 512-byte cut of a non-JSON error body
// must not leak its first bytes (it did: redaction ran after the cut, which split the key).
func TestAPIErrorRedactsBeforeTruncating(t *testing.T) {
	t.Parallel()
	const key = "Sup3rS3cretTenantKey0123456789abcdefABCDEF"
	redact := func(s string) string { return strings.ReplaceAll(s, key, "[redacted]") }
	for _, pad := range []int{480, 500, 505, 511, 512} {
		e := parseAPIError("op", 502, http.Header{}, []byte(strings.Repeat("x", pad)+key+" tail"), redact)
		if strings.Contains(e.Error(), key[:8]) {
			t.Errorf("pad %d: key prefix leaked in %q", pad, e.Error()[len(e.Error())-60:])
		}
	}
}
