package policy

import (
	"fmt"
	"testing"
)

func TestCheckPath(t *testing.T) {
	allowed := []string{
		"/",
		"/v1/products/1337/devices",
		"/v1/products/my-product-v1/devices/0a1b2c3d",
		"/v1/products/1337/devices/", // trailing slash: accepted, matches nothing
		"/v1/products/1337/events/a/b/c",
		"/a/.../b",         // three dots is a name, not a dot segment
		"/a/.b/..c/d./e..", // dots inside names
		"/a/b~c_d-e.f",     // unreserved
		"/a/!$&'()*+,=:@",  // sub-delimiters without ";", and ":" and "@"
		"/v1/things:batchGet",
		"/a/%20b",                           // escaped space
		"/a/%3a/%3A/%40/%21/%2B/%2b",        // escaped reserved characters, either case
		"/a/%7B%7D%5B%5D%22%3C%3E%60%5E%7C", // escaped characters that may not be raw
		"/caf%C3%A9",                        // é
		"/caf%c3%a9",                        // é, lower-case hex
		"/%E2%82%AC",                        // €
		"/%F0%9F%98%80",                     // 😀
		"/%EF%BF%BD",                        // U+FFFD
		"/%C2%A0",                           // U+00A0, not a C1 control
		"/%ED%9F%BF",                        // U+D7FF, just below the surrogates
		"/%EE%80%80",                        // U+E000, just above them
		"/%F4%8F%BF%BF",                     // U+10FFFF, the last code point
	}
	refused := []string{
		// Not a path.
		"",
		"v1/products",
		"*",
		"http://example.com/a",

		// Encoded slashes, backslashes and dots: traversal once decoded.
		"/v1/products/1337/devices/..%2f..%2fadmin",
		"/v1/products/1337/devices/..%2F..%2Fadmin",
		"/v1/products/1337/devices/%2e%2e/%2e%2e/admin",
		"/v1/products/1337/devices/%2E%2E",
		"/v1/products/1337/devices/%2E",
		"/v1/products/1337/devices/.%2e",
		"/v1/products/1337/devices/a%2fb",
		"/v1/products/1337/devices/%5c..%5cadmin",
		"/v1/products/1337/devices/%5C",

		// Escaped "?" and "#", and their confusables: a hop that decodes
		// the path and parses it again cuts it there.
		"/v1/products/1337/devices/0a1b2c%3F/x",
		"/v1/products/1337/devices/0a1b2c%3f/x",
		"/v1/products/1337/devices/0a1b2c%23/x",
		"/v1/products/1337/devices/0a1b2c%EF%BC%9F/x", // U+FF1F fullwidth question mark
		"/v1/products/1337/devices/0a1b2c%EF%BC%83/x", // U+FF03 fullwidth number sign
		"/v1/products/1337/devices/0a1b2c%EF%B9%96/x", // U+FE56 small question mark
		"/v1/products/1337/devices/0a1b2c%EF%B9%9F/x", // U+FE5F small number sign
		"/v1/products/1337/devices/0a1b2c%EF%B8%96",   // U+FE16 vertical question mark
		"/v1/products/1337/devices/0a1b2c%E2%81%87",   // U+2047 double question mark

		// Dot segments and empty segments.
		"/a/./b",
		"/a/../b",
		"/a/.",
		"/a/..",
		"/.",
		"/..",
		"/./a",
		"//",
		"//a",
		"/a//b",
		"/a/b//",
		"/v1//products/1337/devices",

		// ";" parameters and NUL, raw or escaped.
		"/v1/products/1337/devices;jsessionid=abc",
		"/v1/products/1337/devices/x;/../admin",
		"/a/%3b",
		"/a/%3B",
		"/a/%00",
		"/a/\x00",

		// Double encoding.
		"/v1/products/1337/devices/%252f",
		"/v1/products/1337/devices/%252e%252e",
		"/a/%25",

		// Escaped unreserved characters: non-canonical.
		"/%41dmin",
		"/a/%61",
		"/a/%7E",
		"/a/%7e",
		"/a/%2D",
		"/a/%5F",
		"/a/%30",

		// Control characters, raw or escaped.
		"/a/\tb",
		"/a/\rb",
		"/a/\nb",
		"/a/\x7f",
		"/a/%09",
		"/a/%0d%0a",
		"/a/%1F",
		"/a/%7F",

		// Malformed escapes.
		"/a/%",
		"/a/%4",
		"/a/%zz",
		"/a/%4g",
		"/a/%g4",
		"/a/%%41",
		"/a/b%",

		// Raw bytes that are not pchar.
		`/a\b`,
		`/a/\..\admin`,
		"/a b",
		"/a/\"",
		"/a/<script>",
		"/a/`",
		"/a/{x}",
		"/a/|",
		"/a/^",
		"/a/[0]",
		"/a?b",
		"/a#b",

		// Raw bytes >= 0x80.
		"/caf\u00e9",
		"/a/\x80",
		"/a/\xff",
		"/a/\xc0\xae",

		// Escaped bytes that are not valid UTF-8.
		"/a/%c0%ae",       // overlong "."
		"/a/%C0%AF",       // overlong "/"
		"/a/%c1%9c",       // overlong "\"
		"/a/%e0%80%ae",    // overlong "."
		"/a/%f0%80%80%ae", // overlong "."
		"/a/%e0%9f%bf",    // overlong U+07FF
		"/a/%f0%8f%bf%bf", // overlong U+FFFF
		"/a/%ff",          // never in UTF-8
		"/a/%fe",
		"/a/%f5%80%80%80", // beyond U+10FFFF
		"/a/%f4%90%80%80", // U+110000
		"/a/%80",          // stray continuation
		"/a/%bf",
		"/a/%c3",    // truncated at the end
		"/a/%c3/b",  // truncated by a slash
		"/a/%c3b",   // truncated by a raw byte
		"/a/%e2%82", // truncated three-byte
		"/a/%e2%82/",
		"/a/%c3%c3",    // lead where a continuation belongs
		"/a/%c3%28",    // ASCII where a continuation belongs
		"/a/%ed%a0%80", // surrogate U+D800
		"/a/%ed%bf%bf", // surrogate U+DFFF

		// Escaped characters that normalisation turns into structure.
		"/a/%c2%80",    // U+0080, a C1 control
		"/a/%c2%85",    // U+0085, NEL
		"/a/%c2%9f",    // U+009F
		"/a/%ef%bc%8f", // U+FF0F fullwidth solidus
		"/a/%EF%BC%8F..%EF%BC%8Fadmin",
		"/a/%ef%bc%8e%ef%bc%8e", // U+FF0E fullwidth full stops
		"/a/%ef%bc%bc",          // U+FF3C fullwidth reverse solidus
		"/a/%ef%bc%9b",          // U+FF1B fullwidth semicolon
		"/a/%ef%bc%85",          // U+FF05 fullwidth percent sign
		"/a/%e2%80%a4",          // U+2024 one-dot leader
		"/a/%e2%80%a5",          // U+2025 two-dot leader
		"/a/%e2%80%a6",          // U+2026 ellipsis
		"/a/%ef%b9%92",          // U+FE52 small full stop
		"/a/%ef%b9%a8",          // U+FE68 small reverse solidus
		"/a/%cd%be",             // U+037E Greek question mark
		"/a/%e2%84%80",          // U+2100 "a/c"
		"/a/%f0%9f%84%80",       // U+1F100 "0."
	}
	for _, p := range allowed {
		if got := CheckPath(p); got != Allowed {
			t.Errorf("CheckPath(%q) = %v; want allowed", p, got)
		}
	}
	for _, p := range refused {
		if got := CheckPath(p); got != AmbiguousPath {
			t.Errorf("CheckPath(%q) = %v; want ambiguous_path", p, got)
		}
	}
}

// TestCheckPathEscapes tries every escaped ASCII byte, in both hex cases.
func TestCheckPathEscapes(t *testing.T) {
	refused := func(b byte) bool {
		switch {
		case b < 0x20 || b == 0x7F:
			return true
		case b >= 'A' && b <= 'Z', b >= 'a' && b <= 'z', b >= '0' && b <= '9':
			return true
		}
		switch b {
		case '-', '.', '_', '~', '/', '\\', ';', '%', '?', '#':
			return true
		}
		return false
	}
	for b := 0; b < 0x80; b++ {
		want := Allowed
		if refused(byte(b)) {
			want = AmbiguousPath
		}
		for _, f := range []string{"/a/x%%%02Xy", "/a/x%%%02xy"} {
			p := fmt.Sprintf(f, b)
			if got := CheckPath(p); got != want {
				t.Errorf("CheckPath(%q) = %v; want %v", p, got, want)
			}
		}
	}
}

// TestCheckPathRawBytes tries every raw byte inside a segment.
func TestCheckPathRawBytes(t *testing.T) {
	const accepted = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@/"
	for b := 0; b < 256; b++ {
		p := "/a/x" + string([]byte{byte(b)}) + "y"
		want := AmbiguousPath
		for i := 0; i < len(accepted); i++ {
			if accepted[i] == byte(b) {
				want = Allowed
			}
		}
		if got := CheckPath(p); got != want {
			t.Errorf("CheckPath(%q) = %v; want %v", p, got, want)
		}
	}
}

// TestCheckPathUTF8 checks that escaped multi-byte sequences are accepted
// exactly when they are well-formed UTF-8 of an accepted code point.
func TestCheckPathUTF8(t *testing.T) {
	for _, r := range []rune{0xA0, 0xE9, 0x7FF, 0x800, 0x20AC, 0xD7FF, 0xE000, 0xFFFD, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF} {
		p := "/a/"
		for _, b := range []byte(string(r)) {
			p += fmt.Sprintf("%%%02X", b)
		}
		if got := CheckPath(p); got != Allowed {
			t.Errorf("CheckPath(%q) for U+%04X = %v; want allowed", p, r, got)
		}
	}
	for _, rg := range confusables {
		for _, r := range []rune{rg[0], rg[1]} {
			p := "/a/"
			for _, b := range []byte(string(r)) {
				p += fmt.Sprintf("%%%02x", b)
			}
			if got := CheckPath(p); got != AmbiguousPath {
				t.Errorf("CheckPath(%q) for U+%04X = %v; want ambiguous_path", p, r, got)
			}
		}
	}
}

// TestCheckPathWindowsBestFit: characters that Windows' best-fit
// conversion turns into "/" or "\" are refused like the separators.
func TestCheckPathWindowsBestFit(t *testing.T) {
	for _, p := range []string{
		"/v1/products/1337/devices/..%C2%A5..%C2%A5admin", // yen sign
		"/v1/products/1337/devices/..%E2%82%A9admin",      // won sign
		"/v1/products/1337/devices/..%E2%88%95admin",      // division slash
		"/v1/products/1337/devices/..%E2%81%84admin",      // fraction slash
		"/v1/products/1337/devices/..%E2%88%96admin",      // set minus
		"/v1/products/1337/devices/a%E2%A7%B5b",           // reverse solidus operator
	} {
		if got := CheckPath(p); got != AmbiguousPath {
			t.Errorf("CheckPath(%q) = %v, want ambiguous_path", p, got)
		}
	}
}

func TestCheckPathDoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/v1/products/my-product-v1/devices/0a1b2c3d", "/caf%C3%A9", "/a/%2f"} {
		if n := testing.AllocsPerRun(100, func() { CheckPath(p) }); n != 0 {
			t.Errorf("CheckPath(%q) allocates %v times", p, n)
		}
	}
}

func TestQueryOverridesMethod(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  bool
	}{
		{"", false},
		{"limit=10&page=2", false},
		{"method=DELETE", false}, // no leading "_": not an override anywhere
		{"_methods=x", false},
		{"x_method=DELETE", false},
		{"sort=_method", false}, // a value, not a name
		{"_method=DELETE", true},
		{"_method", true},
		{"_method=", true},
		{"a=1&_method=PUT", true},
		{"a=1;_method=PUT", true},
		{"_METHOD=DELETE", true},
		{"_Method=DELETE", true},
		{"%5Fmethod=DELETE", true},
		{"%5fmethod=DELETE", true},
		{"_m%65thod=DELETE", true},
		{"_method%5B%5D=DELETE", true},
		{"_method[]=DELETE", true},
		{"_method[x]=DELETE", true},
		{".method=DELETE", true},
		{"+_method=DELETE", true},
		{"%20_method=DELETE", true},
		{" method=DELETE", false}, // PHP drops leading spaces: "method"
		{"[method=DELETE", true},
		{"_method%zz=DELETE", false}, // a broken escape read literally is another name
		{"%zz&_method=DELETE", true},
	} {
		if got := QueryOverridesMethod(tc.query); got != tc.want {
			t.Errorf("QueryOverridesMethod(%q) = %v, want %v", tc.query, got, tc.want)
		}
	}
}

func TestQueryOverridesMethodDoesNotAllocate(t *testing.T) {
	for _, q := range []string{"", "limit=10&page=2&sort=name", "_method=DELETE", "a=%20b"} {
		if n := testing.AllocsPerRun(100, func() { QueryOverridesMethod(q) }); n != 0 {
			t.Errorf("QueryOverridesMethod(%q) allocates %v times", q, n)
		}
	}
}
