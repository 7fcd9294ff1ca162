package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Local layout under the root directory:
//
//	<root>/objects/<key>   content, one regular file per key
//	<root>/meta/<key>      JSON sidecar: content type, metadata, custom time,
//	                       created, size, sha256, crc32c
//	<root>/tmp/            temporary files of Creates in progress
//
// The three trees are disjoint, so no key can collide with a sidecar or a
// temporary file, and objects/ stays a plain browsable copy of the archive.
//
// Create writes the content and then its sidecar to temporary files in tmp/
// (same file system) and makes both durable (barrier 1), then links the
// content to objects/<key> with link(2), which fails with EEXIST if the name
// exists: that link is the atomic, create-only commit point. Only the winner
// then renames its sidecar into meta/<key>, and the new directory entries
// (and any directories created on the way) are made durable (barrier 2)
// before Create returns. The barriers of concurrent Creates are shared: one
// batch of parallel fsyncs serves every Create waiting (group commit, see
// groupsync.go). A crash before barrier 2 completes may leave an object
// without sidecar, never a partial object; Stat then recomputes size and
// checksums from the content and reports DefaultContentType and no metadata.
//
// Limitations compared with GCS: a key cannot be both an object and a
// "directory" of other keys ("a" and "a/b"), because objects are plain
// files; Create reports that as a plain error, not ErrExists. Each
// segment is limited to 255 bytes (NAME_MAX). On case-insensitive file
// systems keys differing only in case collide. MD5 is not recorded. List
// reads one directory level at a time (ListPageSize entries per ReadDir
// call) and sorts it, so memory is bounded by the largest directory.
type localBackend struct {
	root     string
	objects  string
	meta     string
	tmp      string
	pageSize int
	log      *slog.Logger
	group    *syncGroup // durability barriers shared by concurrent Creates (groupsync.go)
}

const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// staleTemp is the age after which NewLocal removes temporary files left
// behind by crashed processes.
const staleTemp = time.Hour

// NewLocal returns a Store in directory dir, creating dir and its layout if
// missing, and removing temporary files older than an hour.
func NewLocal(dir string, o Options) (*Store, error) {
	o = o.withDefaults()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: local %q: %w", dir, err)
	}
	l := &localBackend{
		root:     abs,
		objects:  filepath.Join(abs, "objects"),
		meta:     filepath.Join(abs, "meta"),
		tmp:      filepath.Join(abs, "tmp"),
		pageSize: o.ListPageSize,
		log:      o.Logger,
		group:    newSyncGroup(),
	}
	for _, d := range []string{l.objects, l.meta, l.tmp} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("store: local %q: %w", dir, mapOSError(err))
		}
	}
	l.removeStaleTemp()
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	return &Store{b: l, url: u.String()}, nil
}

func (l *localBackend) removeStaleTemp() {
	entries, err := os.ReadDir(l.tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleTemp {
			continue
		}
		p := filepath.Join(l.tmp, e.Name())
		if err := os.Remove(p); err == nil {
			l.log.Info("store: removed stale temporary file", "path", p)
		}
	}
}

type sidecar struct {
	ContentType string            `json:"content_type"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	CustomTime  time.Time         `json:"custom_time,omitzero"`
	Created     time.Time         `json:"created"`
	Size        int64             `json:"size"`
	SHA256      string            `json:"sha256"`
	CRC32C      uint32            `json:"crc32c"`
}

func (l *localBackend) objPath(name string) string {
	return filepath.Join(l.objects, filepath.FromSlash(name))
}
func (l *localBackend) metaPath(name string) string {
	return filepath.Join(l.meta, filepath.FromSlash(name))
}

func checkSegmentLen(name string) error {
	for seg := range strings.SplitSeq(name, "/") {
		if len(seg) > 255 {
			return fmt.Errorf("%w: segment of %d bytes, more than 255 (local file system)", ErrInvalidKey, len(seg))
		}
	}
	return nil
}

func (l *localBackend) create(ctx context.Context, name string, r io.Reader, o WriteOptions) (Written, error) {
	if err := checkSegmentLen(name); err != nil {
		return Written{}, err
	}
	tmp, err := os.CreateTemp(l.tmp, "obj-*")
	if err != nil {
		return Written{}, mapOSError(err)
	}
	tmpName := tmp.Name()
	defer func() { _ = os.Remove(tmpName) }() // after a successful link this drops the temp name only
	defer func() { _ = tmp.Close() }()        // a second Close after the checked one is harmless

	h := newHasher()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for {
		n, eof, err := readFull(ctx, r, *bp)
		if err != nil {
			return Written{}, err
		}
		h.add((*bp)[:n])
		if _, err := tmp.Write((*bp)[:n]); err != nil {
			return Written{}, mapOSError(err)
		}
		if eof {
			break
		}
	}
	want := h.written()
	// The sidecar is prepared now so that one barrier makes both files durable before the commit.
	scBytes, err := json.Marshal(sidecar{
		ContentType: o.ContentType, Metadata: o.Metadata, CustomTime: o.CustomTime,
		Created: time.Now().UTC(), Size: want.Size, SHA256: want.SHA256, CRC32C: want.CRC32C,
	})
	if err != nil {
		return Written{}, err
	}
	sc, err := os.CreateTemp(l.tmp, "meta-*")
	if err != nil {
		return Written{}, mapOSError(err)
	}
	scName := sc.Name()
	defer func() { _ = os.Remove(scName) }() // fails harmlessly after the rename
	defer func() { _ = sc.Close() }()
	if _, err := sc.Write(scBytes); err != nil {
		return Written{}, mapOSError(err)
	}

	// Barrier 1: content and sidecar durable before the link can be. A large content file is
	// flushed by its own Create, so that small Creates never wait for a big flush.
	files := []*os.File{sc}
	if want.Size > groupSyncMax {
		if err := syncFile(tmp); err != nil {
			return Written{}, mapOSError(err)
		}
	} else {
		files = append(files, tmp)
	}
	if err := l.group.barrier(syncReq{files: files}); err != nil {
		return Written{}, mapOSError(err)
	}
	if err := tmp.Close(); err != nil {
		return Written{}, mapOSError(err)
	}
	if err := sc.Close(); err != nil {
		return Written{}, mapOSError(err)
	}
	if err := context.Cause(ctx); err != nil {
		return Written{}, err
	}

	dst := l.objPath(name)
	objDirs, objFresh, err := l.prepareDir(l.objects, filepath.Dir(dst))
	if err != nil {
		return Written{}, l.conflict(name, err)
	}
	if err := os.Link(tmpName, dst); err != nil {
		return Written{}, l.conflict(name, err)
	}
	// Committed: from here on the object exists; finish its sidecar even if ctx ends.
	metaDst := l.metaPath(name)
	metaDirs, metaFresh, err := l.prepareDir(l.meta, filepath.Dir(metaDst))
	if err == nil {
		// Only the creator of the object writes its sidecar, so a rename (which replaces a
		// leftover from tampering) is safe here.
		err = os.Rename(scName, metaDst)
	}
	if err != nil {
		// The object is durable once its directories are; its sidecar is not there.
		if serr := l.group.barrier(syncReq{dirs: objDirs, fresh: objFresh}); serr != nil {
			return Written{}, mapOSError(serr)
		}
		return Written{}, fmt.Errorf("object stored but its metadata was not: %w", mapOSError(err))
	}
	// Barrier 2: the link, the sidecar's name and any new directories durable before Create returns.
	if err := l.group.barrier(syncReq{dirs: append(objDirs, metaDirs...), fresh: append(objFresh, metaFresh...)}); err != nil {
		return Written{}, mapOSError(err)
	}
	return want, nil
}

// conflict maps an error from creating the object's directories or link.
func (l *localBackend) conflict(name string, err error) error {
	if errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("a parent of %q is an object; the local backend cannot store a key below another key: %w", name, err)
	}
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(l.objPath(name)); serr == nil && fi.IsDir() {
			return fmt.Errorf("%q is a directory of other keys; the local backend cannot store it as an object: %w", name, err)
		}
		return fmt.Errorf("%w: %w", ErrExists, err)
	}
	return mapOSError(err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// verifyingReader checks the CRC32C recorded at Create when the content has
// been read to EOF.
type verifyingReader struct {
	f    *os.File
	name string
	crc  uint32
	want uint32
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.f.Read(p)
	v.crc = crc32.Update(v.crc, castagnoli, p[:n])
	if errors.Is(err, io.EOF) && v.crc != v.want {
		return n, fmt.Errorf("store: read %q: %w: content crc32c %08x, recorded %08x", v.name, ErrIntegrity, v.crc, v.want)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("store: read %q: %w", v.name, mapOSError(err))
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.f.Close() }

func (l *localBackend) open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkSegmentLen(name); err != nil {
		return nil, err
	}
	f, err := os.Open(l.objPath(name))
	if err != nil {
		return nil, mapOSError(err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	sc, err := l.readSidecar(name)
	if err != nil {
		// Sidecar missing (crash or a Create in progress): no recorded CRC.
		return f, nil
	}
	return &verifyingReader{f: f, name: name, want: sc.CRC32C}, nil
}

func (l *localBackend) readSidecar(name string) (sidecar, error) {
	var sc sidecar
	b, err := os.ReadFile(l.metaPath(name))
	if err != nil {
		return sc, err
	}
	return sc, json.Unmarshal(b, &sc)
}

func (l *localBackend) stat(ctx context.Context, name string) (Object, error) {
	if err := checkSegmentLen(name); err != nil {
		return Object{}, err
	}
	fi, err := os.Stat(l.objPath(name))
	if err != nil {
		return Object{}, mapOSError(err)
	}
	if !fi.Mode().IsRegular() {
		return Object{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	sc, err := l.readSidecar(name)
	if err != nil {
		if sc, err = l.recompute(ctx, name, fi); err != nil {
			return Object{}, err
		}
	}
	return Object{
		Key: name, Size: sc.Size, CRC32C: sc.CRC32C, SHA256: sc.SHA256,
		ContentType: sc.ContentType, Metadata: sc.Metadata, Created: sc.Created, CustomTime: sc.CustomTime,
	}, nil
}

// recompute derives the sidecar of an object whose sidecar is missing.
func (l *localBackend) recompute(ctx context.Context, name string, fi fs.FileInfo) (sidecar, error) {
	f, err := os.Open(l.objPath(name))
	if err != nil {
		return sidecar{}, mapOSError(err)
	}
	defer func() { _ = f.Close() }() // read-only
	h := newHasher()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	if _, err := io.CopyBuffer(h, io.LimitReader(f, fi.Size()), *bp); err != nil {
		return sidecar{}, mapOSError(err)
	}
	w := h.written()
	return sidecar{ContentType: DefaultContentType, Created: fi.ModTime().UTC(), Size: w.Size, SHA256: w.SHA256, CRC32C: w.CRC32C}, nil
}

type dirEntry struct {
	name string
	dir  bool
}

// sortKey orders entries so that a depth-first walk yields keys in byte
// order: every key below directory d starts with d+"/".
func (e dirEntry) sortKey() string {
	if e.dir {
		return e.name + "/"
	}
	return e.name
}

// readDir returns the regular files and directories of dir, sorted by
// sortKey, reading pageSize entries per call. A missing dir is empty.
func (l *localBackend) readDir(dir string) ([]dirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, nil
		}
		return nil, mapOSError(err)
	}
	defer func() { _ = f.Close() }()
	var out []dirEntry
	for {
		batch, err := f.ReadDir(l.pageSize)
		for _, e := range batch {
			switch {
			case e.IsDir():
				out = append(out, dirEntry{e.Name(), true})
			case e.Type().IsRegular():
				out = append(out, dirEntry{e.Name(), false})
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, syscall.ENOTDIR) {
				return nil, nil
			}
			return nil, mapOSError(err)
		}
	}
	slices.SortFunc(out, func(a, b dirEntry) int { return strings.Compare(a.sortKey(), b.sortKey()) })
	return out, nil
}

func (l *localBackend) list(ctx context.Context, prefix, delimiter string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		if delimiter != "" && delimiter != "/" {
			yield(Object{}, fmt.Errorf("delimiter %q: the local backend supports only \"\" and \"/\"", delimiter))
			return
		}
		dir := prefix[:strings.LastIndex(prefix, "/")+1]
		l.walk(ctx, dir, prefix[len(dir):], delimiter, yield)
	}
}

// walk yields the keys below rel ("" or ending in "/") whose next segment
// starts with namePrefix. It returns false when the walk must stop.
func (l *localBackend) walk(ctx context.Context, rel, namePrefix, delimiter string, yield func(Object, error) bool) bool {
	entries, err := l.readDir(filepath.Join(l.objects, filepath.FromSlash(rel)))
	if err != nil {
		yield(Object{}, err)
		return false
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.name, namePrefix) {
			continue
		}
		if err := context.Cause(ctx); err != nil {
			yield(Object{}, err)
			return false
		}
		key := rel + e.name
		if e.dir {
			if delimiter == "" {
				if !l.walk(ctx, key+"/", "", delimiter, yield) {
					return false
				}
				continue
			}
			has, err := l.hasObject(filepath.Join(l.objects, filepath.FromSlash(key)))
			if err != nil {
				yield(Object{}, err)
				return false
			}
			if has && !yield(Object{Key: key + "/", IsPrefix: true}, nil) {
				return false
			}
			continue
		}
		obj, err := l.stat(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if !yield(obj, err) || err != nil {
			return false
		}
	}
	return true
}

// hasObject reports whether dir holds a regular file at any depth (GCS
// prefixes exist only where objects do). It stops at the first one.
func (l *localBackend) hasObject(dir string) (bool, error) {
	errFound := errors.New("found")
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, mapOSError(err)
}

func (l *localBackend) ping(ctx context.Context) error {
	for _, d := range []string{l.objects, l.meta, l.tmp} {
		fi, err := os.Stat(d)
		if err != nil {
			return mapOSError(err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
	}
	return nil
}

func (l *localBackend) close() error { return nil }

// mapOSError wraps file system errors with the store's sentinels.
func mapOSError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", ErrExists, err)
	}
	return err
}
