package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// fwdMaxRefusalBody bounds the body of a non-101 answer to an upgrade
// request (an error page), which is buffered before it is relayed.
const fwdMaxRefusalBody = 1 << 20

// fwdIsWebSocket reports a WebSocket opening handshake (RFC 6455 section
// 4.1): a GET with Connection: upgrade and Upgrade: websocket.
func fwdIsWebSocket(h *fasthttp.RequestHeader) bool {
	return h.IsGet() && h.ConnectionUpgrade() && fwdHasToken(h.Peek(fasthttp.HeaderUpgrade), "websocket")
}

// fwdHasToken reports whether the comma-separated list v holds tok.
func fwdHasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if fwdEqualFold(bytes.TrimSpace(item), tok) {
			return true
		}
	}
	return false
}

// forwardWebSocket passes an upgrade through: its own upstream connection
// (an upgraded connection never returns to a pool), the handshake relayed
// with X-Forwarded-*, then bytes copied both ways on the hijacked client
// connection until either side closes. WebSockets are not the hot path, so
// this allocates freely.
func (f *Forwarder) forwardWebSocket(ctx *fasthttp.RequestCtx, hook ResponseHook) (int, error) {
	up, err := f.dialUpstream()
	if err != nil {
		return 0, f.fail(ctx, err, nil)
	}
	closeUp := true
	defer func() {
		if closeUp {
			_ = up.Close()
		}
	}()

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)

	upgrade := append([]byte(nil), ctx.Request.Header.Peek(fasthttp.HeaderUpgrade)...)
	h := &req.Header
	scratch := f.prepareHeader(ctx, h, nil)
	h.Set(fasthttp.HeaderConnection, "Upgrade")
	h.SetBytesV(fasthttp.HeaderUpgrade, upgrade)

	// Writing the handshake and waiting for the answer share the header
	// timeout; the tunnel itself has none (a quiet socket is normal).
	if err := up.SetDeadline(time.Now().Add(f.timeout)); err != nil {
		return 0, f.fail(ctx, err, nil)
	}
	bw := bufio.NewWriter(up)
	err = h.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return 0, f.fail(ctx, fmt.Errorf("write handshake: %w", err), nil)
	}
	br := bufio.NewReaderSize(up, fwdUpstreamReadBuffer)
	resp.Header.SetNoDefaultContentType(true)
	if err := resp.ReadLimitBody(br, fwdMaxRefusalBody); err != nil {
		return 0, f.fail(ctx, fmt.Errorf("read handshake answer: %w", err), nil)
	}

	status := resp.StatusCode()
	rh := &ctx.Response.Header
	if status != fasthttp.StatusSwitchingProtocols {
		resp.Header.CopyTo(rh)
		fwdStripHopByHop(rh, scratch, fwdSeenAll)
		if hook != nil {
			hook(status, rh)
		}
		ctx.Response.SetBody(resp.Body())
		return status, nil
	}

	upUpgrade := append([]byte(nil), resp.Header.Peek(fasthttp.HeaderUpgrade)...)
	resp.Header.CopyTo(rh)
	fwdStripHopByHop(rh, scratch, fwdSeenAll)
	rh.Set(fasthttp.HeaderConnection, "Upgrade")
	if len(upUpgrade) > 0 {
		rh.SetBytesV(fasthttp.HeaderUpgrade, upUpgrade)
	}
	if hook != nil {
		hook(status, rh)
	}
	if err := up.SetDeadline(time.Time{}); err != nil {
		return 0, f.fail(ctx, err, nil)
	}
	// The 101 is written by the hijack handler itself: with a response
	// fasthttp could decide not to hijack (say on Connection: close) and
	// the upstream connection would leak.
	head := append([]byte(nil), rh.Header()...)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) { fwdTunnel(c, up, br, head) })
	closeUp = false
	return status, nil
}

// dialUpstream opens a dedicated connection to the upstream; failures are
// dial errors (502) whatever the cause.
func (f *Forwarder) dialUpstream() (net.Conn, error) {
	c, err := f.dialer.Dial("tcp", f.dialAddr)
	if err != nil {
		return nil, &fwdDialError{err: err}
	}
	if !f.isTLS {
		return c, nil
	}
	tc := tls.Client(c, f.tlsConfig)
	hctx, cancel := context.WithTimeout(context.Background(), f.dialer.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = c.Close()
		return nil, &fwdDialError{err: err}
	}
	return tc, nil
}

// fwdTunnel relays the 101 head and then bytes both ways. up is closed on
// return; fasthttp closes client after the handler returns.
func fwdTunnel(client, up net.Conn, upR io.Reader, head []byte) {
	defer up.Close()
	if _, err := client.Write(head); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, client)
		// The client left: end the other direction too.
		_ = up.Close()
	}()
	_, _ = io.Copy(client, upR)
	// The upstream left. fasthttp's hijacked conn ignores Close until the
	// handler returns, so an expired deadline is what wakes the reader.
	_ = client.SetReadDeadline(time.Unix(1, 0))
	<-done
}
