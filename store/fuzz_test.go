package store

// Fuzz targets for key validation (issue 9, hostile input): object keys are built from tenant ids and
// names, so the rules are what keeps every object inside the store's prefix (GCS) or root (local).

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

var keySeeds = []string{
	"incidents/1/v/incident.json", "", "/", "a//b", "a/", "/a", ".", "..", "a/../b", "a/./b", "../../etc/passwd", "a\\b", "a\x00b",
	"a\nb", "\xff", "\ufffd", "CON", "incidents/1/v/files/e/..hidden", strings.Repeat("a/", 600), strings.Repeat("x", 1025), "a/.../b", "\u202e",
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range keySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			return
		}
		root := filepath.FromSlash("/srv/archive/objects")
		p := filepath.Join(root, filepath.FromSlash(key))
		if !strings.HasPrefix(p, root+string(filepath.Separator)) || filepath.Clean(p) != p || filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator))) != key {
			t.Fatalf("valid key %q leaves or reshapes the root: %q", key, p)
		}
		if len(key) > MaxKeyLen || !utf8.ValidString(key) || strings.ContainsAny(key, "\\\x00") {
			t.Fatalf("ValidateKey accepted %q", key)
		}
	})
}

func FuzzValidatePrefix(f *testing.F) {
	for _, s := range keySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		if validatePrefix(prefix) != nil || prefix == "" {
			return
		}
		// Every complete segment obeys the key rules; only the last, partial one may be "." or "..".
		segs := strings.Split(prefix, "/")
		for _, seg := range segs[:len(segs)-1] {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("validatePrefix accepted %q (segment %q)", prefix, seg)
			}
		}
		if strings.ContainsAny(prefix, "\\\x00") || !utf8.ValidString(prefix) {
			t.Fatalf("validatePrefix accepted %q", prefix)
		}
	})
}

// FuzzLocalCreate writes under fuzzed keys in a real local store: whatever is accepted lands inside
// objects/ and reads back; nothing is ever written outside the store's directory.
func FuzzLocalCreate(f *testing.F) {
	for _, s := range keySeeds {
		f.Add(s)
	}
	parent := f.TempDir()
	dir := filepath.Join(parent, "store")
	s, err := NewLocal(dir, Options{Logger: testLogger(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		_, err := s.Create(t.Context(), key, strings.NewReader("x"), WriteOptions{})
		if err != nil {
			return
		}
		rc, err := s.Open(t.Context(), key)
		if err != nil {
			t.Fatalf("created %q but cannot open it: %v", key, err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(rc)
		_ = rc.Close()
		if b.String() != "x" {
			t.Fatalf("%q reads back %q", key, b.String())
		}
		entries, err := os.ReadDir(parent)
		if err != nil || len(entries) != 1 || entries[0].Name() != "store" {
			t.Fatalf("something was written next to the store: %v %v", entries, err)
		}
	})
}
