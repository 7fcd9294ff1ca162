package main

// Secrets campaign (issue 9, reliability): a full run with LOG_LEVEL=debug and real-looking secrets,
// then every byte the server produced is searched for them.
//
//	go test -race ./cmd/server -run TestSecretsNeverLeak

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"casearchiver/fetch/cortexsim"
	"casearchiver/jobs"
)

// transcript records every HTTP answer (status line, headers, body) the test received.
type transcript struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (tr *transcript) do(t *testing.T, method, url string, header http.Header, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	tr.mu.Lock()
	fmt.Fprintf(&tr.buf, "%s %s -> %s\n", method, url, resp.Status)
	_ = resp.Header.Write(&tr.buf)
	tr.buf.Write(raw)
	tr.buf.WriteString("\n\n")
	tr.mu.Unlock()
	return resp.StatusCode, raw
}

func (tr *transcript) bytes() []byte {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return bytes.Clone(tr.buf.Bytes())
}

func signWebhook(secret, id string, ts time.Time, body string) http.Header {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	stamp := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + stamp + "." + body))
	return http.Header{
		"Webhook-Id": {id}, "Webhook-Timestamp": {stamp}, "Content-Type": {"application/json"},
		"Webhook-Signature": {"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

// secretForms is every encoding of a secret that would count as a leak.
func secretForms(name, s string) map[string][]byte {
	out := map[string][]byte{}
	b := []byte(s)
	out[name] = b
	out[name+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(b))
	out[name+" (base64, raw)"] = []byte(base64.RawStdEncoding.EncodeToString(b))
	out[name+" (base64url)"] = []byte(base64.RawURLEncoding.EncodeToString(b))
	out[name+" (hex)"] = []byte(hex.EncodeToString(b))
	if key, ok := strings.CutPrefix(s, "whsec_"); ok {
		out[name+" (key base64)"] = []byte(key)
		raw, err := base64.StdEncoding.DecodeString(key)
		if err == nil {
			out[name+" (key bytes)"] = raw
			out[name+" (key hex)"] = []byte(hex.EncodeToString(raw))
			out[name+" (key base64url)"] = []byte(base64.RawURLEncoding.EncodeToString(raw))
		}
	}
	return out
}

func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	const (
		tenantKey   = "J8qWm3ZtR7vXk2PbN5cY9LhD4sGf6AeU1oTi0KwQz8MnB3xVr7yHj2CdF5gS9aLp4uEt6WiO1kZq0RvXm8NbY3cT7lPd2GsA5hFj9KeU4oWi6QzL1nBv0MxC8yRt3SpD7gHa"
		wrongKey    = "Xy7Qp2Lm9Rt4Vb6Nc8Zw1Ks3Dj5Fh0Gg7Ha2Jq9Wm4Er6Ty8Ui1Op3As5Df0Gh7Jk2Lz9Xc4Vb6Nm8Qw1Er3Ty5Ui0Op7As2Df9Gh4Jk6Lz8Xc1Vb3Nm5Qw0Er7Ty2Ui9Op4"
		trigTok     = "trg_5c2f9a7e1b4d8c3f6a0e9d2b7c4f1a8e"
		readTok     = "rd_8e1f4a7c0d3b6e9f2a5c8b1d4e7f0a3c"
		adminTok2   = "adm_3b6e9c2f5a8d1b4e7c0f3a6d9b2e5c8f"
		webhookSec1 = "whsec_kR4vY8nQ2mZ6pT0wX3sL7cJ1hF5bD9gA2eK6uN0yW4o="
		webhookSec2 = "whsec_Zm9yLXJvdGF0aW9uLW9ubHktMTIzNDU2Nzg5MGFiY2RlZg=="
	)
	sim, simURL := tenant(t, cortexsim.Options{Product: "xsiam", Seed: 13, Key: tenantKey, KeyID: "17"})
	sim.SetRiskyUsers(4)
	id := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_true_positive", Alerts: 3, EntriesPerInvestigation: 120,
		ContextKeys: 3, NetworkArtifacts: 2, Files: []cortexsim.FileSpec{{Name: "mail.eml", Size: 40000}, {Name: "cap.pcap", Size: 300000}}})
	id2 := sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1, EntriesPerInvestigation: 5})
	dir := t.TempDir()
	env := baseEnv(sim, simURL, dir)
	env["LOG_LEVEL"] = "debug"
	env["ARCHIVER_TOKENS"] = "trigger:" + trigTok + ",read:" + readTok + ",admin:" + adminTok2
	env["WEBHOOK_SECRETS"] = webhookSec1 + " " + webhookSec2
	url, logs, out, stop := boot(t, env)
	tr := &transcript{}
	bearerH := func(tok string) http.Header {
		return http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}
	}

	// Identity, health, spec, metrics.
	for _, tok := range []string{trigTok, readTok, adminTok2} {
		tr.do(t, http.MethodGet, url+"/v1/whoami", bearerH(tok), "")
	}
	for _, p := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
		tr.do(t, http.MethodGet, url+p, nil, "")
	}
	// A full archive through the bearer token, with the tenant flaky so that retries are logged.
	sim.SetFaults(cortexsim.EPAll, cortexsim.Faults{ErrorRate: 0.15, TruncateRate: 0.05})
	code, _ := tr.do(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive?wait=true&timeout=60s", bearerH(trigTok), `{"reason":"manual","requested_by":"analyst@example.com"}`)
	if code != http.StatusCreated {
		t.Fatalf("archive: %d\n%s", code, tr.bytes())
	}
	sim.SetFaults(cortexsim.EPAll, cortexsim.Faults{})
	// The XSOAR close hook: a signed webhook with each secret.
	for i, sec := range []string{webhookSec1, webhookSec2} {
		body := `{"reason":"incident_closed","force":true}`
		code, _ := tr.do(t, http.MethodPost, url+"/v1/incidents/"+id2+"/archive?wait=true&timeout=60s", signWebhook(sec, fmt.Sprintf("msg_%d", i), time.Now(), body), body)
		if code != http.StatusCreated && code != http.StatusAccepted {
			t.Fatalf("webhook archive: %d\n%s", code, tr.bytes())
		}
	}
	// Read everything back.
	tr.do(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives?include_incomplete=true", bearerH(readTok), "")
	_, manifest := tr.do(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives/latest", bearerH(readTok), "")
	for _, p := range bytes.Split(manifest, []byte(`"path": "`))[1:] {
		path, _, _ := bytes.Cut(p, []byte(`"`))
		tr.do(t, http.MethodGet, url+"/v1/incidents/"+id+"/archives/latest/objects/"+string(path), bearerH(readTok), "")
	}
	tr.do(t, http.MethodPost, url+"/v1/incidents/"+id+"/archives/latest/verify", bearerH(readTok), "")
	// Admin routes.
	tr.do(t, http.MethodPost, url+"/v1/backfill", bearerH(adminTok2), `{"dry_run":true}`)
	code, bf := tr.do(t, http.MethodPost, url+"/v1/backfill", bearerH(adminTok2), `{"incident_ids":["`+id+`","`+id2+`"],"force":true}`)
	if code == http.StatusAccepted {
		var st jobs.BackfillStatus
		if err := json.Unmarshal(bf, &st); err == nil {
			for range 100 {
				_, b := tr.do(t, http.MethodGet, url+"/v1/backfill/"+st.ID, bearerH(adminTok2), "")
				if !bytes.Contains(b, []byte(`"state":"running"`)) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	tr.do(t, http.MethodPost, url+"/v1/risky-users/snapshot", bearerH(adminTok2), "")
	// Failures: an incident the tenant does not know, bad credentials, a forged webhook, a replay.
	code, body := tr.do(t, http.MethodPost, url+"/v1/incidents/999999/archive?wait=true&timeout=30s", bearerH(trigTok), "")
	if code != http.StatusCreated || !bytes.Contains(body, []byte(`"failed"`)) {
		t.Errorf("unknown incident: %d %s", code, body)
	}
	tr.do(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive", bearerH(trigTok[:len(trigTok)-2]), "")
	tr.do(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive", bearerH(readTok), "")
	tr.do(t, http.MethodGet, url+"/v1/whoami", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+adminTok2))}}, "")
	forged := signWebhook("whsec_"+base64.StdEncoding.EncodeToString([]byte("not-the-secret-at-all-0123")), "msg_f", time.Now(), "{}")
	tr.do(t, http.MethodPost, url+"/v1/incidents/"+id+"/archive", forged, "{}")
	tr.do(t, http.MethodPost, url+"/v1/incidents/"+id2+"/archive", signWebhook(webhookSec1, "msg_0", time.Now(), "{}"), "{}")
	tr.do(t, http.MethodGet, url+"/metrics", nil, "")
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}

	// A second server whose tenant key is wrong: the tenant's refusal surfaces in a job error.
	env2 := baseEnv(sim, simURL, t.TempDir())
	env2["LOG_LEVEL"], env2["CORTEX_API_KEY"], env2["ARCHIVER_TOKENS"] = "debug", wrongKey, "admin:"+adminTok2
	env2["WEBHOOK_SECRETS"] = webhookSec1
	url2, logs2, out2, stop2 := boot(t, env2)
	code, body = tr.do(t, http.MethodPost, url2+"/v1/incidents/"+id+"/archive?wait=true&timeout=30s", bearerH(adminTok2), "")
	if code != http.StatusCreated || !bytes.Contains(body, []byte(`"failed"`)) {
		t.Errorf("archive with a wrong tenant key: %d %s", code, body)
	}
	if err := stop2(); err != nil {
		t.Errorf("stop: %v", err)
	}

	// Configuration errors that carry secrets in bad values.
	var cfgErrs bytes.Buffer
	for _, bad := range []map[string]string{
		{"ARCHIVER_TOKENS": "boss:" + adminTok2, "WEBHOOK_SECRETS": "whsec_" + trigTok + "!", "CORTEX_API_URL": "ftp://x", "CORTEX_API_KEY": tenantKey},
		{"ARCHIVER_TOKENS": adminTok2, "WEBHOOK_SECRETS": webhookSec1[:20], "CORTEX_API_KEY": tenantKey, "CORTEX_API_KEY_FILE": "/nonexistent/" + readTok},
		{"ARCHIVER_TOKENS": "admin:" + trigTok[:10], "CORTEX_RATE_LIMIT": tenantKey, "PORT": adminTok2},
	} {
		var o, e syncBuffer
		err := run(t.Context(), []string{"server"}, envFunc(bad), &o, &e)
		if err == nil {
			t.Fatalf("bad config %v started", bad)
		}
		fmt.Fprintf(&cfgErrs, "%v\n%s\n%s\n", err, o.String(), e.String())
	}

	// Search every byte.
	sources := map[string][]byte{
		"logs":           []byte(logs.String() + logs2.String()),
		"stdout":         []byte(out.String() + out2.String()),
		"http responses": tr.bytes(),
		"config errors":  cfgErrs.Bytes(),
	}
	files := 0
	for _, root := range []string{dir, env2["ARCHIVE_URL"]} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			sources["store "+strings.TrimPrefix(p, root)] = append(b, []byte("\x00"+p)...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	secrets := map[string][]byte{}
	for name, s := range map[string]string{
		"tenant key": tenantKey, "wrong tenant key": wrongKey, "trigger token": trigTok, "read token": readTok,
		"admin token": adminTok2, "webhook secret 1": webhookSec1, "webhook secret 2": webhookSec2,
	} {
		for k, v := range secretForms(name, s) {
			secrets[k] = v
		}
	}
	total := 0
	for src, b := range sources {
		total += len(b)
		for name, s := range secrets {
			if bytes.Contains(b, s) {
				i := bytes.Index(b, s)
				t.Errorf("%s found in %s: ...%q...", name, src, b[max(0, i-120):min(len(b), i+len(s)+40)])
			}
		}
	}
	if files < 20 || len(sources["logs"]) < 10000 || !bytes.Contains(sources["logs"], []byte(`"severity":"DEBUG"`)) || !bytes.Contains(sources["logs"], []byte("retrying")) {
		t.Errorf("the run produced too little to prove anything: %d store files, %d log bytes", files, len(sources["logs"]))
	}
	t.Logf("secrets campaign: searched %d bytes (logs %d, HTTP %d, %d store files, config errors) for %d secret forms: none found",
		total, len(sources["logs"]), len(sources["http responses"]), files, len(secrets))
}
