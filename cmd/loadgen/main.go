// Command loadgen measures the intake of the archiver: it sends authenticated
// POST /v1/incidents/{id}/archive requests, each with a distinct incident id, from -c concurrent
// workers until -n requests were sent or -duration elapsed, whichever comes first, and prints the
// request rate, latency percentiles and errors. It is bounded on both counts and meant for a server
// on loopback:
//
//	go run ./cmd/loadgen -url http://127.0.0.1:8080 -token "$TOKEN" -n 20000 -c 32 -duration 20s
//
// With -json the summary is one JSON object (for scripts and the intake benchmark).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Summary is what one run measured.
type Summary struct {
	Requests  int            `json:"requests"`
	OK        int            `json:"ok"` // 2xx answers
	Errors    int            `json:"errors"`
	ByStatus  map[string]int `json:"by_status"` // status code, or "transport" for failed round trips
	Seconds   float64        `json:"seconds"`
	RPS       float64        `json:"rps"` // answered requests (any status) per second
	P50ms     float64        `json:"p50_ms"`
	P95ms     float64        `json:"p95_ms"`
	P99ms     float64        `json:"p99_ms"`
	MaxMs     float64        `json:"max_ms"`
	FirstID   uint64         `json:"first_incident_id"`
	Conc      int            `json:"concurrency"`
	FirstErr  string         `json:"first_error,omitempty"`
	Truncated bool           `json:"stopped_by_duration"`
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the archiver")
	token := fs.String("token", os.Getenv("LOADGEN_TOKEN"), "bearer token with the trigger role (default $LOADGEN_TOKEN)")
	n := fs.Int("n", 20000, "requests to send at most (1..10,000,000)")
	c := fs.Int("c", 32, "concurrent requests (1..4096)")
	duration := fs.Duration("duration", 30*time.Second, "stop after this long at most (up to 10m)")
	start := fs.Uint64("start", 0, "first incident id (default: derived from the clock, so runs do not repeat ids)")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *token == "":
		return errors.New("-token (or LOADGEN_TOKEN) is required")
	case *n < 1 || *n > 10_000_000:
		return errors.New("-n must be 1..10,000,000")
	case *c < 1 || *c > 4096:
		return errors.New("-c must be 1..4096")
	case *duration <= 0 || *duration > 10*time.Minute:
		return errors.New("-duration must be positive and at most 10m")
	}
	if *start == 0 {
		*start = uint64(time.Now().Unix()) * 1_000_000 //nolint:gosec // positive clock
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	s, err := load(ctx, strings.TrimRight(*base, "/"), *token, *n, *c, *duration, *start)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(s)
	}
	fmt.Fprintf(stdout, "requests %d in %.2fs: %.0f req/s (concurrency %d%s)\n", s.Requests, s.Seconds, s.RPS, s.Conc,
		map[bool]string{true: ", stopped by -duration"}[s.Truncated])
	fmt.Fprintf(stdout, "latency p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  max %.2f ms\n", s.P50ms, s.P95ms, s.P99ms, s.MaxMs)
	fmt.Fprintf(stdout, "ok %d  errors %d  by status %v\n", s.OK, s.Errors, s.ByStatus)
	if s.FirstErr != "" {
		fmt.Fprintf(stdout, "first error: %s\n", s.FirstErr)
	}
	return nil
}

func load(ctx context.Context, base, token string, n, c int, duration time.Duration, start uint64) (Summary, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost, tr.MaxIdleConns = c, c
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var next atomic.Int64
	lat := make([][]time.Duration, c)
	type stat struct {
		by       map[string]int
		firstErr string
	}
	stats := make([]stat, c)
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range c {
		stats[w].by = map[string]int{}
		lat[w] = make([]time.Duration, 0, n/c+1)
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				url := base + "/v1/incidents/" + strconv.FormatUint(start+uint64(i), 10) + "/archive" //nolint:gosec // i ≥ 0
				t := time.Now()
				code, err := post(ctx, hc, url, token)
				d := time.Since(t)
				if ctx.Err() != nil && err != nil {
					return // cut off by -duration: not counted
				}
				lat[w] = append(lat[w], d)
				key := strconv.Itoa(code)
				if err != nil {
					key = "transport"
					if stats[w].firstErr == "" {
						stats[w].firstErr = err.Error()
					}
				} else if code/100 != 2 && stats[w].firstErr == "" {
					stats[w].firstErr = "HTTP " + key
				}
				stats[w].by[key]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	var all []time.Duration
	s := Summary{ByStatus: map[string]int{}, Seconds: elapsed.Seconds(), FirstID: start, Conc: c, Truncated: ctx.Err() != nil}
	for w := range c {
		all = append(all, lat[w]...)
		for k, v := range stats[w].by {
			s.ByStatus[k] += v
			if k[0] == '2' {
				s.OK += v
			} else {
				s.Errors += v
			}
		}
		if s.FirstErr == "" {
			s.FirstErr = stats[w].firstErr
		}
	}
	s.Requests = len(all)
	if s.Requests == 0 {
		return s, errors.New("no request completed")
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		i := int(p*float64(len(all))+0.5) - 1
		return float64(all[min(max(i, 0), len(all)-1)].Microseconds()) / 1000
	}
	s.RPS = float64(s.Requests) / elapsed.Seconds()
	s.P50ms, s.P95ms, s.P99ms, s.MaxMs = pct(0.50), pct(0.95), pct(0.99), pct(1)
	return s, nil
}

func post(ctx context.Context, hc *http.Client, url, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, http.NoBody)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
