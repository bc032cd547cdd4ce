package policy

import (
	"errors"
	"fmt"
	"strings"
)

// MaxVars is the most variables one endpoint template may have. Vars keeps
// that many name/value pairs inline, which is what lets Match run without
// allocating.
const MaxVars = 8

// TemplateSyntax describes a valid endpoint template, for error messages and
// documentation.
const TemplateSyntax = `an absolute path of "/"-separated segments, each a literal, "{name}" for one segment or, last only, "{name...}" for the rest, such as "/v1/products/{product}/devices/{device}"`

// templateLiteralChars are the bytes a literal template segment may contain:
// RFC 3986's unreserved characters and the sub-delimiters, ":" and "@",
// without ";" and "%". Matching compares raw, still-escaped request segments
// with literals byte for byte, so a literal holds only characters a canonical
// request sends unescaped; CheckPath refuses raw ";" and escaped unreserved
// characters, so each literal has exactly one spelling that reaches it.
const templateLiteralChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@"

// A segment is one parsed piece of a template.
type segment struct {
	s     string // the literal, or the variable's name
	wild  bool   // {name}: exactly one non-empty request segment
	multi bool   // {name...}: the rest of the path, one or more segments
}

// A template is the parsed form of an endpoint's path. The root "/" has no
// segments.
type template struct {
	segs  []segment
	names []string // variable names, in the order they appear
}

// ParseTemplate reports whether s is a valid endpoint template, with an error
// that says what to fix. NewCatalog applies the same check; configuration
// parsing calls ParseTemplate to fail early, with the offending line at hand.
func ParseTemplate(s string) error {
	_, err := parseTemplate(s)
	return err
}

func parseTemplate(s string) (template, error) {
	var t template
	if s == "" {
		return t, fmt.Errorf("template is empty; write %s", TemplateSyntax)
	}
	if s[0] != '/' {
		return t, fmt.Errorf("template %q does not begin with \"/\"; write it as %q", s, "/"+s)
	}
	if s == "/" {
		return t, nil
	}
	parts := strings.Split(s[1:], "/")
	for i, part := range parts {
		last := i == len(parts)-1
		seg, err := parseSegment(part, last)
		if err != nil {
			return template{}, fmt.Errorf("template %q, segment %d: %w", s, i+1, err)
		}
		if seg.wild || seg.multi {
			for _, n := range t.names {
				if n == seg.s {
					return template{}, fmt.Errorf("template %q uses the variable name %q twice; give each variable its own name", s, seg.s)
				}
			}
			if len(t.names) == MaxVars {
				return template{}, fmt.Errorf("template %q has more than %d variables; split the endpoint or turn some variables into literals", s, MaxVars)
			}
			t.names = append(t.names, seg.s)
		}
		t.segs = append(t.segs, seg)
	}
	return t, nil
}

// parseSegment parses one "/"-separated piece of a template; last says
// whether it is the final one.
func parseSegment(part string, last bool) (segment, error) {
	if part == "" {
		if last {
			return segment{}, errors.New(`the template ends with "/"; remove the trailing slash (templates match paths without one)`)
		}
		return segment{}, errors.New(`the segment is empty ("//"); remove the extra slash`)
	}
	if !strings.ContainsAny(part, "{}") {
		if part == "." || part == ".." {
			return segment{}, fmt.Errorf("%q is a dot segment, which CheckPath refuses in requests; remove it", part)
		}
		for i := 0; i < len(part); i++ {
			if strings.IndexByte(templateLiteralChars, part[i]) < 0 {
				return segment{}, fmt.Errorf("literal %q contains %q; a literal may use only letters, digits and - . _ ~ ! $ & ' ( ) * + , = : @ (no percent escapes)", part, part[i])
			}
		}
		return segment{s: part}, nil
	}
	if part[0] != '{' || part[len(part)-1] != '}' || strings.Count(part, "{") != 1 || strings.Count(part, "}") != 1 {
		return segment{}, fmt.Errorf("%q is not a whole-segment variable; write a variable as its own segment, \"{name}\" or \"{name...}\" (partial-segment variables and regular expressions are not supported)", part)
	}
	name, multi := strings.CutSuffix(part[1:len(part)-1], "...")
	if multi && !last {
		return segment{}, fmt.Errorf("%q matches the rest of the path, so it must be the last segment; move it to the end or use \"{%s}\"", part, name)
	}
	if !validVarName(name) {
		return segment{}, fmt.Errorf("variable name %q is not a Go identifier; use letters, digits and \"_\", not starting with a digit, such as \"{device}\"", name)
	}
	return segment{s: name, wild: !multi, multi: multi}, nil
}

// validVarName reports whether s matches [A-Za-z_][A-Za-z0-9_]*.
func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// overlap reports whether some request path matches both a and b, and if so
// returns one such path as an example for the error message.
//
// The grammar makes this a walk over corresponding segments. Two literals
// agree only if equal. A literal and a {name}, or two {name}s, always agree:
// a {name} takes any non-empty segment, and literals are non-empty. A
// {name...} agrees with whatever the other template has left, as long as
// that is at least one segment, which it is when both templates reach that
// position. Without a {name...}, the templates must have the same number of
// segments. So /a/{x} overlaps /a/b, /a/{x}/b overlaps /a/c/{y} (both match
// /a/c/b), and /a/{x...} overlaps /a/b/c, while /a/{x} and /a/{x}/b do not,
// nor do / and /{x...} (a {name...} needs at least one segment).
func overlap(a, b template) (example string, ok bool) {
	var sb strings.Builder
	for i := 0; i < len(a.segs) && i < len(b.segs); i++ {
		x, y := a.segs[i], b.segs[i]
		switch {
		case x.multi:
			writeExample(&sb, b.segs[i:])
			return sb.String(), true
		case y.multi:
			writeExample(&sb, a.segs[i:])
			return sb.String(), true
		case !x.wild && !y.wild && x.s != y.s:
			return "", false
		case !x.wild:
			writeExample(&sb, a.segs[i:i+1])
		default:
			writeExample(&sb, b.segs[i:i+1])
		}
	}
	if len(a.segs) != len(b.segs) {
		return "", false
	}
	if sb.Len() == 0 {
		return "/", true
	}
	return sb.String(), true
}

// writeExample writes a path that segs match, using each variable's name as
// its value.
func writeExample(sb *strings.Builder, segs []segment) {
	for _, s := range segs {
		sb.WriteByte('/')
		sb.WriteString(s.s)
	}
}
