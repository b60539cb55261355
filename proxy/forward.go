package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/rawconn"
)

const (
	fwdDefaultTimeout     = 30 * time.Second
	fwdDefaultDialTimeout = 2 * time.Second
	fwdDefaultMaxConns    = 1024

	// fwdClientIdle is how long a streamed body may make no progress on the
	// client's side (an upload that stalls, a download nobody reads) before
	// the exchange is abandoned. It is an idle bound, not a total one, so
	// large uploads and endless event streams are fine.
	fwdClientIdle = 60 * time.Second

	// fwdMaxBufferedRequest is the largest known-length request body read
	// whole before it is sent; larger and chunked bodies stream.
	fwdMaxBufferedRequest = 16 << 10

	// Response headers bigger than the read buffer are refused by fasthttp;
	// real APIs send large cookies and CSPs, so be generous.
	fwdUpstreamReadBuffer = 16 << 10

	// fwdLinger is how long the rest of a request body the upstream
	// refused is read and dropped after its early answer went out, so the
	// client reads that answer before a close with unread data resets the
	// connection (net/http's server waits similarly).
	fwdLinger = 500 * time.Millisecond

	// serverReadBuffer bounds a request's line and header: a larger one
	// is answered 431.
	serverReadBuffer = 16 << 10

	fwdMsgBadGateway = "The upstream API could not be reached."
	fwdMsgTimeout    = "The upstream API did not answer in time."
)

// ResponseHook runs once the upstream's status line and headers are in and
// before any response byte goes to the client: the caller may read and add
// headers (X-Quota-*). status is the upstream status (101 for a websocket
// upgrade).
type ResponseHook func(status int, h *fasthttp.ResponseHeader)

// Forwarder sends requests to the upstream API and streams the answers back.
// It is safe for concurrent use.
type Forwarder struct {
	client    *fasthttp.HostClient
	host      string // Host header sent upstream
	dialAddr  string // host:port dialled
	isTLS     bool
	timeout   time.Duration
	dialer    net.Dialer
	tlsConfig *tls.Config
}

// NewForwarder builds the forwarder for u, filling in the documented
// defaults for zero durations and limits.
func NewForwarder(u config.Upstream) (*Forwarder, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("new forwarder: upstream scheme %q: want http or https", u.Scheme)
	}
	if u.Host == "" || strings.ContainsAny(u.Host, "/?#@ \t\r\n") {
		return nil, fmt.Errorf("new forwarder: upstream host %q: want host[:port]", u.Host)
	}
	f := &Forwarder{
		host:    u.Host,
		isTLS:   scheme == "https",
		timeout: u.Timeout,
	}
	if f.timeout <= 0 {
		f.timeout = fwdDefaultTimeout
	}
	f.dialer.Timeout = u.DialTimeout
	if f.dialer.Timeout <= 0 {
		f.dialer.Timeout = fwdDefaultDialTimeout
	}
	maxConns := u.MaxConns
	if maxConns <= 0 {
		maxConns = fwdDefaultMaxConns
	}
	f.dialAddr = fasthttp.AddMissingPort(u.Host, f.isTLS)
	if f.isTLS {
		name, _, err := net.SplitHostPort(f.dialAddr)
		if err != nil {
			return nil, fmt.Errorf("new forwarder: upstream host %q: %w", u.Host, err)
		}
		f.tlsConfig = &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}
	}
	// Only the HostClient's connection pool is used (see Forwarder.do).
	f.client = &fasthttp.HostClient{
		Addr:      f.dialAddr,
		IsTLS:     f.isTLS,
		TLSConfig: f.tlsConfig,
		Dial:      f.dial,
		MaxConns:  maxConns,
		// Waiting for a pooled connection is part of waiting for the
		// upstream, so it gets the same bound; past it the client gets 504.
		MaxConnWaitTimeout:       f.timeout,
		ReadBufferSize:           fwdUpstreamReadBuffer,
		NoDefaultUserAgentHeader: true,
		// The most recently used connection first (fasthttp's default is
		// the least): a burst's connections stay warm and the rest idle
		// out (MaxIdleConnDuration) instead of every pooled connection
		// being kept alive in turn; a recently used connection is also
		// one writeAndAwait may use (fwdAwaitFresh).
		ConnPoolStrategy: fasthttp.LIFO,
	}
	return f, nil
}

// NewServer returns the fasthttp.Server the proxy listener must use: request
// bodies are streamed (Forward reads only small ones whole), multipart bodies are left
// unparsed for the upstream, and no Content-Type is invented. name is the
// Server header of answers Tollgate writes itself; upstream answers keep
// theirs. Date is always the proxy's (fasthttp rewrites it). ReadTimeout and
// WriteTimeout bound requests and answers Tollgate handles itself; Forward
// swaps them for idle timeouts on the bodies it streams. A request fasthttp
// cannot read is answered with a JSON error (writeRequestError), and what
// fasthttp itself logs goes to log, named "fasthttp" (nil discards it).
func NewServer(handler fasthttp.RequestHandler, name string, log *zap.Logger) *fasthttp.Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &fasthttp.Server{
		Handler:                      handler,
		ErrorHandler:                 writeRequestError,
		Logger:                       serverLogger{log.Named("fasthttp")},
		Name:                         name,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadBufferSize:               serverReadBuffer,
		ReadTimeout:                  30 * time.Second,
		WriteTimeout:                 30 * time.Second,
		IdleTimeout:                  90 * time.Second,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		// Nothing reads ctx.Time(); reading the clock only when asked
		// saves a clock read per request (slow on some VMs, 5% of a
		// forwarded request's user CPU in a profile).
		LazyRequestTime: true,
	}
}

// Forward sends ctx's request to the upstream and writes the upstream
// response to ctx: a body of known length up to 64 KiB (not an event
// stream) is read whole and handed over, anything else is streamed. It
// returns the upstream status, or 0 with an
// error when no response came: then it has already written a 502 (connect
// refused or reset) or 504 (no response headers within Upstream.Timeout)
// JSON error, or a 400 when the client's own body could not be read. body,
// when non-nil, is the already-read request body to send instead of the
// client's stream.
func (f *Forwarder) Forward(ctx *fasthttp.RequestCtx, body []byte, hook ResponseHook) (int, error) {
	if fwdIsWebSocket(&ctx.Request.Header) {
		return f.forwardWebSocket(ctx, hook)
	}

	x := fwdExchangePool.Get().(*fwdExchange)
	req := &x.req
	if err := f.prepareRequest(ctx, x, body); err != nil {
		x.release()
		return 0, f.fail(ctx, nil, err)
	}
	conn, err := f.do(req, &x.resp)
	clientErr := x.clientBody.err
	// The upstream answered before taking the whole body (an early 413 or
	// 401): the rest is still coming from the client.
	unread := x.clientBody.r != nil && clientErr == nil && !x.clientBody.complete()
	// The request is fully written (or abandoned): drop its references to
	// the client's body right away.
	req.Reset()
	x.clientBody = fwdClientBody{}
	if err != nil {
		x.release()
		return 0, f.fail(ctx, err, clientErr)
	}

	status := x.resp.StatusCode()
	if status == fasthttp.StatusSwitchingProtocols {
		// The transport closed the connection: Upgrade was stripped, so it
		// now speaks something nobody asked for.
		x.release()
		WriteJSONError(ctx, fasthttp.StatusBadGateway, "bad_gateway", fwdMsgBadGateway)
		return 0, errors.New("forward: upstream switched protocols without an upgrade request")
	}

	rh := &ctx.Response.Header
	x.resp.Header.CopyTo(rh)
	x.scratch = fwdStripHopByHop(rh, x.scratch, fwdScanResponse(&x.resp.Header))
	if hook != nil {
		hook(status, rh)
	}

	if conn == nil {
		// No body, or a small one the transport read whole: hand its
		// buffer to the client's response and take that one's spare
		// buffer back, so neither is copied nor allocated.
		if len(x.resp.Body()) > 0 {
			x.resp.SwapBody(ctx.Response.SwapBody(x.resp.Body()))
		}
		x.release()
		if unread {
			// The server would close on the unread body at once, and the
			// reset could cost the client the answer.
			ctx.Hijack(fwdLingerClose)
		}
		return status, nil
	}

	// A streamed body: the upstream connection stays with the exchange
	// until the server closes the stream.
	stream := x.resp.BodyStream()
	size := x.resp.Header.ContentLength()
	x.conn = conn
	x.ctx = ctx
	x.stream = stream
	x.body.open = true
	x.body.eof = false
	if size < 0 {
		size = -1
		// Chunked or read-until-close: likely a stream, so let the client
		// see the head before the first event instead of with it.
		ctx.Response.ImmediateHeaderFlush = true
	}
	ctx.Response.SetBodyStream(&x.body, size)
	// The body may take as long as it likes; what bounds it is progress on
	// the client's side.
	_ = ctx.SetWriteDeadline(time.Now().Add(fwdClientIdle))
	return status, nil
}

// prepareRequest fills x.req with what goes upstream: the client's method,
// request-target and end-to-end headers, the upstream's Host, the
// X-Forwarded-* headers and the body.
func (f *Forwarder) prepareRequest(ctx *fasthttp.RequestCtx, x *fwdExchange, body []byte) error {
	req := &x.req
	// Read before stripping: a client naming Content-Length in Connection
	// must not change the framing.
	size := ctx.Request.Header.ContentLength()
	x.scratch = f.prepareHeader(ctx, &req.Header, x.scratch)

	switch {
	case body != nil:
		fwdDropTrailers(&ctx.Request.Header, &req.Header)
		req.SetBodyRaw(body)
	case size > 0 || size == -1:
		s := ctx.RequestBodyStream()
		switch {
		case s == nil:
			req.SetBodyRaw(ctx.Request.Body())
		case size > 0 && size <= fwdMaxBufferedRequest:
			// Small bodies (most API calls) are read whole first, as
			// nginx does: sent as bytes, the request goes out in one
			// write with one deadline, instead of through a stream
			// that moves the client's read deadline on every read.
			// The server's ReadTimeout bounds the read.
			if cap(x.reqBody) < size {
				x.reqBody = make([]byte, size, fwdMaxBufferedRequest)
			}
			x.reqBody = x.reqBody[:size]
			if _, err := io.ReadFull(s, x.reqBody); err != nil {
				return err
			}
			req.SetBodyRaw(x.reqBody)
		default:
			x.clientBody = fwdClientBody{ctx: ctx, r: s, size: int64(size)}
			req.SetBodyStream(&x.clientBody, size)
		}
	}
	return nil
}

// prepareHeader copies the client's request header into h as the upstream
// must see it.
func (f *Forwarder) prepareHeader(ctx *fasthttp.RequestCtx, h *fasthttp.RequestHeader, scratch []byte) []byte {
	src := &ctx.Request.Header
	src.CopyTo(h)
	seen := fwdScanRequest(src)
	scratch = fwdStripHopByHop(h, scratch, seen)
	if seen&fwdSeenExpect != 0 {
		// fasthttp's server already answered 100-continue to the client.
		h.Del(fasthttp.HeaderExpect)
	}
	if !h.IsHTTP11() {
		h.SetProtocol("HTTP/1.1")
	}
	h.SetNoDefaultContentType(true)
	if target := src.RequestURI(); !fwdOriginForm(target) {
		// Absolute-form (a client talking to us as to a forward proxy):
		// the upstream gets origin-form, like from any other client.
		uri := ctx.URI()
		scratch = append(scratch[:0], uri.PathOriginal()...)
		if q := uri.QueryString(); len(q) > 0 {
			scratch = append(scratch, '?')
			scratch = append(scratch, q...)
		}
		h.SetRequestURIBytes(scratch)
	}
	return f.setForwarded(ctx, h, scratch, seen)
}

// Canonical header names, so setting them skips normalisation.
var (
	fwdKeyXForwardedFor   = []byte(fasthttp.HeaderXForwardedFor)
	fwdKeyXForwardedHost  = []byte(fasthttp.HeaderXForwardedHost)
	fwdKeyXForwardedProto = []byte(fasthttp.HeaderXForwardedProto)
	fwdValHTTP            = []byte("http")
	fwdValHTTPS           = []byte("https")
)

// setForwarded sends the upstream's Host and says who really asked.
func (f *Forwarder) setForwarded(ctx *fasthttp.RequestCtx, h *fasthttp.RequestHeader, scratch []byte, seen fwdSeen) []byte {
	// Del first, here and below: Set alone replaces only the first of the
	// client's lines, and the upstream might read another.
	if seen&fwdSeenXForwardedHost != 0 {
		h.Del(fasthttp.HeaderXForwardedHost)
	}
	if host := ctx.Request.Header.Host(); len(host) > 0 {
		h.SetCanonical(fwdKeyXForwardedHost, host)
	}
	h.SetHost(f.host)
	if seen&fwdSeenXForwardedProto != 0 {
		h.Del(fasthttp.HeaderXForwardedProto)
	}
	if ctx.IsTLS() {
		h.SetCanonical(fwdKeyXForwardedProto, fwdValHTTPS)
	} else {
		h.SetCanonical(fwdKeyXForwardedProto, fwdValHTTP)
	}

	scratch = scratch[:0]
	if seen&fwdSeenXForwardedFor == 0 {
		scratch = fwdAppendClientIP(scratch, ctx)
		h.SetCanonical(fwdKeyXForwardedFor, scratch)
		return scratch
	}
	for _, v := range h.PeekAll(fasthttp.HeaderXForwardedFor) {
		v = bytes.TrimSpace(v)
		if len(v) == 0 {
			continue
		}
		if len(scratch) > 0 {
			scratch = append(scratch, ", "...)
		}
		scratch = append(scratch, v...)
	}
	if len(scratch) > 0 {
		scratch = append(scratch, ", "...)
	}
	scratch = fwdAppendClientIP(scratch, ctx)
	h.Del(fasthttp.HeaderXForwardedFor)
	h.SetCanonical(fwdKeyXForwardedFor, scratch)
	return scratch
}

func fwdAppendClientIP(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	if a, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		return a.Unmap().AppendTo(dst)
	}
	return append(dst, "unknown"...)
}

// fwdOriginForm reports whether target can be sent upstream as it came.
func fwdOriginForm(target []byte) bool {
	return len(target) > 0 && (target[0] == '/' || (len(target) == 1 && target[0] == '*'))
}

// fail answers a forward that got no response and says why.
func (f *Forwarder) fail(ctx *fasthttp.RequestCtx, err, clientErr error) error {
	switch {
	case clientErr != nil:
		WriteJSONError(ctx, fasthttp.StatusBadRequest, "invalid_body", "Request body could not be read.")
		return fmt.Errorf("forward: read client body: %w", clientErr)
	case fwdIsTimeout(err):
		WriteJSONError(ctx, fasthttp.StatusGatewayTimeout, "gateway_timeout", fwdMsgTimeout)
		return fmt.Errorf("forward: upstream timeout: %w", err)
	default:
		WriteJSONError(ctx, fasthttp.StatusBadGateway, "bad_gateway", fwdMsgBadGateway)
		return fmt.Errorf("forward: upstream: %w", err)
	}
}

// fwdIsTimeout separates "the upstream is slow" (504) from "the upstream
// is not there" (502). A dial that times out is the latter.
func fwdIsTimeout(err error) bool {
	var de *fwdDialError
	if errors.As(err, &de) {
		return false
	}
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrNoFreeConns) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fwdRetryIf retries only what is both safe and likely to help: an
// idempotent request whose pooled connection turned out to be closed by the
// upstream. fasthttp's default would also retry timeouts, multiplying the
// wait the client sees.
func fwdRetryIf(req *fasthttp.Request, err error) bool {
	if !errors.Is(err, io.EOF) && !errors.Is(err, fasthttp.ErrConnectionClosed) &&
		!errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		return false
	}
	h := &req.Header
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsTrace() ||
		len(h.Peek("Idempotency-Key")) > 0
}

// fwdExchange is one forwarded request, pooled so the hot path allocates
// nothing of its own. It lives until the response body stream is closed.
type fwdExchange struct {
	req        fasthttp.Request
	resp       fasthttp.Response
	clientBody fwdClientBody
	body       fwdUpstreamBody
	ctx        *fasthttp.RequestCtx
	stream     io.Reader
	conn       *fwdConn
	scratch    []byte
	reqBody    []byte // a small request body, read whole
}

var fwdExchangePool = sync.Pool{New: func() any {
	x := &fwdExchange{}
	x.body.x = x
	return x
}}

func (x *fwdExchange) release() {
	x.endUpstream()
	x.resp.Reset()
	x.req.Reset()
	x.clientBody = fwdClientBody{}
	x.ctx = nil
	x.stream = nil
	x.body.open = false
	if cap(x.scratch) > 64<<10 {
		x.scratch = nil
	}
	fwdExchangePool.Put(x)
}

// endUpstream closes the upstream body stream and gives its connection
// back: to the pool when the body was read to its end, else closed.
func (x *fwdExchange) endUpstream() {
	_ = x.resp.CloseBodyStream()
	if x.conn != nil {
		// After closing the stream, which still reads from the
		// connection: this hands it back to the pool, where another
		// request may pick it up at once.
		x.conn.endStream(x.body.eof)
		x.conn = nil
	}
}

// fwdClientBody is the client's request body on its way upstream. It keeps
// the client's read deadline moving while bytes flow and remembers a
// client-side failure so it is not blamed on the upstream.
type fwdClientBody struct {
	ctx  *fasthttp.RequestCtx
	r    io.Reader
	err  error
	size int64 // -1 when chunked
	n    int64 // bytes read
	eof  bool
}

func (b *fwdClientBody) Read(p []byte) (int, error) {
	_ = b.ctx.SetReadDeadline(time.Now().Add(fwdClientIdle))
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	} else if err != nil && b.err == nil {
		b.err = err
	}
	return n, err
}

// complete reports whether the whole body was read (a known-length body
// may be read to its length without seeing EOF).
func (b *fwdClientBody) complete() bool {
	return b.eof || (b.size >= 0 && b.n >= b.size)
}

// fwdLingerClose ends a client connection whose request body was left
// unread: it says it is done sending, then drops what the client still
// sends for a while before the server closes it.
func fwdLingerClose(c net.Conn) {
	raw := c
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	if err := c.SetReadDeadline(time.Now().Add(fwdLinger)); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, c)
}

// fwdUpstreamBody is the upstream's response body on its way to the client.
// fasthttp's server closes it (CloseWithError) once written or abandoned,
// which releases the upstream connection and the exchange.
type fwdUpstreamBody struct {
	x    *fwdExchange
	open bool
	// eof: the body was read to its end, so the connection may serve
	// another request.
	eof bool
}

func (b *fwdUpstreamBody) Read(p []byte) (int, error) {
	if !b.open {
		return 0, io.ErrClosedPipe
	}
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.x.stream.Read(p)
	if err == io.EOF {
		b.eof = true
		// The upstream has said all it will: its connection goes back to
		// the pool now, before the server writes these last bytes, so a
		// client that sends its next request the moment it has them finds
		// the connection free instead of making the proxy dial another.
		b.x.endUpstream()
	}
	if n > 0 {
		// The server writes these bytes next; an event stream may have
		// been quiet for long, so the write clock starts now.
		_ = b.x.ctx.SetWriteDeadline(time.Now().Add(fwdClientIdle))
	}
	return n, err
}

// CloseWithError implements fasthttp.ReadCloserWithError.
func (b *fwdUpstreamBody) CloseWithError(error) error {
	if !b.open {
		return nil
	}
	b.open = false
	b.x.release()
	return nil
}

// fwdDialError marks a failed connect: always a 502, even when it timed out.
type fwdDialError struct{ err error }

func (e *fwdDialError) Error() string { return "dial upstream: " + e.err.Error() }
func (e *fwdDialError) Unwrap() error { return e.err }

func (f *Forwarder) dial(addr string) (net.Conn, error) {
	c, err := f.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, &fwdDialError{err: err}
	}
	c = rawconn.Wrap(c)
	fc := &fwdConn{Conn: c, timeout: f.timeout, slack: fwdDeadlineSlack(f.timeout)}
	fc.addr = fwdAddr{Addr: c.LocalAddr(), conn: fc}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			fc.raw = raw
			// Bound once here: a method value made per request would
			// allocate.
			fc.onReadable = fc.readable
		}
	}
	return fc, nil
}
