package jobs

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// certServer answers the Google certificate URL with a JWKS of one RSA key, like
// https://www.googleapis.com/oauth2/v3/certs.
type certServer struct {
	kid string
	pub *rsa.PublicKey
}

func (c certServer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.String() != "https://www.googleapis.com/oauth2/v3/certs" {
		return &http.Response{StatusCode: http.StatusNotFound, Body: io.NopCloser(bytes.NewReader(nil)), Request: r}, nil
	}
	b64 := base64.RawURLEncoding.EncodeToString
	body, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": c.kid,
		"n": b64(c.pub.N.Bytes()), "e": b64(big.NewInt(int64(c.pub.E)).Bytes()),
	}}})
	return &http.Response{
		StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"public, max-age=3600"}},
		Body: io.NopCloser(bytes.NewReader(body)), Request: r,
	}, nil
}

// signToken returns an RS256 JWT over claims.
func signToken(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestTaskVerifier(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewTaskVerifier(testTarget, testSA, WithCertsClient(&http.Client{Transport: certServer{kid: "k1", pub: &key.PublicKey}}))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": "https://accounts.google.com", "aud": testTarget, "sub": "1234567890",
			"email": testSA, "email_verified": true,
			"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tests := []struct {
		name   string
		header string
		ok     bool
	}{
		{"valid", "Bearer " + signToken(t, key, "k1", claims(nil)), true},
		{"valid, issuer without scheme", "Bearer " + signToken(t, key, "k1", claims(func(c map[string]any) { c["iss"] = "accounts.google.com" })), true},
		{"wrong audience", "Bearer " + signToken(t, key, "k1", claims(func(c map[string]any) { c["aud"] = "https://other.example" })), false},
		{"wrong email", "Bearer " + signToken(t, key, "k1", claims(func(c map[string]any) { c["email"] = "evil@p1.iam.gserviceaccount.com" })), false},
		{"email not verified", "Bearer " + signToken(t, key, "k1", claims(func(c map[string]any) { c["email_verified"] = false })), false},
		{"expired", "Bearer " + signToken(t, key, "k1", claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), false},
		{"wrong issuer", "Bearer " + signToken(t, key, "k1", claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), false},
		{"bad signature", "Bearer " + signToken(t, other, "k1", claims(nil)), false},
		{"unknown key id", "Bearer " + signToken(t, key, "k2", claims(nil)), false},
		{"no token", "", false},
		{"not bearer", "Basic dXNlcjpwYXNz", false},
		{"garbage", "Bearer not.a.jwt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, testTarget, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			err := v.Verify(t.Context(), r)
			t.Logf("Verify: %v", err)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Verify error %v does not wrap ErrUnauthenticated", err)
			}
		})
	}
	if _, err := NewTaskVerifier("", testSA); err == nil {
		t.Error("NewTaskVerifier without audience: want error")
	}
}
