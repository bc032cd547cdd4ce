package policy

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// knownBypasses are path-confusion tricks that got past other gateways;
// they seed the fuzzers.
var knownBypasses = []string{
	"/v1/products/1337/devices",
	"/v1/products/1337/devices/..%2f..%2fadmin",
	"/v1/products/1337/devices/%2e%2e/%2e%2e/admin",
	"/v1/products/1337/devices/%2E",
	"/v1/products/1337/devices/a%5cb",
	"/v1/products/1337/devices/a%00b",
	"/v1/products/1337/devices;jsessionid=x",
	"/v1/products/1337//devices",
	"/v1/products/1337/devices/a%252fb",
	"/v1/products/1337/devices/%c0%ae%c0%ae",
	"/v1/products/1337/devices/%e0%80%ae",
	"/v1/products/1337/devices/%ef%bc%8f",
	"/v1/products/1337/devices/%64evice",
	"/v1/products/1337/devices/",
	"/v1/products/1337/./devices",
	"/v1/products/1337/devices/caf%C3%A9",
	"/v1/products/1337/events/a/b/c",
	"/V1/products/1337/devices",
	"/v1/products/1337/devices/%ff",
	"/v1/products/1337/devices/0a1b2c%3F/x",
	"/v1/products/1337/devices/0a1b2c%3f/x",
	"/v1/products/1337/devices/0a1b2c%23/x",
	"/v1/products/1337/devices/0a1b2c%EF%BC%9F/x",
	"/v1/products/1337/devices/0a1b2c%EF%BC%83/x",
	"/v1/products/1337/devices/0a1b2c%EF%B9%96/x",
	"/v1/products/1337/devices/0a1b2c%EF%B9%9F/x",
}

// FuzzCheckPath: whatever CheckPath accepts decodes to the same segments
// it has raw, with no dot segment, no separator hidden in an escape, and
// valid UTF-8, so no backend can read it as another path.
func FuzzCheckPath(f *testing.F) {
	for _, p := range knownBypasses {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CheckPath(p) != Allowed {
			return
		}
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") {
			t.Fatalf("accepted %q: empty segment or no leading slash", p)
		}
		raw := strings.Split(p[1:], "/")
		for _, seg := range raw {
			dec, err := url.PathUnescape(seg)
			if err != nil {
				t.Fatalf("accepted %q: segment %q does not decode: %v", p, seg, err)
			}
			if dec == "." || dec == ".." || strings.ContainsAny(dec, "/\\;%?#\x00") {
				t.Fatalf("accepted %q: segment %q decodes to %q", p, seg, dec)
			}
			if !utf8.ValidString(dec) {
				t.Fatalf("accepted %q: segment %q is not valid UTF-8", p, seg)
			}
			for _, r := range dec {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("accepted %q: control character in %q", p, dec)
				}
			}
		}
	})
}

// FuzzCatalogMatch: a match's variables put back into its template give
// exactly the path that was matched, so the match is the whole truth about
// the path; and matching never panics.
func FuzzCatalogMatch(f *testing.F) {
	for _, p := range knownBypasses {
		f.Add("GET", p)
		f.Add("POST", p)
	}
	c := exampleCatalog(f)
	f.Fuzz(func(t *testing.T, method, p string) {
		ep, vars, ok := c.Match(method, p)
		if !ok {
			return
		}
		if !containsString(ep.Methods, method) {
			t.Fatalf("%s %s matched %s, whose methods are %v", method, p, ep.Name, ep.Methods)
		}
		rebuilt := ep.Path
		for i := 0; i < vars.Len(); i++ {
			name, value := vars.At(i)
			if value == "" {
				t.Fatalf("%s %s: variable %s is empty", method, p, name)
			}
			rebuilt = strings.Replace(rebuilt, "{"+name+"...}", value, 1)
			rebuilt = strings.Replace(rebuilt, "{"+name+"}", value, 1)
		}
		if rebuilt != p {
			t.Fatalf("%s %s matched %s, but its variables rebuild %s", method, p, ep.Path, rebuilt)
		}
	})
}

// FuzzParseTemplate: a template that parses compiles into a catalog, and
// matches the path obtained by filling its variables.
func FuzzParseTemplate(f *testing.F) {
	for _, e := range exampleEndpoints() {
		f.Add(e.Path)
	}
	for _, s := range []string{"/", "/a/{x...}", "/{a}/{a}", "/a/{x}b", "/a/../b", "/a//b", "/{x...}/a", "/a/%2f", "/a;b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		if ParseTemplate(tmpl) != nil {
			return
		}
		c, err := NewCatalog([]Endpoint{{Name: "e", Methods: []string{"GET"}, Path: tmpl, Scope: "a:b"}})
		if err != nil {
			t.Fatalf("template %q parses but does not compile: %v", tmpl, err)
		}
		ep, _ := c.Endpoint("e")
		p := tmpl
		for _, name := range ep.VarNames() {
			p = strings.Replace(p, "{"+name+"...}", "v1/v2", 1)
			p = strings.Replace(p, "{"+name+"}", "v", 1)
		}
		if CheckPath(p) == Allowed {
			if _, _, ok := c.Match("GET", p); !ok {
				t.Fatalf("template %q does not match its own filled path %q", tmpl, p)
			}
		}
	})
}

// FuzzParseAuthorization: parsing never panics, whatever it accepts is
// well formed, and a value it calls someone else's (MissingCredentials, so
// a pass-through site would forward it) carries no API-user credential.
func FuzzParseAuthorization(f *testing.F) {
	tok, _ := NewToken()
	sec, _ := NewSecret()
	key, _ := NewKey(time.Unix(1_800_000_000, 0))
	f.Add("Bearer " + tok)
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("app-1:"+key+":"+sec)))
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("app-1:"+key)))
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("a:b")))
	f.Add("Bearer")
	f.Add("bearer  " + tok)
	f.Add("Token " + tok)
	f.Add("Bearer\t" + tok)
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("a:"+sec)))
	f.Fuzz(func(t *testing.T, h string) {
		c, r := ParseAuthorization(h)
		switch r {
		case Allowed:
			switch c.Kind {
			case BearerToken:
				if !wellFormed(c.Token, TokenPrefix, tokenLen) {
					t.Fatalf("accepted malformed token from %q", h)
				}
			case KeyAndSecret:
				if !ValidUserID(c.UserID) || !wellFormedKey(c.Key) || !wellFormed(c.Secret, SecretPrefix, secretLen) {
					t.Fatalf("accepted malformed key and secret from %q", h)
				}
			default:
				t.Fatalf("Allowed with no credential from %q", h)
			}
		case MissingCredentials, MalformedCredentials:
			if c.Kind != NoCredential {
				t.Fatalf("refused %q but returned a credential", h)
			}
			if r == MissingCredentials && CarriesCredential(h) {
				t.Fatalf("%q carries an API-user credential but was called someone else's", h)
			}
		default:
			t.Fatalf("unexpected reason %s for %q", r, h)
		}
	})
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// FuzzQueryOverridesMethod: a query in which Go's own parser finds a
// "_method" parameter, in any letter case or after leading spaces, is
// always reported as a method override.
func FuzzQueryOverridesMethod(f *testing.F) {
	for _, q := range []string{"_method=DELETE", "a=1&_method=PUT", "%5Fmethod=x", "_m%65thod=x", "+_method=x", "_method[]=x", ".method=x", "a=1;_method=x", "sort=_method", "%zz&_method=x", ""} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got := QueryOverridesMethod(q)
		values, _ := url.ParseQuery(strings.ReplaceAll(q, ";", "&"))
		for name := range values {
			if strings.EqualFold(strings.TrimLeft(name, " "), "_method") && !got {
				t.Fatalf("QueryOverridesMethod(%q) = false, but it has the parameter %q", q, name)
			}
		}
	})
}
