package store

import (
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what the GCS API accepts as a declared content hash, not a security primitive
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
)

// gcsBackend stores objects in a GCS bucket through the JSON API client.
//
// Integrity of Create (cloud.google.com/go/storage v1.71.0, HTTP/JSON):
//
//   - Objects smaller than ChunkSize are read completely before the upload
//     starts. Their CRC32C (Writer.SendCRC32C) and MD5 (Writer.MD5) are
//     declared in the single multipart request, so GCS stores them only if the
//     bytes it received match; their SHA-256 goes into metadata MetaSHA256.
//   - Larger objects are streamed in a resumable upload of ChunkSize chunks.
//     Their checksum is unknown when the upload starts, so the client's
//     automatic checksum (on by default; DisableAutoChecksum false) applies:
//     it computes the CRC32C of the bytes it buffers and sends it as
//     "X-Goog-Hash: crc32c=..." on the final request, and GCS rejects the
//     finalisation on mismatch. fake-gcs-server ignores that header.
//   - In both cases, after Close succeeds, the CRC32C and size in
//     Writer.Attrs() (what the server stored) are compared with the values
//     computed by Create from the source; a difference is ErrIntegrity. This
//     is the end-to-end check that also covers servers that skip validation.
type gcsBackend struct {
	c         *storage.Client
	bucket    *storage.BucketHandle
	name      string
	o         Options
	log       *slog.Logger
	bufs      sync.Pool // *[]byte of len ChunkSize
	ownClient bool
}

func newGCSBackend(c *storage.Client, bucket string, o Options) *gcsBackend {
	g := &gcsBackend{c: c, bucket: c.Bucket(bucket), name: bucket, o: o, log: o.Logger}
	g.bufs.New = func() any { b := make([]byte, o.ChunkSize); return &b }
	return g
}

func (g *gcsBackend) object(name string) *storage.ObjectHandle {
	return g.bucket.Object(name).Retryer(
		storage.WithPolicy(storage.RetryIdempotent),
		storage.WithMaxAttempts(g.o.MaxAttempts),
		storage.WithBackoff(gax.Backoff{Initial: g.o.RetryInitialBackoff, Max: g.o.RetryMaxBackoff, Multiplier: 2}),
	)
}

func (g *gcsBackend) create(ctx context.Context, name string, r io.Reader, o WriteOptions) (Written, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	bp := g.bufs.Get().(*[]byte)
	defer g.bufs.Put(bp)
	buf := *bp

	h := newHasher()
	n, eof, err := readFull(ctx, r, buf)
	if err != nil {
		return Written{}, err // nothing was sent
	}
	h.add(buf[:n])

	writeID := newWriteID()
	meta := make(map[string]string, len(o.Metadata)+2)
	for k, v := range o.Metadata {
		meta[k] = v
	}
	meta[metaWriteID] = writeID

	// The DoesNotExist precondition makes the upload create-only and, being
	// a precondition, makes it idempotent, so the client retries it.
	w := g.object(name).If(storage.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.ContentType = o.ContentType
	w.CustomTime = o.CustomTime
	w.ChunkRetryDeadline = g.o.ChunkRetryDeadline
	w.Metadata = meta

	complete := eof // whether h covers the whole source
	if eof {
		sum := md5.Sum(buf[:n]) //nolint:gosec // see import
		meta[MetaSHA256] = h.written().SHA256
		// One request; the client's retry buffer is only as large as needed.
		w.ChunkSize = roundUp(n+1, chunkAlign)
		w.SendCRC32C = true
		w.CRC32C = h.crc
		w.MD5 = sum[:]
		_, _ = w.Write(buf[:n]) // an upload error surfaces from Close
	} else {
		w.ChunkSize = g.o.ChunkSize
		if _, err := w.Write(buf[:n]); err == nil {
			complete, err = g.stream(ctx, w, r, h, buf)
			if err != nil {
				// Close the pipe with the error before anything else: the
				// client then never sees EOF, never sends the final request,
				// and the resumable session is abandoned uncommitted.
				// (Cancelling ctx alone is observed asynchronously by the
				// client, racing with Close, which would signal EOF.)
				_ = w.CloseWithError(err) //nolint:staticcheck // see above
				cancel()
				_ = w.Close()
				return Written{}, err
			}
		}
	}

	closeErr := w.Close()
	want := h.written()
	if closeErr != nil {
		return g.reconcile(ctx, name, writeID, want, complete, closeErr)
	}
	got := w.Attrs()
	if got.Size != want.Size || got.CRC32C != want.CRC32C {
		g.log.ErrorContext(ctx, "store: stored object differs from source",
			"bucket", g.name, "object", name, "size", got.Size, "want_size", want.Size,
			"crc32c", got.CRC32C, "want_crc32c", want.CRC32C)
		return Written{}, fmt.Errorf("%w: stored size %d crc32c %08x, source size %d crc32c %08x (object left in place)",
			ErrIntegrity, got.Size, got.CRC32C, want.Size, want.CRC32C)
	}
	return want, nil
}

// stream copies the rest of r into w through buf. It returns complete=true
// when r reached EOF; err is a source or context error (the caller aborts),
// while an upload error leaves complete=false, err=nil for Close to report.
func (g *gcsBackend) stream(ctx context.Context, w *storage.Writer, r io.Reader, h *hasher, buf []byte) (complete bool, err error) {
	for {
		n, eof, err := readFull(ctx, r, buf)
		if err != nil {
			return false, err
		}
		h.add(buf[:n])
		if _, werr := w.Write(buf[:n]); werr != nil {
			if cerr := context.Cause(ctx); cerr != nil {
				return false, cerr
			}
			return false, nil
		}
		if eof {
			return true, nil
		}
	}
}

// reconcile decides what a failed Close means. A retried upload can fail
// even though an earlier attempt committed the object: the retry of a
// multipart upload meets 412 (the object now exists), and the retry of the
// final request of a resumable upload may find the session finished. So if
// Create read its whole source, it looks at the object: if it carries this
// call's write id and the CRC32C and size that Create computed, the upload
// succeeded. An object with another write id belongs to another writer:
// ErrExists, even if its content is identical, so exactly one of several
// concurrent writers wins.
func (g *gcsBackend) reconcile(ctx context.Context, name, writeID string, want Written, complete bool, closeErr error) (Written, error) {
	mapped := mapGCSError(closeErr)
	if !complete || ctx.Err() != nil || errors.Is(mapped, ErrPermission) || errors.Is(mapped, ErrIntegrity) {
		return Written{}, mapped
	}
	attrs, err := g.object(name).Attrs(ctx)
	if err != nil {
		if !errors.Is(err, storage.ErrObjectNotExist) {
			g.log.WarnContext(ctx, "store: stat after failed upload", "bucket", g.name, "object", name, "error", err)
		}
		return Written{}, mapped
	}
	if attrs.Metadata[metaWriteID] != writeID {
		if errors.Is(mapped, ErrExists) {
			return Written{}, mapped
		}
		return Written{}, fmt.Errorf("%w: created by another writer during a failed upload: %w", ErrExists, closeErr)
	}
	if attrs.Size != want.Size || attrs.CRC32C != want.CRC32C {
		return Written{}, fmt.Errorf("%w: stored size %d crc32c %08x, source size %d crc32c %08x (object left in place): %w",
			ErrIntegrity, attrs.Size, attrs.CRC32C, want.Size, want.CRC32C, closeErr)
	}
	g.log.InfoContext(ctx, "store: upload committed although its last attempt failed",
		"bucket", g.name, "object", name, "size", want.Size, "error", closeErr)
	return want, nil
}

type gcsReader struct {
	r    *storage.Reader
	name string
}

func (r *gcsReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("store: read %q: %w", r.name, mapGCSError(err))
	}
	return n, err
}

func (r *gcsReader) Close() error { return r.r.Close() }

func (g *gcsBackend) open(ctx context.Context, name string) (io.ReadCloser, error) {
	r, err := g.object(name).NewReader(ctx)
	if err != nil {
		return nil, mapGCSError(err)
	}
	return &gcsReader{r: r, name: name}, nil
}

func (g *gcsBackend) stat(ctx context.Context, name string) (Object, error) {
	a, err := g.object(name).Attrs(ctx)
	if err != nil {
		return Object{}, mapGCSError(err)
	}
	return objectFromAttrs(a), nil
}

func objectFromAttrs(a *storage.ObjectAttrs) Object {
	if a.Prefix != "" {
		return Object{Key: a.Prefix, IsPrefix: true}
	}
	obj := Object{
		Key:         a.Name,
		Size:        a.Size,
		CRC32C:      a.CRC32C,
		MD5:         a.MD5,
		ContentType: a.ContentType,
		Created:     a.Created,
		CustomTime:  a.CustomTime,
		SHA256:      a.Metadata[MetaSHA256],
	}
	for k, v := range a.Metadata {
		if k == MetaSHA256 || k == metaWriteID {
			continue
		}
		if obj.Metadata == nil {
			obj.Metadata = make(map[string]string, len(a.Metadata))
		}
		obj.Metadata[k] = v
	}
	return obj
}

// list pages through the bucket. The JSON API returns the objects and the
// prefixes of a page in separate arrays; each page covers a contiguous key
// range, so merging them per page yields lexical order. Prefixes beyond the
// page's last object are held back until the next page, and repeats are
// dropped, which also copes with fake-gcs-server (it returns every prefix
// from the page token on, on each page).
func (g *gcsBackend) list(ctx context.Context, prefix, delimiter string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		q := &storage.Query{Prefix: prefix, Delimiter: delimiter}
		if err := q.SetAttrSelection([]string{"Name", "Size", "CRC32C", "MD5", "ContentType", "Metadata", "Created", "CustomTime"}); err != nil {
			yield(Object{}, err)
			return
		}
		it := g.bucket.Retryer(
			storage.WithMaxAttempts(g.o.MaxAttempts),
			storage.WithBackoff(gax.Backoff{Initial: g.o.RetryInitialBackoff, Max: g.o.RetryMaxBackoff, Multiplier: 2}),
		).Objects(ctx, q)
		pager := iterator.NewPager(it, g.o.ListPageSize, "")
		var (
			last    string   // last key yielded
			pending []string // prefixes held back, sorted
			page    []*storage.ObjectAttrs
		)
		for {
			page = page[:0]
			token, err := pager.NextPage(&page)
			if err != nil {
				yield(Object{}, mapGCSError(err))
				return
			}
			var objs []Object
			for _, a := range page {
				if a.Prefix != "" {
					if a.Prefix > last && !slices.Contains(pending, a.Prefix) {
						pending = append(pending, a.Prefix)
					}
					continue
				}
				objs = append(objs, objectFromAttrs(a))
			}
			slices.Sort(pending)
			slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
			bound := "" // emit pending prefixes up to bound; all when bound is ""
			if token != "" && len(objs) > 0 {
				bound = objs[len(objs)-1].Key
			}
			var out []Object
			i := 0
			for _, o := range objs {
				for i < len(pending) && pending[i] < o.Key {
					out = append(out, Object{Key: pending[i], IsPrefix: true})
					i++
				}
				out = append(out, o)
			}
			for i < len(pending) && (bound == "" || pending[i] < bound) {
				out = append(out, Object{Key: pending[i], IsPrefix: true})
				i++
			}
			pending = pending[i:]
			for _, o := range out {
				if o.Key <= last && last != "" {
					continue
				}
				last = o.Key
				if !yield(o, nil) {
					return
				}
			}
			if token == "" {
				return
			}
		}
	}
}

func (g *gcsBackend) ping(ctx context.Context) error {
	it := g.bucket.Retryer(storage.WithMaxAttempts(g.o.MaxAttempts)).Objects(ctx, &storage.Query{})
	it.PageInfo().MaxSize = 1
	if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
		return mapGCSError(err)
	}
	return nil
}

func (g *gcsBackend) close() error {
	if g.ownClient {
		return g.c.Close()
	}
	return nil
}

// mapGCSError wraps err with the sentinel for its class; unclassified errors
// (and context errors) are returned unchanged.
func mapGCSError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrObjectNotExist) || errors.Is(err, storage.ErrBucketNotExist) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		msg := strings.ToLower(gerr.Message + " " + gerr.Body)
		switch c := gerr.Code; {
		case c == http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %w", ErrExists, err)
		case c == http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case c == http.StatusForbidden && (strings.Contains(msg, "retention") || strings.Contains(msg, " hold")):
			return fmt.Errorf("%w: %w", ErrRetention, err)
		case c == http.StatusUnauthorized || c == http.StatusForbidden:
			return fmt.Errorf("%w: %w", ErrPermission, err)
		case c == http.StatusBadRequest && (strings.Contains(msg, "crc32c") || strings.Contains(msg, "md5")):
			return fmt.Errorf("%w: upload rejected, nothing stored: %w", ErrIntegrity, err)
		case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
			return fmt.Errorf("%w: %w", ErrTransient, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) || errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		strings.Contains(err.Error(), "connection reset") {
		return fmt.Errorf("%w: %w", ErrTransient, err)
	}
	return err
}
