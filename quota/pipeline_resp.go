package quota

import (
	"bytes"
	"errors"
	"fmt"
	"net"
)

// replyKind is what a RESP reply is, as far as the pipeline cares.
type replyKind uint8

const (
	respInt   replyKind = iota + 1 // :n
	respInts                       // an array of integers (or empty)
	respError                      // -ERR ...
	respOther                      // anything else: a status, bulk, nil or mixed array
)

func (k replyKind) String() string {
	switch k {
	case respInt:
		return "an integer"
	case respInts:
		return "an array of integers"
	case respError:
		return "an error"
	default:
		return "another reply type"
	}
}

type pipeReply struct {
	kind replyKind
	n    int64
	ints []int64
	str  string // the error's text
}

// Bounds on what the reader accepts: the quota scripts' replies are a few
// dozen bytes; anything near these is a broken stream.
const (
	pipeMaxReply = 1 << 20
	pipeMaxDepth = 8
)

var errPipeProtocol = errors.New("redis pipeline: malformed reply")

// pipeReader is a RESP reader that keeps partial replies across read
// errors, so a read deadline that fires between two bytes of a reply loses
// nothing.
type pipeReader struct {
	buf  []byte
	r, w int
	err  error // a read error that came with data, returned next
}

func (r *pipeReader) buffered() int { return r.w - r.r }

// next appends to dst every complete reply buffered, reading from conn
// until there is at least one.
func (r *pipeReader) next(conn net.Conn, dst []pipeReply) ([]pipeReply, error) {
	for {
		n0 := len(dst)
		for r.r < r.w {
			v, n, err := parseReply(r.buf[r.r:r.w], 0)
			if err != nil {
				return dst, err
			}
			if n == 0 {
				break
			}
			r.r += n
			dst = append(dst, v)
		}
		if len(dst) > n0 {
			return dst, nil
		}
		if r.err != nil {
			err := r.err
			r.err = nil
			return dst, err
		}
		if r.r == r.w {
			r.r, r.w = 0, 0
		}
		if r.w == len(r.buf) {
			if r.r > 0 {
				r.w = copy(r.buf, r.buf[r.r:r.w])
				r.r = 0
			} else if len(r.buf) >= pipeMaxReply {
				return dst, fmt.Errorf("%w: larger than %d bytes", errPipeProtocol, pipeMaxReply)
			} else {
				nb := make([]byte, max(4096, 2*len(r.buf)))
				r.w = copy(nb, r.buf[r.r:r.w])
				r.r, r.buf = 0, nb
			}
		}
		n, err := conn.Read(r.buf[r.w:])
		r.w += n
		if err != nil {
			if n == 0 {
				return dst, err
			}
			r.err = err
		}
	}
}

// parseReply parses one RESP2 reply from the start of b. It returns n == 0
// when b holds only part of it.
func parseReply(b []byte, depth int) (v pipeReply, n int, err error) {
	if len(b) == 0 {
		return v, 0, nil
	}
	line, n, err := crlfLine(b)
	if err != nil || n == 0 {
		if err == nil && len(b) > 64<<10 {
			err = fmt.Errorf("%w: line too long", errPipeProtocol)
		}
		return v, 0, err
	}
	body := line[1:]
	switch line[0] {
	case ':':
		i, ok := parseRESPInt(body)
		if !ok {
			return v, 0, fmt.Errorf("%w: integer %q", errPipeProtocol, body)
		}
		return pipeReply{kind: respInt, n: i}, n, nil
	case '-':
		return pipeReply{kind: respError, str: string(body)}, n, nil
	case '+':
		return pipeReply{kind: respOther}, n, nil
	case '$':
		size64, ok := parseRESPInt(body)
		size := int(size64)
		if !ok || size64 < -1 || size64 > pipeMaxReply {
			return v, 0, fmt.Errorf("%w: bulk length %q", errPipeProtocol, body)
		}
		if size == -1 {
			return pipeReply{kind: respOther}, n, nil
		}
		if len(b) < n+size+2 {
			return v, 0, nil
		}
		if b[n+size] != '\r' || b[n+size+1] != '\n' {
			return v, 0, fmt.Errorf("%w: bulk string not terminated", errPipeProtocol)
		}
		return pipeReply{kind: respOther}, n + size + 2, nil
	case '*':
		count, ok := parseRESPInt(body)
		if !ok || count < -1 || count > pipeMaxReply/3 {
			return v, 0, fmt.Errorf("%w: array length %q", errPipeProtocol, body)
		}
		if count == -1 {
			return pipeReply{kind: respOther}, n, nil
		}
		if depth >= pipeMaxDepth {
			return v, 0, fmt.Errorf("%w: arrays nested deeper than %d", errPipeProtocol, pipeMaxDepth)
		}
		// Count the elements first, so a partial array costs no
		// allocation however often it is retried.
		end, ints := n, true
		for range int(count) {
			e, m, err := parseReply(b[end:], depth+1)
			if err != nil || m == 0 {
				return v, 0, err
			}
			ints = ints && e.kind == respInt
			end += m
		}
		if !ints {
			return pipeReply{kind: respOther}, end, nil
		}
		v = pipeReply{kind: respInts, ints: make([]int64, count)}
		pos := n
		for i := range int(count) {
			e, m, _ := parseReply(b[pos:], depth+1)
			v.ints[i] = e.n
			pos += m
		}
		return v, end, nil
	}
	return v, 0, fmt.Errorf("%w: type byte %q", errPipeProtocol, line[0])
}

// crlfLine returns the line at the start of b without its CRLF, and the
// bytes it took with it; n == 0 when b holds no whole line yet.
func crlfLine(b []byte) (line []byte, n int, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, 0, nil
	}
	if i < 2 || b[i-1] != '\r' {
		return nil, 0, fmt.Errorf("%w: line without a type or CRLF", errPipeProtocol)
	}
	return b[:i-1], i + 1, nil
}

// parseRESPInt parses a RESP integer: an optional minus and digits that
// fit an int64.
func parseRESPInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return int64(-n), true
	case !neg && n < 1<<63:
		return int64(n), true
	}
	return 0, false
}
