package store

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidateKey reports whether key is acceptable on both backends, wrapping
// ErrInvalidKey if not. A key is non-empty, at most MaxKeyLen bytes, valid
// UTF-8, '/'-separated, with no leading '/', no empty, "." or ".."
// segments, no backslash and no control characters (which includes NUL).
// The rules make a key a clean relative path, so no key escapes the local
// root, and they keep keys portable to GCS. The store prefix counts
// towards MaxKeyLen; Store methods check that as well.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if err := checkChars(key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if err := checkSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

// validatePrefix checks a List prefix (or a store prefix): it may be empty,
// may end with '/', and its last segment may be partial, but every complete
// segment obeys the key rules.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := checkChars(prefix); err != nil {
		return err
	}
	segs := strings.Split(prefix, "/")
	for i, seg := range segs {
		last := i == len(segs)-1
		if last && seg == "" {
			break // trailing '/'
		}
		if last && (seg == "." || seg == "..") {
			continue // a partial segment such as ".hidden" may start like this
		}
		if err := checkSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

func checkChars(s string) error {
	if len(s) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidKey, len(s), MaxKeyLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidKey)
	}
	if s[0] == '/' {
		return fmt.Errorf("%w: leading '/'", ErrInvalidKey)
	}
	for _, r := range s {
		if r == '\\' {
			return fmt.Errorf("%w: backslash", ErrInvalidKey)
		}
		if unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("%w: control character %U", ErrInvalidKey, r)
		}
	}
	return nil
}

func checkSegment(seg string) error {
	switch seg {
	case "":
		return fmt.Errorf("%w: empty path segment", ErrInvalidKey)
	case ".", "..":
		return fmt.Errorf("%w: %q segment", ErrInvalidKey, seg)
	}
	return nil
}
