package policy

import (
	"net/url"
	"strings"
)

// CheckPath is step 1 of every decision: it refuses, with AmbiguousPath, a
// request path that a backend might read differently from the gateway.
//
// The gateway matches the raw path exactly as the client sent it, and the
// upstream receives exactly that path, unchanged. Matching never decodes or
// cleans it, so anything a backend, framework or filesystem could normalise
// on its own is refused rather than guessed at: otherwise a path that matched
// /v1/products/{product}/devices/{device} with device "..%2f..%2fadmin"
// would reach /admin once the backend decodes it, and a path with ";" or an
// encoded letter could match nothing here yet something there. What is left
// is the canonical spelling of every path, so each endpoint, tenant and
// constrained resource has exactly one way to be named.
//
// escapedPath is the path of the request-URI as sent, without the query. It
// is refused when it
//   - is empty or does not begin with "/";
//   - has an empty segment ("//"), though a single trailing "/" is accepted
//     (it just matches no template but "/");
//   - has a "." or ".." segment;
//   - has, unescaped, a byte outside RFC 3986's pchar set: a control
//     character or NUL, a byte of 0x80 or more, "\", ";", a space or any of
//     "\"#<>?[]^`{|}";
//   - has a malformed escape, such as "%4" or "%zz";
//   - has an escape, in either hex case, of "/", "\", ".", ";", "%" (double
//     encoding), "?" or "#" (a hop that decodes the path and parses it
//     again would cut the path there, and route what is left), NUL or
//     another control character, or of an unreserved
//     character (A-Z, a-z, 0-9, "-", ".", "_", "~"), which is never needed,
//     so that is the non-canonical spelling used to slip past string matches;
//   - has escaped bytes that are not valid UTF-8 (overlong forms such as
//     "%C0%AE", surrogates, stray or missing continuation bytes), or that
//     decode to a C1 control character or to a character that Unicode
//     compatibility normalisation (NFKC) turns into something containing
//     "/", "\", ".", ";", "%", "?" or "#", such as the fullwidth solidus
//     "%EF%BC%8F" or the fullwidth question mark "%EF%BC%9F".
//
// Other escapes, such as "%20" or "%C3%A9" (é), are accepted. CheckPath does
// not allocate.
func CheckPath(escapedPath string) Reason {
	p := escapedPath
	if p == "" || p[0] != '/' {
		return AmbiguousPath
	}
	var (
		segStart = 1 // index of the current segment's first byte
		need     int // UTF-8 continuation bytes still expected from escapes
		lo, hi   byte
		cp       rune // the code point being decoded
	)
	for i := 1; i < len(p); {
		c := p[i]
		if c == '%' {
			if i+2 >= len(p) {
				return AmbiguousPath
			}
			h, ok1 := hexDigit(p[i+1])
			l, ok2 := hexDigit(p[i+2])
			if !ok1 || !ok2 {
				return AmbiguousPath
			}
			b := h<<4 | l
			i += 3
			switch {
			case need > 0:
				if b < lo || b > hi {
					return AmbiguousPath
				}
				cp = cp<<6 | rune(b&0x3F)
				lo, hi = 0x80, 0xBF
				if need--; need == 0 && confusable(cp) {
					return AmbiguousPath
				}
			case b < 0x80:
				if escapeRefused[b] {
					return AmbiguousPath
				}
			default:
				// A lead byte, with the ranges of Unicode's table 3-7 of
				// well-formed UTF-8 for the byte after it.
				lo, hi = 0x80, 0xBF
				switch {
				case b >= 0xC2 && b <= 0xDF:
					need, cp = 1, rune(b&0x1F)
				case b == 0xE0:
					need, cp, lo = 2, rune(b&0x0F), 0xA0
				case b == 0xED:
					need, cp, hi = 2, rune(b&0x0F), 0x9F
				case b >= 0xE1 && b <= 0xEF:
					need, cp = 2, rune(b&0x0F)
				case b == 0xF0:
					need, cp, lo = 3, rune(b&0x07), 0x90
				case b >= 0xF1 && b <= 0xF3:
					need, cp = 3, rune(b&0x07)
				case b == 0xF4:
					need, cp, hi = 3, rune(b&0x07), 0x8F
				default:
					// 0x80-0xC1 (continuations, overlong leads) and 0xF5-0xFF.
					return AmbiguousPath
				}
			}
			continue
		}
		if need > 0 {
			// A multi-byte character cut short by an unescaped byte.
			return AmbiguousPath
		}
		if c == '/' {
			if dotOrEmpty(p[segStart:i]) {
				return AmbiguousPath
			}
			segStart = i + 1
		} else if !rawAccepted[c] {
			return AmbiguousPath
		}
		i++
	}
	if need > 0 {
		return AmbiguousPath
	}
	// The last segment may be empty (a trailing slash, or the root "/").
	if seg := p[segStart:]; seg == "." || seg == ".." {
		return AmbiguousPath
	}
	return Allowed
}

// dotOrEmpty reports whether seg is "", "." or "..".
func dotOrEmpty(seg string) bool {
	return seg == "" || seg == "." || seg == ".."
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// rawAccepted are the bytes a path may carry unescaped besides "/" and "%":
// RFC 3986's unreserved characters, its sub-delimiters without ";", ":" and
// "@". Go's net/url keeps a path made of these exactly as sent, so what the
// gateway matched is what the upstream receives.
var rawAccepted = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@")

// escapeRefused are the ASCII bytes that must not be sent escaped: the
// unreserved characters, whose escapes are never needed, and the characters
// that change a path's structure or meaning once decoded.
var escapeRefused = func() (set [0x80]bool) {
	for b := range set {
		set[b] = b < 0x20 || b == 0x7F
	}
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/\\;%?#") {
		set[c] = true
	}
	return set
}()

func byteSet(s string) (set [256]bool) {
	for i := 0; i < len(s); i++ {
		set[s[i]] = true
	}
	return set
}

// confusables are the code points from 0x80 up that CheckPath refuses when
// escaped: the C1 control characters; every character whose NFKC or NFKD
// form contains "/", "\", ".", ";", "%", "?" or "#" (generated from Unicode's
// decomposition data with golang.org/x/text/unicode/norm, and so
// including "?" and "#", which end a path once it is decoded); and the
// characters Windows' "best fit" conversion to a legacy code page turns
// into "/" or "\", which normalisation does not: the yen and won signs
// (the backslash of the Japanese and Korean code pages), the fraction and
// division slashes, set minus, and the solidus operators. Some frameworks
// and filesystems apply one of these after the gateway has matched the
// path, and "%EF%BC%8F" or "%C2%A5" would then become a separator. The
// ranges are sorted and inclusive.
var confusables = [...][2]rune{
	{0x0080, 0x009F},   // C1 controls
	{0x00A5, 0x00A5},   // yen sign: "\" by best fit to code page 932
	{0x037E, 0x037E},   // Greek question mark, ";"
	{0x2024, 0x2026},   // one-dot leader, two-dot leader, ellipsis
	{0x2044, 0x2044},   // fraction slash: "/" by best fit
	{0x2047, 0x2049},   // double question mark, question exclamation, exclamation question
	{0x20A9, 0x20A9},   // won sign: "\" by best fit to code page 949
	{0x2100, 0x2101},   // account of, addressed to the subject: "a/c", "a/s"
	{0x2105, 0x2106},   // care of, cada una: "c/o", "c/u"
	{0x2215, 0x2216},   // division slash, set minus: "/" and "\" by best fit
	{0x2488, 0x249B},   // digit full stops "1." to "20."
	{0x29F5, 0x29F5},   // reverse solidus operator
	{0x29F8, 0x29F9},   // big solidus, big reverse solidus
	{0x33C2, 0x33C2},   // "a.m."
	{0x33C7, 0x33C7},   // "Co."
	{0x33D8, 0x33D8},   // "p.m."
	{0xFE14, 0xFE14},   // presentation form for vertical semicolon
	{0xFE16, 0xFE16},   // presentation form for vertical question mark
	{0xFE19, 0xFE19},   // presentation form for vertical ellipsis
	{0xFE30, 0xFE30},   // presentation form for vertical two-dot leader
	{0xFE52, 0xFE52},   // small full stop
	{0xFE54, 0xFE54},   // small semicolon
	{0xFE56, 0xFE56},   // small question mark
	{0xFE5F, 0xFE5F},   // small number sign
	{0xFE68, 0xFE68},   // small reverse solidus
	{0xFE6A, 0xFE6A},   // small percent sign
	{0xFF03, 0xFF03},   // fullwidth number sign
	{0xFF05, 0xFF05},   // fullwidth percent sign
	{0xFF0E, 0xFF0F},   // fullwidth full stop, fullwidth solidus
	{0xFF1B, 0xFF1B},   // fullwidth semicolon
	{0xFF1F, 0xFF1F},   // fullwidth question mark
	{0xFF3C, 0xFF3C},   // fullwidth reverse solidus
	{0x1F100, 0x1F100}, // digit zero full stop
}

// confusable reports whether the decoded code point r is refused.
func confusable(r rune) bool {
	for _, rg := range confusables {
		if r < rg[0] {
			return false
		}
		if r <= rg[1] {
			return true
		}
	}
	return false
}

// QueryOverridesMethod reports whether a raw query string carries a
// method-override parameter, "_method", as Laravel, Symfony and other
// frameworks read one: "POST /things/1?_method=DELETE" is a DELETE to them,
// while the gateway matched a POST. It recognises the spellings such a
// backend folds into "_method": any letter case, percent-encoding, a
// leading space, "." or "[" in place of "_" (PHP turns those into "_" in
// parameter names), and an array form such as "_method[]". Parameters are
// separated by "&" or ";". It does not allocate unless a name is
// percent-encoded.
//
// A "_method" field in a form body is not seen: the gateway does not read
// bodies.
func QueryOverridesMethod(rawQuery string) bool {
	for rawQuery != "" {
		var param string
		if i := strings.IndexAny(rawQuery, "&;"); i >= 0 {
			param, rawQuery = rawQuery[:i], rawQuery[i+1:]
		} else {
			param, rawQuery = rawQuery, ""
		}
		name, _, _ := strings.Cut(param, "=")
		if strings.ContainsAny(name, "%+") {
			unescaped, err := url.QueryUnescape(name)
			if err != nil {
				// A backend may read a broken escape literally: check
				// the name as sent.
				unescaped = name
			}
			name = unescaped
		}
		name = strings.TrimLeft(name, " ")
		if len(name) < len("_method") {
			continue
		}
		switch name[0] {
		case '_', '.', ' ', '[':
		default:
			continue
		}
		if strings.EqualFold(name[1:7], "method") && (len(name) == 7 || name[7] == '[') {
			return true
		}
	}
	return false
}
