package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, u := range []string{"file://" + dir + "/a", dir + "/b", "file://localhost" + dir + "/c"} {
		s, err := New(t.Context(), u, Options{})
		if err != nil {
			t.Fatalf("New(%q): %v", u, err)
		}
		if !strings.HasPrefix(s.String(), "file://"+dir+"/") {
			t.Errorf("New(%q).String() = %q", u, s.String())
		}
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("Ping: %v", err)
		}
	}
	for _, u := range []string{"", "gs://", "gs://b//x", "s3://bucket", "file://host/x", "file:relative", "gs://b/../x"} {
		if _, err := New(t.Context(), u, Options{}); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}

func TestLocalLayout(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := NewLocal(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "incidents/1/v1/manifest.json", []byte(`{}`), WriteOptions{ContentType: "application/json"})
	_, err = s.Create(t.Context(), "incidents/1/v1/broken", io.MultiReader(strings.NewReader("x"), errReader{errors.New("boom")}), WriteOptions{})
	if err == nil {
		t.Fatal("Create with failing reader succeeded")
	}
	// The content is a plain file; the sidecar lives in a separate tree.
	if b, err := os.ReadFile(filepath.Join(root, "objects/incidents/1/v1/manifest.json")); err != nil || string(b) != "{}" {
		t.Errorf("object file: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(root, "meta/incidents/1/v1/manifest.json")); err != nil {
		t.Errorf("sidecar: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "tmp")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestLocalMissingSidecar(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := NewLocal(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := payload(5, 1000)
	w := mustCreate(t, s, "k", data, WriteOptions{ContentType: "text/plain"})
	// Simulate a crash between linking the object and writing its sidecar.
	if err := os.Remove(filepath.Join(root, "meta/k")); err != nil {
		t.Fatal(err)
	}
	obj, err := s.Stat(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != w.Size || obj.CRC32C != w.CRC32C || obj.SHA256 != w.SHA256 || obj.ContentType != DefaultContentType {
		t.Errorf("Stat = %+v, want checksums of %+v and the default content type", obj, w)
	}
	if got := readAll(t, s, "k"); !bytes.Equal(got, data) {
		t.Error("content differs")
	}
	if _, err := s.Create(t.Context(), "k", bytes.NewReader(data), WriteOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("Create over object without sidecar: %v, want ErrExists", err)
	}
}

func TestLocalDetectsBitrot(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := NewLocal(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "k", []byte("archived content"), WriteOptions{})
	if err := os.WriteFile(filepath.Join(root, "objects/k"), []byte("archived CONTENT"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrIntegrity) {
		t.Errorf("reading a modified object: %v, want ErrIntegrity", err)
	}
}

func TestLocalRemovesStaleTemp(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if _, err := NewLocal(root, Options{}); err != nil {
		t.Fatal(err)
	}
	stale, fresh := filepath.Join(root, "tmp/obj-stale"), filepath.Join(root, "tmp/obj-fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLocal(root, Options{Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	valid := []string{"a", "a/b/c.json", "incidents/123/2026-01-01T00:00:00Z/manifest.json", "ü", "a/.b", "a..b", strings.Repeat("x", MaxKeyLen)}
	for _, k := range valid {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	invalid := []string{"", "/a", "a/", "a//b", ".", "..", "a/..", "./a", "a\\b", "a\x00", "a\tb", "\u0085", "\xc3", strings.Repeat("x", MaxKeyLen+1)}
	for _, k := range invalid {
		if err := ValidateKey(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}
