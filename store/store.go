package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"iter"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"cloud.google.com/go/storage"
)

// Sentinel errors. Every error returned by a Store method wraps at most one of
// them (test with errors.Is) together with the underlying cause.
var (
	// ErrExists: Create found an object under the key (GCS 412, local EEXIST).
	ErrExists = errors.New("object already exists")
	// ErrNotFound: no object under the key, or the bucket/directory is missing.
	ErrNotFound = errors.New("not found")
	// ErrPermission: the credentials may not perform the operation (401/403, EACCES).
	ErrPermission = errors.New("permission denied")
	// ErrRetention: a retention policy or object hold forbids the operation (GCS 403).
	ErrRetention = errors.New("blocked by retention policy or hold")
	// ErrTransient: 408/429/5xx or a network error that outlived the client's
	// own retries. Retrying the whole operation later may succeed.
	ErrTransient = errors.New("transient storage error")
	// ErrInvalidKey: the key or list prefix breaks the key rules (see ValidateKey).
	ErrInvalidKey = errors.New("invalid key")
	// ErrInvalidMetadata: WriteOptions.Metadata uses a reserved key or is empty-keyed.
	ErrInvalidMetadata = errors.New("invalid metadata")
	// ErrIntegrity: checksums disagree. Either the server rejected an upload
	// whose bytes did not match the declared checksum (nothing stored), or the
	// stored object's CRC32C/size differ from what Create read from its source
	// (an object exists and is wrong; the store cannot delete it), or a local
	// object no longer matches its recorded CRC32C on read.
	ErrIntegrity = errors.New("checksum mismatch")
)

// Metadata keys the store writes itself. Callers may not use them.
const (
	// MetaSHA256 holds the lowercase hex SHA-256 of the content where known
	// (always on the local backend; on GCS for objects smaller than ChunkSize,
	// whose size and hash are known before the upload starts).
	MetaSHA256 = "sha256"
	// metaWriteID is a random id per Create call. It lets Create recognise its
	// own object after a retried upload met 412 (see gcs.go).
	metaWriteID = "archiver-write-id"
)

const (
	// MaxKeyLen is the GCS object name limit, applied to prefix+key on both backends.
	MaxKeyLen = 1024
	// DefaultChunkSize is the GCS writer chunk size when Options.ChunkSize is 0.
	DefaultChunkSize = 8 << 20
	chunkAlign       = 256 << 10
	// DefaultListPageSize is the GCS list page size (and local ReadDir batch).
	DefaultListPageSize = 1000
	// DefaultMaxAttempts bounds the client's retries for non-upload calls.
	DefaultMaxAttempts = 6
	// DefaultContentType is stored when WriteOptions.ContentType is empty
	// (on both backends, so GCS does not sniff the content).
	DefaultContentType = "application/octet-stream"
)

// Options configure a Store. The zero value is usable.
//
// Memory: a GCS Create holds one buffer of ChunkSize bytes inside the client
// (its retry buffer) plus one pooled buffer of ChunkSize bytes of our own,
// which reads the first chunk to decide between the one-shot and the
// streaming path and is then reused as the copy buffer. So the bound is
//
//	GCS:   concurrent Creates × 2 × ChunkSize   (default 16 MiB per writer)
//	local: concurrent Creates × 256 KiB         (copy buffer; data goes to the page cache)
//
// Objects smaller than ChunkSize make the client allocate only
// size rounded up to 256 KiB instead of ChunkSize. Reads (Open) stream and
// hold no whole object in memory on either backend. These are live bytes;
// with GOGC=100 the heap in use may reach about twice that before a
// collection (measured: a 1 GiB GCS Create peaks at about 26 MiB of heap
// growth with the default 8 MiB chunk, a local one at under 1 MiB; see
// bench_test.go), so size GOMEMLIMIT accordingly.
type Options struct {
	// ChunkSize is the GCS writer chunk size, rounded up to a multiple of
	// 256 KiB. 0 means DefaultChunkSize (8 MiB). Each chunk is one HTTP
	// request and the unit that is retried on a transient error.
	ChunkSize int
	// ChunkRetryDeadline bounds the retries of one upload chunk (GCS).
	// 0 means the client default (32 s).
	ChunkRetryDeadline time.Duration
	// MaxAttempts bounds attempts of non-upload GCS calls (stat, read, list).
	// 0 means DefaultMaxAttempts; uploads are bounded by ChunkRetryDeadline.
	MaxAttempts int
	// RetryInitialBackoff and RetryMaxBackoff shape the exponential backoff
	// (multiplier 2) of all GCS retries. 0 means 1 s and 30 s.
	RetryInitialBackoff time.Duration
	RetryMaxBackoff     time.Duration
	// ListPageSize is the GCS list page size and the local ReadDir batch.
	// 0 means DefaultListPageSize.
	ListPageSize int
	// Logger receives operational messages (recovered retries, stale temp
	// files). nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	o.ChunkSize = roundUp(o.ChunkSize, chunkAlign)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.RetryInitialBackoff <= 0 {
		o.RetryInitialBackoff = time.Second
	}
	if o.RetryMaxBackoff <= 0 {
		o.RetryMaxBackoff = 30 * time.Second
	}
	if o.ListPageSize <= 0 {
		o.ListPageSize = DefaultListPageSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// WriteOptions are the attributes of a new object.
type WriteOptions struct {
	// ContentType; empty means DefaultContentType.
	ContentType string
	// Metadata is custom key/value metadata. Keys MetaSHA256 and
	// "archiver-write-id" are reserved.
	Metadata map[string]string
	// CustomTime is stored when non-zero (the case's close time; GCS lifecycle
	// rules can act on it).
	CustomTime time.Time
}

// Written describes an object that Create stored. Size, SHA256 and CRC32C are
// computed by Create from the bytes it read, independently of the backend.
type Written struct {
	Key    string
	Size   int64
	SHA256 string // lowercase hex
	CRC32C uint32 // Castagnoli
}

// Object is the result of Stat and List.
type Object struct {
	Key    string // relative to the store prefix; for IsPrefix entries it ends with the delimiter
	Size   int64
	CRC32C uint32
	// MD5 is the server-computed MD5 (GCS only; nil for composite objects and locally).
	MD5 []byte
	// SHA256 is the hex SHA-256 recorded at Create, "" where the backend has
	// none (GCS objects of ChunkSize bytes or more).
	SHA256      string
	ContentType string
	// Metadata is the caller's metadata from WriteOptions (reserved keys removed).
	Metadata   map[string]string
	Created    time.Time
	CustomTime time.Time
	// IsPrefix marks a "subdirectory" entry of a delimited List; only Key is set.
	IsPrefix bool
}

// backend is implemented by gcsBackend and localBackend. Names are full
// object names (store prefix included) that passed validation.
type backend interface {
	create(ctx context.Context, name string, r io.Reader, o WriteOptions) (Written, error)
	open(ctx context.Context, name string) (io.ReadCloser, error)
	stat(ctx context.Context, name string) (Object, error)
	list(ctx context.Context, prefix, delimiter string) iter.Seq2[Object, error]
	ping(ctx context.Context) error
	close() error
}

// Store is an archive store: create-only, checksummed objects under a key
// prefix in a GCS bucket or a local directory. It is safe for concurrent use.
type Store struct {
	b      backend
	prefix string // "" or ends with "/"
	url    string
}

// New opens the store named by archiveURL:
//
//	gs://bucket[/prefix]  GCS via storage.NewClient (Application Default
//	                      Credentials; honours STORAGE_EMULATOR_HOST)
//	file:///abs/dir       local directory (created if missing)
//	dir                   local directory, relative to the working directory
//
// The Store owns the GCS client it creates; Close closes it.
func New(ctx context.Context, archiveURL string, o Options) (*Store, error) {
	switch {
	case strings.HasPrefix(archiveURL, "gs://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(archiveURL, "gs://"), "/")
		if bucket == "" {
			return nil, fmt.Errorf("store: %q: missing bucket", archiveURL)
		}
		if err := validatePrefix(prefix); err != nil {
			return nil, fmt.Errorf("store: %q: %w", archiveURL, err)
		}
		c, err := storage.NewClient(ctx)
		if err != nil {
			return nil, fmt.Errorf("store: %q: %w", archiveURL, err)
		}
		s := NewGCS(c, bucket, prefix, o)
		s.b.(*gcsBackend).ownClient = true
		return s, nil
	case strings.HasPrefix(archiveURL, "file:"):
		u, err := url.Parse(archiveURL)
		if err != nil {
			return nil, fmt.Errorf("store: %q: %w", archiveURL, err)
		}
		if (u.Host != "" && u.Host != "localhost") || !filepath.IsAbs(u.Path) || u.RawQuery != "" {
			return nil, fmt.Errorf("store: %q: want file:///absolute/dir", archiveURL)
		}
		return NewLocal(u.Path, o)
	case strings.Contains(archiveURL, "://") || archiveURL == "":
		return nil, fmt.Errorf("store: %q: want gs://bucket/prefix, file:///dir or a directory", archiveURL)
	default:
		return NewLocal(archiveURL, o)
	}
}

// NewGCS returns a Store on bucket under prefix ("" or "a/b", no leading or
// trailing '/') using c. The caller keeps ownership of c: Close does not close it.
// An invalid prefix makes every operation fail with ErrInvalidKey.
func NewGCS(c *storage.Client, bucket, prefix string, o Options) *Store {
	o = o.withDefaults()
	prefix = strings.Trim(prefix, "/")
	u := "gs://" + bucket
	if prefix != "" {
		u += "/" + prefix
		prefix += "/"
	}
	return &Store{b: newGCSBackend(c, bucket, o), prefix: prefix, url: u}
}

// Create stores the content of r under key, create-only. Size, SHA-256 and
// CRC32C are computed while streaming. If r returns an error, ctx ends, or
// the key already exists (ErrExists), no object is created by this call and
// the error is returned wrapped. A nil error means the object is durable and
// its stored size and CRC32C equal the returned ones.
func (s *Store) Create(ctx context.Context, key string, r io.Reader, o WriteOptions) (Written, error) {
	if err := s.checkKey(key); err != nil {
		return Written{}, fmt.Errorf("store: create %q: %w", key, err)
	}
	for k := range o.Metadata {
		if k == "" || k == MetaSHA256 || k == metaWriteID {
			return Written{}, fmt.Errorf("store: create %q: metadata key %q: %w", key, k, ErrInvalidMetadata)
		}
	}
	if o.ContentType == "" {
		o.ContentType = DefaultContentType
	}
	w, err := s.b.create(ctx, s.prefix+key, r, o)
	if err != nil {
		return Written{}, fmt.Errorf("store: create %q: %w", key, err)
	}
	w.Key = key
	return w, nil
}

// Open returns a streaming reader of the object under key (ErrNotFound if
// absent). A read of the whole object is checked against the CRC32C: on
// GCS by the client (from the checksum the server sends), locally against
// the CRC32C recorded at Create; a mismatch fails the read at EOF.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.checkKey(key); err != nil {
		return nil, fmt.Errorf("store: open %q: %w", key, err)
	}
	rc, err := s.b.open(ctx, s.prefix+key)
	if err != nil {
		return nil, fmt.Errorf("store: open %q: %w", key, err)
	}
	return rc, nil
}

// Stat returns the attributes of the object under key (ErrNotFound if absent).
func (s *Store) Stat(ctx context.Context, key string) (Object, error) {
	if err := s.checkKey(key); err != nil {
		return Object{}, fmt.Errorf("store: stat %q: %w", key, err)
	}
	obj, err := s.b.stat(ctx, s.prefix+key)
	if err != nil {
		return Object{}, fmt.Errorf("store: stat %q: %w", key, err)
	}
	obj.Key = key
	return obj, nil
}

// List yields the objects whose keys start with prefix, in lexical (byte)
// order, fetching pages as it goes. With delimiter "/" keys containing a '/'
// after the prefix are folded into one IsPrefix entry per "subdirectory",
// as GCS does. The local backend supports only "" and "/". A yielded error
// ends the sequence.
func (s *Store) List(ctx context.Context, prefix, delimiter string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		if err := validatePrefix(prefix); err != nil {
			yield(Object{}, fmt.Errorf("store: list %q: %w", prefix, err))
			return
		}
		for obj, err := range s.b.list(ctx, s.prefix+prefix, delimiter) {
			if err != nil {
				yield(Object{}, fmt.Errorf("store: list %q: %w", prefix, err))
				return
			}
			obj.Key = strings.TrimPrefix(obj.Key, s.prefix)
			if !yield(obj, nil) {
				return
			}
		}
	}
}

// Ping checks that the bucket (listing under the prefix) or directory is reachable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.b.ping(ctx); err != nil {
		return fmt.Errorf("store: ping %s: %w", s.url, err)
	}
	return nil
}

// String returns the store URL, e.g. "gs://bucket/prefix" or "file:///abs/dir".
func (s *Store) String() string { return s.url }

// Close releases what the Store owns (the GCS client if New created it).
func (s *Store) Close() error { return s.b.close() }

func (s *Store) checkKey(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if len(s.prefix)+len(key) > MaxKeyLen {
		return fmt.Errorf("%w: prefix+key is %d bytes, more than %d", ErrInvalidKey, len(s.prefix)+len(key), MaxKeyLen)
	}
	return nil
}

// hasher computes size, SHA-256 and CRC32C of everything written to it.
type hasher struct {
	sha  hash.Hash
	crc  uint32
	size int64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newHasher() *hasher { return &hasher{sha: sha256.New()} }

func (h *hasher) Write(p []byte) (int, error) {
	h.sha.Write(p)
	h.crc = crc32.Update(h.crc, castagnoli, p)
	h.size += int64(len(p))
	return len(p), nil
}

// add is Write for callers that have nothing to do with its nil error.
func (h *hasher) add(p []byte) { _, _ = h.Write(p) }

func (h *hasher) written() Written {
	return Written{Size: h.size, SHA256: hex.EncodeToString(h.sha.Sum(nil)), CRC32C: h.crc}
}

// readFull reads into buf until it is full, r is exhausted (eof true) or an
// error occurs; it checks ctx between reads.
func readFull(ctx context.Context, r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		if err := context.Cause(ctx); err != nil {
			return n, false, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, fmt.Errorf("read source: %w", err)
		}
	}
	return n, false, nil
}

func newWriteID() string {
	return rand.Text()
}
