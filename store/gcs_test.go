package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// fault is what faultTransport does to one request.
type fault int

const (
	pass         fault = iota
	status503          // answer 503 without forwarding
	resetMidBody       // read half the body, then fail like a dropped connection (server saw nothing)
	lostResponse       // forward (the server commits), then fail as if the response was lost
	corrupt            // flip one byte of the body and forward
	steal              // another writer creates the object first, then the connection drops
)

// faultTransport sits between the GCS client and fake-gcs-server. Requests
// are classified as "multipart", "init" (resumable session start), "chunk"
// (non-final resumable request), "final" or "other" and numbered per class,
// e.g. "chunk#1" is the second non-final chunk request (retries included).
type faultTransport struct {
	base   http.RoundTripper
	faults map[string]fault
	steal  func()

	mu       sync.Mutex
	counts   map[string]int
	log      []string
	finalCRC []string // X-Goog-Hash values of final requests
}

func (ft *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := classify(req)
	ft.mu.Lock()
	if ft.counts == nil {
		ft.counts = map[string]int{}
	}
	id := fmt.Sprintf("%s#%d", kind, ft.counts[kind])
	ft.counts[kind]++
	f := ft.faults[id]
	if kind == "final" {
		ft.finalCRC = append(ft.finalCRC, req.Header.Get("X-Goog-Hash"))
	}
	ft.mu.Unlock()

	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	forward := func(b []byte) (*http.Response, error) {
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		resp, err := ft.base.RoundTrip(r)
		if err == nil {
			ft.record(fmt.Sprintf("%s %s -> %d", id, faultName(f), resp.StatusCode))
		}
		return resp, err
	}
	reset := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}
	switch f {
	case status503:
		ft.record(id + " 503")
		return &http.Response{
			StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
			Header:  http.Header{"Content-Type": {"application/json"}},
			Body:    io.NopCloser(strings.NewReader(`{"error":{"code":503,"message":"injected"}}`)),
			Request: req,
		}, nil
	case resetMidBody:
		ft.record(fmt.Sprintf("%s reset after %d of %d body bytes", id, len(body)/2, len(body)))
		return nil, reset
	case lostResponse:
		resp, err := forward(body)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return nil, reset
	case corrupt:
		if len(body) > 0 {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0xff // inside the media
		}
		return forward(body)
	case steal:
		ft.steal()
		ft.record(id + " stolen by another writer, then reset")
		return nil, reset
	}
	return forward(body)
}

func (ft *faultTransport) record(s string) {
	ft.mu.Lock()
	ft.log = append(ft.log, s)
	ft.mu.Unlock()
}

func faultName(f fault) string {
	return [...]string{"", "503", "reset", "lost", "corrupt", "steal"}[f]
}

func classify(req *http.Request) string {
	q := req.URL.Query()
	switch {
	case !strings.Contains(req.URL.Path, "/upload/"):
		return "other"
	case q.Get("upload_id") != "":
		if strings.HasSuffix(req.Header.Get("Content-Range"), "/*") {
			return "chunk"
		}
		return "final"
	case q.Get("uploadType") == "multipart":
		return "multipart"
	case q.Get("uploadType") == "resumable":
		return "init"
	}
	return "other"
}

func newFaultStore(t *testing.T, srv *fakestorage.Server, ft *faultTransport, o Options) *Store {
	t.Helper()
	ft.base = srv.HTTPClient().Transport
	c, err := storage.NewClient(t.Context(), option.WithHTTPClient(&http.Client{Transport: ft}), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	o.Logger = testLogger(t)
	o.RetryInitialBackoff = time.Millisecond
	o.RetryMaxBackoff = 5 * time.Millisecond
	return NewGCS(c, testBucket, "pre/fix", o)
}

func TestGCSFaults(t *testing.T) {
	t.Parallel()
	const (
		small = 100 << 10                // one-shot multipart upload
		large = 3<<20 + 123<<10          // resumable: chunk#0..chunk#2, final#0 with ChunkSize 1 MiB
		key   = "incidents/9/v1/big.bin" // object "pre/fix/" + key
	)
	tests := []struct {
		name    string
		size    int
		faults  map[string]fault
		o       Options
		wantErr error // nil: success with exactly one correct object
		absent  bool  // with wantErr: no object must exist
	}{
		{name: "multipart 503", size: small, faults: map[string]fault{"multipart#0": status503, "multipart#1": status503}},
		{name: "multipart reset mid-body", size: small, faults: map[string]fault{"multipart#0": resetMidBody}},
		{name: "multipart committed, response lost (412 after success)", size: small, faults: map[string]fault{"multipart#0": lostResponse}},
		{name: "multipart another writer won (412, other content)", size: small, faults: map[string]fault{"multipart#0": steal}, wantErr: ErrExists},
		{name: "multipart corrupted in flight", size: small, faults: map[string]fault{"multipart#0": corrupt}, wantErr: ErrIntegrity, absent: true},
		{name: "resumable init 503", size: large, faults: map[string]fault{"init#0": status503}},
		{name: "resumable chunk 503 and resets", size: large, faults: map[string]fault{"chunk#1": status503, "chunk#2": resetMidBody, "chunk#3": resetMidBody, "final#0": status503}},
		{name: "resumable final committed, response lost", size: large, faults: map[string]fault{"final#0": lostResponse}},
		{name: "resumable another writer won", size: large, faults: map[string]fault{"final#0": steal}, wantErr: ErrExists},
		{
			name: "resumable chunk 503 forever", size: large, faults: map[string]fault{"chunk#1": status503, "chunk#2": status503, "chunk#3": status503, "chunk#4": status503, "chunk#5": status503, "chunk#6": status503, "chunk#7": status503, "chunk#8": status503, "chunk#9": status503, "chunk#10": status503},
			o: Options{ChunkRetryDeadline: 20 * time.Millisecond}, wantErr: ErrTransient, absent: true,
		},
		// fake-gcs-server does not check the final X-Goog-Hash (GCS does and
		// answers 400); the comparison with Writer.Attrs() catches it.
		{name: "resumable chunk corrupted in flight", size: large, faults: map[string]fault{"chunk#1": corrupt}, wantErr: ErrIntegrity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeServer(t)
			ft := &faultTransport{faults: tt.faults}
			ft.steal = func() {
				srv.CreateObject(fakestorage.Object{
					ObjectAttrs: fakestorage.ObjectAttrs{BucketName: testBucket, Name: "pre/fix/" + key},
					Content:     []byte("another writer's content"),
				})
			}
			o := tt.o
			o.ChunkSize = 1 << 20
			s := newFaultStore(t, srv, ft, o)
			data := payload(7, tt.size)
			got, err := s.Create(t.Context(), key, bytes.NewReader(data), WriteOptions{ContentType: "application/octet-stream"})
			t.Logf("requests: %q", ft.log)
			if tt.wantErr == nil {
				for id := range tt.faults {
					kind, n, _ := strings.Cut(id, "#")
					if i, _ := strconv.Atoi(n); ft.counts[kind] <= i {
						t.Errorf("fault %s not triggered (counts %v)", id, ft.counts)
					}
				}
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Create err = %v, want %v", err, tt.wantErr)
				}
				if tt.absent {
					assertAbsent(t, s, key)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			want := sums(data)
			want.Key = key
			if got != want {
				t.Errorf("Written = %+v, want %+v", got, want)
			}
			if back := readAll(t, s, key); !bytes.Equal(back, data) {
				t.Errorf("stored %d bytes differ from the %d written", len(back), len(data))
			}
			if objs := listAll(t, s, "", ""); len(objs) != 1 {
				t.Errorf("bucket holds %d objects, want 1", len(objs))
			}
		})
	}
}

// TestGCSFinalRequestCRC32C shows what the streaming path relies on: the
// client's automatic checksum puts the CRC32C of the whole object on the
// final request of a resumable upload, so GCS can reject corrupted uploads.
func TestGCSFinalRequestCRC32C(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t)
	ft := &faultTransport{}
	s := newFaultStore(t, srv, ft, Options{ChunkSize: 256 << 10})
	data := payload(3, 700<<10)
	w := mustCreate(t, s, "x", data, WriteOptions{})
	if len(ft.finalCRC) != 1 {
		t.Fatalf("%d final requests, want 1", len(ft.finalCRC))
	}
	want := "crc32c=" + encodeCRC(w.CRC32C)
	if ft.finalCRC[0] != want {
		t.Errorf("final X-Goog-Hash = %q, want %q", ft.finalCRC[0], want)
	}
}

func encodeCRC(c uint32) string {
	b := []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}
	return base64.StdEncoding.EncodeToString(b)
}

func TestGCSTransientStat(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t)
	faults := map[string]fault{}
	for i := range 10 {
		faults[fmt.Sprintf("other#%d", i)] = status503
	}
	ft := &faultTransport{faults: faults}
	s := newFaultStore(t, srv, ft, Options{MaxAttempts: 3})
	_, err := s.Stat(t.Context(), "k")
	if !errors.Is(err, ErrTransient) {
		t.Fatalf("Stat err = %v, want ErrTransient", err)
	}
	if ft.counts["other"] != 3 {
		t.Errorf("%d attempts, want 3", ft.counts["other"])
	}
}

func TestMapGCSError(t *testing.T) {
	t.Parallel()
	gerr := func(code int, msg string) error {
		return fmt.Errorf("wrapped: %w", &googleapi.Error{Code: code, Message: msg})
	}
	tests := []struct {
		err  error
		want error
	}{
		{gerr(412, "Precondition Failed"), ErrExists},
		{gerr(404, "No such object"), ErrNotFound},
		{storage.ErrObjectNotExist, ErrNotFound},
		{storage.ErrBucketNotExist, ErrNotFound},
		{gerr(403, "Object 'b/o' is subject to bucket's retention policy and cannot be deleted, overwritten or archived until 2027-01-01"), ErrRetention},
		{gerr(403, "Object 'b/o' is under active Temporary hold and cannot be deleted, overwritten or archived until hold is removed."), ErrRetention},
		{gerr(403, "sa@p.iam.gserviceaccount.com does not have storage.objects.create access"), ErrPermission},
		{gerr(401, "Invalid Credentials"), ErrPermission},
		{gerr(400, "Provided CRC32C \"AAAAAA==\" doesn't match calculated CRC32C \"BBBBBB==\""), ErrIntegrity},
		{gerr(408, ""), ErrTransient},
		{gerr(429, "rate"), ErrTransient},
		{gerr(500, ""), ErrTransient},
		{gerr(503, ""), ErrTransient},
		{&url.Error{Op: "Post", URL: "https://x", Err: syscall.ECONNRESET}, ErrTransient},
		{io.ErrUnexpectedEOF, ErrTransient},
	}
	sentinels := []error{ErrExists, ErrNotFound, ErrPermission, ErrRetention, ErrTransient, ErrInvalidKey, ErrIntegrity}
	for _, tt := range tests {
		got := mapGCSError(tt.err)
		for _, s := range sentinels {
			if errors.Is(got, s) != errors.Is(tt.want, s) {
				t.Errorf("mapGCSError(%v) = %v: errors.Is(%v) = %v", tt.err, got, s, errors.Is(got, s))
			}
		}
		if !errors.Is(got, tt.err) {
			t.Errorf("mapGCSError(%v) lost the cause", tt.err)
		}
	}
	for _, err := range []error{context.Canceled, gerr(400, "bad request")} {
		got := mapGCSError(err)
		for _, s := range sentinels {
			if errors.Is(got, s) {
				t.Errorf("mapGCSError(%v) = %v, want no sentinel", err, got)
			}
		}
		if got.Error() != err.Error() {
			t.Errorf("mapGCSError(%v) = %v, want unchanged", err, got)
		}
	}
}

// TestEmulatorHost exercises New("gs://...") with STORAGE_EMULATOR_HOST
// against fake-gcs-server listening on a loopback port.
func TestEmulatorHost(t *testing.T) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Host: "127.0.0.1", Port: 0, Scheme: "http",
		// The client reads through the XML API at STORAGE_EMULATOR_HOST; the
		// fake routes those requests only when they match its public host.
		PublicHost: "127.0.0.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: testBucket})
	u, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", u.Host)

	s, err := New(t.Context(), "gs://"+testBucket+"/emu/prefix", Options{ChunkSize: 256 << 10, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	if got, want := s.String(), "gs://archive/emu/prefix"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{10, 600 << 10} { // one-shot and resumable (session URL from the server)
		data := payload(uint64(n), n)
		key := fmt.Sprintf("obj-%d", n)
		w := mustCreate(t, s, key, data, WriteOptions{ContentType: "text/plain"})
		if want := sums(data); w.CRC32C != want.CRC32C || w.SHA256 != want.SHA256 {
			t.Errorf("Written = %+v, want %+v", w, want)
		}
		if back := readAll(t, s, key); !bytes.Equal(back, data) {
			t.Errorf("%s: read back differs", key)
		}
		if _, err := s.Create(t.Context(), key, bytes.NewReader(data), WriteOptions{}); !errors.Is(err, ErrExists) {
			t.Errorf("second Create err = %v, want ErrExists", err)
		}
	}
	// The objects really are under the prefix in the bucket.
	if _, err := srv.GetObject(testBucket, "emu/prefix/obj-10"); err != nil {
		t.Errorf("object not under prefix: %v", err)
	}
	if got := len(listAll(t, s, "", "")); got != 2 {
		t.Errorf("List: %d objects, want 2", got)
	}
}
