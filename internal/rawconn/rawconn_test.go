package rawconn_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/rawconn"
)

// pair returns a connected (raw client, plain server) pair over loopback,
// the client made by Wrap and the server side accepted by Listen when
// serverRaw is set.
func pair(t *testing.T, serverRaw bool) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	var err error
	if serverRaw {
		ln, err = rawconn.Listen("127.0.0.1:0")
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	client = rawconn.Wrap(c)
	t.Cleanup(func() { client.Close(); s.Close() })
	return client, s
}

func TestWrapAndListenGiveConns(t *testing.T) {
	c, s := pair(t, true)
	if _, ok := c.(*rawconn.Conn); !ok {
		t.Errorf("Wrap(*net.TCPConn) = %T, want *rawconn.Conn", c)
	}
	if _, ok := s.(*rawconn.Conn); !ok {
		t.Errorf("Listen accepted %T, want *rawconn.Conn", s)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := rawconn.Wrap(a); got != a {
		t.Errorf("Wrap(net.Pipe end) = %T, want the connection itself", got)
	}
}

// TestRoundTrip sends payloads both ways; the large ones overflow the
// socket buffers, so writes are partial and wait for the peer to read.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
	}{
		{"one byte", 1},
		{"small", 512},
		{"larger than a read buffer", 100 << 10},
		{"larger than the socket buffers", 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t, true)
			// A write that stops short must fail the test, not hang it.
			dl := time.Now().Add(10 * time.Second)
			for _, conn := range []net.Conn{c, s} {
				if err := conn.SetDeadline(dl); err != nil {
					t.Fatal(err)
				}
			}
			up, down := make([]byte, tc.size), make([]byte, tc.size)
			rand.Read(up)
			rand.Read(down)
			var wg sync.WaitGroup
			var gotUp []byte
			var upErr, downErr error
			wg.Add(2)
			go func() { // server: read all of up, then send down
				defer wg.Done()
				gotUp = make([]byte, tc.size)
				if _, upErr = io.ReadFull(s, gotUp); upErr != nil {
					return
				}
				_, downErr = s.Write(down)
			}()
			go func() {
				defer wg.Done()
				n, err := c.Write(up)
				if err != nil || n != len(up) {
					t.Errorf("client Write = %d, %v; want %d, nil", n, err, len(up))
				}
			}()
			gotDown := make([]byte, tc.size)
			_, err := io.ReadFull(c, gotDown)
			wg.Wait()
			if err != nil || upErr != nil || downErr != nil {
				t.Fatalf("client read %v, server read %v, server write %v", err, upErr, downErr)
			}
			if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
				t.Fatal("payload corrupted in transit")
			}
		})
	}
}

func TestZeroLengthReadAndWrite(t *testing.T) {
	c, _ := pair(t, false)
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Errorf("Write(nil) = %d, %v; want 0, nil", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
}

func TestReadAfterPeerCloseIsEOF(t *testing.T) {
	c, s := pair(t, false)
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want \"bye\", nil (EOF ends it)", got, err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestDeadlines(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		c, _ := pair(t, false)
		if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := c.Read(make([]byte, 8))
		checkTimeout(t, "read", err)
	})
	t.Run("write", func(t *testing.T) {
		c, _ := pair(t, false) // the server never reads
		// Made before the deadline starts running: under -race the
		// allocation alone could outlast it.
		big := make([]byte, 64<<20)
		if err := c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Write(big)
		checkTimeout(t, "write", err)
		if n <= 0 || n >= len(big) {
			t.Errorf("Write wrote %d of %d bytes before its deadline; want a part", n, len(big))
		}
	})
}

func checkTimeout(t *testing.T, op string, err error) {
	t.Helper()
	var ne net.Error
	var oe *net.OpError
	switch {
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("%s past its deadline: %v; want a net.Error with Timeout()", op, err)
	case !errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("%s past its deadline: %v; want os.ErrDeadlineExceeded", op, err)
	case !errors.As(err, &oe) || oe.Op != op:
		t.Errorf("%s past its deadline: %v; want a *net.OpError for %q", op, err, op)
	case errors.As(oe.Err, new(*net.OpError)):
		t.Errorf("%s past its deadline: %v; want one *net.OpError, not one in another", op, err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	c, _ := pair(t, false)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read on a closed conn: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5 s after Close")
	}
}

func TestResetIsReported(t *testing.T) {
	c, s := pair(t, false)
	// A linger of 0 makes Close send a reset.
	if err := s.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a reset: %v; want ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("Read after a reset: %v; want a *net.OpError for read", err)
	}
	// Writing to the reset connection fails with an error (EPIPE once the
	// reset is known), as net's writes do; it must not kill the process.
	if err := c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Write([]byte("after the reset"))
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write after a reset: %v; want EPIPE or ECONNRESET", err)
	}
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Errorf("Write after a reset: %v; want a *net.OpError for write", err)
	}
}

// TestConcurrentReadsAndWrites has several goroutines write and read the
// one connection at once, as net.Conn allows: every byte arrives exactly
// once (run with -race to check the per-call state is not shared).
func TestConcurrentReadsAndWrites(t *testing.T) {
	c, s := pair(t, false)
	const writers, per = 8, 2000
	go func() { _, _ = io.Copy(s, s) }() // echo
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte{byte('a' + w)}
			for range per {
				if _, err := c.Write(msg); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	counts := make([]int, writers)
	var mu sync.Mutex
	var readers sync.WaitGroup
	total := 0
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 64)
			for {
				mu.Lock()
				if total == writers*per {
					mu.Unlock()
					return
				}
				mu.Unlock()
				if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
					t.Errorf("deadline: %v", err)
					return
				}
				n, err := c.Read(buf)
				mu.Lock()
				for _, b := range buf[:n] {
					counts[b-'a']++
				}
				total += n
				mu.Unlock()
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("read: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	readers.Wait()
	for w, n := range counts {
		if n != per {
			t.Errorf("writer %c: %d bytes echoed back, want %d", 'a'+w, n, per)
		}
	}
}
