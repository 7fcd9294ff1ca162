package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"casearchiver/fetch"
)

func TestRun(t *testing.T) {
	t.Parallel()
	for _, product := range []string{"xsiam", "xsoar6"} {
		t.Run(product, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, []string{"cortex-sim", "-addr", "127.0.0.1:0", "-incidents", "3", "-product", product, "-rps", "0"}, pw, io.Discard)
				_ = pw.Close()
			}()
			vals := map[string]string{}
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				k, v, _ := strings.Cut(sc.Text(), "=")
				vals[k] = v
				if k == "incidents" {
					break
				}
			}
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			if vals["url"] == "" || vals["key"] == "" || vals["key_id"] == "" || vals["incidents"] != "3" {
				t.Fatalf("printed %v", vals)
			}
			c, err := fetch.New(fetch.Config{BaseURL: vals["url"], KeyID: vals["key_id"], Key: vals["key"], Product: fetch.Product(product)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			if err := c.SearchIncidents(ctx, fetch.SearchFilter{}, func(fetch.Incident) error { n++; return nil }); err != nil || n != 3 {
				t.Fatalf("search: %d incidents, %v", n, err)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("run did not stop")
			}
		})
	}
	if err := run(t.Context(), []string{"cortex-sim", "-product", "xdr"}, io.Discard, io.Discard); err == nil {
		t.Error("bad product accepted")
	}
}
