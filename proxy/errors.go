package proxy

import (
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

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
