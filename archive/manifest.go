package archive

import (
	"time"
)

// SchemaVersion of manifest.json. Bump it on any incompatible change.
const SchemaVersion = 1

// Manifest is written last into every archive version. It lists every object with its checksums and
// reconciles what the tenant said against what was stored. A version without a manifest is incomplete
// by definition and is never reported as an archive.
type Manifest struct {
	SchemaVersion   int              `json:"schema_version"`
	IncidentID      string           `json:"incident_id"`
	Version         string           `json:"version"`
	Product         string           `json:"product"`
	TenantHost      string           `json:"tenant_host"`
	Trigger         Trigger          `json:"trigger"`
	StartedAt       time.Time        `json:"started_at"`
	FinishedAt      time.Time        `json:"finished_at"`
	ToolVersion     string           `json:"tool_version"`
	PreviousVersion string           `json:"previous_version,omitempty"`
	Complete        bool             `json:"complete"`
	Incomplete      []Incomplete     `json:"incomplete"`
	Source          Source           `json:"source"`
	Objects         []ManifestObject `json:"objects"`
}

// Trigger records why and by whom the archive was made.
type Trigger struct {
	Reason      string    `json:"reason"`
	RequestedBy string    `json:"requested_by,omitempty"`
	AlertID     string    `json:"alert_id,omitempty"`
	WebhookID   string    `json:"webhook_id,omitempty"`
	ClosedAt    time.Time `json:"closed_at,omitzero"`
}

// ManifestObject is one stored object. Path is relative to the version folder.
type ManifestObject struct {
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	CRC32C      string `json:"crc32c"` // base64 of the big-endian CRC32C, as GCS reports it
	ContentType string `json:"content_type"`
	// Files only: the war-room entry and the name the tenant gave the file.
	EntryID      string `json:"entry_id,omitempty"`
	OriginalName string `json:"original_name,omitempty"`
	// TenantSHA256 is the SHA-256 the tenant's file metadata declared, when it declared one.
	TenantSHA256 string `json:"tenant_sha256,omitempty"`
}

// Source reconciles what the tenant reported with what was archived.
type Source struct {
	IncidentStatus   string                `json:"incident_status"`
	IncidentModified time.Time             `json:"incident_modified"`
	AlertsReported   int                   `json:"alerts_reported"`
	AlertsArchived   int                   `json:"alerts_archived"`
	NetworkArtifacts int                   `json:"network_artifacts"`
	FileArtifacts    int                   `json:"file_artifacts"`
	Investigations   []InvestigationSource `json:"investigations"`
	EntriesArchived  int                   `json:"entries_archived"`
	FilesReferenced  int                   `json:"files_referenced"`
	FilesStored      int                   `json:"files_stored"`
	FileBytes        int64                 `json:"file_bytes"`
	Objects          int                   `json:"objects"`
	Bytes            int64                 `json:"bytes"`
	// RiskyUsers is "archived", "module_disabled" or "not_applicable" (XSOAR has no identity module).
	RiskyUsers      string `json:"risky_users"`
	RiskyUsersCount int    `json:"risky_users_count"`
}

// InvestigationSource counts one war room.
type InvestigationSource struct {
	ID              string `json:"id"`
	Entries         int    `json:"entries"`
	Pages           int    `json:"pages"`
	FilesReferenced int    `json:"files_referenced"`
	FilesStored     int    `json:"files_stored"`
}

// Kinds of Incomplete.
const (
	KindAlertsTruncated = "alerts_truncated"
	KindFileMissing     = "file_missing"
	KindFileMismatch    = "file_checksum_mismatch"
)

// Version summarises one archive version of an incident.
type Version struct {
	Version      string       `json:"version"`
	Complete     bool         `json:"complete"`
	ManifestPath string       `json:"manifest_path,omitempty"`
	StartedAt    time.Time    `json:"started_at,omitzero"`
	FinishedAt   time.Time    `json:"finished_at,omitzero"`
	Objects      int          `json:"objects"`
	Bytes        int64        `json:"bytes"`
	Reason       string       `json:"reason,omitempty"`
	Incomplete   []Incomplete `json:"incomplete,omitempty"`
}

// ObjectInfo describes an archived object served back to a reader.
type ObjectInfo struct {
	Size        int64
	ContentType string
	SHA256      string
}

// VerifyReport is the result of re-reading every object of a version.
type VerifyReport struct {
	IncidentID string    `json:"incident_id"`
	Version    string    `json:"version"`
	Status     string    `json:"status"` // ok | failed
	Checked    int       `json:"checked"`
	OK         int       `json:"ok"`
	Missing    []string  `json:"missing"`
	Mismatched []string  `json:"mismatched"`
	Unexpected []string  `json:"unexpected"`
	Bytes      int64     `json:"bytes"`
	VerifiedAt time.Time `json:"verified_at"`
}

// Snapshot is the result of a risky-user snapshot.
type Snapshot struct {
	Path         string    `json:"path"`
	ManifestPath string    `json:"manifest_path"`
	Enabled      bool      `json:"enabled"`
	Users        int       `json:"users"`
	SHA256       string    `json:"sha256"`
	Size         int64     `json:"size"`
	TakenAt      time.Time `json:"taken_at"`
}
