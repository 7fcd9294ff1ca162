package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"casearchiver/archive"
	"casearchiver/store"
)

// fakeTasks is an in-process Cloud Tasks server: CreateTask keeps tasks by name and answers
// ALREADY_EXISTS for a name it has seen, as the service does within its dedup window.
type fakeTasks struct {
	cloudtaskspb.UnimplementedCloudTasksServer
	mu    sync.Mutex
	tasks []*cloudtaskspb.CreateTaskRequest
	names map[string]bool
	fail  error // returned by every CreateTask when set
}

func (f *fakeTasks) CreateTask(_ context.Context, req *cloudtaskspb.CreateTaskRequest) (*cloudtaskspb.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	if f.names[req.GetTask().GetName()] {
		return nil, status.Errorf(codes.AlreadyExists, "Requested entity already exists")
	}
	f.names[req.GetTask().GetName()] = true
	f.tasks = append(f.tasks, proto.Clone(req).(*cloudtaskspb.CreateTaskRequest))
	t := proto.Clone(req.GetTask()).(*cloudtaskspb.Task)
	return t, nil
}

func (f *fakeTasks) created() []*cloudtaskspb.CreateTaskRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*cloudtaskspb.CreateTaskRequest(nil), f.tasks...)
}

// startFakeTasks serves a fakeTasks on 127.0.0.1 and returns a real client connected to it.
func startFakeTasks(t *testing.T) (*fakeTasks, *cloudtasks.Client) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTasks{names: map[string]bool{}}
	srv := grpc.NewServer()
	cloudtaskspb.RegisterCloudTasksServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	c, err := cloudtasks.NewClient(t.Context(),
		option.WithEndpoint(lis.Addr().String()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return f, c
}

const (
	testQueue  = "projects/p1/locations/europe-west1/queues/archive"
	testTarget = "https://archiver-abc-ew.a.run.app/internal/tasks/archive"
	testSA     = "tasks@p1.iam.gserviceaccount.com"
)

func newTestCloudTasks(t *testing.T, c TaskCreator, rs RecordStore, r Runner, mod func(*CloudTasksConfig)) *CloudTasks {
	t.Helper()
	cfg := CloudTasksConfig{
		Client: c, Queue: testQueue, TargetURL: testTarget, ServiceAccount: testSA,
		Store: rs, Runner: r, Logger: testLogger(t), PollInterval: 5 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	q, err := NewCloudTasks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestCloudTasksSubmit(t *testing.T) {
	t.Parallel()
	fake, client := startFakeTasks(t)
	rs := newMemStore()
	q := newTestCloudTasks(t, client, rs, okRunner(), func(c *CloudTasksConfig) {
		c.Audience = "https://archiver.example.com"
	})
	closedAt := time.Date(2026, 12, 4, 15, 30, 7, 123e6, time.UTC)
	req := archive.Request{IncidentID: "77", Reason: archive.ReasonIncidentClosed, AlertID: "a1", ClosedAt: closedAt}
	j, created, err := q.Submit(t.Context(), req)
	if err != nil || !created {
		t.Fatalf("Submit = %v, %v", created, err)
	}
	if !strings.HasPrefix(j.ID, "20261204T153000Z-") || !ValidID(j.ID) || j.State != StateQueued {
		t.Errorf("job = %+v; want an id from the close time (minute) and state queued", j)
	}

	tasks := fake.created()
	if len(tasks) != 1 {
		t.Fatalf("%d tasks created, want 1", len(tasks))
	}
	got := tasks[0]
	if got.GetParent() != testQueue {
		t.Errorf("parent = %q, want %q", got.GetParent(), testQueue)
	}
	name := got.GetTask().GetName()
	taskID, ok := strings.CutPrefix(name, testQueue+"/tasks/")
	if !ok || !strings.HasSuffix(taskID, "-"+j.ID) || len(taskID) != 16+1+len(j.ID) {
		t.Errorf("task name = %q; want %s/tasks/<16 hex>-%s", name, testQueue, j.ID)
	}
	hr := got.GetTask().GetHttpRequest()
	if hr.GetHttpMethod() != cloudtaskspb.HttpMethod_POST || hr.GetUrl() != testTarget || hr.GetHeaders()["Content-Type"] != "application/json" {
		t.Errorf("http request = %s %s %v", hr.GetHttpMethod(), hr.GetUrl(), hr.GetHeaders())
	}
	if oidc := hr.GetOidcToken(); oidc.GetServiceAccountEmail() != testSA || oidc.GetAudience() != "https://archiver.example.com" {
		t.Errorf("oidc = %v; want %s for audience https://archiver.example.com", oidc, testSA)
	}
	if d := got.GetTask().GetDispatchDeadline().AsDuration(); d != 30*time.Minute {
		t.Errorf("dispatch deadline = %v, want 30m", d)
	}
	var body taskBody
	if err := json.Unmarshal(hr.GetBody(), &body); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(taskBody{JobID: j.ID, CreatedAt: j.CreatedAt, Request: req}, body); diff != "" {
		t.Errorf("task body (-want +got):\n%s", diff)
	}
	// The request is recorded so that any instance answers Get.
	if g, err := q.Get(t.Context(), j.ID); err != nil || g.State != StateQueued || g.Request.AlertID != "a1" {
		t.Errorf("Get = %+v, %v", g, err)
	}

	// The same close seen again (another alert of the case, a few seconds later in the same
	// minute) is deduplicated by Cloud Tasks and coalesced.
	dup := req
	dup.AlertID, dup.ClosedAt = "a2", closedAt.Add(20*time.Second)
	j2, created, err := q.Submit(t.Context(), dup)
	if err != nil || created || j2.ID != j.ID {
		t.Errorf("duplicate close = %+v, created %v, %v; want job %s coalesced", j2, created, err, j.ID)
	}
	if n := len(fake.created()); n != 1 {
		t.Errorf("%d tasks after duplicate, want 1", n)
	}
	// A later close (reopened and closed again) is a new job.
	later := req
	later.ClosedAt = closedAt.Add(time.Hour)
	if j3, created, err := q.Submit(t.Context(), later); err != nil || !created || j3.ID == j.ID {
		t.Errorf("later close = %+v, created %v, %v; want a new job", j3, created, err)
	}
	// Manual and backfill requests always get a unique task.
	for _, reason := range []string{archive.ReasonManual, archive.ReasonManual, archive.ReasonBackfill} {
		if _, created, err := q.Submit(t.Context(), archive.Request{IncidentID: "77", Reason: reason}); err != nil || !created {
			t.Errorf("Submit %s = %v, %v; want created", reason, created, err)
		}
	}
	if n := len(fake.created()); n != 5 {
		t.Errorf("%d tasks, want 5", n)
	}
}

func TestCloudTasksSubmitErrors(t *testing.T) {
	t.Parallel()
	fake, client := startFakeTasks(t)
	fake.fail = status.Error(codes.PermissionDenied, "iam.serviceAccounts.actAs denied")
	q := newTestCloudTasks(t, client, newMemStore(), okRunner(), nil)
	if _, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "1", Reason: archive.ReasonManual}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Submit with CreateTask failing: err = %v, want PermissionDenied", err)
	}
	if _, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "1", RequestedBy: strings.Repeat("x", 70<<10)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Submit of an oversized request: err = %v, want ErrInvalid", err)
	}
	if _, err := NewCloudTasks(CloudTasksConfig{Client: client, Queue: "archive", TargetURL: "x", Store: newMemStore(), Runner: okRunner(), Logger: testLogger(t)}); err == nil ||
		!strings.Contains(err.Error(), "missing ServiceAccount") || !strings.Contains(err.Error(), "queue \"archive\"") || !strings.Contains(err.Error(), "target URL") {
		t.Errorf("NewCloudTasks with bad config: err = %v; want every problem listed", err)
	}
}

func TestCloudTasksExecute(t *testing.T) {
	t.Parallel()
	fake, client := startFakeTasks(t)
	rs := newMemStore()
	r := okRunner()
	q := newTestCloudTasks(t, client, rs, r, nil)
	j, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "8", Reason: archive.ReasonManual})
	if err != nil {
		t.Fatal(err)
	}
	body := fake.created()[0].GetTask().GetHttpRequest().GetBody()

	// Wait from another "instance" sees the job finish.
	waited := make(chan Job, 1)
	go func() {
		w, _ := newTestCloudTasks(t, client, rs, r, nil).Wait(waitCtx(t, 5*time.Second), j.ID)
		waited <- w
	}()
	if err := q.Execute(t.Context(), body); err != nil {
		t.Fatalf("Execute = %v", err)
	}
	got := <-waited
	if got.State != StateSucceeded || got.Attempts != 1 || got.Result == nil || got.Progress.Objects != 1 {
		t.Errorf("job after Execute = %+v", got)
	}
	// A second delivery of the same task does nothing.
	if err := q.Execute(t.Context(), body); err != nil {
		t.Fatalf("second Execute = %v", err)
	}
	if diff := cmp.Diff(map[string]int{"8": 1}, r.callCount()); diff != "" {
		t.Errorf("runner calls (-want +got):\n%s", diff)
	}
}

// TestCloudTasksExecuteRetrySemantics delivers the same task repeatedly, as Cloud Tasks does while
// Execute returns a retryable error, and checks what is retried and what is recorded.
func TestCloudTasksExecuteRetrySemantics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		errs        []error // what the runner returns, one per delivery; nil = success
		wantRetry   []bool  // IsRetryable(Execute error) per delivery; false with a nil error means success
		wantState   State
		wantAttempt int
		wantError   string
	}{
		{
			name: "retryable then success", errs: []error{errTransient, errTransient, nil},
			wantRetry: []bool{true, true, false}, wantState: StateSucceeded, wantAttempt: 3,
		},
		{
			name: "retryable until MaxAttempts", errs: []error{errTransient, errTransient, errTransient},
			wantRetry: []bool{true, true, false}, wantState: StateFailed, wantAttempt: 3, wantError: "503 service unavailable",
		},
		{
			name: "final at once", errs: []error{errors.New("incident not found")},
			wantRetry: []bool{false}, wantState: StateFailed, wantAttempt: 1, wantError: "incident not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, client := startFakeTasks(t)
			rs := newMemStore()
			var mu sync.Mutex
			call := 0
			r := newRunner(func(ctx context.Context, req archive.Request, p *archive.Progress) (archive.Result, error) {
				mu.Lock()
				defer mu.Unlock()
				err := tt.errs[call]
				call++
				if err != nil {
					return archive.Result{}, fmt.Errorf("archive: %w", err)
				}
				return archive.Result{Version: "v9"}, nil
			})
			q := newTestCloudTasks(t, client, rs, r, func(c *CloudTasksConfig) {
				c.MaxAttempts = 3
				c.Retryable = func(err error) bool { return errors.Is(err, errTransient) }
			})
			j, _, err := q.Submit(t.Context(), archive.Request{IncidentID: "3", Reason: archive.ReasonIncidentClosed, ClosedAt: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			body := fake.created()[0].GetTask().GetHttpRequest().GetBody()
			for i, want := range tt.wantRetry {
				err := q.Execute(t.Context(), body)
				if IsRetryable(err) != want {
					t.Fatalf("delivery %d: Execute = %v, IsRetryable %v, want %v", i+1, err, IsRetryable(err), want)
				}
				if !want && (err == nil) != (tt.wantState == StateSucceeded) {
					t.Fatalf("delivery %d: Execute = %v for a job ending %s", i+1, err, tt.wantState)
				}
				if want {
					if _, ok := readResult(t, rs, j.ID); ok {
						t.Fatalf("delivery %d: result recorded before the last attempt", i+1)
					}
					if g, err := q.Get(t.Context(), j.ID); err != nil || g.State != StateRunning || g.Attempts != i+1 {
						t.Errorf("delivery %d: Get between attempts = %+v, %v; want running, %d attempts", i+1, g, err, i+1)
					}
				}
			}
			rec, ok := readResult(t, rs, j.ID)
			if !ok || rec.State != tt.wantState || rec.Attempts != tt.wantAttempt || !strings.HasSuffix(rec.Error, tt.wantError) {
				t.Errorf("result.json = %+v (present %v); want %s after %d attempts, error %q", rec, ok, tt.wantState, tt.wantAttempt, tt.wantError)
			}
			// Cloud Tasks may still deliver once more (e.g. a lost 2xx): nothing runs again.
			if err := q.Execute(t.Context(), body); err != nil {
				t.Errorf("delivery after the result: %v", err)
			}
		})
	}
}

func TestCloudTasksExecuteBadInput(t *testing.T) {
	t.Parallel()
	_, client := startFakeTasks(t)
	rs := newMemStore()
	q := newTestCloudTasks(t, client, rs, okRunner(), nil)
	for _, body := range []string{`not json`, `{"job_id":"../x","request":{"incident_id":"1"}}`, `{"job_id":"20260101T000000Z-00000000","request":{}}`} {
		if err := q.Execute(t.Context(), []byte(body)); err == nil || IsRetryable(err) {
			t.Errorf("Execute(%s) = %v; want a final error", body, err)
		}
	}
	// The store failing is retryable, and so is a cancelled request (instance shutting down).
	rs.failCreate = func(key string) error { return fmt.Errorf("store: %w", store.ErrTransient) }
	good := `{"job_id":"20260101T000000Z-0000000a","request":{"incident_id":"1"}}`
	if err := q.Execute(t.Context(), []byte(good)); !IsRetryable(err) {
		t.Errorf("Execute with the store down = %v; want retryable", err)
	}
	rs.mu.Lock()
	rs.failCreate = nil
	rs.mu.Unlock()
	q2 := newTestCloudTasks(t, client, rs, newRunner(func(ctx context.Context, _ archive.Request, _ *archive.Progress) (archive.Result, error) {
		<-ctx.Done()
		return archive.Result{}, ctx.Err()
	}), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := q2.Execute(ctx, []byte(good)); !IsRetryable(err) {
		t.Errorf("Execute cancelled = %v; want retryable", err)
	}
}
