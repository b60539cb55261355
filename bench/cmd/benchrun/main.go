// Command benchrun runs the load benchmark (bench/harness) from the
// repository root; `make bench` calls it through scripts/bench.sh. Settings
// come from BENCH_* environment variables (see bench/README.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate/tollgate/bench/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	opts, err := harness.OptionsFromEnv(root)
	if err != nil {
		return err
	}
	rep, err := harness.Run(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Print(rep.Markdown())
	return nil
}
