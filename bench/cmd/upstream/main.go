// Command upstream is the benchmark's stand-in for the API behind Tollgate: a
// fasthttp server answering every path with a fixed small JSON body (201 for
// POST, 204 for DELETE, 200 otherwise). The demo upstream is net/http and
// does real work, so on two cores it, not the proxy, would set the pace.
//
//	upstream --listen 127.0.0.1:9100
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/valyala/fasthttp"
)

var body = []byte(`{"id":"obj_0123456789","object":"message","ok":true}`)

func handle(ctx *fasthttp.RequestCtx) {
	switch {
	case ctx.IsPost():
		ctx.SetStatusCode(fasthttp.StatusCreated)
	case ctx.IsDelete():
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

func main() {
	addr := flag.String("listen", "127.0.0.1:9100", "address to listen on (loopback)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &fasthttp.Server{
		Handler:       handle,
		Name:          "bench-upstream",
		NoDefaultDate: true,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "bench upstream listening on %s\n", ln.Addr())
	select {
	case <-ctx.Done():
		return srv.Shutdown()
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
}
