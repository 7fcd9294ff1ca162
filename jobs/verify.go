package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"
)

// ErrUnauthenticated reports a task request without a valid OIDC token from the expected service
// account; the task route answers 401 (Cloud Tasks retries, so a misconfiguration shows up in the
// queue's metrics rather than losing tasks).
var ErrUnauthenticated = errors.New("jobs: task request not authenticated")

// TaskVerifier checks the Google-signed OIDC token Cloud Tasks attaches to task requests.
type TaskVerifier struct {
	v        *idtoken.Validator
	audience string
	email    string
}

// VerifierOption configures a TaskVerifier.
type VerifierOption func(*verifierOptions)

type verifierOptions struct {
	client *http.Client
}

// WithCertsClient sets the HTTP client used to fetch Google's signing certificates
// (https://www.googleapis.com/oauth2/v3/certs); tests serve their own. Default http.DefaultClient.
func WithCertsClient(c *http.Client) VerifierOption {
	return func(o *verifierOptions) { o.client = c }
}

// NewTaskVerifier returns a verifier that accepts ID tokens for audience, issued by Google to
// serviceAccountEmail (the CLOUD_TASKS_SERVICE_ACCOUNT) with a verified email.
func NewTaskVerifier(audience, serviceAccountEmail string, opts ...VerifierOption) (*TaskVerifier, error) {
	if audience == "" || serviceAccountEmail == "" {
		return nil, errors.New("jobs: task verifier: audience and service account email are required")
	}
	o := verifierOptions{client: http.DefaultClient}
	for _, f := range opts {
		f(&o)
	}
	// NewValidator only builds the certificate client; nothing is fetched yet.
	v, err := idtoken.NewValidator(context.Background(), option.WithHTTPClient(o.client))
	if err != nil {
		return nil, fmt.Errorf("jobs: task verifier: %w", err)
	}
	return &TaskVerifier{v: v, audience: audience, email: strings.ToLower(serviceAccountEmail)}, nil
}

// Verify checks r's "Authorization: Bearer <token>": signature by a current Google key, expiry,
// issuer, audience, and email (the configured service account, verified). Errors wrap
// ErrUnauthenticated and say which check failed (no token material).
func (v *TaskVerifier) Verify(ctx context.Context, r *http.Request) error {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	p, err := v.v.Validate(ctx, strings.TrimSpace(token), v.audience)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if p.Issuer != "https://accounts.google.com" && p.Issuer != "accounts.google.com" {
		return fmt.Errorf("%w: issuer %q", ErrUnauthenticated, p.Issuer)
	}
	email, _ := p.Claims["email"].(string)
	if !strings.EqualFold(email, v.email) {
		return fmt.Errorf("%w: token email %q is not the task service account", ErrUnauthenticated, email)
	}
	if verified, _ := p.Claims["email_verified"].(bool); !verified {
		return fmt.Errorf("%w: email not verified", ErrUnauthenticated)
	}
	return nil
}
