package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// fwdMaxBufferedResponse is the largest known-length response body read
// whole before it is relayed. Buffering it costs one copy into a pooled
// buffer; streaming it through fasthttp's body-stream machinery costs a
// stream object, closures, deadline updates and a release dance per
// response, which on small API answers is several times the copy.
// Unknown-length (chunked, read-until-close) and larger bodies, and event
// streams of any length, are streamed.
const fwdMaxBufferedResponse = 64 << 10

// fwdMaxInterim bounds the 1xx answers skipped before the real one, as
// fasthttp does.
const fwdMaxInterim = 100

var errFwdTooManyInterim = errors.New("forward: too many informational responses")

// fwdEarlyAnswerWait bounds the wait for an answer the upstream may have
// sent before it stopped reading the request body (see earlyAnswer): by
// the time a write fails, such an answer has normally long arrived.
const fwdEarlyAnswerWait = time.Second

// fwdMaxAttempts: a request is sent at most twice, the second time only
// when fwdRetryIf allows.
const fwdMaxAttempts = 2

// do sends req and reads the answer's head into resp, and its body when
// small (see fwdRoundTrip). When the body is left to stream from resp's
// BodyStream it returns the connection, which the caller must hand back
// with endStream once the stream is closed. It is HostClient.Do without what a proxy does
// not need (parsing the request URI twice to check its scheme, redirect
// and user-agent handling) and with the request-target sent verbatim: the
// URI is never parsed, so the bytes of the client's request line go out as
// they came (a parsed URI is re-serialised, which normalises it: an empty
// "?" disappears, for one). Only the HostClient's connection pool is used.
func (f *Forwarder) do(req *fasthttp.Request, resp *fasthttp.Response) (*fwdConn, error) {
	for attempt := 1; ; attempt++ {
		resp.Reset()
		resp.Header.SetNoDefaultContentType(true)
		streaming, retry, err := fwdRoundTrip(f.client, req, resp)
		if err == nil {
			return streaming, nil
		}
		if !retry || req.IsBodyStream() || attempt >= fwdMaxAttempts || !fwdRetryIf(req, err) {
			if err == io.EOF {
				err = fasthttp.ErrConnectionClosed
			}
			return nil, err
		}
	}
}

// fwdRoundTrip is one attempt of do; retry says whether a failure may be
// retried on another connection (if fwdRetryIf agrees).
func fwdRoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (streaming *fwdConn, retry bool, err error) {
	cc, err := hc.AcquireConn(0, req.ConnectionClose())
	if err != nil {
		return nil, false, err
	}
	conn := cc.Conn()
	fc := fwdConnOfNet(conn)
	if fc == nil {
		// Every connection comes from Forwarder.dial; anything else is a
		// wiring bug, not a reason to panic in the data path.
		hc.CloseConn(cc)
		return nil, false, errors.New("forward: upstream connection of unknown type")
	}

	fc.writeFailed = false
	// Asked before the write, which closes a body stream.
	large := fwdLargeRequest(req)
	now := time.Now()
	if fc.canAwait(conn, req, cc.LastUseTime(), now) {
		err = fc.armWrite(now)
		if err == nil {
			err = fc.armHead(now)
		}
		if err == nil {
			err = fc.writeAndAwait(hc, req)
		}
	} else {
		err = fc.writeThenArm(hc, conn, req, now)
	}
	if err != nil {
		if fc.writeFailed && large && fc.earlyAnswer(hc, conn, req, resp) {
			// The upstream answered without reading the whole body (a 413,
			// a 401): relay that, as Go's Transport does, instead of a 502.
			// The rest of the body is not on the wire, so the connection
			// cannot serve another request.
			hc.CloseConn(cc)
			return nil, false, nil
		}
		hc.CloseConn(cc)
		if fwdIsTimeout(err) && !errors.Is(err, errFwdHeadTimeout) {
			err = fasthttp.ErrTimeout
		}
		return nil, true, err
	}

	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	br := hc.AcquireReader(conn)
	if err = fwdReadHead(resp, br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return nil, true, err
	}
	h := &resp.Header
	status := h.StatusCode()
	closeConn := req.ConnectionClose() || resp.ConnectionClose()

	switch {
	case status == fasthttp.StatusSwitchingProtocols:
		// Upgrade was stripped, so this connection now speaks something
		// nobody asked for: it must not serve another request. Forward
		// answers 502.
		closeConn = true
	case resp.SkipBody || status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified:
		// No body.
	case fwdBuffered(h):
		resp.StreamBody = false
		if err = resp.ReadBody(br, 0); err != nil {
			hc.ReleaseReader(br)
			hc.CloseConn(cc)
			return nil, true, err
		}
	default:
		resp.StreamBody = true
		if err = resp.ReadBody(br, 0); err != nil {
			hc.ReleaseReader(br)
			hc.CloseConn(cc)
			return nil, true, err
		}
		// The head arrived in time; the body may take as long as it likes
		// (an event stream may never end). The connection and its reader
		// stay with the stream until Forward's exchange ends.
		if err = fc.clearHead(); err != nil {
			_ = resp.CloseBodyStream()
			hc.ReleaseReader(br)
			hc.CloseConn(cc)
			return nil, true, err
		}
		if fc.release == nil {
			// fasthttp's pool entry has an unexported type, so the pool
			// calls are bound to it here; the entry lives exactly as long
			// as the connection, so this runs once per connection.
			entry := cc
			fc.release = func(closeConn bool) {
				if closeConn {
					hc.CloseConn(entry)
				} else {
					hc.ReleaseConn(entry)
				}
			}
		}
		fc.bindStream(hc, br, closeConn)
		return fc, false, nil
	}

	hc.ReleaseReader(br)
	if closeConn {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return nil, false, nil
}

// writeThenArm writes the request, then gives the head the timeout.
func (c *fwdConn) writeThenArm(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request, now time.Time) error {
	// A streamed request body may take long to send: its writes each get
	// the timeout as an idle bound. Anything else is written whole under
	// one deadline.
	c.idleWrites = req.IsBodyStream()
	err := c.armWrite(now)
	if err == nil {
		err = fwdWriteRequest(hc, conn, req)
	}
	if c.idleWrites {
		c.idleWrites = false
		now = time.Now()
	}
	if err != nil {
		return err
	}
	// The request is out: the head must now arrive within the timeout.
	return c.armHead(now)
}

func fwdWriteRequest(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request) error {
	bw := hc.AcquireWriter(conn)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	return err
}

// fwdLargeRequest reports whether req's body is one an upstream may refuse
// before reading it: streamed, or too large to sit in the socket buffers
// at once. A failed write of a small request is a dead (pooled)
// connection, not an early answer, and is left to the retry logic.
func fwdLargeRequest(req *fasthttp.Request) bool {
	// IsBodyStream first: Body would read a stream whole.
	return req.IsBodyStream() || len(req.Body()) > fwdMaxBufferedRequest
}

// earlyAnswer tries to read a complete answer the upstream sent before it
// stopped reading the request, once writing the request failed. It is best
// effort: a reset may have made the kernel drop what had arrived. Only a
// final answer whose body is small enough to buffer counts; anything else
// leaves resp reset and the write error stands.
func (c *fwdConn) earlyAnswer(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request, resp *fasthttp.Response) bool {
	dl := time.Now().Add(min(c.timeout, fwdEarlyAnswerWait))
	if err := c.Conn.SetReadDeadline(dl); err != nil {
		return false
	}
	c.readDL = dl
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true)
	resp.SkipBody = req.Header.IsHead()
	br := hc.AcquireReader(conn)
	defer hc.ReleaseReader(br)
	ok := fwdReadHead(resp, br) == nil
	if ok {
		switch s := resp.Header.StatusCode(); {
		case s == fasthttp.StatusSwitchingProtocols:
			ok = false
		case resp.SkipBody || s == fasthttp.StatusNoContent || s == fasthttp.StatusNotModified:
		default:
			resp.StreamBody = false
			ok = resp.ReadBody(br, fwdMaxBufferedResponse) == nil
		}
	}
	if !ok {
		resp.Reset()
	}
	return ok
}

// fwdReadHead reads the response head, skipping interim (1xx other than
// 101) answers.
func fwdReadHead(resp *fasthttp.Response, br *bufio.Reader) error {
	resp.ResetBody()
	h := &resp.Header
	for n := 0; ; n++ {
		if err := h.Read(br); err != nil {
			return err
		}
		if s := h.StatusCode(); s < 100 || s > 199 || s == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if n >= fwdMaxInterim {
			return errFwdTooManyInterim
		}
	}
}

// fwdBuffered reports whether a response body is read whole.
func fwdBuffered(h *fasthttp.ResponseHeader) bool {
	n := h.ContentLength()
	return n >= 0 && n <= fwdMaxBufferedResponse && !fwdIsEventStream(h.ContentType())
}

// fwdIsEventStream reports a text/event-stream content type (parameters
// ignored).
func fwdIsEventStream(ct []byte) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !fwdEqualFold(ct[:len(es)], es) {
		return false
	}
	if len(ct) == len(es) {
		return true
	}
	switch ct[len(es)] {
	case ';', ' ', '\t':
		return true
	}
	return false
}

// fwdConn enforces the upstream timeouts fasthttp cannot express while
// streaming: fasthttp's request timeout is one deadline over the whole
// exchange, which would cut long uploads and endless event streams. Here
// each write must progress within the timeout, the response head must
// arrive within it once the request is out, and a streamed body has no
// deadline.
//
// Setting a deadline costs a timer update in the runtime. On a busy
// connection the deadline armed by the previous request or write is
// therefore kept as long as at least timeout-slack of it is left, so the
// effective bound is between timeout-slack and timeout, and a connection
// under load touches its timers about once per slack instead of on every
// request.
//
// Fields are only touched by whichever goroutine owns the connection; the
// pool's lock orders hand-overs.
type fwdConn struct {
	net.Conn
	addr    fwdAddr
	timeout time.Duration
	slack   time.Duration
	readDL  time.Time // armed read deadline; zero when none
	writeDL time.Time // armed write deadline; zero when none
	// idleWrites: a streamed request body is being written.
	idleWrites bool
	// writeFailed: a write to the upstream failed during the current
	// request, as opposed to reading the client's body for it.
	writeFailed bool

	// raw waits for readability without reading (writeAndAwait); nil
	// when the connection has no file descriptor of its own.
	raw        syscall.RawConn
	onReadable func(uintptr) bool
	// The exchange writeAndAwait is carrying.
	pendingHC      *fasthttp.HostClient
	pendingReq     *fasthttp.Request
	pendingWritten bool
	pendingErr     error

	// A streamed response body in progress holds the connection and its
	// reader until Forward's exchange ends.
	streaming bool
	hc        *fasthttp.HostClient
	br        *bufio.Reader
	closeConn bool
	// release gives the connection back to the pool (or closes it).
	release func(closeConn bool)
}

// fwdDeadlineSlack is how stale an armed deadline may be before it is
// re-armed: a small fraction of the timeout, at most a second.
func fwdDeadlineSlack(timeout time.Duration) time.Duration {
	return min(timeout/8, time.Second)
}

// fwdAddr lets the transport find the fwdConn under the connection the
// pool hands out, which for TLS is a *tls.Conn wrapping it: LocalAddr is
// passed through.
type fwdAddr struct {
	net.Addr
	conn *fwdConn
}

func fwdConnOfNet(c net.Conn) *fwdConn {
	if a, ok := c.LocalAddr().(*fwdAddr); ok {
		return a.conn
	}
	return nil
}

func (c *fwdConn) LocalAddr() net.Addr { return &c.addr }

// fwdStale reports whether the armed deadline dl leaves less than
// timeout-slack from now (always true when none is armed).
func (c *fwdConn) fwdStale(dl, now time.Time) bool {
	return dl.IsZero() || dl.Sub(now) < c.timeout-c.slack
}

func (c *fwdConn) Write(p []byte) (int, error) {
	if c.idleWrites || c.streaming {
		// A streamed upload, or TLS housekeeping while a response body
		// streams: each write gets its own bound.
		if err := c.armWrite(time.Now()); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.writeFailed = true
	}
	return n, err
}

// armWrite makes sure writes from now on progress within the timeout.
func (c *fwdConn) armWrite(now time.Time) error {
	if !c.fwdStale(c.writeDL, now) {
		return nil
	}
	dl := now.Add(c.timeout)
	if err := c.Conn.SetWriteDeadline(dl); err != nil {
		return err
	}
	c.writeDL = dl
	return nil
}

// armHead makes sure the response head arrives within the timeout.
func (c *fwdConn) armHead(now time.Time) error {
	if !c.fwdStale(c.readDL, now) {
		return nil
	}
	dl := now.Add(c.timeout)
	if err := c.Conn.SetReadDeadline(dl); err != nil {
		return err
	}
	c.readDL = dl
	return nil
}

// clearHead lifts the read deadline for a streamed body.
func (c *fwdConn) clearHead() error {
	if c.readDL.IsZero() {
		return nil
	}
	if err := c.Conn.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	c.readDL = time.Time{}
	return nil
}

// bindStream records what endStream must give back.
func (c *fwdConn) bindStream(hc *fasthttp.HostClient, br *bufio.Reader, closeConn bool) {
	c.streaming = true
	c.hc = hc
	c.br = br
	c.closeConn = closeConn
}

// endStream gives the connection back once its streamed body is closed:
// to the pool when the body was read to its end, else closed (the rest of
// the body is still on the wire). The body stream must already be closed.
func (c *fwdConn) endStream(complete bool) {
	if !c.streaming {
		return
	}
	c.streaming = false
	c.hc.ReleaseReader(c.br)
	c.br = nil
	c.release(c.closeConn || !complete)
}

// errFwdHeadTimeout marks a wait for the response head that ran out, so it
// is not mistaken for a write timeout.
var errFwdHeadTimeout = errors.New("forward: upstream response head timed out")

// fwdAwaitFresh bounds how long a pooled connection may have been idle for
// writeAndAwait to be used on it; see there.
const fwdAwaitFresh = time.Second

// canAwait reports whether writeAndAwait may carry this exchange: a plain
// TCP connection (TLS keeps its own buffering), a request written whole,
// nothing already buffered on our side, and a connection used within
// fwdAwaitFresh.
func (c *fwdConn) canAwait(conn net.Conn, req *fasthttp.Request, lastUse, now time.Time) bool {
	return c.raw != nil && conn == net.Conn(c) && !req.IsBodyStream() &&
		!lastUse.IsZero() && now.Sub(lastUse) < fwdAwaitFresh
}

// writeAndAwait writes the request and waits until the upstream's answer
// is readable, without the read that Go's net package would make first and
// that, right after a request went out, can only fail with EAGAIN: one
// syscall less per forwarded request.
//
// The runtime forgets earlier readiness when a wait starts, and only then
// is the request written (from inside the raw read callback), so any answer
// to it is an event the wait sees. What the forgetting could hide is what
// arrived before: data (which an idle keep-alive connection never has) or
// the upstream closing it. A closed peer answers the request with a reset,
// which wakes the wait; a middlebox dropping that reset on a long-idle flow
// would not, hence fwdAwaitFresh. The wait ends at the head deadline.
func (c *fwdConn) writeAndAwait(hc *fasthttp.HostClient, req *fasthttp.Request) error {
	c.pendingHC, c.pendingReq, c.pendingWritten, c.pendingErr = hc, req, false, nil
	err := c.raw.Read(c.onReadable)
	werr := c.pendingErr
	c.pendingHC, c.pendingReq = nil, nil
	switch {
	case werr != nil:
		return werr
	case err != nil && fwdIsTimeout(err):
		return fmt.Errorf("%w: %w", errFwdHeadTimeout, err)
	}
	return err
}

// readable is the raw read callback of writeAndAwait: the first call
// writes the request and asks to wait, the next one means readable.
func (c *fwdConn) readable(uintptr) bool {
	if c.pendingWritten {
		return true
	}
	c.pendingWritten = true
	c.pendingErr = fwdWriteRequest(c.pendingHC, c, c.pendingReq)
	return c.pendingErr != nil
}
