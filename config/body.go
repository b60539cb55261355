package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Errors from BodyCondition.Match and Meter.BodyAmount; the proxy turns
// them into 400 answers, so their text is written for API clients.
var (
	ErrBodyMalformed   = errors.New("body is not valid JSON")
	ErrBodyNotObject   = errors.New("body is not a JSON object")
	ErrFieldAmbiguous  = errors.New("field appears more than once")
	ErrFieldMissing    = errors.New("field is missing")
	ErrAmountNotNumber = errors.New("not a whole number")
	ErrAmountNegative  = errors.New("negative")
	ErrAmountTooLarge  = errors.New("too large")
)

// Match reports whether the JSON body satisfies the condition. A missing
// field (or a path through a non-object) is "not equal", "not in" and
// "exists: false"; an object or array value equals nothing. The only
// errors are a body that is not a valid JSON object and a field that occurs
// more than once or only in another case, which an upstream might read
// differently than Tollgate.
func (c *BodyCondition) Match(body []byte) (bool, error) {
	if c == nil {
		return true, nil
	}
	val, found, err := lookup(body, c.Field)
	if err != nil {
		return false, err
	}
	switch c.Op {
	case CondExists:
		return found, nil
	case CondNotExists:
		return !found, nil
	case CondEquals, CondIn:
		return found && scalarIn(val, c.Values), nil
	case CondNotEquals, CondNotIn:
		return !found || !scalarIn(val, c.Values), nil
	}
	return false, fmt.Errorf("body condition on %q: unknown operator %d", c.Field, c.Op)
}

// scalarIn compares a JSON value with condition values: strings by their
// decoded text, numbers by canonical text, true/false/null literally.
func scalarIn(val []byte, values []string) bool {
	if len(val) == 0 {
		return false
	}
	var buf [64]byte
	var text []byte
	switch c := val[0]; {
	case c == '"':
		s, ok := decodeString(val)
		if !ok {
			return false
		}
		text = s
	case c == '-' || (c >= '0' && c <= '9'):
		text = appendCanonicalNumber(buf[:0], val)
	case c == 't' || c == 'f' || c == 'n':
		text = val
	default:
		return false
	}
	for _, v := range values {
		if string(text) == v {
			return true
		}
	}
	return false
}

// BodyAmount reads the meter's amount from the JSON body: the field must
// hold a whole number >= 0.
func (m *Meter) BodyAmount(body []byte) (int64, error) {
	if m == nil || m.Source != AmountBodyField {
		return 0, errors.New("meter does not take its amount from the request body")
	}
	val, found, err := lookup(body, m.Field)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, ErrFieldMissing
	}
	if len(val) == 0 || (val[0] != '-' && (val[0] < '0' || val[0] > '9')) {
		return 0, fmt.Errorf("%w: got %s", ErrAmountNotNumber, shorten(val))
	}
	if bytes.ContainsAny(val, ".eE") {
		f, err := strconv.ParseFloat(string(val), 64)
		if err == nil && f < 0 {
			return 0, fmt.Errorf("%w: got %s", ErrAmountNegative, shorten(val))
		}
		return 0, fmt.Errorf("%w: got %s", ErrAmountNotNumber, shorten(val))
	}
	if val[0] == '-' {
		if strings.Trim(string(val[1:]), "0") == "" {
			return 0, nil // -0
		}
		return 0, fmt.Errorf("%w: got %s", ErrAmountNegative, shorten(val))
	}
	n, err := strconv.ParseInt(string(val), 10, 64)
	if err != nil || n > maxAmount {
		return 0, fmt.Errorf("%w: got %s", ErrAmountTooLarge, shorten(val))
	}
	return n, nil
}

func shorten(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// lookup finds the value at a dot-separated path. val is the raw JSON text
// of the value.
func lookup(body []byte, path string) (val []byte, found bool, err error) {
	if !json.Valid(body) {
		return nil, false, ErrBodyMalformed
	}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, false, ErrBodyNotObject
	}
	for {
		seg, rest, more := strings.Cut(path, ".")
		start, end, ok, err := member(body, i, seg)
		if err != nil || !ok {
			return nil, false, err
		}
		if !more {
			return body[start:end], true, nil
		}
		if body[start] != '{' {
			return nil, false, nil
		}
		i, path = start, rest
	}
}

// member finds key name in the object starting at body[i]; body is valid
// JSON. A key that occurs twice is an error, and so is one that matches
// name only when case is ignored, alone or beside name: JSON parsers
// disagree on which copy wins, and Go's encoding/json (among others)
// matches struct fields case-insensitively, so such a body could let a
// client show Tollgate one value, or none, and the upstream another.
func member(body []byte, i int, name string) (start, end int, found bool, err error) {
	i = skipSpace(body, i+1)
	for i < len(body) && body[i] == '"' {
		keyEnd := skipString(body, i)
		key := body[i:keyEnd]
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // ':'
		vStart := i
		vEnd := skipValue(body, i)
		if k, ok := decodeString(key); ok {
			switch {
			case string(k) == name:
				if found {
					return 0, 0, false, fmt.Errorf("%w: %q", ErrFieldAmbiguous, name)
				}
				start, end, found = vStart, vEnd, true
			case foldEqual(k, name):
				return 0, 0, false, &caseVariantError{field: name, key: string(k)}
			}
		}
		i = skipSpace(body, vEnd)
		if i < len(body) && body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return start, end, found, nil
}

// caseVariantError is ErrFieldAmbiguous for a key that differs from the
// field's name only in case.
type caseVariantError struct{ field, key string }

func (e *caseVariantError) Error() string {
	return fmt.Sprintf("field %q appears as %s, which differs only in case", e.field, quote(e.key))
}

func (e *caseVariantError) Is(target error) bool { return target == ErrFieldAmbiguous }

func foldEqual(k []byte, name string) bool {
	return utf8.Valid(k) && strings.EqualFold(string(k), name)
}

// decodeString returns the text of a JSON string token, unescaping only
// when it has escapes.
func decodeString(tok []byte) ([]byte, bool) {
	if len(tok) < 2 {
		return nil, false
	}
	inner := tok[1 : len(tok)-1]
	// Invalid UTF-8 also takes the slow path, which replaces it with
	// U+FFFD as encoding/json (and so a Go upstream) does.
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner, true
	}
	var s string
	if json.Unmarshal(tok, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string token at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	return i
}

// appendCanonicalNumber appends the canonical text of a JSON number:
// integers in int64 range as decimal, anything else via float64 with the
// shortest representation, so 1, 1.0 and 1e0 all read "1".
func appendCanonicalNumber(dst, num []byte) []byte {
	if !bytes.ContainsAny(num, ".eE") {
		if n, err := strconv.ParseInt(string(num), 10, 64); err == nil {
			return strconv.AppendInt(dst, n, 10)
		}
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return append(dst, num...)
	}
	return appendCanonicalFloat(dst, f)
}

func appendCanonicalFloat(dst []byte, f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		return strconv.AppendInt(dst, int64(f), 10)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

func canonicalFloat(f float64) string { return string(appendCanonicalFloat(nil, f)) }
