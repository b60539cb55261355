package config

import (
	"errors"
	"testing"
)

func TestBodyConditionMatch(t *testing.T) {
	notIn := &BodyCondition{Field: "type", Op: CondNotIn, Values: []string{"widget"}}
	eqNum := &BodyCondition{Field: "n", Op: CondEquals, Values: []string{"100"}}
	in := &BodyCondition{Field: "v", Op: CondIn, Values: []string{"a", "true", "null", "1.5"}}
	neq := &BodyCondition{Field: "channel.kind", Op: CondNotEquals, Values: []string{"web"}}
	exists := &BodyCondition{Field: "a.b", Op: CondExists}
	absent := &BodyCondition{Field: "a.b", Op: CondNotExists}

	cases := []struct {
		name    string
		c       *BodyCondition
		body    string
		want    bool
		wantErr error
	}{
		{"not_in: listed value", notIn, `{"type":"widget"}`, false, nil},
		{"not_in: other value", notIn, `{"type":"whatsapp"}`, true, nil},
		{"not_in: missing field", notIn, `{"name":"x"}`, true, nil},
		{"not_in: escaped listed value", notIn, `{"type":"wid\u0067et"}`, false, nil},
		{"not_in: escaped key", notIn, `{"\u0074ype":"widget"}`, false, nil},
		{"not_in: number is not the string", notIn, `{"type":5}`, true, nil},
		{"not_in: object value", notIn, `{"type":{"x":"widget"}}`, true, nil},
		{"not_in: nested key is not top-level", notIn, `{"x":{"type":"widget"}}`, true, nil},
		{"not_in: case variant alone", notIn, `{"TYPE":"widget"}`, false, ErrFieldAmbiguous},
		{"in: case variant alone", in, `{"V":"a"}`, false, ErrFieldAmbiguous},
		{"in: non-ASCII case variant", &BodyCondition{Field: "k", Op: CondIn, Values: []string{"a"}}, `{"\u212a":"a"}`, false, ErrFieldAmbiguous},
		{"exists: case variant of the parent", exists, `{"A":{"b":1}}`, false, ErrFieldAmbiguous},
		{"not exists: case variant of the leaf", absent, `{"a":{"B":1}}`, false, ErrFieldAmbiguous},
		{"not_in: other keys only", notIn, `{"types":"widget","typ":"x"}`, true, nil},
		{"not_in: duplicate key", notIn, `{"type":"widget","type":"whatsapp"}`, false, ErrFieldAmbiguous},
		{"not_in: case-variant duplicate", notIn, `{"type":"widget","Type":"whatsapp"}`, false, ErrFieldAmbiguous},
		{"not_in: whitespace", notIn, " \n{ \"type\" : \"widget\" } ", false, nil},
		{"equals: same number", eqNum, `{"n":100}`, true, nil},
		{"equals: canonical float", eqNum, `{"n":100.0}`, true, nil},
		{"equals: exponent", eqNum, `{"n":1e2}`, true, nil},
		{"equals: other number", eqNum, `{"n":101}`, false, nil},
		{"equals: missing", eqNum, `{}`, false, nil},
		{"in: string", in, `{"v":"a"}`, true, nil},
		{"in: bool", in, `{"v":true}`, true, nil},
		{"in: null", in, `{"v":null}`, true, nil},
		{"in: float", in, `{"v":1.50}`, true, nil},
		{"in: false", in, `{"v":false}`, false, nil},
		{"in: array", in, `{"v":["a"]}`, false, nil},
		{"not_equals: nested other", neq, `{"channel":{"kind":"sms"}}`, true, nil},
		{"not_equals: nested same", neq, `{"channel":{"kind":"web"}}`, false, nil},
		{"not_equals: through a string", neq, `{"channel":"web"}`, true, nil},
		{"exists: nested", exists, `{"a":{"b":null}}`, true, nil},
		{"exists: missing", exists, `{"a":{"c":1}}`, false, nil},
		{"exists: parent not object", exists, `{"a":[{"b":1}]}`, false, nil},
		{"not exists: missing", absent, `{"a":1}`, true, nil},
		{"not exists: present", absent, `{"a":{"b":[1,{"c":"}"}]}}`, false, nil},
		{"skips nested values", notIn, `{"x":[1,{"type":"]"},"\"}"],"type":"widget"}`, false, nil},
		{"malformed", notIn, `{"type":"widget"`, false, ErrBodyMalformed},
		{"empty body", notIn, ``, false, ErrBodyMalformed},
		{"array body", notIn, `[{"type":"widget"}]`, false, ErrBodyNotObject},
		{"string body", notIn, `"widget"`, false, ErrBodyNotObject},
		{"trailing garbage", notIn, `{"type":"widget"} x`, false, ErrBodyMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.Match([]byte(tc.body))
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Match(%s) = %v, want %v", tc.body, got, tc.want)
			}
		})
	}
}

func TestNilConditionMatches(t *testing.T) {
	var c *BodyCondition
	if ok, err := c.Match(nil); !ok || err != nil {
		t.Errorf("nil condition = %v, %v", ok, err)
	}
}

func TestBodyAmount(t *testing.T) {
	m := &Meter{Source: AmountBodyField, Field: "count"}
	nested := &Meter{Source: AmountBodyField, Field: "batch.size"}
	cases := []struct {
		name    string
		m       *Meter
		body    string
		want    int64
		wantErr error
	}{
		{"integer", m, `{"count":12}`, 12, nil},
		{"zero", m, `{"count":0}`, 0, nil},
		{"minus zero", m, `{"count":-0}`, 0, nil},
		{"nested", nested, `{"batch":{"size":3}}`, 3, nil},
		{"max", m, `{"count":9007199254740991}`, 9007199254740991, nil},
		{"too large", m, `{"count":9007199254740992}`, 0, ErrAmountTooLarge},
		{"overflow", m, `{"count":99999999999999999999999}`, 0, ErrAmountTooLarge},
		{"negative", m, `{"count":-3}`, 0, ErrAmountNegative},
		{"negative float", m, `{"count":-3.5}`, 0, ErrAmountNegative},
		{"fraction", m, `{"count":2.5}`, 0, ErrAmountNotNumber},
		{"exponent", m, `{"count":1e3}`, 0, ErrAmountNotNumber},
		{"string", m, `{"count":"5"}`, 0, ErrAmountNotNumber},
		{"null", m, `{"count":null}`, 0, ErrAmountNotNumber},
		{"object", m, `{"count":{}}`, 0, ErrAmountNotNumber},
		{"missing", m, `{"n":1}`, 0, ErrFieldMissing},
		{"duplicate", m, `{"count":1,"count":1000}`, 0, ErrFieldAmbiguous},
		{"case variant", m, `{"Count":1000}`, 0, ErrFieldAmbiguous},
		{"malformed", m, `{"count":1`, 0, ErrBodyMalformed},
		{"not an object", m, `[1]`, 0, ErrBodyNotObject},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.m.BodyAmount([]byte(tc.body))
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("BodyAmount(%s) = %d, want %d", tc.body, got, tc.want)
			}
		})
	}
	fixed := &Meter{Source: AmountFixed, Amount: 1}
	if _, err := fixed.BodyAmount([]byte(`{}`)); err == nil {
		t.Error("BodyAmount on a fixed meter should fail")
	}
}
