package quota

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		in   string
		want string // fmt of the reply; "" when incomplete
		err  bool
	}{
		{":42\r\n", "int 42", false},
		{":-7\r\n", "int -7", false},
		{":9223372036854775807\r\n", "int 9223372036854775807", false},
		{":-9223372036854775808\r\n", "int -9223372036854775808", false},
		{":9223372036854775808\r\n", "", true},
		{"*4\r\n:1\r\n:250\r\n:250\r\n:250\r\n", "ints [1 250 250 250]", false},
		{"*0\r\n", "ints []", false},
		{"*2\r\n:1\r\n$3\r\nabc\r\n", "other", false},
		{"*2\r\n:1\r\n*1\r\n:2\r\n", "other", false},
		{"-NOSCRIPT No matching script\r\n", "error NOSCRIPT No matching script", false},
		{"+OK\r\n", "other", false},
		{"$-1\r\n", "other", false},
		{"*-1\r\n", "other", false},
		{"$3\r\nabc\r\n", "other", false},
		{":1", "", false},
		{"*3\r\n:1\r\n:2\r\n", "", false},
		{"$10\r\nabc", "", false},
		{"", "", false},
		{"?x\r\n", "", true},
		{":1\n", "", true},
		{"\r\n", "", true},
		{":x\r\n", "", true},
		{"$3\r\nabcd\r\n", "", true},
		{"$-2\r\n", "", true},
		{"*-2\r\n", "", true},
		{"*9999999999\r\n", "", true},
		{"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "", true},
	}
	for _, tc := range tests {
		v, n, err := parseReply([]byte(tc.in), 0)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v, want error %v", tc.in, err, tc.err)
			continue
		}
		got := ""
		if n > 0 {
			got = describeReply(v)
			if n != len(tc.in) {
				t.Errorf("%q: consumed %d of %d", tc.in, n, len(tc.in))
			}
		}
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func describeReply(v pipeReply) string {
	switch v.kind {
	case respInt:
		return fmt.Sprintf("int %d", v.n)
	case respInts:
		return fmt.Sprintf("ints %v", v.ints)
	case respError:
		return "error " + v.str
	}
	return "other"
}

// TestPipeReaderSplitReads: replies arriving a byte at a time, with a read
// deadline firing between bytes, come out whole and in order.
func TestPipeReaderSplitReads(t *testing.T) {
	stream := ":1\r\n*3\r\n:5\r\n:-6\r\n:7\r\n-ERR x\r\n$2\r\nok\r\n:8\r\n"
	want := []string{"int 1", "ints [5 -6 7]", "error ERR x", "other", "int 8"}
	c := &trickleConn{data: []byte(stream)}
	var r pipeReader
	var got []string
	var replies []pipeReply
	for len(got) < len(want) {
		var err error
		replies, err = r.next(c, replies[:0])
		if err != nil && err != errTrickleTimeout {
			t.Fatalf("next: %v after %v", err, got)
		}
		for _, v := range replies {
			got = append(got, describeReply(v))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

var errTrickleTimeout = fmt.Errorf("trickle: %w", errDeadline{})

type errDeadline struct{}

func (errDeadline) Error() string   { return "i/o timeout" }
func (errDeadline) Timeout() bool   { return true }
func (errDeadline) Temporary() bool { return true }

// trickleConn hands out one byte per read and a timeout every other read.
type trickleConn struct {
	net.Conn
	data []byte
	odd  bool
}

func (c *trickleConn) Read(p []byte) (int, error) {
	c.odd = !c.odd
	if c.odd {
		return 0, errTrickleTimeout
	}
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	p[0] = c.data[0]
	c.data = c.data[1:]
	return 1, nil
}

func (c *trickleConn) SetReadDeadline(time.Time) error { return nil }

func TestAppendCommand(t *testing.T) {
	got, err := appendCommand(nil, []any{"evalsha", []byte("ab"), 2, int64(-3), uint64(4), 1.5, true, int32(7), uint32(8)})
	if err != nil {
		t.Fatal(err)
	}
	want := "*9\r\n$7\r\nevalsha\r\n$2\r\nab\r\n$1\r\n2\r\n$2\r\n-3\r\n$1\r\n4\r\n$3\r\n1.5\r\n$1\r\n1\r\n$1\r\n7\r\n$1\r\n8\r\n"
	if string(got) != want {
		t.Fatalf("got %q", got)
	}
	for _, bad := range []any{struct{}{}, nil} {
		if _, err := appendCommand(nil, []any{bad}); err == nil {
			t.Errorf("%T accepted", bad)
		}
	}
}

// FuzzParseReply: any input parses without panicking; a complete reply
// parses the same from exactly its own bytes and is incomplete (not an
// error) from any shorter prefix.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{":1\r\n", "*2\r\n:1\r\n:2\r\n", "-ERR x\r\n", "$3\r\nabc\r\n", "*1\r\n*1\r\n:1\r\n", "+OK\r\n", "$-1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := parseReply(b, 0)
		if n < 0 || n > len(b) || (err != nil && n != 0) {
			t.Fatalf("n=%d err=%v for %d bytes", n, err, len(b))
		}
		if n == 0 {
			return
		}
		v2, n2, err2 := parseReply(b[:n], 0)
		if err2 != nil || n2 != n || describeReply(v2) != describeReply(v) {
			t.Fatalf("own bytes: %v %d %v, first parse %v %d", describeReply(v2), n2, err2, describeReply(v), n)
		}
		for k := 0; k < n; k++ {
			if _, m, err := parseReply(b[:k], 0); m != 0 || err != nil {
				t.Fatalf("prefix %q of %q: n=%d err=%v", b[:k], b[:n], m, err)
			}
		}
		if bytes.Contains(b[:n], []byte("\n")) == false {
			t.Fatalf("a complete reply without a line end: %q", b[:n])
		}
	})
}
