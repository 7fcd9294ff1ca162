package archive_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/fetch/cortexsim"
	"casearchiver/store"
)

// rig is a simulated tenant, a tenant client, a store and an archiver.
type rig struct {
	sim   *cortexsim.Sim
	store *store.Store
	arch  *archive.Archiver
	// gcs and dir give the mutation tests a way behind the store's back.
	gcs *fakestorage.Server
	dir string
}

const bucket = "archive-bucket"

func newRig(tb testing.TB, product, backend string) *rig {
	tb.Helper()
	sim := cortexsim.New(cortexsim.Options{Product: product, Seed: 7})
	ts := httptest.NewServer(sim)
	tb.Cleanup(ts.Close)
	logger := slog.New(slog.DiscardHandler)
	client, err := fetch.New(fetch.Config{
		BaseURL: ts.URL, KeyID: sim.KeyID(), Key: sim.Key(), Product: fetch.Product(product),
		RequestsPerSecond: 10000, ExtraDataPerMinute: 10000, MaxConcurrent: 16,
		MaxRetryWait: 5 * time.Second, Logger: logger,
	}, ts.Client())
	if err != nil {
		tb.Fatal(err)
	}
	r := &rig{sim: sim}
	switch backend {
	case "gcs":
		r.gcs, err = fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(r.gcs.Stop)
		r.gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket})
		r.store = store.NewGCS(r.gcs.Client(), bucket, "tenant-a", store.Options{Logger: logger})
	default:
		r.dir = tb.TempDir()
		if r.store, err = store.NewLocal(r.dir, store.Options{Logger: logger}); err != nil {
			tb.Fatal(err)
		}
	}
	r.arch = archive.New(logger, client, r.store, archive.Config{Concurrency: 8, ToolVersion: "test"})
	return r
}

func (r *rig) archive(t *testing.T, id string, reason string) archive.Result {
	t.Helper()
	res, err := r.arch.Archive(t.Context(), archive.Request{IncidentID: id, Reason: reason, RequestedBy: "test"}, &archive.Progress{})
	if err != nil {
		t.Fatalf("archive %s: %v", id, err)
	}
	return res
}

func (r *rig) manifest(t *testing.T, id, version string) archive.Manifest {
	t.Helper()
	raw, err := r.arch.Manifest(t.Context(), id, version)
	if err != nil {
		t.Fatal(err)
	}
	var m archive.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *rig) read(t *testing.T, key string) []byte {
	t.Helper()
	rc, err := r.store.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// viaJSON is s as it arrives through a JSON API: invalid UTF-8 bytes become U+FFFD.
func viaJSON(s string) string {
	b, _ := json.Marshal(s)
	_ = json.Unmarshal(b, &s)
	return s
}

// sameBytes compares two streams chunk by chunk without holding either in memory.
func sameBytes(a, b io.Reader) (bool, error) {
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF) {
			return errors.Is(eb, io.EOF) || errors.Is(eb, io.ErrUnexpectedEOF), nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

// checkAgainstTruth compares every archived object and count with the simulator's ground truth.
func checkAgainstTruth(t *testing.T, r *rig, id string, res archive.Result, product string) {
	t.Helper()
	truth := r.sim.Truth(id)
	m := r.manifest(t, id, res.Version)
	base := "incidents/" + id + "/" + res.Version + "/"

	wantInvs := []string{id}
	if product == "xsiam" {
		wantInvs = truth.AlertIDs[:truth.AlertsReturned]
		if m.Source.AlertsReported != truth.AlertsTotal || m.Source.AlertsArchived != truth.AlertsReturned {
			t.Errorf("alerts reported/archived = %d/%d, want %d/%d", m.Source.AlertsReported, m.Source.AlertsArchived, truth.AlertsTotal, truth.AlertsReturned)
		}
	}
	var gotInvs []string
	files, stored, entries := 0, 0, 0
	for _, inv := range m.Source.Investigations {
		gotInvs = append(gotInvs, inv.ID)
		ti := truth.Investigations[inv.ID]
		if inv.Entries != ti.Entries || inv.FilesReferenced != len(ti.Files) {
			t.Errorf("investigation %s: entries %d files %d, want %d %d", inv.ID, inv.Entries, inv.FilesReferenced, ti.Entries, len(ti.Files))
		}
		var es []json.RawMessage
		if err := json.Unmarshal(r.read(t, base+"investigations/"+archive.SafeName(inv.ID)+"/entries.json"), &es); err != nil || len(es) != ti.Entries {
			t.Errorf("entries.json of %s: %d entries (%v), want %d", inv.ID, len(es), err, ti.Entries)
		}
		entries += ti.Entries
		for _, f := range ti.Files {
			files++
			if f.Missing {
				continue
			}
			stored++
			i := slices.IndexFunc(m.Objects, func(o archive.ManifestObject) bool { return o.EntryID == f.EntryID })
			if i < 0 {
				t.Errorf("file %s (%q) not in the manifest", f.EntryID, f.Name)
				continue
			}
			o := m.Objects[i]
			if o.OriginalName != viaJSON(f.Name) || o.Size != f.Size || o.SHA256 != f.SHA256 {
				t.Errorf("file %s: manifest %+v, truth %+v", f.EntryID, o, f)
			}
			rc, err := r.store.Open(t.Context(), base+o.Path)
			if err != nil {
				t.Fatal(err)
			}
			same, err := sameBytes(rc, r.sim.OpenFile(f.EntryID))
			rc.Close()
			if err != nil || !same {
				t.Errorf("file %s: stored bytes differ from the tenant's (%v)", f.EntryID, err)
			}
		}
	}
	if diff := cmp.Diff(wantInvs, gotInvs); diff != "" {
		t.Errorf("investigations (-want +got):\n%s", diff)
	}
	if m.Source.FilesReferenced != files || m.Source.FilesStored != stored || m.Source.EntriesArchived != entries {
		t.Errorf("source files %d/%d entries %d, want %d/%d %d", m.Source.FilesReferenced, m.Source.FilesStored, m.Source.EntriesArchived, files, stored, entries)
	}
	if len(m.Objects) != res.Objects || m.Source.Bytes != res.Bytes {
		t.Errorf("result %d objects %d bytes, manifest %d %d", res.Objects, res.Bytes, len(m.Objects), m.Source.Bytes)
	}
	rep, err := r.arch.Verify(t.Context(), id, res.Version)
	if err != nil || rep.Status != "ok" || rep.OK != len(m.Objects) {
		t.Errorf("verify = %+v, %v", rep, err)
	}
}

func TestArchiveXSIAMEndToEnd(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"gcs", "local"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "xsiam", backend)
			r.sim.SetRiskyUsers(5)
			files := []cortexsim.FileSpec{{Name: "big.bin", Size: 100 << 20}}
			if testing.Short() || backend == "local" {
				files[0].Size = 3 << 20 // the 100 MiB file runs once, through GCS
			}
			for i := range 29 {
				files = append(files, cortexsim.FileSpec{Investigation: "", Name: fmt.Sprintf("evidence-%02d.txt", i), Size: int64(i * 997)})
			}
			id := r.sim.AddIncident(cortexsim.IncidentSpec{
				Status: "resolved_true_positive", Alerts: 40, EntriesPerInvestigation: 250, ContextKeys: 6,
				NetworkArtifacts: 3, FileArtifacts: 2, Files: files,
			})
			res := r.archive(t, id, archive.ReasonManual)
			if len(res.Incomplete) != 0 {
				t.Errorf("incomplete: %+v", res.Incomplete)
			}
			checkAgainstTruth(t, r, id, res, "xsiam")
			m := r.manifest(t, id, res.Version)
			if m.Source.RiskyUsers != "archived" || m.Source.RiskyUsersCount != 5 || !m.Complete {
				t.Errorf("risky users %s %d complete %v", m.Source.RiskyUsers, m.Source.RiskyUsersCount, m.Complete)
			}
			if m.Source.Investigations[0].Pages < 3 {
				t.Errorf("war room read in %d pages, want >= 3", m.Source.Investigations[0].Pages)
			}
			if got := r.manifest(t, id, archive.Latest); got.Version != res.Version {
				t.Errorf("latest = %s, want %s", got.Version, res.Version)
			}
		})
	}
}

func TestArchiveXSOAR(t *testing.T) {
	t.Parallel()
	for _, product := range []string{"xsoar8", "xsoar6"} {
		t.Run(product, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, product, "gcs")
			id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 130, ContextKeys: 3,
				Files: []cortexsim.FileSpec{{Name: "a.pdf", Size: 5000}, {Name: "b.png", Size: 70000}}})
			res := r.archive(t, id, archive.ReasonIncidentClosed)
			checkAgainstTruth(t, r, id, res, product)
			m := r.manifest(t, id, res.Version)
			if m.Product != product || m.Source.RiskyUsers != "not_applicable" || len(m.Source.Investigations) != 1 {
				t.Errorf("manifest product %s risky %s investigations %d", m.Product, m.Source.RiskyUsers, len(m.Source.Investigations))
			}
			if _, err := r.store.Stat(t.Context(), "incidents/"+id+"/"+res.Version+"/extra_data.json"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("XSOAR archive has extra_data.json: %v", err)
			}
		})
	}
}

func TestIncompleteIsStated(t *testing.T) {
	t.Parallel()
	r := newRig(t, "xsiam", "local")
	id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1003, EntriesPerInvestigation: 1,
		Files: []cortexsim.FileSpec{{Name: "kept.txt", Size: 10}, {Name: "gone.zip", Size: 10, Missing: true}}})
	res := r.archive(t, id, archive.ReasonManual)
	kinds := map[string]string{}
	for _, in := range res.Incomplete {
		kinds[in.Kind] = in.Detail
	}
	if !strings.Contains(kinds[archive.KindAlertsTruncated], "1003 alerts") || !strings.Contains(kinds[archive.KindFileMissing], "gone.zip") {
		t.Fatalf("incomplete = %+v", res.Incomplete)
	}
	m := r.manifest(t, id, res.Version)
	if m.Complete || len(m.Incomplete) != 2 || m.Source.AlertsReported != 1003 || m.Source.AlertsArchived != 1000 ||
		m.Source.FilesReferenced != 2 || m.Source.FilesStored != 1 {
		t.Errorf("manifest complete=%v incomplete=%+v source=%+v", m.Complete, m.Incomplete, m.Source)
	}
}

func TestFailingDownloadFailsWithoutManifest(t *testing.T) {
	t.Parallel()
	r := newRig(t, "xsoar8", "local")
	id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 3,
		Files: []cortexsim.FileSpec{{Name: "ok.txt", Size: 100}, {Name: "broken.bin", Size: 1 << 20, AlwaysFail: true}}})
	_, err := r.arch.Archive(t.Context(), archive.Request{IncidentID: id, Reason: archive.ReasonManual}, nil)
	if err == nil || !archive.Retryable(err) {
		t.Fatalf("err = %v, want a retryable failure", err)
	}
	vs, err := r.arch.Versions(t.Context(), id, true)
	if err != nil || len(vs) != 1 || vs[0].Complete {
		t.Fatalf("versions = %+v, %v; want one incomplete", vs, err)
	}
	if _, err := r.store.Stat(t.Context(), "incidents/"+id+"/"+vs[0].Version+"/manifest.json"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed archive has a manifest: %v", err)
	}
	if vs, _ := r.arch.Versions(t.Context(), id, false); len(vs) != 0 {
		t.Errorf("incomplete version listed as an archive: %+v", vs)
	}
}

func TestSkipRule(t *testing.T) {
	t.Parallel()
	r := newRig(t, "xsiam", "local")
	id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "resolved_other", Alerts: 1, EntriesPerInvestigation: 2})
	first := r.archive(t, id, archive.ReasonIncidentClosed)
	if again := r.archive(t, id, archive.ReasonIncidentClosed); !again.Skipped || again.Version != first.Version {
		t.Errorf("second close hook: %+v, want skipped", again)
	}
	if manual := r.archive(t, id, archive.ReasonManual); manual.Skipped {
		t.Error("manual trigger skipped")
	}
	r.sim.Touch(id, time.Now().Add(time.Hour))
	third := r.archive(t, id, archive.ReasonIncidentClosed)
	if third.Skipped {
		t.Error("modified incident skipped")
	}
	m := r.manifest(t, id, third.Version)
	if m.PreviousVersion == "" || m.PreviousVersion == third.Version {
		t.Errorf("previous version = %q", m.PreviousVersion)
	}
	vs, _ := r.arch.Versions(t.Context(), id, false)
	if len(vs) != 3 || vs[0].Version != third.Version {
		t.Errorf("versions newest first = %+v", vs)
	}
}

func TestVerifyFindsMutations(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"gcs", "local"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "xsoar8", backend)
			id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 4,
				Files: []cortexsim.FileSpec{{Name: "a.bin", Size: 4096}, {Name: "b.bin", Size: 4096}}})
			res := r.archive(t, id, archive.ReasonManual)
			m := r.manifest(t, id, res.Version)
			base := "incidents/" + id + "/" + res.Version + "/"
			var flip, del string
			for _, o := range m.Objects {
				switch o.OriginalName {
				case "a.bin":
					flip = o.Path
				case "b.bin":
					del = o.Path
				}
			}
			switch backend {
			case "gcs":
				obj, err := r.gcs.GetObject(bucket, "tenant-a/"+base+flip)
				if err != nil {
					t.Fatal(err)
				}
				obj.Content[100] ^= 0x01
				obj.Crc32c, obj.Md5Hash, obj.Etag = "", "", ""
				r.gcs.CreateObject(obj)
				if err := r.gcs.Client().Bucket(bucket).Object("tenant-a/" + base + del).Delete(t.Context()); err != nil {
					t.Fatal(err)
				}
			default:
				p := filepath.Join(r.dir, "objects", filepath.FromSlash(base+flip))
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[100] ^= 0x01
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(r.dir, "objects", filepath.FromSlash(base+del))); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := r.store.Create(t.Context(), base+"planted.txt", strings.NewReader("x"), store.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			rep, err := r.arch.Verify(t.Context(), id, res.Version)
			if err != nil {
				t.Fatal(err)
			}
			want := archive.VerifyReport{Status: "failed", Missing: []string{del}, Mismatched: []string{flip}, Unexpected: []string{"planted.txt"}}
			got := archive.VerifyReport{Status: rep.Status, Missing: rep.Missing, Mismatched: rep.Mismatched, Unexpected: rep.Unexpected}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("verify (-want +got):\n%s", diff)
			}
			if rep.OK != rep.Checked-2 {
				t.Errorf("ok %d of %d", rep.OK, rep.Checked)
			}
		})
	}
}

func TestHostileFileNames(t *testing.T) {
	t.Parallel()
	r := newRig(t, "xsoar8", "local")
	names := []string{"../../etc/passwd", "nul\x00byte.txt", strings.Repeat("long", 500), "bad\xff\xfeutf8.bin", "CON", "..", ".hidden", "a/b\\c:d"}
	var specs []cortexsim.FileSpec
	for _, n := range names {
		specs = append(specs, cortexsim.FileSpec{Name: n, Size: 64})
	}
	id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 1, Files: specs})
	res := r.archive(t, id, archive.ReasonManual)
	m := r.manifest(t, id, res.Version)
	got := map[string]bool{}
	for _, o := range m.Objects {
		if o.EntryID == "" {
			continue
		}
		got[o.OriginalName] = true
		seg := o.Path[strings.LastIndexByte(o.Path, '/')+1:]
		if seg == ".." || seg == "." || strings.ContainsAny(seg, "\x00\\") || len(seg) > 200 || strings.HasPrefix(seg, ".") ||
			!strings.HasPrefix(o.Path, "investigations/"+id+"/files/") {
			t.Errorf("unsafe key %q for %q", o.Path, o.OriginalName)
		}
	}
	for _, n := range names {
		if !got[viaJSON(n)] {
			t.Errorf("original name %q not kept in the manifest", n)
		}
	}
	checkAgainstTruth(t, r, id, res, "xsoar8")
}

func TestReadBackAfterTenantForgets(t *testing.T) {
	t.Parallel()
	r := newRig(t, "xsoar8", "local")
	id := r.sim.AddIncident(cortexsim.IncidentSpec{Status: "done", EntriesPerInvestigation: 2,
		Files: []cortexsim.FileSpec{{Name: "x.txt", Size: 300}}})
	res := r.archive(t, id, archive.ReasonManual)
	m := r.manifest(t, id, res.Version)
	for _, o := range m.Objects {
		rc, info, err := r.arch.OpenObject(t.Context(), id, archive.Latest, o.Path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if int64(len(b)) != o.Size || info.SHA256 != o.SHA256 {
			t.Errorf("%s: read %d bytes, info %+v", o.Path, len(b), info)
		}
	}
	if _, _, err := r.arch.OpenObject(t.Context(), id, archive.Latest, "../../../jobs/x"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("object outside the manifest: %v", err)
	}
}

func TestSafeName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"report.pdf", "report.pdf"},
		{"../../etc/passwd", "_._.._etc_passwd"},
		{"..", "file"},
		{".", "file"},
		{"", "file"},
		{".bashrc", "_bashrc"},
		{"a\x00b", "a_b"},
		{"bad\xffname", "bad_name"},
		{"con.txt", "_con.txt"},
		{"trailing. ", "trailing"},
		{"naïve café.txt", "naïve café.txt"},
	} {
		if got := archive.SafeName(tc.in); got != tc.want {
			t.Errorf("SafeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := archive.SafeName(strings.Repeat("é", 300) + ".docx")
	if len(long) > 200 || !strings.HasSuffix(long, ".docx") {
		t.Errorf("long name = %d bytes %q", len(long), long[len(long)-10:])
	}
}

func FuzzSafeName(f *testing.F) {
	for _, s := range []string{"a", "..", "../x", "\x00", "\xff", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := archive.SafeName(s)
		if got == "" || got == "." || got == ".." || len(got) > 200 || strings.ContainsAny(got, "/\\\x00") || strings.HasPrefix(got, ".") {
			t.Fatalf("SafeName(%q) = %q", s, got)
		}
		for _, c := range got {
			if c < 0x20 || c == 0x7f || c == 0xfffd {
				t.Fatalf("SafeName(%q) = %q has a control or replacement character", s, got)
			}
		}
	})
}
