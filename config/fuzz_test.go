package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParse(f *testing.F) {
	for _, path := range []string{"testdata/full.yaml", "testdata/minimal.yaml", "testdata/hs256.yaml", "../examples/pingback/tollgate.yaml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatalf("seed %s: %v", path, err)
		}
		f.Add(data)
	}
	f.Add([]byte(validBase))
	f.Add([]byte(routerConfig))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("<<: {listen: x}"))
	env := func(k string) string {
		if k == "TEST_JWT_SECRET" {
			return "secret"
		}
		return ""
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The source sits in testdata so relative key files resolve.
		c1, err1 := Parse("testdata/fuzz.yaml", data, env)
		c2, err2 := Parse("testdata/fuzz.yaml", data, env)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("Parse is not deterministic:\n%v\n%v", err1, err2)
		}
		if err1 != nil {
			if c1 != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		if err := c1.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v\n%s", err, data)
		}
		if !reflect.DeepEqual(c1, c2) {
			t.Fatal("Parse is not deterministic")
		}
		for _, r := range c1.Routes {
			if got := c1.Router.Match([]byte(concreteMethod(r.Method)), []byte(samplePath(r.Pattern))); got == nil {
				t.Fatalf("route %s %s does not match its own sample path", r.Method, r.Pattern)
			}
		}
	})
}

func concreteMethod(m string) string {
	if m == "*" {
		return "GET"
	}
	return m
}

// samplePath is a request path (decoded, as Match sees it) that pattern
// matches.
func samplePath(pattern string) string {
	segs := strings.Split(pattern, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			segs[i] = "x"
		} else if d, err := url.PathUnescape(s); err == nil {
			segs[i] = d
		}
	}
	return strings.Join(segs, "/")
}

func FuzzRouterMatch(f *testing.F) {
	f.Add("GET /a/{id}\nGET /a/b\n* /a/c\nPOST /a/c\n* /w/{x}/z\nGET /w/{x}/{y}\nGET /t/\nGET /", "GET", "/a/b?x")
	f.Add("* /{a}/{b}\nGET /x/{b}\nGET /{a}/y", "GET", "/x/y")
	f.Add("DELETE /p/%41/\nDELETE /p/{q}/", "DELETE", "/p/A")
	f.Add("GET /f/a%20b\nGET /f/%7Bx%7D\nGET /f/{x}\nGET /f/%2541", "GET", "/f/{x}")
	f.Add("", "GET", "")
	f.Fuzz(func(t *testing.T, spec, method, path string) {
		var routes []*Route
		for i, line := range strings.Split(spec, "\n") {
			if i >= 32 {
				break
			}
			m, pat, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			routes = append(routes, &Route{Method: m, Pattern: pat})
		}
		r, err := NewRouter(routes)
		if err != nil {
			return
		}
		got := r.Match([]byte(method), []byte(path))
		want := referenceMatch(routes, method, path)
		if got != want {
			t.Fatalf("routes %q: Match(%q, %q) = %s, reference %s", spec, method, path, describeRoute(got), describeRoute(want))
		}
	})
}

func FuzzBodyCondition(f *testing.F) {
	f.Add([]byte(`{"type":"widget"}`), "type", uint8(CondNotIn), "widget")
	f.Add([]byte(`{"a":{"b":[1,{"c":"}"}]},"n":1e2}`), "n", uint8(CondEquals), "100")
	f.Add([]byte(`{"a":{"b":null}}`), "a.b", uint8(CondExists), "")
	f.Add([]byte(`{"t\u0079pe":"x","type":"y"}`), "type", uint8(CondIn), "x")
	f.Add([]byte(`{"count":12}`), "count", uint8(CondNotEquals), "12")
	f.Add([]byte(`[`), "x", uint8(CondNotExists), "")
	f.Add([]byte(`{"Type":"whatsapp","name":"wa"}`), "type", uint8(CondIn), "whatsapp")
	f.Add([]byte(`{"a":{"\u212a":1}}`), "a.k", uint8(CondExists), "")
	f.Fuzz(func(t *testing.T, body []byte, field string, op uint8, value string) {
		// Fields come from YAML, which is always valid UTF-8.
		if !validFieldPath(field) || !utf8.ValidString(field) {
			return
		}
		c := &BodyCondition{Field: field, Op: CondOp(op%6 + 1), Values: []string{value}}
		got, err := c.Match(body)
		m := &Meter{Source: AmountBodyField, Field: field}
		n, amountErr := m.BodyAmount(body)
		if !json.Valid(body) {
			if err == nil || got || amountErr == nil {
				t.Fatalf("malformed body %q: Match = %v, %v; BodyAmount err %v", body, got, err, amountErr)
			}
			return
		}
		if amountErr == nil && (n < 0 || n > maxAmount) {
			t.Fatalf("BodyAmount = %d", n)
		}
		if errors.Is(err, ErrFieldAmbiguous) {
			return
		}
		if err == nil && caseVariantOnPath(body, field) {
			// A decoder that ignores case (Go's, into a struct) could
			// read the variant as the field.
			t.Fatalf("Match(%s) on %s = %v with a case variant of the field on its path", field, body, got)
		}
		want, wantErr := referenceCondition(c, body)
		if (err == nil) != (wantErr == nil) || got != want {
			t.Fatalf("Match(%s) on %s = %v, %v; reference %v, %v", field, body, got, err, want, wantErr)
		}
	})
}

// caseVariantOnPath reports whether an object on the field's path holds a
// key that differs from the path's segment only in case.
func caseVariantOnPath(body []byte, field string) bool {
	var cur any
	if json.Unmarshal(body, &cur) != nil {
		return false
	}
	for _, seg := range strings.Split(field, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		for k := range m {
			if k != seg && strings.EqualFold(k, seg) {
				return true
			}
		}
		if cur, ok = m[seg]; !ok {
			return false
		}
	}
	return false
}

// referenceCondition evaluates c with encoding/json decoding the whole
// body; it is only right for bodies without duplicate keys.
func referenceCondition(c *BodyCondition, body []byte) (bool, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return false, err
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return false, ErrBodyNotObject
	}
	var val any
	found := true
	var cur any = obj
	for _, seg := range strings.Split(c.Field, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			found = false
			break
		}
		if cur, ok = m[seg]; !ok {
			found = false
			break
		}
	}
	val = cur
	var text string
	scalar := found
	switch v := val.(type) {
	case string:
		text = v
	case json.Number:
		text = string(appendCanonicalNumber(nil, []byte(v)))
	case bool:
		text = map[bool]string{true: "true", false: "false"}[v]
	case nil:
		text = "null"
	default:
		scalar = false
	}
	in := scalar && contains(c.Values, text)
	switch c.Op {
	case CondExists:
		return found, nil
	case CondNotExists:
		return !found, nil
	case CondEquals, CondIn:
		return in, nil
	}
	return !in, nil
}
