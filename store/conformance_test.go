package store

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const testBucket = "archive"

// testBackend opens a fresh, empty store of one kind.
type testBackend struct {
	name string
	new  func(t *testing.T, o Options) *Store
	// nestedKeys: "a" and "a/b" can both be objects (GCS, not local).
	nestedKeys bool
}

var backends = []testBackend{
	{name: "gcs", new: newFakeGCSStore, nestedKeys: true},
	{name: "local", new: newLocalStore},
}

func newFakeServer(tb testing.TB) *fakestorage.Server {
	tb.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: testBucket})
	return srv
}

func newFakeGCSStore(t *testing.T, o Options) *Store {
	t.Helper()
	srv := newFakeServer(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	o.Logger = testLogger(t)
	return NewGCS(c, testBucket, "pre/fix", o)
}

func newLocalStore(t *testing.T, o Options) *Store {
	t.Helper()
	o.Logger = testLogger(t)
	s, err := NewLocal(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testLogger writes store log lines to t.Log.
func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// payload returns n deterministic pseudo-random bytes.
func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func sums(b []byte) Written {
	s := sha256.Sum256(b)
	return Written{Size: int64(len(b)), SHA256: hex.EncodeToString(s[:]), CRC32C: crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))}
}

func readAll(t *testing.T, s *Store, key string) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func mustCreate(t *testing.T, s *Store, key string, data []byte, o WriteOptions) Written {
	t.Helper()
	w, err := s.Create(t.Context(), key, bytes.NewReader(data), o)
	if err != nil {
		t.Fatalf("Create(%q): %v", key, err)
	}
	return w
}

func listAll(t *testing.T, s *Store, prefix, delim string) []Object {
	t.Helper()
	var out []Object
	for obj, err := range s.List(t.Context(), prefix, delim) {
		if err != nil {
			t.Fatalf("List(%q, %q): %v", prefix, delim, err)
		}
		out = append(out, obj)
	}
	return out
}

func TestConformance(t *testing.T) {
	t.Parallel()
	for _, tb := range backends {
		t.Run(tb.name, func(t *testing.T) {
			t.Parallel()
			runConformance(t, tb)
		})
	}
}

func runConformance(t *testing.T, tb testBackend) {
	t.Helper()
	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		for _, n := range []int{0, 1, 5 << 20, 64 << 20} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				data := payload(uint64(n), n)
				want := sums(data)
				key := fmt.Sprintf("incidents/123/v1/blob-%d.bin", n)
				want.Key = key
				got := mustCreate(t, s, key, data, WriteOptions{})
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Written (-want +got):\n%s", diff)
				}
				if back := readAll(t, s, key); !bytes.Equal(back, data) {
					t.Errorf("read back %d bytes, differ from the %d written", len(back), len(data))
				}
				obj, err := s.Stat(t.Context(), key)
				if err != nil {
					t.Fatal(err)
				}
				if obj.Key != key || obj.Size != want.Size || obj.CRC32C != want.CRC32C || obj.ContentType != DefaultContentType {
					t.Errorf("Stat = %+v, want key %q size %d crc32c %08x", obj, key, want.Size, want.CRC32C)
				}
				if obj.SHA256 != "" && obj.SHA256 != want.SHA256 {
					t.Errorf("Stat SHA256 = %s, want %s", obj.SHA256, want.SHA256)
				}
				if obj.MD5 != nil {
					if m := md5.Sum(data); !bytes.Equal(obj.MD5, m[:]) {
						t.Errorf("Stat MD5 = %x, want %x", obj.MD5, m)
					}
				}
			})
		}
	})

	t.Run("Attributes", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		closed := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
		o := WriteOptions{ContentType: "application/json", Metadata: map[string]string{"incident_id": "123", "reason": "incident_closed"}, CustomTime: closed}
		data := []byte(`{"id":"123"}`)
		before := time.Now().Add(-time.Minute)
		w := mustCreate(t, s, "incidents/123/v1/incident.json", data, o)
		want := Object{
			Key: "incidents/123/v1/incident.json", Size: w.Size, CRC32C: w.CRC32C, SHA256: w.SHA256,
			ContentType: o.ContentType, Metadata: o.Metadata, CustomTime: closed,
		}
		ignore := cmpopts.IgnoreFields(Object{}, "MD5", "Created")
		got, err := s.Stat(t.Context(), want.Key)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, ignore); diff != "" {
			t.Errorf("Stat (-want +got):\n%s", diff)
		}
		if got.Created.Before(before) {
			t.Errorf("Created = %v, want after %v", got.Created, before)
		}
		listed := listAll(t, s, "incidents/", "")
		if diff := cmp.Diff([]Object{want}, listed, ignore); diff != "" {
			t.Errorf("List (-want +got):\n%s", diff)
		}
	})

	t.Run("ReservedMetadata", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		for _, k := range []string{MetaSHA256, metaWriteID, ""} {
			_, err := s.Create(t.Context(), "k", strings.NewReader("x"), WriteOptions{Metadata: map[string]string{k: "v"}})
			if !errors.Is(err, ErrInvalidMetadata) {
				t.Errorf("metadata key %q: err = %v, want ErrInvalidMetadata", k, err)
			}
		}
	})

	t.Run("CreateOnly", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		mustCreate(t, s, "jobs/j1/request.json", []byte("first"), WriteOptions{})
		for _, data := range []string{"second", "first"} {
			_, err := s.Create(t.Context(), "jobs/j1/request.json", strings.NewReader(data), WriteOptions{})
			if !errors.Is(err, ErrExists) {
				t.Errorf("second Create(%q) err = %v, want ErrExists", data, err)
			}
		}
		if got := readAll(t, s, "jobs/j1/request.json"); string(got) != "first" {
			t.Errorf("content = %q, want %q", got, "first")
		}
	})

	for _, c := range []struct {
		same  bool
		chunk int // 256 KiB: the 300 KiB objects stream in two chunks
	}{{false, 0}, {true, 0}, {false, 256 << 10}, {true, 256 << 10}} {
		same := c.same
		t.Run(fmt.Sprintf("ConcurrentCreate/sameContent=%v/chunk=%d", c.same, c.chunk), func(t *testing.T) {
			t.Parallel()
			s := tb.new(t, Options{ChunkSize: c.chunk})
			const writers = 16
			var (
				wg    sync.WaitGroup
				errs  [writers]error
				datas [writers][]byte
			)
			for i := range writers {
				datas[i] = payload(uint64(i), 300<<10) // > 256 KiB, differs per writer
				if same {
					datas[i] = payload(99, 300<<10)
				}
				wg.Go(func() {
					_, errs[i] = s.Create(t.Context(), "race/key", bytes.NewReader(datas[i]), WriteOptions{Metadata: map[string]string{"writer": fmt.Sprint(i)}})
				})
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("writers %d and %d both succeeded", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, ErrExists):
					t.Errorf("writer %d: %v, want ErrExists", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no writer succeeded")
			}
			if got := readAll(t, s, "race/key"); !bytes.Equal(got, datas[winner]) {
				t.Error("stored content is not the winner's")
			}
			obj, err := s.Stat(t.Context(), "race/key")
			if err != nil {
				t.Fatal(err)
			}
			if obj.Metadata["writer"] != fmt.Sprint(winner) {
				t.Errorf("metadata writer = %q, want %d", obj.Metadata["writer"], winner)
			}
		})
	}

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{ListPageSize: 2})
		keys := []string{
			"a-c", "a/b", "a/c/d", "a/c/e", "a0", "b", "incidents/1/v1/m.json",
			"incidents/1/v2/m.json", "incidents/12/v1/m.json", "incidents/2/v1/m.json", "z",
		}
		// Create in a scrambled order; List must sort.
		for _, i := range []int{7, 3, 10, 0, 5, 9, 1, 8, 2, 6, 4} {
			mustCreate(t, s, keys[i], []byte(keys[i]), WriteOptions{})
		}
		keysOf := func(objs []Object) []string {
			var out []string
			for _, o := range objs {
				k := o.Key
				if o.IsPrefix {
					k += " (prefix)"
				} else if o.Size != int64(len(o.Key)) {
					t.Errorf("%s: size %d, want %d", o.Key, o.Size, len(o.Key))
				}
				out = append(out, k)
			}
			return out
		}
		tests := []struct {
			prefix, delim string
			want          []string
		}{
			{"", "", keys},
			{"", "/", []string{"a-c", "a/ (prefix)", "a0", "b", "incidents/ (prefix)", "z"}},
			{"a/", "/", []string{"a/b", "a/c/ (prefix)"}},
			{"a/", "", []string{"a/b", "a/c/d", "a/c/e"}},
			{"incidents/1", "/", []string{"incidents/1/ (prefix)", "incidents/12/ (prefix)"}},
			{"incidents/1", "", []string{"incidents/1/v1/m.json", "incidents/1/v2/m.json", "incidents/12/v1/m.json"}},
			{"incidents/1/", "/", []string{"incidents/1/v1/ (prefix)", "incidents/1/v2/ (prefix)"}},
			{"a", "", []string{"a-c", "a/b", "a/c/d", "a/c/e", "a0"}},
			{"nope/", "", nil},
			{"b/", "", nil},
		}
		for _, tt := range tests {
			got := keysOf(listAll(t, s, tt.prefix, tt.delim))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("List(%q, %q) (-want +got):\n%s", tt.prefix, tt.delim, diff)
			}
		}
		// Stopping early is honoured.
		n := 0
		for _, err := range s.List(t.Context(), "", "") {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 3 {
				break
			}
		}
	})

	t.Run("ListMany", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{ListPageSize: 7})
		var want []string
		for i := range 40 {
			k := fmt.Sprintf("jobs/%03d/request.json", i)
			want = append(want, k)
			mustCreate(t, s, k, []byte("{}"), WriteOptions{})
		}
		var got []string
		for _, o := range listAll(t, s, "jobs/", "") {
			got = append(got, o.Key)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("List (-want +got):\n%s", diff)
		}
		got = got[:0]
		for _, o := range listAll(t, s, "jobs/", "/") {
			got = append(got, o.Key)
		}
		if len(got) != 40 || got[0] != "jobs/000/" || got[39] != "jobs/039/" {
			t.Errorf("delimited List = %v", got)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		hostile := []string{
			"", "/abs", "../escape", "a/../../b", "a/./b", ".", "..", "a//b", "a/", "a\\b", "a\x00b",
			"a\nb", "a\x7fb", "\xff\xfe", strings.Repeat("k", MaxKeyLen+1), strings.Repeat("k", MaxKeyLen-3),
		}
		for _, key := range hostile {
			if _, err := s.Create(t.Context(), key, strings.NewReader("x"), WriteOptions{}); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Create(%q) err = %v, want ErrInvalidKey", key, err)
			}
			if _, err := s.Stat(t.Context(), key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Stat(%q) err = %v, want ErrInvalidKey", key, err)
			}
			if _, err := s.Open(t.Context(), key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Open(%q) err = %v, want ErrInvalidKey", key, err)
			}
		}
		for _, p := range []string{"/x", "../", "a//", "a\x00"} {
			for _, err := range s.List(t.Context(), p, "") {
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("List(%q) err = %v, want ErrInvalidKey", p, err)
				}
			}
		}
		if objs := listAll(t, s, "", ""); len(objs) != 0 {
			t.Errorf("store not empty: %v", objs)
		}
		// Allowed: unicode, dots inside names, spaces.
		for _, key := range []string{"ünïcode/ä.json", "a/.hidden", "a/..b", "with space/x"} {
			mustCreate(t, s, key, []byte("ok"), WriteOptions{})
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		mustCreate(t, s, "dir/obj", []byte("x"), WriteOptions{})
		for _, key := range []string{"missing", "dir", "dir/obj/deeper"} {
			if _, err := s.Stat(t.Context(), key); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat(%q) err = %v, want ErrNotFound", key, err)
			}
			if _, err := s.Open(t.Context(), key); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open(%q) err = %v, want ErrNotFound", key, err)
			}
		}
	})

	errBoom := errors.New("boom")
	for _, n := range []int{1 << 10, 3 << 20} { // one-shot and streaming paths (ChunkSize 1 MiB)
		t.Run(fmt.Sprintf("ReaderError/%d", n), func(t *testing.T) {
			t.Parallel()
			s := tb.new(t, Options{ChunkSize: 1 << 20})
			r := io.MultiReader(bytes.NewReader(payload(1, n)), iotestErrReader(errBoom))
			_, err := s.Create(t.Context(), "broken", r, WriteOptions{})
			if !errors.Is(err, errBoom) {
				t.Fatalf("Create err = %v, want %v", err, errBoom)
			}
			assertAbsent(t, s, "broken")
		})

		t.Run(fmt.Sprintf("ContextCancel/%d", n), func(t *testing.T) {
			t.Parallel()
			s := tb.new(t, Options{ChunkSize: 1 << 20})
			ctx, cancel := context.WithCancel(t.Context())
			r := &cancelAfter{r: bytes.NewReader(payload(2, 16<<20)), n: n, cancel: cancel}
			_, err := s.Create(ctx, "cancelled", r, WriteOptions{})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Create err = %v, want context.Canceled", err)
			}
			assertAbsent(t, s, "cancelled")
		})
	}

	t.Run("NestedKeys", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		mustCreate(t, s, "a", []byte("a"), WriteOptions{})
		_, err1 := s.Create(t.Context(), "a/b", strings.NewReader("b"), WriteOptions{})
		mustCreate(t, s, "c/d", []byte("d"), WriteOptions{})
		_, err2 := s.Create(t.Context(), "c", strings.NewReader("c"), WriteOptions{})
		if tb.nestedKeys {
			if err1 != nil || err2 != nil {
				t.Errorf("nested keys: %v, %v", err1, err2)
			}
			return
		}
		// Documented local limitation: an error, but never ErrExists.
		for _, err := range []error{err1, err2} {
			if err == nil || errors.Is(err, ErrExists) {
				t.Errorf("nested key on local: err = %v, want a non-ErrExists error", err)
			}
		}
	})

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		s := tb.new(t, Options{})
		if err := s.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
		if s.String() == "" {
			t.Error("empty String()")
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
}

func assertAbsent(t *testing.T, s *Store, key string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%q) err = %v, want ErrNotFound", key, err)
	}
	for obj, err := range s.List(context.Background(), "", "") {
		t.Errorf("List yields %+v, %v; want nothing", obj, err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func iotestErrReader(err error) io.Reader { return errReader{err} }

// cancelAfter cancels its context once n bytes have been read and keeps
// returning data.
type cancelAfter struct {
	r      io.Reader
	n      int
	read   int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	if c.read >= c.n {
		c.cancel()
	}
	return n, err
}
