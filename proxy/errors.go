package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// writeRequestError is the server's ErrorHandler: it answers a request
// fasthttp could not read (a request line, header or framing it cannot
// parse or would read ambiguously, such as two Content-Lengths or
// "Transfer-Encoding: gzip, chunked"; a header too large for the read
// buffer; a client too slow to send it) with a JSON error like every other
// answer of Tollgate's, instead of fasthttp's text/plain one. Nothing was
// routed, counted or forwarded; the server closes the connection after it.
func writeRequestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		WriteJSONError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "headers_too_large",
			"The request line and header are larger than the "+strconv.Itoa(serverReadBuffer)+" bytes Tollgate reads.")
	case errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()):
		WriteJSONError(ctx, fasthttp.StatusRequestTimeout, "request_timeout", "The request was not received in time.")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		WriteJSONError(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large", "Request body is too large.")
	default:
		WriteJSONError(ctx, fasthttp.StatusBadRequest, "invalid_request",
			"The request could not be read: its request line, header or body framing is malformed or ambiguous.")
	}
}

// serverLogger is the fasthttp.Logger of the proxy's server: fasthttp
// reports connections it could not serve (a request it could not read, the
// connection limit reached) and accept errors; they go to the project's
// logger.
type serverLogger struct{ log *zap.Logger }

func (l serverLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...))
}

// WriteJSONError answers the request itself with {"error":code,"message":msg}.
// The body is built in the response's own (pooled) buffer, so an error
// answer costs no allocation once the server is warm.
func WriteJSONError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	resp := &ctx.Response
	if resp.IsBodyStream() {
		// A stream left by an earlier step must not be sent instead of
		// the error.
		resp.ResetBody()
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentType("application/json")

	b := resp.SwapBody(nil)
	b = append(b[:0], `{"error":`...)
	b = AppendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = AppendJSONString(b, msg)
	b = append(b, '}')
	resp.SwapBody(b)
}

const fwdHex = "0123456789abcdef"

// AppendJSONString appends s to dst as a JSON string literal. Invalid UTF-8
// becomes U+FFFD, and U+2028/U+2029 are escaped because JavaScript string
// literals cannot hold them raw; everything else that JSON allows raw stays
// raw so messages remain readable.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', fwdHex[c>>4], fwdHex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', fwdHex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
