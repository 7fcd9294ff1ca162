// Package cortexsim is a simulated Cortex XSIAM / XSOAR 8 / XSOAR 6 tenant: an http.Handler that
// serves the calls of package fetch with the real shapes and envelopes, both auth modes, rate
// limits that answer 429 like the tenant, fault injection per endpoint, a deterministic seeded
// scenario generator and ground truth for tests.
//
// # Routes (on path only: any host, trailing slash or not, "@" or "%40")
//
//	XSIAM   POST /public_api/v1/incidents/get_incidents            endpoint "get_incidents"
//	        POST /public_api/v1/incidents/get_incident_extra_data  endpoint "extra_data"
//	        POST /public_api/v1/get_risky_users (and /risk/get_risky_users)  endpoint "risky_users"
//	XSOAR 8 POST /xsoar/incidents/search                           endpoint "incidents_search"
//	all     POST /xsoar/investigation/{id}                         endpoint "investigation"
//	        POST /xsoar/investigation/{id}/context                 endpoint "context"
//	        GET  /xsoar/entry/download/{n}@{inv}                   endpoint "download"
//
// XSOAR 6 serves incidents/search, investigation, context and download without the /xsoar prefix.
//
// # Authentication
//
// A tenant key is either standard or advanced, never both: with Options.Advanced only advanced
// requests (x-xdr-auth-id, x-xdr-nonce, x-xdr-timestamp, Authorization = hex sha256(key+nonce+ts))
// are accepted; the timestamp must be within Options.MaxClockSkew (default 5 min) of Options.Now and
// a nonce is accepted once. Otherwise only standard requests (x-xdr-auth-id + Authorization: key)
// are. XSOAR 6 checks Authorization: key alone. Failures answer 401.
//
// # War-room paging
//
// The investigation call takes {"pageSize": N (default 100, at most Options.MaxPageSize), "lastID": "<entry id>"}
// and answers the entries strictly after lastID, oldest first, with "totalEntries". "fromTime"
// (RFC 3339) keeps entries created at or after it. firstID is ignored.
//
// # Limits
//
// Options.RequestsPerSecond is a token bucket over every authenticated request with a burst of one
// second's worth (Options.RateBurst overrides it); Options.ExtraDataPerMinute a bucket with a burst of
// one minute's worth (Options.ExtraDataBurst overrides it) for get_incident_extra_data. An excess request is answered 429 with
// {"reply":{"err_code":429,"err_msg":"Rate limit exceeded","err_extra":"Too many requests"}} and
// counted in Stats.Violations. The buckets run on the real clock, not Options.Now.
package cortexsim

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Endpoint names for SetFaults and Stats.
const (
	EPGetIncidents    = "get_incidents"
	EPIncidentsSearch = "incidents_search"
	EPExtraData       = "extra_data"
	EPInvestigation   = "investigation"
	EPContext         = "context"
	EPDownload        = "download"
	EPRiskyUsers      = "risky_users"
	EPAll             = "*"
)

// Products.
const (
	XSIAM  = "xsiam"
	XSOAR8 = "xsoar8"
	XSOAR6 = "xsoar6"
)

// Options configures a Sim.
type Options struct {
	Product  string // "xsiam" (default), "xsoar8" or "xsoar6"
	KeyID    string // generated when empty
	Key      string // generated (128 alphanumerics) when empty
	Advanced bool   // the key is an advanced key: only advanced auth is accepted
	Seed     int64  // scenario and fault randomness

	Latency            time.Duration // added to every request
	RequestsPerSecond  float64       // tenant-wide limit; 0 = off
	RateBurst          int           // bucket size; 0 = max(1, ceil(RequestsPerSecond))
	ExtraDataPerMinute int           // get_incident_extra_data limit; 0 = off
	ExtraDataBurst     int           // its bucket size; 0 = ExtraDataPerMinute
	MaxClockSkew       time.Duration // advanced auth window; default 5 min
	Now                func() time.Time
	Drift              bool   // emit drifted types: numeric ids, "No" booleans, "date_created"
	Host               string // host used in xdr_url; default "tenant.xdr.example.paloaltonetworks.com"
	// MaxPageSize caps the war-room pageSize (default 1000; the real cap is undocumented).
	MaxPageSize int
	// Lean renders incident objects with only the fields the client reads (id, status, times,
	// counts): cheap scenarios of tens of thousands of incidents.
	Lean bool
}

// Faults are injected into the requests of one endpoint. Rates are probabilities per request,
// rolled in this order: ErrorRate (500/502/503), RateLimitRate (429, with Retry-After when
// RetryAfter > 0), ResetRate (connection reset after half the body), TruncateRate (half the body,
// then close, with the full Content-Length announced).
type Faults struct {
	ErrorRate, RateLimitRate float64
	RetryAfter               time.Duration
	ResetRate, TruncateRate  float64
	SlowBody                 time.Duration // the body is written in pieces spread over this long
	Latency                  time.Duration // before answering
	// Count limits the faults to the next Count requests of the endpoint; 0 means no limit.
	Count int
}

// Stats counts what the simulator saw.
type Stats struct {
	Requests           map[string]int // per endpoint, every routed request
	Violations         int            // 429s answered because a real limit was exceeded
	ViolationsByLimit  map[string]int // the same by limit: "tenant", "extra_data"
	Injected           map[string]int // injected faults: "error", "rate_limit", "reset", "truncate", "slow"
	AuthFailures       int
	AuthFailureReasons map[string]int // "key", "key_id", "nonce_replay", "clock_skew", "headers"
	BytesDownloaded    int64          // file bytes written by download answers
}

// Sim is the simulated tenant. It is safe for concurrent use.
type Sim struct {
	o      Options
	keyID  string
	key    string
	now    func() time.Time
	limit  *rate.Limiter
	xlimit *rate.Limiter

	mu        sync.Mutex
	incidents []*incident
	byID      map[string]*incident
	invs      map[string]*investigation
	files     map[string]*file
	nextInc   int64
	nextAlert int64
	sorted    bool
	risky     int // <0: identity module off
	faults    map[string]*faultState
	rng       *mrand.Rand
	nonces    map[string]time.Time
	stats     Stats
}

type faultState struct {
	f         Faults
	remaining int
}

// New returns a simulator with no incidents (see AddIncident and Generate).
func New(o Options) *Sim {
	if o.Product == "" {
		o.Product = XSIAM
	}
	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = 5 * time.Minute
	}
	if o.MaxPageSize <= 0 {
		o.MaxPageSize = 1000
	}
	if o.Host == "" {
		o.Host = "tenant.xdr.example.paloaltonetworks.com"
	}
	s := &Sim{
		o:         o,
		keyID:     o.KeyID,
		key:       o.Key,
		now:       o.Now,
		byID:      make(map[string]*incident),
		invs:      make(map[string]*investigation),
		files:     make(map[string]*file),
		nextInc:   1,
		nextAlert: 1000001,
		risky:     -1,
		faults:    make(map[string]*faultState),
		rng:       mrand.New(mrand.NewPCG(uint64(o.Seed), 0x5eed)), //nolint:gosec // reproducible fault rolls
		nonces:    make(map[string]time.Time),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.key == "" {
		s.key = randomAlnum(128)
	}
	if s.keyID == "" {
		var b [2]byte
		_, _ = rand.Read(b[:])
		s.keyID = strconv.Itoa((int(b[0])<<8|int(b[1]))%1000 + 1)
	}
	if o.RequestsPerSecond > 0 {
		burst := o.RateBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(o.RequestsPerSecond)))
		}
		s.limit = rate.NewLimiter(rate.Limit(o.RequestsPerSecond), burst)
	}
	if o.ExtraDataPerMinute > 0 {
		burst := o.ExtraDataBurst
		if burst <= 0 {
			burst = o.ExtraDataPerMinute
		}
		s.xlimit = rate.NewLimiter(rate.Limit(float64(o.ExtraDataPerMinute)/60), burst)
	}
	s.resetStatsLocked()
	return s
}

func randomAlnum(n int) string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, n)
	buf := make([]byte, n+32)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if b < 248 && len(out) < n {
				out = append(out, alnum[int(b)%62])
			}
		}
	}
	return string(out)
}

// KeyID returns the API key id (x-xdr-auth-id).
func (s *Sim) KeyID() string { return s.keyID }

// Key returns the API key.
func (s *Sim) Key() string { return s.key }

// Product returns the simulated product.
func (s *Sim) Product() string { return s.o.Product }

// SetFaults sets the faults of one endpoint (see the EP constants); "*" applies to every endpoint
// without faults of its own. The zero Faults removes them.
func (s *Sim) SetFaults(endpoint string, f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == (Faults{}) {
		delete(s.faults, endpoint)
		return
	}
	s.faults[endpoint] = &faultState{f: f, remaining: f.Count}
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = cloneMap(s.stats.Requests)
	st.Injected = cloneMap(s.stats.Injected)
	st.AuthFailureReasons = cloneMap(s.stats.AuthFailureReasons)
	st.ViolationsByLimit = cloneMap(s.stats.ViolationsByLimit)
	return st
}

// ResetStats zeroes the counters.
func (s *Sim) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetStatsLocked()
}

func (s *Sim) resetStatsLocked() {
	s.stats = Stats{Requests: map[string]int{}, Injected: map[string]int{}, AuthFailureReasons: map[string]int{},
		ViolationsByLimit: map[string]int{}}
}

func cloneMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// route names the endpoint of a path and the id in it.
func (s *Sim) route(method, path string) (ep, id string, public bool) {
	p := strings.TrimRight(path, "/")
	if s.o.Product == XSIAM {
		switch p {
		case "/public_api/v1/incidents/get_incidents":
			return EPGetIncidents, "", true
		case "/public_api/v1/incidents/get_incident_extra_data":
			return EPExtraData, "", true
		case "/public_api/v1/get_risky_users", "/public_api/v1/risk/get_risky_users":
			return EPRiskyUsers, "", true
		}
	}
	if s.o.Product != XSOAR6 {
		var ok bool
		if p, ok = strings.CutPrefix(p, "/xsoar"); !ok {
			return "", "", strings.HasPrefix(p, "/public_api/")
		}
	}
	switch {
	case p == "/incidents/search" && s.o.Product != XSIAM:
		return EPIncidentsSearch, "", false
	case strings.HasPrefix(p, "/investigation/"):
		rest := strings.TrimPrefix(p, "/investigation/")
		if inv, ok := strings.CutSuffix(rest, "/context"); ok && inv != "" {
			return EPContext, inv, false
		}
		if rest != "" && !strings.Contains(rest, "/") {
			return EPInvestigation, rest, false
		}
	case strings.HasPrefix(p, "/entry/download/"):
		if id := strings.TrimPrefix(p, "/entry/download/"); id != "" {
			return EPDownload, id, false
		}
	}
	return "", "", false
}

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, id, public := s.route(r.Method, r.URL.Path)
	if ep == "" {
		s.writeError(w, public, http.StatusNotFound, "Not Found", "no such route: "+r.URL.Path)
		return
	}
	wantMethod := http.MethodPost
	if ep == EPDownload {
		wantMethod = http.MethodGet
	}
	if r.Method != wantMethod && (ep != EPDownload || r.Method != http.MethodHead) {
		w.Header().Set("Allow", wantMethod)
		s.writeError(w, public, http.StatusMethodNotAllowed, "Method Not Allowed", r.Method+" "+r.URL.Path)
		return
	}
	s.mu.Lock()
	s.stats.Requests[ep]++
	s.mu.Unlock()

	if reason := s.authenticate(r.Header); reason != "" {
		s.mu.Lock()
		s.stats.AuthFailures++
		s.stats.AuthFailureReasons[reason]++
		s.mu.Unlock()
		s.writeError(w, public, http.StatusUnauthorized, "API request Unauthorized",
			"Unauthorized access. An issue occurred during authentication. This can indicate an incorrect key, id, or other invalid authentication parameters.")
		return
	}
	if limit := s.allow(ep); limit != "" {
		s.mu.Lock()
		s.stats.Violations++
		s.stats.ViolationsByLimit[limit]++
		s.mu.Unlock()
		s.writeError(w, public, http.StatusTooManyRequests, "Rate limit exceeded", "Too many requests")
		return
	}
	f := s.pickFaults(ep)
	if d := s.o.Latency + f.Latency; d > 0 {
		if !sleep(r, d) {
			return
		}
	}
	fault := s.rollFault(f)
	switch fault {
	case "error":
		status := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[s.intn(3)]
		if status == http.StatusBadGateway {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
			return
		}
		s.writeError(w, public, status, "An error occurred while processing XDR public API", "Internal server error (injected)")
		return
	case "rate_limit":
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.RetryAfter.Seconds()))))
		}
		s.writeError(w, public, http.StatusTooManyRequests, "Rate limit exceeded", "Too many requests")
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.writeError(w, public, http.StatusBadRequest, "Bad Request. Got an invalid JSON.", err.Error())
		return
	}
	var a answer
	switch ep {
	case EPGetIncidents:
		a = s.getIncidents(body)
	case EPIncidentsSearch:
		a = s.incidentsSearch(body)
	case EPExtraData:
		a = s.extraData(body)
	case EPRiskyUsers:
		a = s.riskyUsers()
	case EPInvestigation:
		a = s.investigation(id, body)
	case EPContext:
		a = s.context(id, body)
	case EPDownload:
		a = s.download(id)
	}
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.status != http.StatusOK {
		s.writeError(w, public, a.status, a.errMsg, a.errExtra)
		return
	}
	if r.Method == http.MethodHead {
		a.body = nil
	}
	s.writeBody(w, ep, a, fault, f.SlowBody)
}

// answer is what an endpoint produced: a JSON body, a stream, or an error.
type answer struct {
	status           int
	errMsg, errExtra string
	json             any
	body             io.Reader
	size             int64
	header           http.Header
}

func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (s *Sim) intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.IntN(n)
}

// allow takes the request's tokens and returns the limit it exceeds, or "".
func (s *Sim) allow(ep string) string {
	if s.limit != nil && !s.limit.Allow() {
		return "tenant"
	}
	if ep == EPExtraData && s.xlimit != nil && !s.xlimit.Allow() {
		return "extra_data"
	}
	return ""
}

func (s *Sim) pickFaults(ep string) Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := s.faults[ep]
	if fs == nil {
		fs = s.faults[EPAll]
	}
	if fs == nil {
		return Faults{}
	}
	if fs.f.Count > 0 {
		if fs.remaining <= 0 {
			return Faults{}
		}
		fs.remaining--
	}
	return fs.f
}

func (s *Sim) rollFault(f Faults) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	kind := ""
	switch {
	case f.ErrorRate > 0 && s.rng.Float64() < f.ErrorRate:
		kind = "error"
	case f.RateLimitRate > 0 && s.rng.Float64() < f.RateLimitRate:
		kind = "rate_limit"
	case f.ResetRate > 0 && s.rng.Float64() < f.ResetRate:
		kind = "reset"
	case f.TruncateRate > 0 && s.rng.Float64() < f.TruncateRate:
		kind = "truncate"
	}
	if kind != "" {
		s.stats.Injected[kind]++
	}
	if f.SlowBody > 0 {
		s.stats.Injected["slow"]++
	}
	return kind
}

// authenticate returns "" when the request is authorized, else the failure reason.
func (s *Sim) authenticate(h http.Header) string {
	auth := h.Get("Authorization")
	if s.o.Product == XSOAR6 {
		if !equal(auth, s.key) {
			return "key"
		}
		return ""
	}
	if !equal(h.Get("x-xdr-auth-id"), s.keyID) {
		return "key_id"
	}
	if !s.o.Advanced {
		if !equal(auth, s.key) {
			return "key"
		}
		return ""
	}
	nonce, ts := h.Get("x-xdr-nonce"), h.Get("x-xdr-timestamp")
	if nonce == "" || ts == "" || len(nonce) > 256 {
		return "headers"
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "headers"
	}
	sum := sha256.Sum256([]byte(s.key + nonce + ts))
	if !equal(strings.ToLower(auth), hex.EncodeToString(sum[:])) {
		return "key"
	}
	now := s.now()
	if d := now.Sub(time.UnixMilli(ms)); d > s.o.MaxClockSkew || d < -s.o.MaxClockSkew {
		return "clock_skew"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.nonces[nonce]; seen {
		return "nonce_replay"
	}
	s.nonces[nonce] = now
	if len(s.nonces) > 4096 {
		for n, t := range s.nonces {
			if now.Sub(t) > 2*s.o.MaxClockSkew {
				delete(s.nonces, n)
			}
		}
	}
	return ""
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// writeError writes a public_api {"reply": {...}} error or an XSOAR-style error body.
func (s *Sim) writeError(w http.ResponseWriter, public bool, status int, msg, extra string) {
	var body any
	if public {
		body = map[string]any{"reply": map[string]any{"err_code": status, "err_msg": msg, "err_extra": extra}}
	} else {
		body = map[string]any{"id": strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_")),
			"status": status, "title": msg, "detail": extra, "error": extra, "encrypted": false, "multires": nil}
	}
	b, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeBody writes a successful answer, applying reset, truncate and slow-body faults.
func (s *Sim) writeBody(w http.ResponseWriter, ep string, a answer, fault string, slow time.Duration) {
	body, size := a.body, a.size
	if a.json != nil {
		b, err := json.Marshal(a.json)
		if err != nil {
			s.writeError(w, false, http.StatusInternalServerError, "encode", err.Error())
			return
		}
		body, size = strings.NewReader(string(b)), int64(len(b))
		w.Header().Set("Content-Type", "application/json")
	}
	for k, v := range a.header {
		w.Header()[k] = v
	}
	if body == nil {
		body = strings.NewReader("")
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	if (fault == "reset" || fault == "truncate") && size == 0 {
		fault = "reset"
	}
	limit := size
	if fault == "reset" || fault == "truncate" {
		limit = size / 2
	}
	if fault == "reset" && limit == 0 {
		reset(w)
		return
	}
	w.WriteHeader(http.StatusOK)
	var written int64
	var err error
	if slow > 0 {
		pieces := int64(16)
		step := max(1, limit/pieces)
		for written < limit && err == nil {
			var n int64
			n, err = io.CopyN(w, body, min(step, limit-written))
			written += n
			if rc := http.NewResponseController(w); rc.Flush() != nil {
				break
			}
			time.Sleep(slow / time.Duration(pieces))
		}
	} else {
		buf := make([]byte, 256<<10)
		written, err = io.CopyBuffer(w, io.LimitReader(body, limit), buf)
	}
	if ep == EPDownload {
		s.mu.Lock()
		s.stats.BytesDownloaded += written
		s.mu.Unlock()
	}
	if err != nil {
		return
	}
	switch fault {
	case "reset":
		_ = http.NewResponseController(w).Flush()
		reset(w)
	case "truncate":
		// Returning with fewer bytes than Content-Length makes net/http close the connection.
		_ = http.NewResponseController(w).Flush()
	}
}

// reset drops the connection abruptly (RST when possible).
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func errAnswer(status int, msg, extra string) answer {
	return answer{status: status, errMsg: msg, errExtra: extra}
}

func badJSON(err error) answer {
	return errAnswer(http.StatusBadRequest, "Bad Request. Got an invalid JSON.", fmt.Sprint(err))
}
