package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"casearchiver/fetch"
	"casearchiver/handlers"
)

// config is every setting of the server, read once from the environment and validated together.
type config struct {
	Port           string
	Cortex         fetch.Config
	ArchiveURL     string
	Tokens         []handlers.Token
	WebhookSecrets [][]byte
	LogFormat      string // json | text
	LogLevel       slog.Level
	Project        string
	Queue          string // local | cloudtasks
	Workers        int
	MaxAttempts    int
	Concurrency    int
	CloudTasks     cloudTasksConfig
}

type cloudTasksConfig struct {
	Queue          string // projects/p/locations/l/queues/q
	TargetURL      string
	ServiceAccount string
	Audience       string
}

// envVars lists every variable the server reads; README.md and deploy/cloudrun/service.yaml document
// exactly these (a test checks). Secrets may also come from <NAME>_FILE.
var envVars = []string{
	"PORT",
	"CORTEX_API_URL", "CORTEX_API_KEY_ID", "CORTEX_API_KEY", "CORTEX_API_KEY_TYPE", "CORTEX_PRODUCT",
	"CORTEX_RATE_LIMIT", "CORTEX_EXTRA_DATA_PER_MINUTE", "CORTEX_MAX_CONCURRENCY",
	"ARCHIVE_URL", "ARCHIVER_TOKENS", "WEBHOOK_SECRETS",
	"LOG_FORMAT", "LOG_LEVEL", "GOOGLE_CLOUD_PROJECT",
	"QUEUE", "JOB_WORKERS", "JOB_MAX_ATTEMPTS", "ARCHIVE_CONCURRENCY",
	"CLOUD_TASKS_QUEUE", "CLOUD_TASKS_TARGET_URL", "CLOUD_TASKS_SERVICE_ACCOUNT", "CLOUD_TASKS_AUDIENCE",
}

// secretVars may be given as <NAME>_FILE, a path to a file holding the value (Secret Manager volumes).
var secretVars = []string{"CORTEX_API_KEY", "ARCHIVER_TOKENS", "WEBHOOK_SECRETS"}

// configured lists the variables that are set (names only, never values), for the start-up log.
func configured(getenv func(string) string) []string {
	var names []string
	for _, n := range envVars {
		if getenv(n) != "" {
			names = append(names, n)
		}
	}
	for _, n := range secretVars {
		if getenv(n+"_FILE") != "" {
			names = append(names, n+"_FILE")
		}
	}
	return names
}

// loadConfig reads the environment through getenv. It returns one error listing every missing or
// invalid variable. In demo mode the tenant settings come from the simulated tenant instead.
func loadConfig(getenv func(string) string, demo bool, isTerminal bool) (config, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	secret := func(name string) string {
		v := get(name)
		if file := get(name + "_FILE"); file != "" {
			if v != "" {
				bad("%s and %s_FILE are both set; set one", name, name)
			}
			b, err := os.ReadFile(file)
			if err != nil {
				bad("%s_FILE: cannot read the file", name) // the path may be sensitive; the error is not echoed
				return ""
			}
			v = strings.TrimSpace(string(b))
		}
		return v
	}
	intVar := func(name string, def, lo, hi int) int {
		v := get(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad("%s must be an integer from %d to %d", name, lo, hi)
			return def
		}
		return n
	}

	c := config{
		Port:        get("PORT"),
		ArchiveURL:  get("ARCHIVE_URL"),
		LogFormat:   get("LOG_FORMAT"),
		Project:     get("GOOGLE_CLOUD_PROJECT"),
		Queue:       get("QUEUE"),
		Workers:     intVar("JOB_WORKERS", 4, 1, 256),
		MaxAttempts: intVar("JOB_MAX_ATTEMPTS", 5, 1, 100),
		Concurrency: intVar("ARCHIVE_CONCURRENCY", 8, 1, 256),
	}
	if c.Port == "" {
		c.Port = "8080"
	}
	if n, err := strconv.Atoi(c.Port); err != nil || n < 0 || n > 65535 {
		bad("PORT must be a TCP port number")
	}
	if c.ArchiveURL == "" {
		c.ArchiveURL = "./archive"
	}
	if u, err := url.Parse(c.ArchiveURL); err == nil && u.Scheme != "" && u.Scheme != "gs" && u.Scheme != "file" {
		bad("ARCHIVE_URL must be gs://bucket[/prefix], file:///dir or a directory")
	} else if err == nil && u.Scheme == "gs" && u.Host == "" {
		bad("ARCHIVE_URL gs:// needs a bucket name")
	}

	switch c.LogFormat {
	case "":
		c.LogFormat = "json"
		if isTerminal {
			c.LogFormat = "text"
		}
	case "json", "text":
	default:
		bad("LOG_FORMAT must be json or text")
	}
	if lv := get("LOG_LEVEL"); lv != "" {
		if err := c.LogLevel.UnmarshalText([]byte(lv)); err != nil {
			bad("LOG_LEVEL must be debug, info, warn or error")
		}
	}

	if tokens := secret("ARCHIVER_TOKENS"); tokens != "" {
		for pair := range strings.SplitSeq(tokens, ",") {
			role, tok, ok := strings.Cut(strings.TrimSpace(pair), ":")
			switch r := handlers.Role(role); {
			case !ok || tok == "":
				bad("ARCHIVER_TOKENS entries must be role:token")
			case r != handlers.RoleTrigger && r != handlers.RoleRead && r != handlers.RoleAdmin:
				bad("ARCHIVER_TOKENS role must be trigger, read or admin")
			case len(tok) < 16:
				bad("ARCHIVER_TOKENS tokens must be at least 16 characters")
			default:
				c.Tokens = append(c.Tokens, handlers.Token{Role: r, Value: tok})
			}
		}
	}
	if secrets := secret("WEBHOOK_SECRETS"); secrets != "" {
		for s := range strings.FieldsFuncSeq(secrets, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
			key, err := handlers.ParseWebhookSecret(s)
			if err != nil {
				bad("WEBHOOK_SECRETS: %v", err)
				continue
			}
			c.WebhookSecrets = append(c.WebhookSecrets, key)
		}
	}
	if len(c.Tokens) == 0 && len(c.WebhookSecrets) == 0 && !demo {
		bad("set ARCHIVER_TOKENS or WEBHOOK_SECRETS: the server never runs without authentication")
	}

	c.Cortex = fetch.Config{
		BaseURL:            get("CORTEX_API_URL"),
		KeyID:              get("CORTEX_API_KEY_ID"),
		Key:                secret("CORTEX_API_KEY"),
		KeyType:            fetch.KeyType(get("CORTEX_API_KEY_TYPE")),
		Product:            fetch.Product(get("CORTEX_PRODUCT")),
		ExtraDataPerMinute: intVar("CORTEX_EXTRA_DATA_PER_MINUTE", 10, 1, 10000),
		MaxConcurrent:      intVar("CORTEX_MAX_CONCURRENCY", 8, 1, 256),
	}
	if v := get("CORTEX_RATE_LIMIT"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 10000 {
			bad("CORTEX_RATE_LIMIT must be requests per second, more than 0")
		}
		c.Cortex.RequestsPerSecond = f
	} else {
		c.Cortex.RequestsPerSecond = 10
	}
	if c.Cortex.KeyType == "" {
		c.Cortex.KeyType = fetch.Standard
	}
	if c.Cortex.KeyType != fetch.Standard && c.Cortex.KeyType != fetch.Advanced {
		bad("CORTEX_API_KEY_TYPE must be standard or advanced")
	}
	if c.Cortex.Product == "" {
		c.Cortex.Product = fetch.XSIAM
	}
	if p := c.Cortex.Product; p != fetch.XSIAM && p != fetch.XSOAR8 && p != fetch.XSOAR6 {
		bad("CORTEX_PRODUCT must be xsiam, xsoar8 or xsoar6")
	}
	if !demo {
		if u, err := url.Parse(c.Cortex.BaseURL); c.Cortex.BaseURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("CORTEX_API_URL must be the tenant's API URL, e.g. https://api-tenant.xdr.us.paloaltonetworks.com")
		}
		if c.Cortex.Key == "" {
			bad("CORTEX_API_KEY (or CORTEX_API_KEY_FILE) is required")
		}
		if c.Cortex.KeyID == "" && c.Cortex.Product != fetch.XSOAR6 {
			bad("CORTEX_API_KEY_ID is required for xsiam and xsoar8")
		}
	}

	switch c.Queue {
	case "":
		c.Queue = "local"
	case "local":
	case "cloudtasks":
		c.CloudTasks = cloudTasksConfig{
			Queue: get("CLOUD_TASKS_QUEUE"), TargetURL: get("CLOUD_TASKS_TARGET_URL"),
			ServiceAccount: get("CLOUD_TASKS_SERVICE_ACCOUNT"), Audience: get("CLOUD_TASKS_AUDIENCE"),
		}
		if c.CloudTasks.Queue == "" || strings.Count(c.CloudTasks.Queue, "/") != 5 {
			bad("CLOUD_TASKS_QUEUE must be projects/<p>/locations/<l>/queues/<q>")
		}
		if u, err := url.Parse(c.CloudTasks.TargetURL); err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Path, "/internal/tasks/archive") {
			bad("CLOUD_TASKS_TARGET_URL must be https://<service>/internal/tasks/archive")
		}
		if !strings.Contains(c.CloudTasks.ServiceAccount, "@") {
			bad("CLOUD_TASKS_SERVICE_ACCOUNT must be a service account email")
		}
		if c.CloudTasks.Audience == "" {
			c.CloudTasks.Audience = c.CloudTasks.TargetURL
		}
	default:
		bad("QUEUE must be local or cloudtasks")
	}

	if len(problems) > 0 {
		return config{}, errors.New("invalid configuration:\n  - " + strings.Join(problems, "\n  - "))
	}
	return c, nil
}
