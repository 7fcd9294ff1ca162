package handlers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Role is what a caller may do. admin implies every other role.
type Role string

// Roles, as named in ARCHIVER_TOKENS.
const (
	RoleTrigger Role = "trigger"
	RoleRead    Role = "read"
	RoleAdmin   Role = "admin"
	// roleAny admits every authenticated caller.
	roleAny Role = ""
)

// Token is one bearer token and the role it grants.
type Token struct {
	Role  Role
	Value string
}

// webhookTolerance is how far a webhook-timestamp may be from now, either way.
const webhookTolerance = 5 * time.Minute

// principal is the authenticated caller of a request.
type principal struct {
	Subject   string
	Roles     []Role
	WebhookID string
}

func (p principal) has(role Role) bool {
	return role == roleAny || slices.Contains(p.Roles, role) || slices.Contains(p.Roles, RoleAdmin)
}

type principalKey struct{}

func principalFrom(ctx context.Context) (principal, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p, ok
}

// authFailure is an authentication failure with a reason for metrics; clients only see 401.
type authFailure struct{ reason, detail string }

func (e *authFailure) Error() string { return e.reason + ": " + e.detail }

// authenticator checks bearer tokens in constant time and Standard Webhooks signatures
// (https://www.standardwebhooks.com): HMAC-SHA256 over "id.timestamp.body", several "v1,"
// signatures per header, timestamps within ±5 minutes, a webhook-id seen again inside the window
// rejected as a replay. Any of several secrets may sign, so secrets can be rotated.
type authenticator struct {
	tokens  []Token
	secrets [][]byte
	now     func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // webhook-id -> when it may be forgotten
}

func newAuthenticator(tokens []Token, secrets [][]byte, now func() time.Time) *authenticator {
	return &authenticator{tokens: tokens, secrets: secrets, now: now, seen: map[string]time.Time{}}
}

// ParseWebhookSecret decodes a "whsec_<base64>" secret into its HMAC key.
func ParseWebhookSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New("webhook secret must start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 16 {
		return nil, errors.New("webhook secret must be whsec_ followed by at least 16 bytes of base64")
	}
	return key, nil
}

// authenticate returns the caller, or nil when the request carries no credentials at all.
func (a *authenticator) authenticate(r *http.Request) (*principal, error) {
	if r.Header.Get("webhook-signature") != "" || r.Header.Get("webhook-id") != "" {
		return a.webhook(r)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, nil
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, &authFailure{"malformed", "Authorization must be Bearer <token>"}
	}
	// Compare against every token so timing does not reveal which one (or whether any) matched.
	var match *Token
	for i := range a.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(a.tokens[i].Value)) == 1 {
			match = &a.tokens[i]
		}
	}
	if match == nil {
		return nil, &authFailure{"bad_token", "unknown bearer token"}
	}
	return &principal{Subject: "token:" + string(match.Role), Roles: []Role{match.Role}}, nil
}

func (a *authenticator) webhook(r *http.Request) (*principal, error) {
	id, ts, sigs := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" || len(id) > 256 {
		return nil, &authFailure{"missing_header", "webhook-id, webhook-timestamp and webhook-signature are all required"}
	}
	if len(a.secrets) == 0 {
		return nil, &authFailure{"bad_signature", "webhook signatures are not enabled"}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, &authFailure{"malformed", "webhook-timestamp must be unix seconds"}
	}
	now := a.now()
	if d := now.Sub(time.Unix(sec, 0)); d > webhookTolerance || d < -webhookTolerance {
		return nil, &authFailure{"stale_timestamp", "webhook-timestamp is outside the allowed window"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if !a.validSignature(id, ts, body, sigs) {
		return nil, &authFailure{"bad_signature", "no webhook signature matches"}
	}
	if !a.remember(id, now) {
		return nil, &authFailure{"replay", "webhook-id was already used"}
	}
	return &principal{Subject: "webhook", Roles: []Role{RoleTrigger, RoleRead}, WebhookID: id}, nil
}

func (a *authenticator) validSignature(id, ts string, body []byte, header string) bool {
	ok := false
	for _, key := range a.secrets {
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%s.", id, ts)
		mac.Write(body)
		want := mac.Sum(nil)
		for sig := range strings.FieldsSeq(header) {
			v, b64, found := strings.Cut(sig, ",")
			if !found || v != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				ok = true
			}
		}
	}
	return ok
}

// remember records a webhook-id and reports false if it was seen inside the replay window.
func (a *authenticator) remember(id string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if exp, ok := a.seen[id]; ok && now.Before(exp) {
		return false
	}
	if len(a.seen) >= 1024 {
		for k, exp := range a.seen {
			if !now.Before(exp) {
				delete(a.seen, k)
			}
		}
	}
	a.seen[id] = now.Add(2 * webhookTolerance)
	return true
}

// authenticate is the middleware that identifies the caller; it rejects bad credentials with 401.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.auth.authenticate(r)
		if err != nil {
			var af *authFailure
			if !errors.As(err, &af) {
				writeError(r.Context(), s.logger, w, err)
				return
			}
			s.metrics.authFailures.WithLabelValues(af.reason).Inc()
			s.logger.WarnContext(r.Context(), "authentication failed", "reason", af.reason, "path", r.URL.Path)
			writeProblem(w, unauthorized(af.detail))
			return
		}
		if p != nil {
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, *p))
		}
		next.ServeHTTP(w, r)
	})
}

// require admits callers holding role; 401 without credentials, 403 with the wrong role.
func (s *server) require(role Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := principalFrom(r.Context())
			switch {
			case !ok:
				s.metrics.authFailures.WithLabelValues("missing").Inc()
				writeProblem(w, unauthorized("credentials are required"))
			case !p.has(role):
				s.metrics.authFailures.WithLabelValues("forbidden").Inc()
				writeProblem(w, problem(http.StatusForbidden, "this route needs the "+string(role)+" role"))
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

func unauthorized(detail string) *Problem {
	p := problem(http.StatusUnauthorized, detail)
	p.Header = http.Header{"WWW-Authenticate": {`Bearer realm="case-archiver"`}}
	return p
}
