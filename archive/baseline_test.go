package archive_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"casearchiver/fetch/cortexsim"
)

// baseline is the naive reference client of the performance figures: it does what the curl
// recipes of the original request do (get the incident, its extra data, then for every alert its
// war-room entries page by page, its context and each attached file), one request after another,
// with the standard auth headers, writing every answer and every file to a file on disk the way
// `curl > file` would (no fsync: curl does not sync either). Test-only code.
type baseline struct {
	base       string // tenant URL
	keyID, key string
	hc         *http.Client
	dir        string // output directory
	pageSize   int
}

// baselineResult counts what the baseline fetched, to check it did the same work as the archiver.
type baselineResult struct {
	Alerts, Entries, Files int
	FileBytes              int64
}

func (c *baseline) do(ctx context.Context, method, path string, body any, out io.Writer) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("x-xdr-auth-id", c.keyID)
	req.Header.Set("Authorization", c.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	_, err = io.Copy(out, resp.Body)
	return err
}

// save runs one request and writes its answer to dir/name, returning the bytes for decoding.
func (c *baseline) save(ctx context.Context, method, path string, body any, name string) ([]byte, error) {
	var buf bytes.Buffer
	if err := c.do(ctx, method, path, body, &buf); err != nil {
		return nil, err
	}
	p := filepath.Join(c.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return nil, err
	}
	return buf.Bytes(), os.WriteFile(p, buf.Bytes(), 0o600)
}

// run archives one XSIAM incident sequentially.
func (c *baseline) run(ctx context.Context, incidentID string) (baselineResult, error) {
	var res baselineResult
	if _, err := c.save(ctx, http.MethodPost, "/public_api/v1/incidents/get_incidents", map[string]any{
		"request_data": map[string]any{"filters": []any{map[string]any{"field": "incident_id", "value": incidentID, "operator": "eq"}}},
	}, "incident.json"); err != nil {
		return res, err
	}
	b, err := c.save(ctx, http.MethodPost, "/public_api/v1/incidents/get_incident_extra_data",
		map[string]any{"request_data": map[string]any{"incident_id": incidentID}}, "extra_data.json")
	if err != nil {
		return res, err
	}
	var extra struct {
		Reply struct {
			Alerts struct {
				Data []struct {
					AlertID json.Number `json:"alert_id"`
				} `json:"data"`
			} `json:"alerts"`
		} `json:"reply"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&extra); err != nil {
		return res, fmt.Errorf("extra data: %w", err)
	}
	for _, a := range extra.Reply.Alerts.Data {
		alert := a.AlertID.String()
		res.Alerts++
		var files []string
		last := ""
		for page := 0; ; page++ {
			req := map[string]any{"pageSize": c.pageSize}
			if last != "" {
				req["lastID"] = last
			}
			b, err := c.save(ctx, http.MethodPost, "/xsoar/investigation/"+alert, req,
				fmt.Sprintf("alerts/%s/entries-%03d.json", alert, page))
			if err != nil {
				return res, err
			}
			var inv struct {
				Entries []struct {
					ID   string `json:"id"`
					File string `json:"file"`
				} `json:"entries"`
				Total int `json:"totalEntries"`
			}
			if err := json.Unmarshal(b, &inv); err != nil {
				return res, fmt.Errorf("entries of %s: %w", alert, err)
			}
			for _, e := range inv.Entries {
				res.Entries++
				if e.File != "" {
					files = append(files, e.ID)
				}
			}
			if len(inv.Entries) == 0 || len(inv.Entries) < c.pageSize {
				break
			}
			last = inv.Entries[len(inv.Entries)-1].ID
		}
		if _, err := c.save(ctx, http.MethodPost, "/xsoar/investigation/"+alert+"/context",
			map[string]string{"query": "${.}"}, "alerts/"+alert+"/context.json"); err != nil {
			return res, err
		}
		for _, id := range files {
			n, err := c.download(ctx, alert, id)
			if err != nil {
				return res, err
			}
			res.Files++
			res.FileBytes += n
		}
	}
	return res, nil
}

// download writes one file to dir/alerts/<alert>/files/<entry id>, streaming.
func (c *baseline) download(ctx context.Context, alert, entryID string) (int64, error) {
	p := filepath.Join(c.dir, "alerts", alert, "files", strings.ReplaceAll(entryID, "@", "_"))
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return 0, err
	}
	f, err := os.Create(p)
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: f}
	err = c.do(ctx, http.MethodGet, "/xsoar/entry/download/"+strings.ReplaceAll(url.PathEscape(entryID), "@", "%40"), nil, cw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TestBaselineSmoke checks that the reference client fetches what the simulator holds (cheap; runs
// in CI so that the benchmark's baseline stays honest).
func TestBaselineSmoke(t *testing.T) {
	sim := cortexsim.New(cortexsim.Options{Seed: 3})
	id := sim.AddIncident(cortexsim.IncidentSpec{Alerts: 3, EntriesPerInvestigation: 130, Files: []cortexsim.FileSpec{
		{Size: 1000}, {Investigation: "1000002", Size: 70000},
	}})
	srv := newLoopback(t, sim)
	bl := &baseline{base: srv.URL, keyID: sim.KeyID(), key: sim.Key(), hc: &http.Client{}, dir: t.TempDir(), pageSize: 100}
	res, err := bl.run(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	want := baselineResult{Alerts: 3, Entries: 3*130 + 2, Files: 2, FileBytes: 71000}
	if res != want {
		t.Errorf("baseline fetched %+v, want %+v", res, want)
	}
	st := sim.Stats()
	// 2 + 3 alerts × (2 entry pages + context) + 2 files
	if n := st.Requests[cortexsim.EPInvestigation]; n != 6 {
		t.Errorf("entry pages = %d, want 6", n)
	}
}
