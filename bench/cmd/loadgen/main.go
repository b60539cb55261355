// Command loadgen is the harness's Go load generator as a standalone tool,
// for when wrk is not installed or a run needs per-request key selection.
// It prints one JSON result on stdout.
//
//	loadgen -target 127.0.0.1:8080 -c 32 -d 5s -method GET -path /api/v1/agents -key tg_...
//	loadgen -target 127.0.0.1:8080 -c 32 -n 100000 -method POST -path /api/v1/messages \
//	        -body '{"text":"hi"}' -keys-file keys.txt -zipf
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/bench/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	targets := fs.String("target", "127.0.0.1:8080", "host:port, comma-separated for several instances")
	conns := fs.Int("c", 32, "connections")
	dur := fs.Duration("d", 5*time.Second, "duration (the run's bound)")
	n := fs.Int64("n", 0, "stop after this many requests (still bounded by -d)")
	method := fs.String("method", "GET", "method, or comma-separated methods sent in turn")
	path := fs.String("path", "/", `path, or comma-separated paths sent in turn ("{n}" becomes a sequence number)`)
	body := fs.String("body", "", "request body for POST/PUT")
	key := fs.String("key", "", "API key sent as Authorization: Bearer")
	keysFile := fs.String("keys-file", "", "file of API keys, one per line")
	zipf := fs.Bool("zipf", false, "pick each request's key from -keys-file with a Zipf distribution")
	zipfS := fs.Float64("zipf-s", 1.1, "Zipf exponent (> 1)")
	rate := fs.Float64("rate", 0, "open-loop total requests/s (0: closed loop, as fast as possible)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	methods, paths := strings.Split(*method, ","), strings.Split(*path, ",")
	if len(methods) != len(paths) {
		return fmt.Errorf("%d methods for %d paths", len(methods), len(paths))
	}
	cfg := loadgen.Config{
		Targets: strings.Split(*targets, ","), Connections: *conns, Duration: *dur, Requests: *n,
		Zipf: *zipf, ZipfS: *zipfS, Rate: *rate,
	}
	for i := range methods {
		r := loadgen.Request{Method: strings.ToUpper(methods[i]), Path: paths[i]}
		if r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			r.Body = *body
		}
		cfg.Sequence = append(cfg.Sequence, r)
	}
	if *key != "" {
		cfg.Keys = []string{*key}
	}
	if *keysFile != "" {
		keys, err := readKeys(*keysFile)
		if err != nil {
			return err
		}
		cfg.Keys = keys
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

func readKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" {
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys file %s: no keys", path)
	}
	return keys, nil
}
