package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"time"

	"casearchiver/store"
)

// maxManifestBytes bounds a manifest read back from the store.
const maxManifestBytes = 64 << 20

// versionNames lists the version folders of an incident, newest first.
func (a *Archiver) versionNames(ctx context.Context, incidentID string) ([]string, error) {
	var names []string
	for o, err := range a.store.List(ctx, incidentPrefix(incidentID), "/") {
		if err != nil {
			return nil, fmt.Errorf("archive: list versions of %s: %w", incidentID, err)
		}
		if v := strings.TrimSuffix(strings.TrimPrefix(o.Key, incidentPrefix(incidentID)), "/"); o.IsPrefix && ValidVersion(v) {
			names = append(names, v)
		}
	}
	slices.Sort(names)
	slices.Reverse(names)
	return names, nil
}

// Versions lists the archive versions of an incident, newest first; complete ones only unless
// includeIncomplete. A version is complete when its manifest exists.
func (a *Archiver) Versions(ctx context.Context, incidentID string, includeIncomplete bool) ([]Version, error) {
	names, err := a.versionNames(ctx, incidentID)
	if err != nil {
		return nil, err
	}
	out := []Version{}
	for _, v := range names {
		m, err := a.readManifest(ctx, incidentID, v)
		switch {
		case errors.Is(err, ErrNotFound):
			if includeIncomplete {
				out = append(out, Version{Version: v})
			}
		case err != nil:
			return nil, err
		default:
			out = append(out, Version{
				Version: v, Complete: true, ManifestPath: manifestPath(incidentID, v),
				StartedAt: m.StartedAt, FinishedAt: m.FinishedAt, Objects: len(m.Objects), Bytes: m.Source.Bytes,
				Reason: m.Trigger.Reason, Incomplete: m.Incomplete,
			})
		}
	}
	return out, nil
}

// latest returns the manifest of the newest complete version, or ErrNotFound. It reads manifests
// newest first and stops at the first one.
func (a *Archiver) latest(ctx context.Context, incidentID string) (*Manifest, error) {
	names, err := a.versionNames(ctx, incidentID)
	if err != nil {
		return nil, err
	}
	for _, v := range names {
		m, err := a.readManifest(ctx, incidentID, v)
		if !errors.Is(err, ErrNotFound) {
			return m, err
		}
	}
	return nil, fmt.Errorf("archive: incident %s has no complete archive: %w", incidentID, ErrNotFound)
}

// IsCurrent reports whether the newest complete archive of the incident is at least as recent as
// modified, the incident's last modification time.
func (a *Archiver) IsCurrent(ctx context.Context, incidentID string, modified time.Time) (bool, error) {
	m, err := a.latest(ctx, incidentID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !m.Source.IncidentModified.Before(modified), nil
}

func (a *Archiver) resolve(ctx context.Context, incidentID, version string) (string, error) {
	if version != Latest {
		return version, nil
	}
	m, err := a.latest(ctx, incidentID)
	if err != nil {
		return "", err
	}
	return m.Version, nil
}

func (a *Archiver) readManifest(ctx context.Context, incidentID, version string) (*Manifest, error) {
	raw, err := a.rawManifest(ctx, incidentID, version)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("archive: manifest of %s/%s is not valid JSON: %w", incidentID, version, err)
	}
	return &m, nil
}

func (a *Archiver) rawManifest(ctx context.Context, incidentID, version string) ([]byte, error) {
	rc, err := a.store.Open(ctx, manifestPath(incidentID, version))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("archive: %s/%s has no manifest: %w", incidentID, version, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("archive: read manifest %s/%s: %w", incidentID, version, err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes))
	if err != nil {
		return nil, fmt.Errorf("archive: read manifest %s/%s: %w", incidentID, version, err)
	}
	return raw, nil
}

// Manifest returns the manifest of a version (or of the latest complete one) exactly as stored.
func (a *Archiver) Manifest(ctx context.Context, incidentID, version string) (json.RawMessage, error) {
	v, err := a.resolve(ctx, incidentID, version)
	if err != nil {
		return nil, err
	}
	return a.rawManifest(ctx, incidentID, v)
}

// OpenObject streams one object of a complete version. Only objects the manifest lists (and the
// manifest itself) are served.
func (a *Archiver) OpenObject(ctx context.Context, incidentID, version, rel string) (io.ReadCloser, ObjectInfo, error) {
	v, err := a.resolve(ctx, incidentID, version)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	m, err := a.readManifest(ctx, incidentID, v)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	info := ObjectInfo{ContentType: "application/json"}
	if rel != "manifest.json" {
		i := slices.IndexFunc(m.Objects, func(o ManifestObject) bool { return o.Path == rel })
		if i < 0 {
			return nil, ObjectInfo{}, fmt.Errorf("archive: %s/%s has no object %q: %w", incidentID, v, rel, ErrNotFound)
		}
		o := m.Objects[i]
		info = ObjectInfo{Size: o.Size, ContentType: o.ContentType, SHA256: o.SHA256}
	}
	key := incidentPrefix(incidentID) + v + "/" + rel
	if rel == "manifest.json" {
		st, err := a.store.Stat(ctx, key)
		if err != nil {
			return nil, ObjectInfo{}, err
		}
		info.Size = st.Size
	}
	rc, err := a.store.Open(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ObjectInfo{}, fmt.Errorf("archive: object %q of %s/%s is missing from the store: %w", rel, incidentID, v, ErrNotFound)
	}
	return rc, info, err
}

// Verify re-reads every object of a version, recomputes SHA-256 and CRC32C, and reports objects that
// are ok, missing, mismatched (size or checksum) or unexpected (stored but not in the manifest).
func (a *Archiver) Verify(ctx context.Context, incidentID, version string) (VerifyReport, error) {
	v, err := a.resolve(ctx, incidentID, version)
	if err != nil {
		return VerifyReport{}, err
	}
	m, err := a.readManifest(ctx, incidentID, v)
	if err != nil {
		return VerifyReport{}, err
	}
	rep := VerifyReport{IncidentID: incidentID, Version: v, Missing: []string{}, Mismatched: []string{}, Unexpected: []string{}}
	base := incidentPrefix(incidentID) + v + "/"
	listed := map[string]bool{"manifest.json": true}
	for _, o := range m.Objects {
		listed[o.Path] = true
	}
	for o, err := range a.store.List(ctx, base, "") {
		if err != nil {
			return VerifyReport{}, fmt.Errorf("archive: verify %s/%s: %w", incidentID, v, err)
		}
		if rel := strings.TrimPrefix(o.Key, base); !listed[rel] {
			rep.Unexpected = append(rep.Unexpected, rel)
		}
	}
	for _, o := range m.Objects {
		rep.Checked++
		n, sum, crc, err := a.digest(ctx, base+o.Path)
		switch {
		case errors.Is(err, store.ErrNotFound):
			rep.Missing = append(rep.Missing, o.Path)
		case errors.Is(err, store.ErrIntegrity):
			rep.Mismatched = append(rep.Mismatched, o.Path) // the store's own checksum caught it first
		case err != nil:
			return VerifyReport{}, fmt.Errorf("archive: verify %s/%s: %w", incidentID, v, err)
		case n != o.Size || sum != o.SHA256 || crcString(crc) != o.CRC32C:
			rep.Mismatched = append(rep.Mismatched, o.Path)
		default:
			rep.OK++
			rep.Bytes += n
		}
	}
	rep.Status = "ok"
	if len(rep.Missing)+len(rep.Mismatched)+len(rep.Unexpected) > 0 {
		rep.Status = "failed"
	}
	rep.VerifiedAt = a.cfg.Now().UTC()
	return rep, nil
}

func (a *Archiver) digest(ctx context.Context, key string) (int64, string, uint32, error) {
	rc, err := a.store.Open(ctx, key)
	if err != nil {
		return 0, "", 0, err
	}
	defer rc.Close()
	sh, crc := sha256.New(), crc32.New(crc32.MakeTable(crc32.Castagnoli))
	n, err := io.Copy(io.MultiWriter(sh, crc), rc)
	if err != nil {
		return 0, "", 0, err
	}
	return n, hex.EncodeToString(sh.Sum(nil)), crc.Sum32(), nil
}

// SnapshotRiskyUsers stores the tenant's risky-user cards under risky-users/<timestamp>.json with a
// small manifest beside it.
func (a *Archiver) SnapshotRiskyUsers(ctx context.Context, requestedBy string) (Snapshot, error) {
	ru, err := a.tenant.GetRiskyUsers(ctx)
	if err != nil {
		return Snapshot{}, fmt.Errorf("archive: risky users: %w", err)
	}
	now := a.cfg.Now().UTC()
	name := "risky-users/" + newVersion(now)
	snap := Snapshot{Path: name + ".json", ManifestPath: name + ".manifest.json", Enabled: ru.Enabled, Users: ru.Count, TakenAt: now}
	doc := ru.Raw
	if !ru.Enabled {
		doc = json.RawMessage(`{"enabled":false,"reason":"the identity threat module is not enabled on the tenant"}`)
	}
	w, err := a.store.Create(ctx, snap.Path, bytes.NewReader(doc), store.WriteOptions{ContentType: "application/json"})
	if err != nil {
		return Snapshot{}, fmt.Errorf("archive: risky users: %w", err)
	}
	snap.SHA256, snap.Size = w.SHA256, w.Size
	body, err := json.MarshalIndent(struct {
		Snapshot
		SchemaVersion int            `json:"schema_version"`
		TenantHost    string         `json:"tenant_host"`
		RequestedBy   string         `json:"requested_by"`
		ToolVersion   string         `json:"tool_version"`
		Object        ManifestObject `json:"object"`
	}{snap, SchemaVersion, a.tenant.Host(), requestedBy, a.cfg.ToolVersion, ManifestObject{
		Path: snap.Path, Size: w.Size, SHA256: w.SHA256, CRC32C: crcString(w.CRC32C), ContentType: "application/json"}}, "", "  ")
	if err != nil {
		return Snapshot{}, fmt.Errorf("archive: risky users manifest: %w", err)
	}
	if _, err := a.store.Create(ctx, snap.ManifestPath, bytes.NewReader(body), store.WriteOptions{ContentType: "application/json"}); err != nil {
		return Snapshot{}, fmt.Errorf("archive: risky users manifest: %w", err)
	}
	return snap, nil
}
