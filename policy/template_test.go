package policy

import (
	"strings"
	"testing"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // substring; "" means valid
	}{
		{"/", ""},
		{"/v1", ""},
		{"/v1/products/{product}/devices", ""},
		{"/v1/products/{product}/devices/{device}/{function}", ""},
		{"/v1/products/{product}/events/{prefix...}", ""},
		{"/{rest...}", ""},
		{"/v1/things:batchGet", ""},
		{"/a/b-c.d_e~f/!$&'()*+,=:@", ""},
		{"/{_x}/{X9}/{a_b}", ""},
		{"/Case/Sensitive", ""},
		{"/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", ""},

		{"", "template is empty"},
		{"v1/devices", `does not begin with "/"; write it as "/v1/devices"`},
		{"/v1/devices/", "trailing slash"},
		{"/v1//devices", `empty ("//")`},
		{"//", `empty ("//")`},
		{"/v1/./devices", "dot segment"},
		{"/v1/../devices", "dot segment"},
		{"/v1/{}", "not a Go identifier"},
		{"/v1/{...}", "not a Go identifier"},
		{"/v1/{1x}", "not a Go identifier"},
		{"/v1/{x-y}", "not a Go identifier"},
		{"/v1/{x y}", "not a Go identifier"},
		{"/v1/{x:[0-9]+}", "not a Go identifier"},
		{"/v1/a{x}", "not a whole-segment variable"},
		{"/v1/{x}a", "not a whole-segment variable"},
		{"/v1/{x}{y}", "not a whole-segment variable"},
		{"/v1/{{x}}", "not a whole-segment variable"},
		{"/v1/{x", "not a whole-segment variable"},
		{"/v1/x}", "not a whole-segment variable"},
		{"/v1/{rest...}/x", "must be the last segment"},
		{"/{x}/{x}", `variable name "x" twice`},
		{"/{x}/{x...}", `variable name "x" twice`},
		{"/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", "more than 8 variables"},
		{"/v1/a b", "contains ' '"},
		{"/v1/a%2Fb", "contains '%'"},
		{"/v1/a;b", "contains ';'"},
		{`/v1/a\b`, `contains '\\'`},
		{"/v1/caf\u00e9", "contains"},
		{"/v1/a?b", "contains '?'"},
	}
	for _, tt := range tests {
		err := ParseTemplate(tt.in)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ParseTemplate(%q): %v", tt.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseTemplate(%q) error %v; want one containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestParseTemplateSegments(t *testing.T) {
	tm, err := parseTemplate("/v1/{product}/events/{prefix...}")
	if err != nil {
		t.Fatal(err)
	}
	want := []segment{{s: "v1"}, {s: "product", wild: true}, {s: "events"}, {s: "prefix", multi: true}}
	if len(tm.segs) != len(want) {
		t.Fatalf("segments %+v; want %+v", tm.segs, want)
	}
	for i := range want {
		if tm.segs[i] != want[i] {
			t.Errorf("segment %d = %+v; want %+v", i, tm.segs[i], want[i])
		}
	}
	if strings.Join(tm.names, ",") != "product,prefix" {
		t.Errorf("names %q; want product, prefix", tm.names)
	}
}

// TestOverlap checks the overlap relation on pairs of templates. Overlap is
// symmetric, so each pair is tried both ways; when the templates overlap,
// the example path must match both.
func TestOverlap(t *testing.T) {
	tests := []struct {
		a, b    string
		overlap bool
		example string
	}{
		// Overlapping.
		{"/a", "/a", true, "/a"},
		{"/", "/", true, "/"},
		{"/a/{x}", "/a/b", true, "/a/b"},
		{"/a/{x}", "/a/{y}", true, "/a/y"},
		{"/a/{x}/b", "/a/c/{y}", true, "/a/c/b"},
		{"/a/{x...}", "/a/b/c", true, "/a/b/c"},
		{"/a/{x...}", "/a/b", true, "/a/b"},
		{"/a/{x...}", "/a/{y}/c", true, "/a/y/c"},
		{"/a/{x...}", "/a/{y...}", true, "/a/y"},
		{"/{x...}", "/a/b/c/d", true, "/a/b/c/d"},
		{"/{x...}", "/a/{y...}", true, "/a/y"},
		{"/{x}/{y}", "/a/b", true, "/a/b"},
		{"/v1/products/{product}/devices/{device}/{function}", "/v1/products/{p}/devices/{d}/{variable}", true, "/v1/products/p/devices/d/variable"},

		// Disjoint.
		{"/a", "/b", false, ""},
		{"/a", "/A", false, ""},
		{"/a/{x}", "/a/{x}/b", false, ""},
		{"/a/{x}", "/b/{x}", false, ""},
		{"/a/{x}/b", "/a/{y}/c", false, ""},
		{"/", "/{x...}", false, ""},
		{"/", "/{x}", false, ""},
		{"/a", "/a/{x...}", false, ""},
		{"/a/b/{x...}", "/a/c/{x...}", false, ""},
		{"/a/{x...}", "/b/c/d", false, ""},
		{"/v1/products/{product}/events", "/v1/products/{product}/events/{prefix...}", false, ""},
		{"/v1/products/{product}/devices", "/v1/orgs/{org}/events", false, ""},
	}
	for _, tt := range tests {
		a, err := parseTemplate(tt.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseTemplate(tt.b)
		if err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]template{{a, b}, {b, a}} {
			example, ok := overlap(pair[0], pair[1])
			if ok != tt.overlap {
				t.Errorf("overlap(%q, %q) = %v; want %v", tt.a, tt.b, ok, tt.overlap)
				continue
			}
			if !ok {
				continue
			}
			// The example must be a path both templates match.
			c, err := NewCatalog([]Endpoint{
				{Name: "a", Methods: []string{"GET"}, Path: tt.a, Scope: "x:y"},
				{Name: "b", Methods: []string{"POST"}, Path: tt.b, Scope: "x:y"},
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{"GET", "POST"} {
				if _, _, ok := c.Match(m, example); !ok {
					t.Errorf("overlap(%q, %q) example %q does not match %s", tt.a, tt.b, example, m)
				}
			}
		}
		if ex, _ := overlap(a, b); ex != tt.example {
			t.Errorf("overlap(%q, %q) example %q; want %q", tt.a, tt.b, ex, tt.example)
		}
	}
}
