package demo

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestListenAndServe(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ListenAndServe(ctx, addr) }()

	client := &http.Client{Timeout: 2 * time.Second}
	var resp *http.Response
	var err error
	// Bounded wait for the listener; no assertion on how long it takes.
	for i := 0; i < 100; i++ {
		if resp, err = client.Get("http://" + addr + "/healthz"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("demo never answered on %s: %v", addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz = %d, want 200", resp.StatusCode)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ListenAndServe after cancel = %v, want nil", err)
	}
}

func TestListenAndServeBadAddr(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer busy.Close()
	// A cancelled context: should a listen wrongly succeed, the call returns
	// nil at once instead of hanging the test.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []string{"127.0.0.1:notaport", "127.0.0.1:99999", busy.Addr().String()}
	for _, addr := range tests {
		t.Run(addr, func(t *testing.T) {
			if err := ListenAndServe(ctx, addr); err == nil {
				t.Fatalf("ListenAndServe(%q) = nil, want an error", addr)
			}
		})
	}
}
