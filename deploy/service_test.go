package deploy_test

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"casearchiver/store"
)

// knative is the part of a Cloud Run (Knative) service spec the checks read.
type knative struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				ServiceAccountName   string      `yaml:"serviceAccountName"`
				ContainerConcurrency int         `yaml:"containerConcurrency"`
				TimeoutSeconds       int         `yaml:"timeoutSeconds"`
				Containers           []container `yaml:"containers"`
				Volumes              []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
						Items      []struct {
							Key  string `yaml:"key"`
							Path string `yaml:"path"`
						} `yaml:"items"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Image string `yaml:"image"`
	Ports []struct {
		ContainerPort int `yaml:"containerPort"`
	} `yaml:"ports"`
	Resources struct {
		Limits map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	StartupProbe  *probe `yaml:"startupProbe"`
	LivenessProbe *probe `yaml:"livenessProbe"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
	PeriodSeconds  int `yaml:"periodSeconds"`
	TimeoutSeconds int `yaml:"timeoutSeconds"`
}

// dispatchDeadline is the Cloud Tasks dispatch deadline the queue uses (jobs.CloudTasksConfig
// default); the request timeout must cover it.
const dispatchDeadline = 30 * time.Minute

// checkService returns every rule deploy/cloudrun/service.yaml breaks.
func checkService(src string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var svc knative
	if err := yaml.Unmarshal([]byte(src), &svc); err != nil {
		return []string{"parse: " + err.Error()}
	}
	if svc.APIVersion != "serving.knative.dev/v1" || svc.Kind != "Service" {
		bad("not a Knative Service: %s %s", svc.APIVersion, svc.Kind)
	}
	if svc.Metadata.Annotations["run.googleapis.com/invoker-iam-disabled"] != "true" {
		bad("invoker IAM check not disabled (run.googleapis.com/invoker-iam-disabled: \"true\"): XSOAR cannot call the service")
	}
	tmpl := svc.Spec.Template
	sa := tmpl.Spec.ServiceAccountName
	if !strings.HasSuffix(sa, ".iam.gserviceaccount.com") || strings.Contains(sa, "-compute@") {
		bad("serviceAccountName %q: want a dedicated service account", sa)
	}
	if c := tmpl.Spec.ContainerConcurrency; c < 1 || c > 1000 {
		bad("containerConcurrency %d: want 1..1000", c)
	}
	if to := time.Duration(tmpl.Spec.TimeoutSeconds) * time.Second; to < dispatchDeadline || to > time.Hour {
		bad("timeoutSeconds %d: want between the %v task dispatch deadline and Cloud Run's 3600 s maximum", tmpl.Spec.TimeoutSeconds, dispatchDeadline)
	}
	if len(tmpl.Spec.Containers) != 1 {
		bad("want one container, got %d", len(tmpl.Spec.Containers))
		return problems
	}
	c := tmpl.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}

	// Billing mode and scaling must match the queue.
	ann := tmpl.Metadata.Annotations
	switch env["QUEUE"] {
	case "cloudtasks":
		if ann["run.googleapis.com/cpu-throttling"] == "false" {
			bad("QUEUE=cloudtasks with instance-based billing: request-based billing is enough (archives run inside task requests)")
		}
	case "local":
		if ann["run.googleapis.com/cpu-throttling"] != "false" {
			bad("QUEUE=local needs run.googleapis.com/cpu-throttling: \"false\" (the archive runs after the response)")
		}
		if n, _ := strconv.Atoi(ann["autoscaling.knative.dev/minScale"]); n < 1 {
			bad("QUEUE=local needs autoscaling.knative.dev/minScale >= 1")
		}
	default:
		bad("QUEUE=%q: want cloudtasks or local", env["QUEUE"])
	}
	if ann["autoscaling.knative.dev/maxScale"] == "" {
		bad("no autoscaling.knative.dev/maxScale: the tenant limits are per process")
	}

	// Probes.
	if p := c.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		bad("startupProbe must GET /readyz")
	} else if p.TimeoutSeconds > p.PeriodSeconds {
		bad("startupProbe timeoutSeconds %d > periodSeconds %d (Cloud Run rejects it)", p.TimeoutSeconds, p.PeriodSeconds)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		bad("livenessProbe must GET /healthz")
	} else if p.TimeoutSeconds > p.PeriodSeconds {
		bad("livenessProbe timeoutSeconds %d > periodSeconds %d", p.TimeoutSeconds, p.PeriodSeconds)
	}

	// Memory: GCS writers (2 × ChunkSize each, CORTEX_MAX_CONCURRENCY at once), doubled for GC
	// headroom, plus 64 MiB of runtime, must fit; GOMEMLIMIT must sit between that and the limit.
	mem, err := quantity(c.Resources.Limits["memory"])
	if err != nil {
		bad("memory limit: %v", err)
	}
	writers, _ := strconv.Atoi(env["CORTEX_MAX_CONCURRENCY"])
	if writers == 0 {
		writers = 8
	}
	need := int64(writers)*2*store.DefaultChunkSize*2 + 64<<20
	if mem < need {
		bad("memory %d MiB < %d MiB needed for %d GCS writers", mem>>20, need>>20, writers)
	}
	if gml, ok := env["GOMEMLIMIT"]; ok {
		lim, err := quantity(gml)
		switch {
		case err != nil:
			bad("GOMEMLIMIT: %v", err)
		case lim >= mem:
			bad("GOMEMLIMIT %s is not below the memory limit %s", gml, c.Resources.Limits["memory"])
		case lim < need-64<<20:
			bad("GOMEMLIMIT %s is below the writers' heap bound", gml)
		}
	}
	if c.Resources.Limits["cpu"] == "" {
		bad("no cpu limit")
	}

	// Secrets: every *_FILE points at the file of a mounted Secret Manager volume.
	mounts := map[string]string{} // mount path -> volume
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	volumes := map[string][]string{} // volume -> item paths
	for _, v := range tmpl.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		for _, it := range v.Secret.Items {
			volumes[v.Name] = append(volumes[v.Name], it.Path)
		}
	}
	for name, value := range env {
		if !strings.HasSuffix(name, "_FILE") {
			continue
		}
		vol, ok := mounts[path.Dir(value)]
		if !ok {
			bad("%s=%s is not in a mounted volume", name, value)
			continue
		}
		items, ok := volumes[vol]
		if !ok {
			bad("%s: volume %s is not a Secret Manager secret", name, vol)
			continue
		}
		found := false
		for _, it := range items {
			found = found || it == path.Base(value)
		}
		if !found {
			bad("%s: volume %s has no item %s", name, vol, path.Base(value))
		}
	}
	return problems
}

// quantity parses Kubernetes (512Mi, 1Gi) and Go (400MiB) memory sizes.
func quantity(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"Gi", 1 << 30}, {"Mi", 1 << 20}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return 0, fmt.Errorf("unknown size %q", s)
}

func readService(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("cloudrun/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServiceYAMLRules(t *testing.T) {
	if p := checkService(readService(t)); len(p) > 0 {
		t.Fatalf("deploy/cloudrun/service.yaml:\n  %s", strings.Join(p, "\n  "))
	}
}

func TestServiceYAMLCheckerRejects(t *testing.T) {
	src := readService(t)
	replace := func(old, new string) string {
		if !strings.Contains(src, old) {
			t.Fatalf("mutation: %q not in service.yaml", old)
		}
		return strings.Replace(src, old, new, 1)
	}
	tests := []struct{ name, src, want string }{
		{"invoker check on", replace(`run.googleapis.com/invoker-iam-disabled: "true"`, `run.googleapis.com/invoker-iam-disabled: "false"`), "invoker IAM"},
		{"default compute SA", replace("serviceAccountName: case-archiver@__PROJECT_ID__.iam.gserviceaccount.com", "serviceAccountName: 123-compute@developer.gserviceaccount.com"), "dedicated"},
		{"short timeout", replace("timeoutSeconds: 3600", "timeoutSeconds: 300"), "timeoutSeconds"},
		{"local queue, throttled", replace("value: cloudtasks", "value: local"), "cpu-throttling"},
		{"local queue, scale to zero", strings.Replace(replace("value: cloudtasks", "value: local"), `cpu-throttling: "true"`, `cpu-throttling: "false"`, 1), "minScale"},
		{"startup probe on healthz", replace("path: /readyz", "path: /healthz"), "startupProbe"},
		{"liveness on readyz", replace("path: /healthz", "path: /readyz"), "livenessProbe"},
		{"small memory", replace("memory: 512Mi", "memory: 256Mi"), "memory"},
		{"gomemlimit above limit", replace("value: 400MiB", "value: 600MiB"), "GOMEMLIMIT"},
		{"secret file outside mount", replace("value: /secrets/cortex-api-key/key", "value: /etc/cortex-api-key"), "not in a mounted volume"},
		{"secret item missing", replace("path: tokens", "path: token"), "no item tokens"},
		{"no max scale", replace(`autoscaling.knative.dev/maxScale: "1"`, ""), "maxScale"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := checkService(tt.src)
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("checker did not report %q; got %q", tt.want, problems)
		})
	}
}
