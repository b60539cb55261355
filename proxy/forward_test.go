package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/rawconn"
	"github.com/tollgate/tollgate/proxy"
)

// fwdSafety bounds every wait in these tests so a bug hangs nothing; no
// test asserts on elapsed time.
const fwdSafety = 20 * time.Second

// fwdShortTimeout is the upstream header timeout of tests that wait for it
// to pass.
const fwdShortTimeout = 200 * time.Millisecond

type fwdResult struct {
	status int
	err    error
}

// fwdProxy is a Forwarder behind NewServer on loopback, with a hook that
// records its calls and adds a header the client must see.
type fwdProxy struct {
	addr       string
	hookCalls  atomic.Int32
	hookStatus atomic.Int32
	results    chan fwdResult
}

func fwdUpstreamConfig(host string, timeout time.Duration) config.Upstream {
	return config.Upstream{
		URL:         "http://" + host,
		Scheme:      "http",
		Host:        host,
		Timeout:     timeout,
		DialTimeout: 2 * time.Second,
		MaxConns:    64,
	}
}

func fwdStartProxy(t testing.TB, u config.Upstream) *fwdProxy {
	t.Helper()
	f, err := proxy.NewForwarder(u)
	if err != nil {
		t.Fatalf("new forwarder: %v", err)
	}
	p := &fwdProxy{results: make(chan fwdResult, 64)}
	hook := func(status int, h *fasthttp.ResponseHeader) {
		p.hookCalls.Add(1)
		p.hookStatus.Store(int32(status))
		h.Set("X-Quota-Test", "yes")
	}
	srv := proxy.NewServer(func(ctx *fasthttp.RequestCtx) {
		status, err := f.Forward(ctx, nil, hook)
		select {
		case p.results <- fwdResult{status, err}:
		default:
		}
	}, "tollgate-test", nil)
	// The listener tollgate serve uses, so its connections are covered.
	ln, err := rawconn.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	p.addr = ln.Addr().String()
	return p
}

func (p *fwdProxy) result(t testing.TB) fwdResult {
	t.Helper()
	select {
	case r := <-p.results:
		return r
	case <-time.After(fwdSafety):
		t.Fatalf("Forward did not return")
		return fwdResult{}
	}
}

func fwdHost(srv *httptest.Server) string {
	return strings.TrimPrefix(srv.URL, "http://")
}

// fwdRawDo sends raw bytes as a request so the test controls every byte of
// the request line and headers.
func fwdRawDo(t testing.TB, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(fwdSafety))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

// fwdSeen is what the test upstream saw of one request.
type fwdSeen struct {
	method, target, host string
	header               http.Header
	body                 []byte
	contentLength        int64
	transferEncoding     []string
}

func TestForwardRoundTrip(t *testing.T) {
	seen := make(chan fwdSeen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- fwdSeen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body, r.ContentLength, r.TransferEncoding}
		h := w.Header()
		h.Set("X-Resp", "r1")
		h.Set("Connection", "X-Resp-Hop")
		h.Set("X-Resp-Hop", "1")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Add("Set-Cookie", "a=1; Path=/")
		h.Add("Set-Cookie", "b=2; Path=/x")
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"created":true}`))
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	tests := []struct {
		name, method, target, body string
		chunked                    bool
	}{
		{"odd path and raw query", "POST", "/a//b/../c%2Fd?x=1&y=%20&&z=", `{"n":1}`, false},
		{"empty query kept", "PUT", "/p?", "payload", false},
		{"chunked body", "PATCH", "/v1/things/7?q=%E2%9C%93", "chunked payload", true},
		{"get without body", "GET", "/", "", false},
		{"delete", "DELETE", "/v1/things/7", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", tc.method, tc.target)
			b.WriteString("Host: api.example.com\r\n")
			b.WriteString("X-Custom: v1\r\nX-Custom: v2\r\n")
			b.WriteString("X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.7\r\n")
			// Tollgate's own X-Forwarded-Proto and -Host replace every
			// line the client sent.
			b.WriteString("X-Forwarded-Proto: http\r\nX-Forwarded-Proto: https\r\n")
			b.WriteString("X-Forwarded-Host: a.example\r\nX-Forwarded-Host: evil.example\r\n")
			b.WriteString("Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n")
			b.WriteString("Proxy-Authorization: Basic abc\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n")
			b.WriteString("Authorization: Bearer tok\r\n")
			if tc.body != "" {
				b.WriteString("Content-Type: text/plain\r\n")
				if tc.chunked {
					fmt.Fprintf(&b, "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(tc.body), tc.body)
				} else {
					fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(tc.body), tc.body)
				}
			} else {
				b.WriteString("\r\n")
			}
			calls := p.hookCalls.Load()
			resp, body := fwdRawDo(t, p.addr, b.String())

			s := <-seen
			if s.method != tc.method || s.target != tc.target {
				t.Errorf("upstream got %s %s, want %s %s", s.method, s.target, tc.method, tc.target)
			}
			if s.host != fwdHost(up) {
				t.Errorf("upstream Host %q, want %q", s.host, fwdHost(up))
			}
			if string(s.body) != tc.body {
				t.Errorf("upstream body %q, want %q", s.body, tc.body)
			}
			if tc.body == "" && (s.contentLength > 0 || len(s.transferEncoding) > 0) {
				t.Errorf("bodyless request got framing: length %d, encoding %v", s.contentLength, s.transferEncoding)
			}
			wantHdr := map[string][]string{
				"X-Custom":          {"v1", "v2"},
				"X-Forwarded-For":   {"203.0.113.9, 198.51.100.7, 127.0.0.1"},
				"X-Forwarded-Host":  {"api.example.com"},
				"X-Forwarded-Proto": {"http"},
				"Authorization":     {"Bearer tok"},
			}
			if tc.body != "" {
				wantHdr["Content-Type"] = []string{"text/plain"}
			}
			for k, want := range wantHdr {
				if got := s.header.Values(k); !slices.Equal(got, want) {
					t.Errorf("upstream %s = %q, want %q", k, got, want)
				}
			}
			for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Upgrade", "User-Agent", "Expect"} {
				if v := s.header.Values(k); len(v) > 0 {
					t.Errorf("upstream got hop-by-hop or invented %s: %q", k, v)
				}
			}

			if resp.StatusCode != http.StatusCreated || string(body) != `{"created":true}` {
				t.Fatalf("client got %d %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-Resp"); got != "r1" {
				t.Errorf("X-Resp %q, want r1", got)
			}
			if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1; Path=/", "b=2; Path=/x"}) {
				t.Errorf("Set-Cookie %q", got)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			for _, k := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
				if v := resp.Header.Values(k); len(v) > 0 {
					t.Errorf("client got hop-by-hop %s: %q", k, v)
				}
			}
			if v := resp.Header.Get("Connection"); strings.Contains(strings.ToLower(v), "x-resp-hop") {
				t.Errorf("client got upstream's Connection %q", v)
			}
			if got := resp.Header.Get("X-Quota-Test"); got != "yes" {
				t.Errorf("hook header %q, want yes", got)
			}
			if n := p.hookCalls.Load() - calls; n != 1 {
				t.Errorf("hook ran %d times, want 1", n)
			}
			if r := p.result(t); r.status != http.StatusCreated || r.err != nil {
				t.Errorf("Forward = %d, %v", r.status, r.err)
			}
		})
	}
}

func TestForwardHeadAndNoContent(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "1234")
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	resp, body := fwdRawDo(t, p.addr, "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("DELETE: %d %q", resp.StatusCode, body)
	}

	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(fwdSafety))
	br := bufio.NewReader(c)
	// Two HEADs on one connection: a HEAD answer must carry no body bytes
	// or the second answer would be garbled.
	for i := 0; i < 2; i++ {
		if _, err := io.WriteString(c, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
		if err != nil {
			t.Fatalf("HEAD %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != "1234" {
			t.Fatalf("HEAD %d: %d, Content-Length %q", i, resp.StatusCode, resp.Header.Get("Content-Length"))
		}
	}
}

// fwdGen is an endless deterministic byte source that is not a buffer.
type fwdGen struct {
	block []byte
	off   int
}

func newFwdGen() *fwdGen {
	b := make([]byte, 64<<10)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return &fwdGen{block: b}
}

func (g *fwdGen) Read(p []byte) (int, error) {
	n := copy(p, g.block[g.off:])
	g.off = (g.off + n) % len(g.block)
	return n, nil
}

func TestForwardStreamingUpload(t *testing.T) {
	type count struct {
		n   int64
		sum string
	}
	got := make(chan count, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs := sha256.New()
		n, err := io.Copy(hs, r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got <- count{n, hex.EncodeToString(hs.Sum(nil))}
		w.WriteHeader(http.StatusOK)
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	tests := []struct {
		name    string
		size    int64
		chunked bool
	}{
		{"content-length 256MiB", 256 << 20, false},
		{"chunked 64MiB", 64 << 20, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := sha256.New()
			if _, err := io.Copy(hs, io.LimitReader(newFwdGen(), tc.size)); err != nil {
				t.Fatal(err)
			}
			want := hex.EncodeToString(hs.Sum(nil))

			var body io.Reader = io.LimitReader(newFwdGen(), tc.size)
			req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/upload", io.NopCloser(body))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.size
			if tc.chunked {
				req.ContentLength = -1
			}

			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			runtime.ReadMemStats(&after)

			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			c := <-got
			if c.n != tc.size || c.sum != want {
				t.Fatalf("upstream got %d bytes sha256 %s, want %d bytes %s", c.n, c.sum, tc.size, want)
			}
			// Everything in this process (client, proxy, upstream) together
			// allocated far less than the body: nothing buffered it whole.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Fatalf("allocated %d MiB while streaming %d MiB", alloc>>20, tc.size>>20)
			}
		})
	}
}

func TestForwardStreamingDownload(t *testing.T) {
	const size = 64 << 20
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = io.Copy(w, io.LimitReader(newFwdGen(), size))
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	hs := sha256.New()
	_, _ = io.Copy(hs, io.LimitReader(newFwdGen(), size))
	want := hs.Sum(nil)

	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := client.Get("http://" + p.addr + "/download")
	if err != nil {
		t.Fatal(err)
	}
	hs.Reset()
	n, err := io.Copy(hs, resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || n != size || !bytes.Equal(hs.Sum(nil), want) {
		t.Fatalf("downloaded %d bytes (err %v), hash match %v", n, err, bytes.Equal(hs.Sum(nil), want))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Fatalf("allocated %d MiB while streaming %d MiB", alloc>>20, size>>20)
	}
}

func TestForwardServerSentEvents(t *testing.T) {
	const events = 4
	ack := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		fl := w.(http.Flusher)
		fl.Flush()
		for i := 0; i < events; i++ {
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			fl.Flush()
			// The next event exists only once the client has this one, so
			// a proxy that buffers would never deliver it.
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			case <-time.After(fwdSafety):
				return
			}
			if i == 0 {
				// A pause longer than the proxy's header timeout: the
				// timeout bounds the wait for the head, never the body.
				time.Sleep(3 * fwdShortTimeout)
			}
		}
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), fwdShortTimeout))

	client := &http.Client{Timeout: fwdSafety, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + p.addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	if resp.Header.Get("X-Quota-Test") != "yes" {
		t.Fatalf("hook header missing")
	}
	br := bufio.NewReader(resp.Body)
	for i := 0; i < events; i++ {
		var ev []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("event %d: %v (got %q)", i, err, ev)
			}
			if line == "\n" {
				break
			}
			ev = append(ev, strings.TrimSuffix(line, "\n"))
		}
		want := []string{"id: " + strconv.Itoa(i), "data: event " + strconv.Itoa(i)}
		if !slices.Equal(ev, want) {
			t.Fatalf("event %d = %q, want %q", i, ev, want)
		}
		select {
		case ack <- struct{}{}:
		case <-time.After(fwdSafety):
			t.Fatalf("upstream stopped waiting for event %d to be received", i)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the events: %q, %v", rest, err)
	}
}

func TestForwardWebSocket(t *testing.T) {
	tests := []struct {
		name   string
		accept bool
	}{
		{"upgrade accepted", true},
		{"upgrade refused", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			upReq := make(chan *http.Request, 1)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(fwdSafety))
				br := bufio.NewReader(c)
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				upReq <- r
				if !tc.accept {
					_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"denied\":true}")
					return
				}
				// The greeting shares a write with the 101, so it is already
				// buffered when the proxy parses the handshake answer.
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
					fwdAccept(r.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\ngreeting|")
				_, _ = io.Copy(c, br) // echo
			}()

			p := fwdStartProxy(t, fwdUpstreamConfig(ln.Addr().String(), 5*time.Second))
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(fwdSafety))
			key := "dGhlIHNhbXBsZSBub25jZQ=="
			_, err = io.WriteString(c, "GET /ws?room=1 HTTP/1.1\r\nHost: chat.example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("read handshake: %v", err)
			}

			r := <-upReq
			if r.RequestURI != "/ws?room=1" || r.Host != ln.Addr().String() {
				t.Errorf("upstream got %s for host %s", r.RequestURI, r.Host)
			}
			if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(r.Header.Get("Connection"), "Upgrade") {
				t.Errorf("upstream Upgrade %q Connection %q", r.Header.Get("Upgrade"), r.Header.Get("Connection"))
			}
			if r.Header.Get("Sec-WebSocket-Key") != key || r.Header.Get("X-Forwarded-For") != "203.0.113.9, 127.0.0.1" ||
				r.Header.Get("X-Forwarded-Host") != "chat.example.com" {
				t.Errorf("upstream headers %v", r.Header)
			}
			if resp.Header.Get("X-Quota-Test") != "yes" || p.hookCalls.Load() != 1 {
				t.Errorf("hook: header %q, calls %d", resp.Header.Get("X-Quota-Test"), p.hookCalls.Load())
			}

			if !tc.accept {
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusForbidden || string(body) != `{"denied":true}` || p.hookStatus.Load() != 403 {
					t.Fatalf("refusal relayed as %d %q (hook saw %d)", resp.StatusCode, body, p.hookStatus.Load())
				}
				if r := p.result(t); r.status != http.StatusForbidden {
					t.Fatalf("Forward = %d, %v", r.status, r.err)
				}
				return
			}

			if resp.StatusCode != http.StatusSwitchingProtocols || p.hookStatus.Load() != 101 {
				t.Fatalf("status %d, hook saw %d", resp.StatusCode, p.hookStatus.Load())
			}
			if resp.Header.Get("Sec-WebSocket-Accept") != fwdAccept(key) ||
				!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "Upgrade") {
				t.Fatalf("101 headers %v", resp.Header)
			}
			if r := p.result(t); r.status != http.StatusSwitchingProtocols || r.err != nil {
				t.Fatalf("Forward = %d, %v", r.status, r.err)
			}
			greeting := make([]byte, len("greeting|"))
			if _, err := io.ReadFull(br, greeting); err != nil || string(greeting) != "greeting|" {
				t.Fatalf("greeting %q: %v", greeting, err)
			}
			for _, msg := range []string{"\x81\x05hello", strings.Repeat("x", 100<<10)} {
				if _, err := io.WriteString(c, msg); err != nil {
					t.Fatal(err)
				}
				echo := make([]byte, len(msg))
				if _, err := io.ReadFull(br, echo); err != nil || string(echo) != msg {
					t.Fatalf("echo of %d bytes: %v", len(msg), err)
				}
			}
			// Closing the client ends the tunnel and the upstream connection.
			c.Close()
			wg.Wait()
		})
	}
}

func fwdAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func TestForwardUpstreamFailures(t *testing.T) {
	// A port that was just free: connecting is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()

	var hits atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(fwdSafety):
		}
	}))
	defer slow.Close()

	const (
		badGateway     = `{"error":"bad_gateway","message":"The upstream API could not be reached."}`
		gatewayTimeout = `{"error":"gateway_timeout","message":"The upstream API did not answer in time."}`
	)
	tests := []struct {
		name     string
		upstream string
		request  string
		status   int
		body     string
		hits     int32
	}{
		{"refused", deadAddr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 502, badGateway, 0},
		{"refused with body", deadAddr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", 502, badGateway, 0},
		{"websocket refused", deadAddr, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 502, badGateway, 0},
		// A GET is idempotent; a timed-out one must still not be retried.
		{"slow get", fwdHost(slow), "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 504, gatewayTimeout, 1},
		{"slow post", fwdHost(slow), "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", 504, gatewayTimeout, 1},
		{"slow chunked post", fwdHost(slow), "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 504, gatewayTimeout, 1},
		{"slow websocket", fwdHost(slow), "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 504, gatewayTimeout, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			p := fwdStartProxy(t, fwdUpstreamConfig(tc.upstream, fwdShortTimeout))
			resp, body := fwdRawDo(t, p.addr, tc.request)
			if resp.StatusCode != tc.status || string(body) != tc.body {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if n := p.hookCalls.Load(); n != 0 {
				t.Errorf("hook ran %d times without an upstream response", n)
			}
			if r := p.result(t); r.status != 0 || r.err == nil {
				t.Errorf("Forward = %d, %v; want 0 and an error", r.status, r.err)
			}
			if n := hits.Load(); n != tc.hits {
				t.Errorf("upstream saw %d requests, want %d", n, tc.hits)
			}
		})
	}
}

func TestNewForwarderRejectsBadUpstreams(t *testing.T) {
	tests := []struct {
		name string
		u    config.Upstream
		ok   bool
	}{
		{"http", config.Upstream{Scheme: "http", Host: "127.0.0.1:9000"}, true},
		{"https default port", config.Upstream{Scheme: "https", Host: "api.example.com"}, true},
		{"ftp", config.Upstream{Scheme: "ftp", Host: "127.0.0.1:21"}, false},
		{"no host", config.Upstream{Scheme: "http"}, false},
		{"path in host", config.Upstream{Scheme: "http", Host: "a/b"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := proxy.NewForwarder(tc.u)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", `""`},
		{"plain text", `"plain text"`},
		{`quote " and \ backslash`, `"quote \" and \\ backslash"`},
		{"line\nbreak\r\ttab\b\f", `"line\nbreak\r\ttab\b\f"`},
		{"nul\x00 esc\x1b", `"nul\u0000 esc\u001b"`},
		{"ünïcödé ✓ 😀", `"ünïcödé ✓ 😀"`},
		{"bad \xff utf8", `"bad \ufffd utf8"`},
		{"js \u2028\u2029", `"js \u2028\u2029"`},
		{"<html>&", `"<html>&"`},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			got := proxy.AppendJSONString([]byte("prefix:"), tc.in)
			if string(got) != "prefix:"+tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			var back string
			if err := json.Unmarshal(got[len("prefix:"):], &back); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if want := strings.ToValidUTF8(tc.in, "\ufffd"); back != want {
				t.Fatalf("round trip %q, want %q", back, want)
			}
		})
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = proxy.AppendJSONString(buf[:0], "a \"b\"\n\xff") }); n != 0 {
		t.Fatalf("AppendJSONString allocates %v times", n)
	}
}

func TestWriteJSONError(t *testing.T) {
	var ctx fasthttp.RequestCtx
	ctx.Response.SetBodyString("stale body")
	proxy.WriteJSONError(&ctx, fasthttp.StatusTooManyRequests, "limit_exceeded", `Say "hi"`)
	if got := ctx.Response.StatusCode(); got != 429 {
		t.Fatalf("status %d", got)
	}
	if got := string(ctx.Response.Header.ContentType()); got != "application/json" {
		t.Fatalf("Content-Type %q", got)
	}
	if got := string(ctx.Response.Body()); got != `{"error":"limit_exceeded","message":"Say \"hi\""}` {
		t.Fatalf("body %s", got)
	}
	if n := testing.AllocsPerRun(100, func() {
		proxy.WriteJSONError(&ctx, fasthttp.StatusBadGateway, "bad_gateway", "The upstream API could not be reached.")
	}); n != 0 {
		t.Fatalf("WriteJSONError allocates %v times", n)
	}
}

// TestServerAnswersUnreadableRequests: a request fasthttp cannot read gets
// Tollgate's JSON error, not fasthttp's text/plain one, and never reaches
// the handler.
func TestServerAnswersUnreadableRequests(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("upstream got %s %s", r.Method, r.RequestURI)
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	// A header block that fills the server's read buffer exactly without
	// ending: the server reads every byte, so its close sends no reset
	// that could cost the client the answer.
	size := proxy.NewServer(nil, "", nil).ReadBufferSize
	long := "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: "
	long += strings.Repeat("a", size-len(long))

	cases := []struct {
		name, raw string
		status    int
		code      string
	}{
		{"two Content-Lengths", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "invalid_request"},
		{"gzip, chunked", "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, "invalid_request"},
		{"Content-Length not a number", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n{}", 400, "invalid_request"},
		{"HTTP/1.1 without Host", "GET /x HTTP/1.1\r\n\r\n", 400, "invalid_request"},
		{"header too large", long, 431, "headers_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := fwdRawDo(t, p.addr, tc.raw)
			fwdCheckJSONError(t, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status, tc.code)
		})
	}
	select {
	case r := <-p.results:
		t.Errorf("the handler ran: %+v", r)
	default:
	}
}

// TestServerErrorHandlerTimeout: a client too slow to send its request
// (the server's ReadTimeout, 30 s, is too long to wait for here) is
// answered 408.
func TestServerErrorHandlerTimeout(t *testing.T) {
	srv := proxy.NewServer(nil, "", nil)
	timeout := fmt.Errorf("error when reading request headers: %w",
		&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded})
	for _, err := range []error{timeout, fasthttp.ErrTimeout} {
		var ctx fasthttp.RequestCtx
		srv.ErrorHandler(&ctx, err)
		fwdCheckJSONError(t, ctx.Response.StatusCode(), string(ctx.Response.Header.ContentType()), ctx.Response.Body(), 408, "request_timeout")
	}
}

// TestServerLogsThroughZap: what fasthttp logs about a connection goes to
// the logger NewServer was given, not to its own on stderr.
func TestServerLogsThroughZap(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	srv := proxy.NewServer(func(ctx *fasthttp.RequestCtx) {}, "tollgate-test", zap.New(core))
	ln, err := rawconn.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()

	resp, _ := fwdRawDo(t, ln.Addr().String(), "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	deadline := time.Now().Add(fwdSafety)
	for logs.FilterLoggerName("fasthttp").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nothing logged; all entries: %v", logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e := logs.FilterLoggerName("fasthttp").All()[0]
	if e.Level != zap.WarnLevel || !strings.Contains(e.Message, "duplicate content-length") {
		t.Errorf("logged %v %q", e.Level, e.Message)
	}
}

func fwdCheckJSONError(t *testing.T, status int, contentType string, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var e struct{ Error, Message string }
	if err := json.Unmarshal(body, &e); err != nil || status != wantStatus || contentType != "application/json" ||
		e.Error != wantCode || e.Message == "" {
		t.Errorf("got %d %q %s, want %d application/json with error %q", status, contentType, body, wantStatus, wantCode)
	}
}

// BenchmarkForwardPassthrough measures a small GET through the whole proxy;
// allocations are for client, proxy and upstream together.
func BenchmarkForwardPassthrough(b *testing.B) {
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"ok":true}`)
	}}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = upSrv.Serve(upLn) }()
	defer func() { _ = upSrv.Shutdown() }()

	f, err := proxy.NewForwarder(fwdUpstreamConfig(upLn.Addr().String(), 5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	srv := proxy.NewServer(func(ctx *fasthttp.RequestCtx) {
		_, _ = f.Forward(ctx, nil, nil)
	}, "bench", nil)
	ln := fasthttputil.NewInmemoryListener()
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()

	client := &fasthttp.HostClient{Addr: "proxy", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://proxy/v1/things?limit=10")
	req.Header.Set("Authorization", "Bearer x")

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Body()) == 0 {
			b.Fatalf("status %d", resp.StatusCode())
		}
	}
}
