package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Product is the kind of tenant.
type Product string

// Products.
const (
	XSIAM  Product = "xsiam"
	XSOAR8 Product = "xsoar8"
	XSOAR6 Product = "xsoar6"
)

// KeyType is the kind of API key.
type KeyType string

// Key types.
const (
	Standard KeyType = "standard"
	Advanced KeyType = "advanced"
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	BaseURL string // e.g. https://api-tenant.xdr.eu.paloaltonetworks.com, no path prefix
	KeyID   string // x-xdr-auth-id; not used on XSOAR 6
	Key     string // secret; never logged
	KeyType KeyType
	Product Product // default xsiam

	RequestsPerSecond  float64       // tenant-wide, default 10; negative disables the limit
	ExtraDataPerMinute int           // get_incident_extra_data, default 10; negative disables it
	MaxConcurrent      int           // in-flight cap, default 8
	MaxAttempts        int           // attempts per call including the first, default 6
	MaxRetryWait       time.Duration // total time budget of one call's retries, default 2m
	PageSize           int           // war-room page size, default 100, at most 1000

	RetryBaseDelay   time.Duration // first backoff step, default 250ms (tests use less)
	MaxBackoff       time.Duration // cap of one backoff step, default 30s
	RequestTimeout   time.Duration // per attempt until the response is read (downloads: until headers), default 60s
	MaxResponseBytes int64         // JSON body size limit, default 64 MiB

	Logger *slog.Logger // may be nil
}

// String describes the configuration without the key.
func (c Config) String() string {
	return fmt.Sprintf("fetch.Config{BaseURL:%q KeyID:%q Key:[redacted] KeyType:%s Product:%s}", c.BaseURL, c.KeyID, c.KeyType, c.Product)
}

// LogValue keeps the key out of structured logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", c.BaseURL), slog.String("key_id", c.KeyID),
		slog.String("key_type", string(c.KeyType)), slog.String("product", string(c.Product)))
}

// Client calls one tenant. It is safe for concurrent use; all callers share its limits.
type Client struct {
	cfg     Config
	hc      *http.Client
	log     *slog.Logger
	base    *url.URL
	public  string // prefix of public_api calls
	server  string // prefix of XSOAR server calls
	limiter *rate.Limiter
	extra   *rate.Limiter
	sem     chan struct{}
}

// searchPageSize is the get_incidents page size (the API maximum).
const searchPageSize = 100

// searchCap is the total_count ceiling of get_incidents.
const searchCap = 10000

// New validates cfg and returns a client that sends its requests through hc (nil means a new
// http.Client without a global timeout; per-attempt timeouts come from Config.RequestTimeout).
func New(cfg Config, hc *http.Client) (*Client, error) {
	if cfg.Product == "" {
		cfg.Product = XSIAM
	}
	if cfg.KeyType == "" {
		cfg.KeyType = Standard
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if cfg.RequestsPerSecond == 0 {
		cfg.RequestsPerSecond = 10
	}
	def(&cfg.ExtraDataPerMinute, 10)
	def(&cfg.MaxConcurrent, 8)
	def(&cfg.MaxAttempts, 6)
	def(&cfg.PageSize, 100)
	if cfg.MaxRetryWait == 0 {
		cfg.MaxRetryWait = 2 * time.Minute
	}
	if cfg.RetryBaseDelay == 0 {
		cfg.RetryBaseDelay = 250 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = 64 << 20
	}

	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	switch {
	case cfg.BaseURL == "":
		bad("BaseURL is required")
	case err != nil:
		bad("BaseURL is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		bad("BaseURL scheme must be http or https")
	case u.Host == "":
		bad("BaseURL has no host")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		bad("BaseURL must not carry credentials, a query or a fragment")
	}
	switch cfg.Product {
	case XSIAM, XSOAR8, XSOAR6:
	default:
		bad("Product %q is not one of xsiam, xsoar8, xsoar6", cfg.Product)
	}
	switch cfg.KeyType {
	case Standard:
	case Advanced:
		if cfg.Product == XSOAR6 {
			bad("advanced keys are not supported on xsoar6")
		}
	default:
		bad("KeyType %q is not one of standard, advanced", cfg.KeyType)
	}
	if cfg.Key == "" {
		bad("Key is required")
	}
	if cfg.KeyID == "" && cfg.Product != XSOAR6 {
		bad("KeyID is required on %s", cfg.Product)
	}
	if cfg.MaxConcurrent < 0 || cfg.MaxAttempts < 0 || cfg.MaxRetryWait < 0 || cfg.PageSize < 0 || cfg.PageSize > 1000 {
		bad("MaxConcurrent, MaxAttempts, MaxRetryWait must not be negative and PageSize must be 1..1000")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("fetch: invalid config: %w", errors.Join(problems...))
	}

	hc = withPooledTransport(hc, cfg.MaxConcurrent)
	c := &Client{cfg: cfg, hc: hc, log: cfg.Logger, base: u, sem: make(chan struct{}, cfg.MaxConcurrent)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	root := strings.TrimRight(u.String(), "/")
	switch cfg.Product {
	case XSOAR6:
		c.public, c.server = root, root
	default:
		c.public, c.server = root+"/public_api/v1", root+"/xsoar"
	}
	if cfg.RequestsPerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), 1)
	}
	if cfg.ExtraDataPerMinute > 0 {
		c.extra = rate.NewLimiter(rate.Limit(float64(cfg.ExtraDataPerMinute)/60), 1)
	}
	return c, nil
}

// withPooledTransport returns hc, or when hc is nil or has no Transport of its own, a copy of it
// whose transport (a clone of http.DefaultTransport) keeps up to maxConns idle connections to the
// tenant. The default transport keeps only 2 per host, so with MaxConcurrent requests in flight
// every request beyond the second opened a new connection (a TLS handshake on a real tenant).
func withPooledTransport(hc *http.Client, maxConns int) *http.Client {
	if hc != nil && hc.Transport != nil {
		return hc
	}
	out := &http.Client{}
	if hc != nil {
		out = &http.Client{CheckRedirect: hc.CheckRedirect, Jar: hc.Jar, Timeout: hc.Timeout}
	}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t := dt.Clone()
		t.MaxIdleConnsPerHost = max(maxConns, 2)
		t.MaxIdleConns = max(t.MaxIdleConns, maxConns)
		out.Transport = t
	}
	return out
}

// Product returns the tenant's product.
func (c *Client) Product() Product { return c.cfg.Product }

// Host returns the tenant host (with port when one was given), for the manifest.
func (c *Client) Host() string { return c.base.Host }

// redact removes the key from text that came from the tenant.
func (c *Client) redact(s string) string {
	if c.cfg.Key == "" || !strings.Contains(s, c.cfg.Key) {
		return s
	}
	return strings.ReplaceAll(s, c.cfg.Key, "[redacted]")
}

// call describes one logical request.
type call struct {
	op     string
	method string
	url    string
	body   []byte // JSON; nil sends no body
	extra  bool   // consumes the extra-data limiter too
	stream bool   // download: the timeout stops once headers arrive
}

// retry runs attempts of cl until handle succeeds, a permanent error occurs, or the attempt or
// time budget runs out. handle is called with a 2xx response; it must consume the body.
func (c *Client) retry(ctx context.Context, cl call, handle func(*http.Response) error) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := c.once(ctx, cl, handle)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			if errors.Is(err, ctxErr) {
				return ctxErr
			}
			return fmt.Errorf("%w (last error: %w)", ctxErr, stripUpstream(err))
		}
		var cbErr *callbackError
		if errors.As(err, &cbErr) || !errors.Is(err, ErrUpstream) {
			return err
		}
		if attempt >= c.cfg.MaxAttempts {
			return err
		}
		wait := c.backoff(attempt)
		var ae *APIError
		if errors.As(err, &ae) && ae.retryAfter > 0 {
			wait = ae.retryAfter + time.Duration(mrand.Int64N(int64(c.cfg.RetryBaseDelay)+1)) //nolint:gosec // jitter, not a secret
		}
		if time.Since(start)+wait > c.cfg.MaxRetryWait {
			return err
		}
		c.log.DebugContext(ctx, "fetch: retrying", slog.String("op", cl.op), slog.Int("attempt", attempt),
			slog.Duration("wait", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), stripUpstream(err))
		case <-t.C:
		}
	}
}

// stripUpstream hides ErrUpstream from an error reported with a context error, so that Retryable is
// false for cancellations.
func stripUpstream(err error) error { return errors.New(err.Error()) }

// backoff is exponential with equal jitter: half fixed, half random.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.RetryBaseDelay
	for i := 1; i < attempt && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	half := d / 2
	return half + time.Duration(mrand.Int64N(int64(half)+1)) //nolint:gosec // jitter, not a secret
}

// once performs one attempt: in-flight slot, rate tokens, fresh auth headers, send, classify.
func (c *Client) once(ctx context.Context, cl call, handle func(*http.Response) error) error {
	release, err := c.acquire(ctx, cl.extra)
	if err != nil {
		return err
	}
	defer release()
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return err
		}
	}

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	timedOut := make(chan struct{})
	timer := time.AfterFunc(c.cfg.RequestTimeout, func() { close(timedOut); cancel() })
	defer timer.Stop()
	timeout := func() bool {
		select {
		case <-timedOut:
			return true
		default:
			return false
		}
	}

	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, cl.url, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if err := c.authorize(req.Header); err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case timeout():
			return &transportError{err: fmt.Errorf("no answer within %s: %w", c.cfg.RequestTimeout, err)}
		case permanentTransport(err):
			return err
		}
		return &transportError{err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	if cl.stream {
		timer.Stop()
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return parseAPIError(cl.op, resp.StatusCode, resp.Header, b, c.redact)
	}
	err = handle(resp)
	if err != nil && ctx.Err() == nil && timeout() && !errors.Is(err, ErrUpstream) {
		return &transportError{err: fmt.Errorf("no complete answer within %s: %w", c.cfg.RequestTimeout, err)}
	}
	return err
}

// acquire takes an in-flight slot and, for extra-data calls, an extra-data token. A caller whose
// token is not due yet gives the slot back while it waits, so calls queued on the slow extra-data
// bucket never hold slots other calls need; the token is taken only with a slot in hand, right
// before the tenant-wide wait, so extra-data requests leave at the pace of their tokens.
func (c *Client) acquire(ctx context.Context, extra bool) (release func(), err error) {
	release = func() { <-c.sem }
	for {
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !extra || c.extra == nil {
			return release, nil
		}
		r := c.extra.Reserve()
		d := r.Delay()
		if d == 0 {
			return release, nil
		}
		r.Cancel()
		release()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// authorize sets the authentication headers; advanced keys get a fresh nonce and timestamp.
func (c *Client) authorize(h http.Header) error {
	if c.cfg.Product == XSOAR6 {
		h.Set("Authorization", c.cfg.Key)
		return nil
	}
	h.Set("x-xdr-auth-id", c.cfg.KeyID)
	if c.cfg.KeyType != Advanced {
		h.Set("Authorization", c.cfg.Key)
		return nil
	}
	nonce, err := Nonce()
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	h.Set("x-xdr-nonce", nonce)
	h.Set("x-xdr-timestamp", ts)
	h.Set("Authorization", AdvancedSignature(c.cfg.Key, nonce, ts))
	return nil
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// Nonce returns 64 random characters from [A-Za-z0-9] for the x-xdr-nonce header.
func Nonce() (string, error) {
	out := make([]byte, 0, 64)
	buf := make([]byte, 96)
	for len(out) < 64 {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("fetch: nonce: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < 64 { // 248 = 4*62: no modulo bias
				out = append(out, alnum[int(b)%62])
			}
		}
	}
	return string(out), nil
}

// AdvancedSignature is the Authorization value of an advanced key: lowercase hex SHA-256 of
// key + nonce + timestamp.
func AdvancedSignature(key, nonce, timestamp string) string {
	sum := sha256.Sum256([]byte(key + nonce + timestamp))
	return hex.EncodeToString(sum[:])
}

// readJSON reads a whole JSON body through the size limit. Read failures are transient.
func (c *Client) readJSON(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, &transportError{err: fmt.Errorf("read body: %w", err)}
	}
	if int64(len(b)) > c.cfg.MaxResponseBytes {
		return nil, fmt.Errorf("response larger than %d bytes", c.cfg.MaxResponseBytes)
	}
	return b, nil
}

// postJSON sends body (marshalled) and returns the response body; public_api replies are taken out
// of their {"reply": ...} envelope.
func (c *Client) postJSON(ctx context.Context, op, u string, body any, envelope, extra bool) (json.RawMessage, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	var out json.RawMessage
	err = c.retry(ctx, call{op: op, method: http.MethodPost, url: u, body: payload, extra: extra}, func(resp *http.Response) error {
		b, err := c.readJSON(resp)
		if err != nil {
			return err
		}
		if !envelope {
			out = b
			return nil
		}
		var env struct {
			Reply json.RawMessage `json:"reply"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			return fmt.Errorf("decode reply envelope: %w", err)
		}
		if len(env.Reply) == 0 {
			return fmt.Errorf("decode reply envelope: no reply")
		}
		out = env.Reply
		return nil
	})
	return out, err
}

// escapeID escapes an id for a path segment, including '@' (as %40).
func escapeID(id string) string {
	return strings.ReplaceAll(url.PathEscape(id), "@", "%40")
}
