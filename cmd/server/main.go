// Command server runs the XSIAM Case Archiver: it accepts archive requests for closed cases, pulls
// each case from the Cortex tenant API and writes it, checksummed and create-only, to the archive
// store. With -demo it runs offline against an in-process simulated tenant.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "server: %v\n", err)
		os.Exit(1)
	}
}
