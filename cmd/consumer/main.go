// Command consumer is DocuVault's event consumer: it finalises uploads, applies quotas and syncs cloud connections.
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
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consumer: "+err.Error())
		os.Exit(1)
	}
}
