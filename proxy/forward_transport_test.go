package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fwdScripted is a raw upstream whose answer to the nth request (counted
// across connections, from 0) is chosen by the test, so it can answer and
// then close a keep-alive connection, or never answer.
type fwdScripted struct {
	addr  string
	conns atomic.Int32
	reqs  atomic.Int32
	wg    sync.WaitGroup
	done  chan struct{}
}

type fwdAction int

const (
	fwdAnswer      fwdAction = iota // 200 with a small body, keep-alive
	fwdAnswerClose                  // 200, then close without saying so
	fwdHang                         // read the request, never answer
)

func newFwdScripted(t *testing.T, script func(n int) fwdAction) *fwdScripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fwdScripted{addr: ln.Addr().String(), done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c, script)
			}()
		}
	}()
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *fwdScripted) serve(c net.Conn, script func(int) fwdAction) {
	defer c.Close()
	go func() {
		<-s.done
		c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		switch script(int(s.reqs.Add(1) - 1)) {
		case fwdHang:
			select {
			case <-s.done:
			case <-time.After(fwdSafety):
			}
			return
		case fwdAnswerClose:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return
		default:
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	}
}

// TestForwardPooledConnection covers a pooled connection's second use: the
// wait for its answer is bounded, and a connection the upstream closed
// while idle is noticed, not waited on.
func TestForwardPooledConnection(t *testing.T) {
	const (
		getReq  = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
		postReq = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
	)
	tests := []struct {
		name    string
		script  func(n int) fwdAction
		second  string
		status  int
		conns   int32
		timeout time.Duration
	}{
		{"second answer too slow", func(n int) fwdAction {
			if n == 0 {
				return fwdAnswer
			}
			return fwdHang
		}, getReq, http.StatusGatewayTimeout, 1, fwdShortTimeout},
		// A GET is safe to send again on a new connection.
		{"closed while idle, get", func(n int) fwdAction {
			if n == 0 {
				return fwdAnswerClose
			}
			return fwdAnswer
		}, getReq, http.StatusOK, 2, fwdSafety},
		// A POST is not: the client gets a prompt 502, not a timeout.
		{"closed while idle, post", func(n int) fwdAction {
			if n == 0 {
				return fwdAnswerClose
			}
			return fwdAnswer
		}, postReq, http.StatusBadGateway, 1, fwdSafety},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := newFwdScripted(t, tc.script)
			p := fwdStartProxy(t, fwdUpstreamConfig(up.addr, tc.timeout))
			resp, body := fwdRawDo(t, p.addr, getReq)
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("first request: %d %q", resp.StatusCode, body)
			}
			p.result(t)
			// Long enough for the upstream's close to reach the proxy's
			// connection while it sits in the pool.
			time.Sleep(50 * time.Millisecond)
			resp, body = fwdRawDo(t, p.addr, tc.second)
			if resp.StatusCode != tc.status {
				t.Fatalf("second request: %d %q, want %d", resp.StatusCode, body, tc.status)
			}
			if n := up.conns.Load(); n != tc.conns {
				t.Errorf("upstream saw %d connections, want %d", n, tc.conns)
			}
		})
	}
}

// TestForwardReusesLatestConnection: after a burst opened several upstream
// connections, requests one at a time all go over the one used last, so
// the others idle out and the busy one stays fresh for writeAndAwait.
func TestForwardReusesLatestConnection(t *testing.T) {
	const burst = 6
	var (
		mu      sync.Mutex
		arrived int
		release = make(chan struct{})
		seen    []string
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RemoteAddr)
		arrived++
		if arrived == burst {
			close(release)
		}
		mu.Unlock()
		select { // the burst's requests wait for each other: one connection each
		case <-release:
		case <-time.After(fwdSafety):
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), fwdSafety))

	var wg sync.WaitGroup
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, body := fwdRawDo(t, p.addr, "GET /burst HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != http.StatusOK {
				t.Errorf("burst request: %d %q", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	burstConns := map[string]bool{}
	for _, a := range seen {
		burstConns[a] = true
	}
	seen = nil
	mu.Unlock()
	if len(burstConns) != burst {
		t.Fatalf("the burst used %d upstream connections, want %d", len(burstConns), burst)
	}

	for range 2 * burst {
		if resp, body := fwdRawDo(t, p.addr, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != http.StatusOK {
			t.Fatalf("sequential request: %d %q", resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, a := range seen {
		if a != seen[0] || !burstConns[a] {
			t.Fatalf("sequential request %d went over %s, the first over %s; want one pooled connection for all: %v", i, a, seen[0], seen)
		}
	}
}

// TestForwardResponseFraming sends answers the transport reads whole and
// answers it streams, in turn on one upstream connection: each must arrive
// intact and leave the connection reusable.
func TestForwardResponseFraming(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 100<<10/16) // over the buffered limit
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/small":
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", "11")
			_, _ = io.WriteString(w, `{"ok":true}`)
		case "/empty":
			h.Set("Content-Length", "0")
		case "/big":
			h.Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = io.WriteString(w, big)
		case "/chunked":
			_, _ = io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
		case "/events":
			// An event stream with a length is still relayed as a stream.
			h.Set("Content-Type", "text/event-stream; charset=utf-8")
			h.Set("Content-Length", "13")
			_, _ = io.WriteString(w, "data: hello\n\n")
		}
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	tests := []struct {
		path, body, contentType string
	}{
		{"/small", `{"ok":true}`, "application/json"},
		{"/empty", "", ""},
		{"/big", big, ""},
		{"/chunked", "part one, part two", ""},
		{"/events", "data: hello\n\n", "text/event-stream; charset=utf-8"},
		{"/small", `{"ok":true}`, "application/json"},
	}
	for _, tc := range tests {
		resp, body := fwdRawDo(t, p.addr, "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != http.StatusOK || string(body) != tc.body {
			t.Fatalf("%s: %d, %d bytes, want 200 and %d bytes", tc.path, resp.StatusCode, len(body), len(tc.body))
		}
		if tc.contentType != "" && resp.Header.Get("Content-Type") != tc.contentType {
			t.Errorf("%s: Content-Type %q", tc.path, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("X-Quota-Test") != "yes" {
			t.Errorf("%s: hook header missing", tc.path)
		}
		if r := p.result(t); r.status != http.StatusOK || r.err != nil {
			t.Errorf("%s: Forward = %d, %v", tc.path, r.status, r.err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections for sequential requests, want 1", n)
	}
}

// TestForwardAbandonedStream: a client that leaves mid-body must not leave
// the rest of that body on a pooled connection for the next request.
func TestForwardAbandonedStream(t *testing.T) {
	const size = 8 << 20
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = io.Copy(w, io.LimitReader(newFwdGen(), size))
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(fwdSafety))
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if r := p.result(t); r.status != http.StatusOK {
		t.Fatalf("Forward = %d, %v", r.status, r.err)
	}

	for i := 0; i < 3; i++ {
		resp, body := fwdRawDo(t, p.addr, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Fatalf("request %d after the abandoned stream: %d %q", i, resp.StatusCode, body)
		}
	}
}

// TestForwardShortClientBody: a client that announces a body the proxy
// reads whole and stops short gets a 400, and the upstream sees nothing.
// (fasthttp's server reads the first 8 KiB itself before the handler runs.)
func TestForwardShortClientBody(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, strconv.Itoa(len(b)))
	}))
	defer up.Close()
	p := fwdStartProxy(t, fwdUpstreamConfig(fwdHost(up), 5*time.Second))

	// The same size sent in full arrives in full.
	full := strings.Repeat("x", 12<<10)
	resp, body := fwdRawDo(t, p.addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12288\r\n\r\n"+full)
	if resp.StatusCode != http.StatusOK || string(body) != "12288" {
		t.Fatalf("full body: %d %q", resp.StatusCode, body)
	}
	p.result(t)
	hits.Store(0)

	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(fwdSafety))
	if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12288\r\n\r\n"+strings.Repeat("x", 9<<10)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_body"`) {
		t.Fatalf("got %d %s, want 400 invalid_body", resp.StatusCode, body)
	}
	if r := p.result(t); r.status != 0 || r.err == nil {
		t.Errorf("Forward = %d, %v; want 0 and an error", r.status, r.err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
}

// TestForwardEarlyAnswer: an upstream that refuses a large upload after
// reading only its head, and stops reading, gets its answer relayed rather
// than turned into a 502 by the failed write of the rest of the body.
func TestForwardEarlyAnswer(t *testing.T) {
	const (
		size   = 32 << 20
		answer = `{"error":"payload_too_large"}`
	)
	tests := []struct {
		name    string
		chunked bool
		// after runs once the answer is written, before the upstream lets
		// go of the connection.
		after   func(c net.Conn, done <-chan struct{})
		timeout time.Duration
	}{
		{"close", false, func(net.Conn, <-chan struct{}) {}, 5 * time.Second},
		{"close, chunked", true, func(net.Conn, <-chan struct{}) {}, 5 * time.Second},
		{"half-close, then close", false, func(c net.Conn, _ <-chan struct{}) {
			_ = c.(*net.TCPConn).CloseWrite()
			time.Sleep(50 * time.Millisecond)
		}, 5 * time.Second},
		// Neither reads nor closes: the proxy's writes stall until the
		// upstream timeout, and the answer is waiting.
		{"stops reading, stays open", false, func(_ net.Conn, done <-chan struct{}) {
			select {
			case <-done:
			case <-time.After(fwdSafety):
			}
		}, 300 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
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
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"+
					"Content-Length: "+strconv.Itoa(len(answer))+"\r\nConnection: close\r\n\r\n"+answer)
				tc.after(c, done)
			}()
			t.Cleanup(func() {
				close(done)
				ln.Close()
				wg.Wait()
			})
			p := fwdStartProxy(t, fwdUpstreamConfig(ln.Addr().String(), tc.timeout))
			client := &http.Client{Timeout: fwdSafety, Transport: &http.Transport{}}
			defer client.CloseIdleConnections()

			req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/upload",
				io.NopCloser(io.LimitReader(newFwdGen(), size)))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = size
			if tc.chunked {
				req.ContentLength = -1
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != answer {
				t.Fatalf("got %d %q, want 413 %q", resp.StatusCode, body, answer)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if r := p.result(t); r.status != http.StatusRequestEntityTooLarge || r.err != nil {
				t.Errorf("Forward = %d, %v; want 413", r.status, r.err)
			}
			if s := p.hookStatus.Load(); s != http.StatusRequestEntityTooLarge {
				t.Errorf("hook saw %d", s)
			}
		})
	}
}
