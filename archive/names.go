package archive

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// maxNameBytes bounds a sanitised file name; with the fixed parts of the layout a key stays far
// below the 1,024-byte object name limit of GCS.
const maxNameBytes = 200

// Latest is the version alias for the newest complete archive.
const Latest = "latest"

var versionRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{8}$`)

// ValidIncidentID reports whether id can name an incident's folder: 1 to 256 letters, digits, '_',
// '-' or '.', not starting with '.'. Tenant ids are decimal; anything else (a '/' or "..", say, from
// a hostile tenant's search results or a forged task) must not shape an object key.
func ValidIncidentID(id string) bool {
	if id == "" || len(id) > 256 || id[0] == '.' {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// ValidVersion reports whether v has the shape of a version id.
func ValidVersion(v string) bool { return versionRE.MatchString(v) }

// versionClock hands out strictly increasing millisecond times, so that versions made by one process
// sort in the order they were made even within the same millisecond.
var versionClock struct {
	sync.Mutex
	last time.Time
}

// newVersion returns a version id that sorts by time and never collides: 20261204T153000.123Z-1a2b3c4d.
func newVersion(now time.Time) string {
	t := now.UTC().Truncate(time.Millisecond)
	versionClock.Lock()
	if !t.After(versionClock.last) {
		t = versionClock.last.Add(time.Millisecond)
	}
	versionClock.last = t
	versionClock.Unlock()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return t.Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

var reserved = map[string]bool{
	"CON": true, "PRN": true, "AUX": true, "NUL": true,
	"COM1": true, "COM2": true, "COM3": true, "COM4": true, "COM5": true, "COM6": true, "COM7": true, "COM8": true, "COM9": true,
	"LPT1": true, "LPT2": true, "LPT3": true, "LPT4": true, "LPT5": true, "LPT6": true, "LPT7": true, "LPT8": true, "LPT9": true,
}

// SafeName turns a tenant-supplied name into one safe object-key segment: no separators, no control
// characters, no invalid UTF-8 or U+FFFD, no "." or ".." and no leading dot, no reserved device names, at most
// maxNameBytes bytes with the extension kept where possible. The original is kept in the manifest;
// collisions are impossible because every file lives in its own entry-id folder.
func SafeName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		switch {
		case r == utf8.RuneError, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0,
			r == '/', r == '\\', r == ':', r == '*', r == '?', r == '"', r == '<', r == '>', r == '|',
			r == 0x2028, r == 0x2029, r == 0xfeff:
			b.WriteByte('_')
		default:
			b.WriteString(name[i : i+size])
		}
		i += size
	}
	s := strings.TrimRight(b.String(), " .")
	s = strings.TrimLeft(s, " ")
	if strings.HasPrefix(s, ".") {
		s = "_" + s[1:]
	}
	if s == "" {
		s = "file"
	}
	base, _, _ := strings.Cut(s, ".")
	if reserved[strings.ToUpper(base)] {
		s = "_" + s
	}
	if len(s) > maxNameBytes {
		ext := ""
		if i := strings.LastIndexByte(s, '.'); i > 0 && len(s)-i <= 16 {
			ext = s[i:]
		}
		cut := maxNameBytes - len(ext)
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + ext
	}
	return s
}
