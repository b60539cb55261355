// Command tollgate runs the metering proxy, its API and the demo upstream.
//
//	tollgate serve --config tollgate.yaml   proxy + API (admin, tenant billing API)
//	tollgate billing --config tollgate.yaml the API alone
//	tollgate demo  --listen 127.0.0.1:9000  the demo chat-product upstream
//	tollgate check --config tollgate.yaml   validate a configuration and exit
//	tollgate migrate [--database URL]       apply the billing database migrations
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usageText = `usage: tollgate <command> [flags]

commands:
  serve   --config FILE    run the proxy and the API
  billing --config FILE    run only the API (admin, tenant billing API, usage ingest)
  check   --config FILE    validate a configuration file and exit
  migrate --database URL   apply the billing database migrations (default $TOLLGATE_DATABASE_URL)
  demo    --listen ADDR    run the demo upstream (a small chat-product API)
  version                  print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tollgate:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", envOr("TOLLGATE_CONFIG", "tollgate.yaml"), "configuration file")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return serve(ctx, *path, stderr)
	case "billing":
		fs := flag.NewFlagSet("billing", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", envOr("TOLLGATE_CONFIG", "tollgate.yaml"), "configuration file")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return billingServe(ctx, *path, stderr)
	case "check":
		fs := flag.NewFlagSet("check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", envOr("TOLLGATE_CONFIG", "tollgate.yaml"), "configuration file")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return check(*path, stdout)
	case "migrate":
		fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dbURL := fs.String("database", os.Getenv("TOLLGATE_DATABASE_URL"), "PostgreSQL URL")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return migrate(ctx, *dbURL, stdout)
	case "demo":
		fs := flag.NewFlagSet("demo", flag.ContinueOnError)
		fs.SetOutput(stderr)
		addr := fs.String("listen", envOr("TOLLGATE_DEMO_LISTEN", "127.0.0.1:9000"), "address to listen on")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return demoServe(ctx, *addr, stderr)
	case "version":
		fmt.Fprintln(stdout, "tollgate", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return fmt.Errorf("unknown command %q", cmd)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
