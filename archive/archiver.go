package archive

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"casearchiver/fetch"
	"casearchiver/store"
)

// ErrNotFound reports an unknown incident, version or object in the archive.
var ErrNotFound = errors.New("archive: not found")

// Tenant is what the archiver needs from the tenant API (fetch.Client).
type Tenant interface {
	Product() fetch.Product
	Host() string
	GetIncident(ctx context.Context, id string) (fetch.Incident, error)
	GetExtraData(ctx context.Context, incidentID string) (fetch.ExtraData, error)
	GetEntries(ctx context.Context, investigationID string) (fetch.Entries, error)
	GetContext(ctx context.Context, investigationID string) (json.RawMessage, error)
	Download(ctx context.Context, entryID string, fn func(fetch.FileMeta, io.Reader) error) error
	GetRiskyUsers(ctx context.Context) (fetch.RiskyUsers, error)
}

// Store is what the archiver needs from the archive store (store.Store).
type Store interface {
	Create(ctx context.Context, key string, r io.Reader, o store.WriteOptions) (store.Written, error)
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (store.Object, error)
	List(ctx context.Context, prefix, delimiter string) iter.Seq2[store.Object, error]
}

// Config tunes the archiver.
type Config struct {
	// Concurrency bounds the investigations and files one job moves at a time (default 8). The
	// tenant client's own concurrency cap and rate limits bound all jobs together.
	Concurrency int
	// ToolVersion is recorded in every manifest.
	ToolVersion string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Archiver pulls a whole case from the tenant into the store.
type Archiver struct {
	logger *slog.Logger
	tenant Tenant
	store  Store
	cfg    Config
}

// New returns an Archiver.
func New(logger *slog.Logger, tenant Tenant, st Store, cfg Config) *Archiver {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ToolVersion == "" {
		cfg.ToolVersion = "dev"
	}
	return &Archiver{logger: logger, tenant: tenant, store: st, cfg: cfg}
}

// Retryable reports whether a failed archive may succeed when run again: upstream and store outages
// are, refusals (unknown incident, bad credentials, permission, retention) are not.
func Retryable(err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, fetch.ErrNotFound), errors.Is(err, fetch.ErrUnauthorized), errors.Is(err, fetch.ErrForbidden),
		errors.Is(err, store.ErrPermission), errors.Is(err, store.ErrRetention), errors.Is(err, store.ErrInvalidKey),
		errors.Is(err, store.ErrExists):
		return false
	}
	return true
}

func incidentPrefix(incidentID string) string { return "incidents/" + incidentID + "/" }

// run is the state of one archive in progress.
type run struct {
	a        *Archiver
	req      Request
	base     string // incidents/<id>/<version>/
	closedAt time.Time
	progress *Progress

	mu         sync.Mutex
	objects    []ManifestObject
	incomplete []Incomplete
	bytes      int64
}

// Archive archives one incident as a new version and returns its summary. The manifest is written last
// and only when every object was written; any failure that survived the retries of fetch and store
// fails the archive and leaves no manifest, so the partial version is never reported as an archive.
func (a *Archiver) Archive(ctx context.Context, req Request, p *Progress) (Result, error) {
	if !ValidIncidentID(req.IncidentID) {
		return Result{}, fmt.Errorf("archive %q: %w: an incident id is 1 to 256 letters, digits, '_', '-' or '.'", req.IncidentID, store.ErrInvalidKey)
	}
	started := a.cfg.Now().UTC()
	inc, err := a.tenant.GetIncident(ctx, req.IncidentID)
	if err != nil {
		return Result{}, fmt.Errorf("archive %s: %w", req.IncidentID, err)
	}
	prev, err := a.latest(ctx, req.IncidentID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Result{}, fmt.Errorf("archive %s: %w", req.IncidentID, err)
	}
	if req.SkipIfCurrent() && prev != nil && !prev.Source.IncidentModified.Before(inc.Modified) {
		return Result{
			Version: prev.Version, ManifestPath: manifestPath(req.IncidentID, prev.Version), Skipped: true,
			SkipReason: "the newest complete archive is at least as recent as the incident's last modification",
			Objects:    len(prev.Objects), Bytes: prev.Source.Bytes,
		}, nil
	}

	version := newVersion(started)
	r := &run{a: a, req: req, base: incidentPrefix(req.IncidentID) + version + "/", progress: p, closedAt: req.ClosedAt}
	if r.closedAt.IsZero() {
		r.closedAt = inc.Resolved
	}
	m := Manifest{
		SchemaVersion: SchemaVersion, IncidentID: req.IncidentID, Version: version,
		Product: string(a.tenant.Product()), TenantHost: a.tenant.Host(),
		Trigger: Trigger{Reason: req.Reason, RequestedBy: req.RequestedBy, AlertID: req.AlertID,
			WebhookID: req.WebhookID, ClosedAt: req.ClosedAt},
		StartedAt: started, ToolVersion: a.cfg.ToolVersion,
		Source: Source{IncidentStatus: inc.Status, IncidentModified: inc.Modified},
	}
	if prev != nil {
		m.PreviousVersion = prev.Version
	}
	log := a.logger.With("incident_id", req.IncidentID, "version", version)
	log.InfoContext(ctx, "archive started", "reason", req.Reason)

	if err := r.put(ctx, "incident.json", inc.Raw); err != nil {
		return Result{}, r.fail(err)
	}
	investigations := []string{req.IncidentID}
	if a.tenant.Product() == fetch.XSIAM {
		extra, err := a.tenant.GetExtraData(ctx, req.IncidentID)
		if err != nil {
			return Result{}, r.fail(err)
		}
		if err := r.put(ctx, "extra_data.json", extra.Raw); err != nil {
			return Result{}, r.fail(err)
		}
		m.Source.AlertsReported, m.Source.AlertsArchived = max(extra.AlertsTotal, len(extra.Alerts)), len(extra.Alerts)
		m.Source.NetworkArtifacts, m.Source.FileArtifacts = extra.NetworkArtifacts, extra.FileArtifacts
		if extra.Truncated {
			r.note(Incomplete{Kind: KindAlertsTruncated, Path: "extra_data.json", Detail: fmt.Sprintf(
				"the tenant reports %d alerts but its API returns at most %d; %d alerts and their war rooms are not archived",
				extra.AlertsTotal, len(extra.Alerts), extra.AlertsTotal-len(extra.Alerts))})
		}
		investigations = investigations[:0]
		for _, al := range extra.Alerts {
			investigations = append(investigations, al.ID)
		}
	}

	invs := make([]InvestigationSource, len(investigations))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.cfg.Concurrency)
	for i, inv := range investigations {
		g.Go(func() error {
			src, err := r.investigation(gctx, inv)
			invs[i] = src
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return Result{}, r.fail(err)
	}
	m.Source.Investigations = invs
	for _, inv := range invs {
		m.Source.EntriesArchived += inv.Entries
		m.Source.FilesReferenced += inv.FilesReferenced
		m.Source.FilesStored += inv.FilesStored
	}

	m.Source.RiskyUsers = "not_applicable"
	if a.tenant.Product() == fetch.XSIAM {
		ru, err := a.tenant.GetRiskyUsers(ctx)
		if err != nil {
			return Result{}, r.fail(err)
		}
		m.Source.RiskyUsers = "module_disabled"
		if ru.Enabled {
			if err := r.put(ctx, "risky_users.json", ru.Raw); err != nil {
				return Result{}, r.fail(err)
			}
			m.Source.RiskyUsers, m.Source.RiskyUsersCount = "archived", ru.Count
		}
	}

	slices.SortFunc(r.objects, func(x, y ManifestObject) int { return strings.Compare(x.Path, y.Path) })
	m.Objects, m.Incomplete = r.objects, r.incomplete
	if m.Incomplete == nil {
		m.Incomplete = []Incomplete{}
	}
	for _, o := range m.Objects {
		if o.EntryID != "" {
			m.Source.FileBytes += o.Size
		}
	}
	m.Source.Objects, m.Source.Bytes = len(m.Objects), r.bytes
	m.Complete = len(m.Incomplete) == 0
	m.FinishedAt = a.cfg.Now().UTC()
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Result{}, r.fail(err)
	}
	if _, err := a.store.Create(ctx, r.base+"manifest.json", bytes.NewReader(body), r.options("application/json", nil)); err != nil {
		return Result{}, r.fail(err)
	}
	log.InfoContext(ctx, "archive complete", "objects", len(m.Objects), "bytes", r.bytes,
		"incomplete", len(m.Incomplete), "seconds", m.FinishedAt.Sub(started).Seconds())
	return Result{
		Version: version, ManifestPath: manifestPath(req.IncidentID, version),
		Objects: len(m.Objects), Bytes: r.bytes, Incomplete: m.Incomplete,
	}, nil
}

func manifestPath(incidentID, version string) string {
	return incidentPrefix(incidentID) + version + "/manifest.json"
}

func (r *run) fail(err error) error {
	r.a.logger.Warn("archive failed; no manifest written", "incident_id", r.req.IncidentID, "version", path.Base(r.base), "err", err)
	return fmt.Errorf("archive %s: %w", r.req.IncidentID, err)
}

func (r *run) note(in Incomplete) {
	r.mu.Lock()
	r.incomplete = append(r.incomplete, in)
	r.mu.Unlock()
}

func (r *run) options(contentType string, meta map[string]string) store.WriteOptions {
	md := map[string]string{"incident_id": r.req.IncidentID, "archive_version": path.Base(r.base)}
	for k, v := range meta {
		md[k] = v
	}
	return store.WriteOptions{ContentType: contentType, Metadata: md, CustomTime: r.closedAt}
}

// put writes one JSON document exactly as the tenant returned it.
func (r *run) put(ctx context.Context, rel string, doc json.RawMessage) error {
	if len(doc) == 0 {
		doc = json.RawMessage("null")
	}
	w, err := r.a.store.Create(ctx, r.base+rel, bytes.NewReader(doc), r.options("application/json", nil))
	if err != nil {
		return err
	}
	r.record(ManifestObject{Path: rel, ContentType: "application/json"}, w)
	return nil
}

func (r *run) record(o ManifestObject, w store.Written) {
	o.Size, o.SHA256, o.CRC32C = w.Size, w.SHA256, crcString(w.CRC32C)
	r.mu.Lock()
	r.objects = append(r.objects, o)
	r.bytes += w.Size
	r.mu.Unlock()
	r.progress.Add(w.Size)
}

func crcString(c uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], c)
	return base64.StdEncoding.EncodeToString(b[:])
}

// investigation archives one war room: every entry, the context, and every attached file.
func (r *run) investigation(ctx context.Context, inv string) (InvestigationSource, error) {
	src := InvestigationSource{ID: inv}
	dir := "investigations/" + SafeName(inv) + "/"
	entries, err := r.a.tenant.GetEntries(ctx, inv)
	if err != nil {
		return src, err
	}
	src.Entries, src.Pages = len(entries.Entries), entries.Pages
	if err := r.put(ctx, dir+"entries.json", entries.Raw); err != nil {
		return src, err
	}
	c, err := r.a.tenant.GetContext(ctx, inv)
	if err != nil {
		return src, err
	}
	if err := r.put(ctx, dir+"context.json", c); err != nil {
		return src, err
	}
	var files []fetch.Entry
	for _, e := range entries.Entries {
		if e.HasFile() {
			files = append(files, e)
		}
	}
	src.FilesReferenced = len(files)
	// Files get their own group: the job's group slot is held by this investigation, and adding work
	// to a full group from inside it could deadlock.
	fg, fctx := errgroup.WithContext(ctx)
	fg.SetLimit(max(1, r.a.cfg.Concurrency/2))
	var mu sync.Mutex
	for _, e := range files {
		fg.Go(func() error {
			ok, err := r.file(fctx, dir, e)
			if ok {
				mu.Lock()
				src.FilesStored++
				mu.Unlock()
			}
			return err
		})
	}
	return src, fg.Wait()
}

// file streams one attached file from the tenant into the store, byte-exact. A file the tenant no
// longer has is noted as incomplete; any other failure fails the archive.
func (r *run) file(ctx context.Context, dir string, e fetch.Entry) (bool, error) {
	name := e.File
	if name == "" {
		name = e.FileID
	}
	rel := dir + "files/" + SafeName(e.ID) + "/" + SafeName(name)
	var w store.Written
	var meta fetch.FileMeta
	err := r.a.tenant.Download(ctx, e.ID, func(fm fetch.FileMeta, body io.Reader) error {
		meta = fm
		var err error
		w, err = r.a.store.Create(ctx, r.base+rel, body, r.options("application/octet-stream", map[string]string{
			"entry_id": e.ID, "original_name": url.PathEscape(name), "tenant_content_type": fm.ContentType,
		}))
		return err
	})
	switch {
	case errors.Is(err, fetch.ErrNotFound):
		r.note(Incomplete{Kind: KindFileMissing, Path: rel, Detail: fmt.Sprintf(
			"entry %s references file %q but the tenant no longer has it (404)", e.ID, name)})
		return false, nil
	case err != nil:
		return false, fmt.Errorf("file of entry %s: %w", e.ID, err)
	}
	r.record(ManifestObject{Path: rel, ContentType: "application/octet-stream", EntryID: e.ID,
		OriginalName: name, TenantSHA256: e.FileSHA256}, w)
	switch {
	case meta.Size >= 0 && meta.Size != w.Size:
		r.note(Incomplete{Kind: KindFileMismatch, Path: rel, Detail: fmt.Sprintf(
			"the tenant announced %d bytes but sent %d", meta.Size, w.Size)})
	case e.FileSHA256 != "" && !equalFoldHex(e.FileSHA256, w.SHA256):
		r.note(Incomplete{Kind: KindFileMismatch, Path: rel, Detail: fmt.Sprintf(
			"the entry's file metadata declares SHA-256 %s but the bytes stored hash to %s", e.FileSHA256, w.SHA256)})
	}
	return true, nil
}

func equalFoldHex(a, b string) bool { return len(a) == len(b) && bytes.EqualFold([]byte(a), []byte(b)) }
