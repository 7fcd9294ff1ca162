package jobs

// Fuzz target for the Cloud Tasks body decoder (issue 9, hostile input). The task route is
// authenticated by OIDC, but its body is still parsed: whatever it holds, Execute never panics, never
// runs an archive for an incident id that could shape an object key, and writes records only under
// jobs/<job_id>/ for a valid job id.

import (
	"context"
	"strings"
	"testing"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"github.com/googleapis/gax-go/v2"

	"casearchiver/archive"
)

// noTasks is a TaskCreator for tests that only Execute.
type noTasks struct{}

func (noTasks) CreateTask(context.Context, *cloudtaskspb.CreateTaskRequest, ...gax.CallOption) (*cloudtaskspb.Task, error) {
	return &cloudtaskspb.Task{}, nil
}

func FuzzTaskBody(f *testing.F) {
	for _, s := range []string{
		`{"job_id":"20261204T153000Z-0000abcd","created_at":"2026-12-04T15:30:00Z","request":{"incident_id":"8","reason":"manual"}}`,
		`{"job_id":"20261204T153000Z-0000abcd","request":{"incident_id":"../../jobs/x"}}`,
		`{"job_id":"20261204T153000Z-0000abcd","request":{"incident_id":"5/20261204T000000.000Z-00000000"}}`,
		`{"job_id":"../../x","request":{"incident_id":"8"}}`, `{"job_id":"20261204T153000Z-0000abcd","request":{"incident_id":""}}`,
		`{"job_id":"20261204T153000Z-0000abcd","request":{"incident_id":"8","closed_at":"never"}}`,
		`{}`, `[]`, `null`, ``, `{"job_id":1}`, "{\"job_id\":\"20261204T153000Z-0000abcd\",\"request\":{\"incident_id\":\"\xff\"}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rs, r := newMemStore(), okRunner()
		q, err := NewCloudTasks(CloudTasksConfig{Client: noTasks{}, Queue: testQueue, TargetURL: testTarget, ServiceAccount: testSA,
			Store: rs, Runner: r, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		_ = q.Execute(t.Context(), body)
		for id := range r.callCount() {
			if !archive.ValidIncidentID(id) {
				t.Fatalf("archive ran for incident id %q", id)
			}
		}
		rs.mu.Lock()
		defer rs.mu.Unlock()
		for k := range rs.objects {
			id, _, ok := strings.Cut(strings.TrimPrefix(k, jobsPrefix), "/")
			if !strings.HasPrefix(k, jobsPrefix) || !ok || !ValidID(id) {
				t.Fatalf("record %q outside jobs/<job_id>/", k)
			}
		}
	})
}

func TestSubmitRefusesUnsafeIncidentIDs(t *testing.T) {
	t.Parallel()
	rs := newMemStore()
	q := newTestLocal(t, rs, okRunner(), nil)
	for _, id := range []string{"../x", "a/b", "..", ".x", "1\x00", "é", "1 2"} {
		if _, _, err := q.Submit(t.Context(), archive.Request{IncidentID: id, Reason: archive.ReasonBackfill}); err == nil {
			t.Errorf("Submit(%q) accepted", id)
		}
	}
	if rs.creates != 0 {
		t.Errorf("%d records written for refused submits", rs.creates)
	}
}
