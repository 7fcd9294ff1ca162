package fetch

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Errors returned by the client match them with errors.Is.
var (
	// ErrNotFound: the incident, investigation or file does not exist (HTTP 404 or a business 500
	// such as "Incident not found").
	ErrNotFound = errors.New("fetch: not found")
	// ErrUnauthorized: the tenant rejected the key (HTTP 401), including clock skew on advanced keys.
	ErrUnauthorized = errors.New("fetch: unauthorized")
	// ErrForbidden: the key lacks the RBAC permission (403) or the tenant the license (402).
	ErrForbidden = errors.New("fetch: forbidden")
	// ErrRateLimited: the tenant kept answering 429 until the retry budget ran out.
	ErrRateLimited = errors.New("fetch: rate limited")
	// ErrUpstream: a transient upstream failure (5xx, 429, reset, truncated body, timeout) that
	// survived every retry. Retryable reports it.
	ErrUpstream = errors.New("fetch: upstream failure")
)

// APIError is an HTTP error answer of the tenant. Code, Msg and Extra are err_code, err_msg and
// err_extra of a public_api error envelope, or the status, title and detail of an XSOAR error body.
// It is returned wrapped with the operation ("fetch: get incident 12: ...").
type APIError struct {
	Op     string // operation, e.g. "get incident 12"
	Status int    // HTTP status
	Code   int    // err_code (0 when absent)
	Msg    string // err_msg / title
	Extra  string // err_extra / detail (JSON text when it was not a string)

	retryAfter time.Duration
}

// Error describes the answer; the operation is added by the wrapping error.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d", e.Status)
	if e.Code != 0 && e.Code != e.Status {
		fmt.Fprintf(&b, " (err_code %d)", e.Code)
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	if e.Extra != "" {
		b.WriteString(": ")
		b.WriteString(e.Extra)
	}
	return b.String()
}

// Is maps the answer to the package sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.notFound()
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden || e.Status == http.StatusPaymentRequired
	case ErrRateLimited:
		return e.rateLimited()
	case ErrUpstream:
		return e.transient()
	}
	return false
}

func (e *APIError) text() string { return strings.ToLower(e.Msg + " " + e.Extra) }

func (e *APIError) notFound() bool {
	if e.Status == http.StatusNotFound {
		return true
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.Status == http.StatusTooManyRequests {
		return false
	}
	t := e.text()
	return strings.Contains(t, "not found") || strings.Contains(t, "could not find")
}

func (e *APIError) rateLimited() bool {
	return e.Status == http.StatusTooManyRequests || strings.Contains(e.text(), "rate limit exceeded")
}

// moduleDisabled reports the "No identity threat" 500 of get_risky_users.
func (e *APIError) moduleDisabled() bool {
	return e.Status == http.StatusInternalServerError && strings.Contains(e.text(), "no identity threat")
}

// business reports a 500 that carries a business answer: retrying will not change it.
func (e *APIError) business() bool {
	return e.notFound() || e.moduleDisabled()
}

// transient reports whether the request may succeed when repeated.
func (e *APIError) transient() bool {
	if e.rateLimited() {
		return true
	}
	switch e.Status {
	case http.StatusInternalServerError:
		return !e.business()
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, 599, 520, 522, 524:
		return true
	}
	return false
}

// transportError is a failure below HTTP: connection refused or reset, timeout, truncated body.
type transportError struct{ err error }

func (e *transportError) Error() string { return "transport: " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }
func (e *transportError) Is(target error) bool {
	return target == ErrUpstream
}

// permanent reports transport errors that a retry will not cure.
func permanentTransport(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn)
}

// BodyError is what the reader handed to a Download callback returns when the response body
// breaks before its end (reset, truncation, unexpected EOF). A callback that returns an error
// wrapping it (or the reader's error itself) gets the download retried from the start.
type BodyError struct{ Err error }

// Error implements error.
func (e *BodyError) Error() string { return "fetch: download body: " + e.Err.Error() }

// Unwrap returns the underlying read error.
func (e *BodyError) Unwrap() error { return e.Err }

// IsBodyError reports whether err comes from a broken download body.
func IsBodyError(err error) bool {
	var be *BodyError
	return errors.As(err, &be)
}

// Retryable reports whether err is a transient upstream failure (5xx, 429, reset, truncated body,
// timeout) that survived the client's own retries; a later attempt, e.g. a re-queued job, may
// succeed. It is false for not found, auth, validation and context errors.
func Retryable(err error) bool {
	return err != nil && errors.Is(err, ErrUpstream)
}

// maxErrorBody bounds how much of an error body is read.
const maxErrorBody = 64 << 10

// parseAPIError builds the APIError of a non-2xx answer from its body.
func parseAPIError(op string, status int, h http.Header, body []byte, redact func(string) string) *APIError {
	e := &APIError{Op: op, Status: status}
	if ra := h.Get("Retry-After"); ra != "" {
		e.retryAfter = parseRetryAfter(ra, time.Now())
	}
	var env struct {
		Reply json.RawMessage `json:"reply"`
	}
	var fields struct {
		ErrCode flexInt         `json:"err_code"`
		ErrMsg  string          `json:"err_msg"`
		ErrExt  json.RawMessage `json:"err_extra"`
		// XSOAR server style.
		Status flexInt `json:"status"`
		Title  string  `json:"title"`
		Detail string  `json:"detail"`
		Error  string  `json:"error"`
		// Newer Cortex Cloud style.
		ErrorCode flexString `json:"errorCode"`
		Message   string     `json:"message"`
	}
	trimmed := strings.TrimSpace(string(body))
	parsed := false
	if json.Unmarshal(body, &env) == nil && len(env.Reply) > 0 && env.Reply[0] == '{' {
		parsed = json.Unmarshal(env.Reply, &fields) == nil
	} else if strings.HasPrefix(trimmed, "{") {
		parsed = json.Unmarshal(body, &fields) == nil
	}
	switch {
	case parsed && (fields.ErrCode != 0 || fields.ErrMsg != ""):
		e.Code, e.Msg, e.Extra = int(fields.ErrCode), fields.ErrMsg, extraText(fields.ErrExt)
	case parsed && (fields.Title != "" || fields.Detail != "" || fields.Error != ""):
		e.Code, e.Msg = int(fields.Status), fields.Title
		e.Extra = fields.Detail
		if e.Extra == "" || (fields.Error != "" && !strings.Contains(e.Extra, fields.Error)) {
			e.Extra = strings.TrimSpace(strings.TrimPrefix(e.Extra+"; "+fields.Error, "; "))
		}
	case parsed && fields.Message != "":
		e.Msg = fields.Message
		e.Extra = string(fields.ErrorCode)
	default:
		trimmed = redact(trimmed) // before the cut, which could split the key and keep its first bytes
		if len(trimmed) > 512 {
			trimmed = trimmed[:512] + "..."
		}
		e.Msg = trimmed
	}
	e.Msg, e.Extra = redact(e.Msg), redact(e.Extra)
	return e
}

func extraText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// parseRetryAfter accepts delay-seconds (fractions tolerated) or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs > 24*3600 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
