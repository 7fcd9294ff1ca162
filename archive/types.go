// Package archive pulls a whole case from the tenant and writes it to the archive store, with a
// manifest written last that reconciles what the source said against what was stored.
package archive

import (
	"sync/atomic"
	"time"
)

// Request asks for one incident to be archived. It is what the trigger route, the job queue and the
// backfill hand to the archiver; it is small enough to travel in a Cloud Task.
type Request struct {
	IncidentID  string    `json:"incident_id"`
	Reason      string    `json:"reason"`
	AlertID     string    `json:"alert_id,omitempty"`
	ClosedAt    time.Time `json:"closed_at,omitzero"`
	RequestedBy string    `json:"requested_by,omitempty"`
	WebhookID   string    `json:"webhook_id,omitempty"`
	// Force archives even when the newest complete archive is at least as recent as the incident's
	// modification time. Manual triggers always archive; the close hook and backfill skip by default.
	Force bool `json:"force,omitempty"`
}

// Reasons that always archive, whatever the skip rule says.
const (
	ReasonManual         = "manual"
	ReasonIncidentClosed = "incident_closed"
	ReasonBackfill       = "backfill"
)

// SkipIfCurrent reports whether the skip rule applies to this request.
func (r Request) SkipIfCurrent() bool { return !r.Force && r.Reason != ReasonManual }

// Incomplete names one thing that could not be fully archived and why.
type Incomplete struct {
	Kind   string `json:"kind"`
	Path   string `json:"path,omitempty"`
	Detail string `json:"detail"`
}

// Result summarises a finished archive.
type Result struct {
	Version      string       `json:"version"`
	ManifestPath string       `json:"manifest_path"`
	Skipped      bool         `json:"skipped,omitempty"`
	SkipReason   string       `json:"skip_reason,omitempty"`
	Objects      int          `json:"objects"`
	Bytes        int64        `json:"bytes"`
	Incomplete   []Incomplete `json:"incomplete,omitempty"`
}

// Progress counts objects and bytes written while an archive runs. Safe for concurrent use.
type Progress struct {
	objects atomic.Int64
	bytes   atomic.Int64
}

// Add records one more object of n bytes.
func (p *Progress) Add(n int64) {
	if p == nil {
		return
	}
	p.objects.Add(1)
	p.bytes.Add(n)
}

// Snapshot returns the objects and bytes written so far.
func (p *Progress) Snapshot() (objects, bytes int64) {
	if p == nil {
		return 0, 0
	}
	return p.objects.Load(), p.bytes.Load()
}
