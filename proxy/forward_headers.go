package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// fwdHopByHop are the headers that describe one connection, not the message
// (RFC 9110 section 7.6.1), plus the legacy Proxy-Connection. Their order
// is that of the fwdHop* bits.
var fwdHopByHop = [...]string{
	fasthttp.HeaderConnection,
	"Proxy-Connection",
	fasthttp.HeaderKeepAlive,
	fasthttp.HeaderProxyAuthenticate,
	fasthttp.HeaderProxyAuthorization,
	fasthttp.HeaderTE,
	fasthttp.HeaderTrailer,
	fasthttp.HeaderTransferEncoding,
	fasthttp.HeaderUpgrade,
}

// fwdSeen records which headers the forwarder must act on are present, so
// that a message without them (nearly every one) costs one pass over its
// header names instead of a normalised lookup and deletion per name.
type fwdSeen uint16

const (
	fwdHopConnection fwdSeen = 1 << iota
	fwdHopProxyConnection
	fwdHopKeepAlive
	fwdHopProxyAuthenticate
	fwdHopProxyAuthorization
	fwdHopTE
	fwdHopTrailer
	fwdHopTransferEncoding
	fwdHopUpgrade
	fwdSeenExpect
	fwdSeenXForwardedFor
	fwdSeenXForwardedHost
	fwdSeenXForwardedProto

	// fwdSeenAll assumes everything is present: the safe answer when the
	// header names cannot be listed.
	fwdSeenAll fwdSeen = 1<<iota - 1
	// fwdHopAll is every hop-by-hop bit.
	fwdHopAll = fwdSeenExpect - 1
)

// fwdClassify maps a header name to its fwdSeen bit (0 for the rest). The
// length switch rejects most names without comparing bytes.
func fwdClassify(k []byte) fwdSeen {
	switch len(k) {
	case 2:
		if fwdEqualFold(k, fasthttp.HeaderTE) {
			return fwdHopTE
		}
	case 6:
		if fwdEqualFold(k, fasthttp.HeaderExpect) {
			return fwdSeenExpect
		}
	case 7:
		switch {
		case fwdEqualFold(k, fasthttp.HeaderTrailer):
			return fwdHopTrailer
		case fwdEqualFold(k, fasthttp.HeaderUpgrade):
			return fwdHopUpgrade
		}
	case 10:
		switch {
		case fwdEqualFold(k, fasthttp.HeaderConnection):
			return fwdHopConnection
		case fwdEqualFold(k, fasthttp.HeaderKeepAlive):
			return fwdHopKeepAlive
		}
	case 15:
		if fwdEqualFold(k, fasthttp.HeaderXForwardedFor) {
			return fwdSeenXForwardedFor
		}
	case 16:
		switch {
		case fwdEqualFold(k, "Proxy-Connection"):
			return fwdHopProxyConnection
		case fwdEqualFold(k, fasthttp.HeaderXForwardedHost):
			return fwdSeenXForwardedHost
		}
	case 17:
		switch {
		case fwdEqualFold(k, fasthttp.HeaderTransferEncoding):
			return fwdHopTransferEncoding
		case fwdEqualFold(k, fasthttp.HeaderXForwardedProto):
			return fwdSeenXForwardedProto
		}
	case 18:
		if fwdEqualFold(k, fasthttp.HeaderProxyAuthenticate) {
			return fwdHopProxyAuthenticate
		}
	case 19:
		if fwdEqualFold(k, fasthttp.HeaderProxyAuthorization) {
			return fwdHopProxyAuthorization
		}
	}
	return 0
}

// fwdScanRequest lists the headers of interest in a request as the client
// sent it: the raw header block the server parsed, walked without touching
// the parsed header (whose iterator would re-serialise cookies). A request
// with no raw block (built in code rather than read) gets fwdSeenAll.
func fwdScanRequest(h *fasthttp.RequestHeader) fwdSeen {
	raw := h.RawHeaders()
	if len(raw) == 0 {
		return fwdSeenAll
	}
	var seen fwdSeen
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			// Blank, or the continuation of a folded value.
			continue
		}
		if i := bytes.IndexByte(line, ':'); i > 0 {
			seen |= fwdClassify(bytes.TrimRight(line[:i], " \t"))
		}
	}
	if h.ConnectionClose() {
		// HTTP/1.0 without keep-alive: a flag, not a header line.
		seen |= fwdHopConnection
	}
	return seen
}

// fwdScanResponse lists the hop-by-hop headers of a parsed response.
func fwdScanResponse(h *fasthttp.ResponseHeader) fwdSeen {
	var seen fwdSeen
	for k := range h.All() {
		seen |= fwdClassify(k)
	}
	return seen
}

// fwdHeaders is what request and response headers share for stripping.
type fwdHeaders interface {
	PeekAll(key string) [][]byte
	Del(key string)
	DelBytes(key []byte)
}

// fwdStripHopByHop removes the hop-by-hop headers and those the Connection
// header names, of those seen says are there. scratch is reused to hold
// the Connection tokens, since the deletions move header storage around.
func fwdStripHopByHop(h fwdHeaders, scratch []byte, seen fwdSeen) []byte {
	scratch = scratch[:0]
	if seen&fwdHopAll == 0 {
		return scratch
	}
	if seen&fwdHopConnection != 0 {
		for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
			scratch = append(scratch, v...)
			scratch = append(scratch, ',')
		}
	}
	for rest := scratch; len(rest) > 0; {
		tok := rest
		if i := bytes.IndexByte(rest, ','); i >= 0 {
			tok, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || fwdKeepListed(tok) {
			continue
		}
		h.DelBytes(tok)
	}
	for i, k := range fwdHopByHop {
		if seen&(1<<i) != 0 {
			h.Del(k)
		}
	}
	return scratch
}

// fwdKeepListed protects what framing and routing depend on from a
// Connection header naming it; the connection options themselves name no
// header.
func fwdKeepListed(tok []byte) bool {
	for _, k := range fwdKeepTokens {
		if fwdEqualFold(tok, k) {
			return true
		}
	}
	return false
}

var fwdKeepTokens = [...]string{"close", "keep-alive", "upgrade", fasthttp.HeaderContentLength, fasthttp.HeaderHost}

// fwdEqualFold compares ASCII case-insensitively without converting b.
func fwdEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// fwdDropTrailers removes from h, the upstream's copy of src, the fields
// the client sent (or announced) as trailers of a chunked body that was
// read whole before forwarding. fasthttp keeps received trailer fields with
// the request's header, and stripping the Trailer field merges them into
// it, so they would go upstream as header fields, which RFC 9110 section
// 6.5.1 forbids: a client could otherwise add a header field after the
// proxy has looked at the header. The body goes up with a Content-Length,
// so there is no trailer section to send them in either; a header field
// sent up front under a trailer's name is dropped with it. Most requests
// have no trailers, and cost one length check.
func fwdDropTrailers(src, h *fasthttp.RequestHeader) {
	for _, k := range src.PeekTrailerKeys() {
		h.DelBytes(k)
	}
}
