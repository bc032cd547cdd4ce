package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"unicode/utf8"
)

// checkStrictJSON refuses, before a management request body is decoded
// into v, what encoding/json would accept and quietly read one way while
// another reader (a validating proxy in front, an auditor's script, a
// JSON library with other rules) reads it another:
//
//   - a key that appears twice in one object: encoding/json keeps the last
//     value, so {"scopes": ["devices:list"], "scopes": ["devices:update"]}
//     would grant what a reader of the first saw refused;
//   - a field name in another letter case than its own ("SCOPES"), which
//     encoding/json matches anyway;
//   - invalid UTF-8, and escapes of lone UTF-16 surrogates, both of which
//     encoding/json turns into U+FFFD.
//
// Each error names the field, as "rate_limit.window" for a nested one. A
// body that is not JSON at all is left for the decoder to describe.
func checkStrictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := strictWalker{dec: dec, data: data}
	err := w.value(reflect.TypeOf(v), "body")
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return nil // a syntax error: the decoder names it better
}

type strictWalker struct {
	dec  *json.Decoder
	data []byte
	last int64 // offset after the previous token
}

// token reads the next token and checks its raw bytes.
func (w *strictWalker) token(field string) (json.Token, error) {
	tok, err := w.dec.Token()
	if err != nil {
		return nil, err
	}
	end := w.dec.InputOffset()
	raw := w.data[w.last:end]
	w.last = end
	if _, ok := tok.(string); ok && (!utf8.Valid(raw) || hasLoneSurrogate(raw)) {
		return nil, fieldErr(field, "is not valid UTF-8 (or escapes half of a UTF-16 surrogate pair): send text as UTF-8")
	}
	return tok, nil
}

// hasLoneSurrogate reports whether the raw bytes of a JSON string escape
// half of a UTF-16 surrogate pair (\ud800 without \udc00 after it, or the
// other way round), which encoding/json would decode as U+FFFD.
func hasLoneSurrogate(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if i+5 >= len(raw) || raw[i+1] != 'u' {
			i++ // a one-character escape, such as \" or \\
			continue
		}
		r, ok := hex4(raw[i+2 : i+6])
		switch {
		case !ok:
		case r >= 0xD800 && r <= 0xDBFF:
			if i+11 >= len(raw) || raw[i+6] != '\\' || raw[i+7] != 'u' {
				return true
			}
			lo, ok := hex4(raw[i+8 : i+12])
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 6
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		}
		i += 5
	}
	return false
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

// value walks one JSON value that is to be decoded into a value of type t
// (nil when unknown: then only the byte and key checks apply).
func (w *strictWalker) value(t reflect.Type, field string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := w.token(field)
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return w.object(t, field)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, field); err != nil {
				return err
			}
		}
		_, err := w.token(field) // ']'
		return err
	}
	return nil
}

func (w *strictWalker) object(t reflect.Type, field string) error {
	var fields map[string]reflect.Type // a struct's JSON names
	var elem reflect.Type              // a map's values
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = jsonFields(t)
		case reflect.Map:
			elem = t.Elem()
		}
	}
	seen := map[string]bool{}
	for w.dec.More() {
		tok, err := w.token(field)
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		name := key
		if field != "body" {
			name = field + "." + key
		}
		if seen[key] {
			return fieldErr(name, "appears twice in one object: send each field once")
		}
		seen[key] = true
		var next reflect.Type
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				for real := range fields {
					if strings.EqualFold(real, key) {
						return fieldErr(name, "is not a field of this request: field names are case-sensitive; write %q", real)
					}
				}
			}
			next = ft
		} else {
			next = elem
		}
		if err := w.value(next, name); err != nil {
			return err
		}
	}
	_, err := w.token(field) // '}'
	return err
}

// jsonFields maps the JSON names of a struct's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		if name, ok := jsonName(f); ok {
			out[name] = f.Type
		}
	}
	return out
}

// jsonFieldNames are the JSON names of a struct's fields, in order.
func jsonFieldNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if name, ok := jsonName(f); ok {
			names = append(names, name)
		}
	}
	return names
}

// jsonName is the name encoding/json gives a struct field, if it has one.
func jsonName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		name = f.Name
	}
	return name, true
}
