package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestCatalogMatch(t *testing.T) {
	c := exampleCatalog(t)
	tests := []struct {
		method, path string
		want         string   // endpoint name; "" means no match
		vars         []string // name, value, ...
	}{
		{"GET", "/v1/products/1337/devices", "list-devices", []string{"product", "1337"}},
		{"GET", "/v1/products/my-product-v1/devices", "list-devices", []string{"product", "my-product-v1"}},
		{"GET", "/v1/products/1337/devices/0a1b2c3d", "get-device", []string{"product", "1337", "device", "0a1b2c3d"}},
		{"PUT", "/v1/products/1337/devices/0a1b2c3d", "update-device", []string{"product", "1337", "device", "0a1b2c3d"}},
		{"POST", "/v1/products/1337/devices/0a1b2c3d/reboot", "call-function", []string{"product", "1337", "device", "0a1b2c3d", "function", "reboot"}},
		{"GET", "/v1/products/1337/devices/0a1b2c3d/temp", "get-variable", []string{"product", "1337", "device", "0a1b2c3d", "variable", "temp"}},
		{"GET", "/v1/products/1337/events/motion", "get-events", []string{"product", "1337", "prefix", "motion"}},
		{"GET", "/v1/products/1337/events/a/b/c", "get-events", []string{"product", "1337", "prefix", "a/b/c"}},
		{"POST", "/v1/products/1337/events", "send-event", []string{"product", "1337"}},
		{"GET", "/v1/orgs/acme/events", "org-events", []string{"org", "acme"}},
		// Values are raw, still escaped.
		{"GET", "/v1/products/1337/devices/caf%C3%A9", "get-device", []string{"product", "1337", "device", "caf%C3%A9"}},
		{"GET", "/v1/products/1337/events/a%20b/c", "get-events", []string{"product", "1337", "prefix", "a%20b/c"}},

		// Methods are exact: no HEAD for GET, no lowercase.
		{"HEAD", "/v1/products/1337/devices", "", nil},
		{"get", "/v1/products/1337/devices", "", nil},
		{"DELETE", "/v1/products/1337/devices/0a1b2c3d", "", nil},
		{"POST", "/v1/products/1337/devices", "", nil},
		{"", "/v1/products/1337/devices", "", nil},
		// Case-sensitive segments.
		{"GET", "/V1/products/1337/devices", "", nil},
		{"GET", "/v1/Products/1337/devices", "", nil},
		{"GET", "/v1/products/1337/Devices", "", nil},
		// Trailing slashes and empty segments.
		{"GET", "/v1/products/1337/devices/", "", nil},
		{"GET", "/v1/products/1337/devices/0a1b2c3d/", "", nil},
		{"GET", "/v1/products//devices", "", nil},
		{"GET", "/v1/products/1337/events/", "", nil},
		{"GET", "/v1/products/1337/events/a/", "", nil},
		{"GET", "/v1/products/1337/events/a//b", "", nil},
		{"GET", "/v1/orgs/acme/events/", "", nil},
		// Too short, too long, unknown.
		{"GET", "/v1/products/1337", "", nil},
		{"GET", "/v1/products", "", nil},
		{"GET", "/v1/orgs/acme/events/x", "", nil},
		{"GET", "/v1/products/1337/devices/0a1b2c3d/temp/x", "", nil},
		{"GET", "/v1/products/1337/events", "", nil},
		{"GET", "/", "", nil},
		{"GET", "", "", nil},
		{"GET", "v1/products/1337/devices", "", nil},
		{"GET", "/v2/products/1337/devices", "", nil},
	}
	for _, tt := range tests {
		ep, vars, ok := c.Match(tt.method, tt.path)
		if tt.want == "" {
			if ok || ep != nil || vars.Len() != 0 {
				t.Errorf("Match(%s %q) = %v, %d vars, %v; want no match", tt.method, tt.path, ep, vars.Len(), ok)
			}
			continue
		}
		if !ok || ep == nil || ep.Name != tt.want {
			t.Errorf("Match(%s %q) = %v, %v; want %s", tt.method, tt.path, ep, ok, tt.want)
			continue
		}
		var got []string
		for i := range vars.Len() {
			n, v := vars.At(i)
			got = append(got, n, v)
		}
		if !slices.Equal(got, tt.vars) {
			t.Errorf("Match(%s %q) vars %q; want %q", tt.method, tt.path, got, tt.vars)
		}
	}
}

func TestCatalogMatchRootAndBacktracking(t *testing.T) {
	c, err := NewCatalog([]Endpoint{
		{Name: "root", Methods: []string{"GET"}, Path: "/", Scope: "x:root"},
		{Name: "abc", Methods: []string{"GET"}, Path: "/a/b/c", Scope: "x:abc"},
		{Name: "axd", Methods: []string{"GET"}, Path: "/a/{x}/d", Scope: "x:axd"},
		{Name: "abz-rest", Methods: []string{"GET"}, Path: "/a/b/z/{rest...}", Scope: "x:rest"},
		{Name: "ayq-rest", Methods: []string{"GET"}, Path: "/a/{y}/q/{rest...}", Scope: "x:rest"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string
		vars       []string
	}{
		{"/", "root", nil},
		{"/a/b/c", "abc", nil},
		{"/a/b/d", "axd", []string{"x", "b"}},
		{"/a/q/d", "axd", []string{"x", "q"}},
		{"/a/b/z/1/2", "abz-rest", []string{"rest", "1/2"}},
		{"/a/b/q/1", "ayq-rest", []string{"y", "b", "rest", "1"}},
		{"/a/b/z", "", nil},
		{"/a/b", "", nil},
		{"//", "", nil},
	}
	for _, tt := range tests {
		ep, vars, ok := c.Match("GET", tt.path)
		if tt.want == "" {
			if ok {
				t.Errorf("Match(%q) = %s; want no match", tt.path, ep.Name)
			}
			continue
		}
		if !ok || ep.Name != tt.want {
			t.Errorf("Match(%q) = %v, %v; want %s", tt.path, ep, ok, tt.want)
			continue
		}
		var got []string
		for i := range vars.Len() {
			n, v := vars.At(i)
			got = append(got, n, v)
		}
		if !slices.Equal(got, tt.vars) {
			t.Errorf("Match(%q) vars %q; want %q", tt.path, got, tt.vars)
		}
		// Failed branches must leave nothing behind past the match's own.
		for i := vars.Len(); i < MaxVars; i++ {
			if vars.values[i] != "" || vars.names[i] != "" {
				t.Errorf("Match(%q) left %q=%q at %d", tt.path, vars.names[i], vars.values[i], i)
			}
		}
	}
}

// TestCatalogMatchManyChildren covers nodes with enough literal children to
// be indexed by a map.
func TestCatalogMatchManyChildren(t *testing.T) {
	var eps []Endpoint
	for i := range 20 {
		eps = append(eps, Endpoint{Name: fmt.Sprintf("e%d", i), Methods: []string{"GET", "POST"}, Path: fmt.Sprintf("/v1/r%d/{id}", i), Scope: "x:y"})
	}
	c, err := NewCatalog(eps)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		for _, m := range []string{"GET", "POST"} {
			ep, vars, ok := c.Match(m, fmt.Sprintf("/v1/r%d/abc", i))
			if v, _ := vars.Get("id"); !ok || ep.Name != fmt.Sprintf("e%d", i) || v != "abc" {
				t.Errorf("Match(%s /v1/r%d/abc) = %v, %q, %v", m, i, ep, v, ok)
			}
		}
	}
	if _, _, ok := c.Match("GET", "/v1/r20/abc"); ok {
		t.Error("Match(/v1/r20/abc) matched")
	}
}

func TestCatalogMatchDoesNotAllocate(t *testing.T) {
	c := exampleCatalog(t)
	for _, path := range []string{
		"/v1/products/my-product-v1/devices/0a1b2c3d",
		"/v1/products/1337/events/a/b/c",
		"/v1/products/1337/nothing",
	} {
		if n := testing.AllocsPerRun(100, func() { c.Match("GET", path) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times", path, n)
		}
	}
}

func TestVars(t *testing.T) {
	c := exampleCatalog(t)
	_, vars, _ := c.Match("POST", "/v1/products/1337/devices/d1/reboot")
	if vars.Len() != 3 {
		t.Fatalf("Len() = %d; want 3", vars.Len())
	}
	for _, tt := range []struct {
		name, value string
		ok          bool
	}{
		{"product", "1337", true},
		{"device", "d1", true},
		{"function", "reboot", true},
		{"variable", "", false},
		{"", "", false},
		{"Device", "", false},
	} {
		if v, ok := vars.Get(tt.name); v != tt.value || ok != tt.ok {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", tt.name, v, ok, tt.value, tt.ok)
		}
	}
	if n, v := vars.At(2); n != "function" || v != "reboot" {
		t.Errorf("At(2) = %q, %q", n, v)
	}
	defer func() {
		if recover() == nil {
			t.Error("At(3) did not panic")
		}
	}()
	vars.At(3)
}

func TestNewCatalogErrors(t *testing.T) {
	ep := func(name, method, path, scope string) Endpoint {
		return Endpoint{Name: name, Methods: []string{method}, Path: path, Scope: Scope(scope)}
	}
	good := ep("good", "GET", "/good", "x:y")
	tests := []struct {
		name  string
		eps   []Endpoint
		wants []string // substrings of the error
	}{
		{"empty name", []Endpoint{good, ep("", "GET", "/a", "x:y")}, []string{"endpoint at index 1 has no name"}},
		{"bad name", []Endpoint{ep("Get-Device", "GET", "/a", "x:y")}, []string{`endpoint "Get-Device" (index 0)`, "lowercase"}},
		{"bad name start", []Endpoint{ep("-x", "GET", "/a", "x:y")}, []string{`endpoint "-x" (index 0)`}},
		{"bad name char", []Endpoint{ep("get device", "GET", "/a", "x:y")}, []string{`endpoint "get device" (index 0)`}},
		{"duplicate name", []Endpoint{good, ep("dup", "GET", "/a", "x:y"), ep("dup", "GET", "/b", "x:y")},
			[]string{`endpoint "dup" (index 2) has the same name as endpoint at index 1`, "own name"}},
		{"no methods", []Endpoint{{Name: "nm", Path: "/a", Scope: "x:y"}}, []string{`endpoint "nm" (index 0) has no methods`}},
		{"lowercase method", []Endpoint{ep("lc", "get", "/a", "x:y")}, []string{`endpoint "lc" (index 0)`, `method "get"`, "upper-case"}},
		{"empty method", []Endpoint{ep("em", "", "/a", "x:y")}, []string{`endpoint "em" (index 0)`, `method ""`}},
		{"method with space", []Endpoint{ep("ms", "GET ", "/a", "x:y")}, []string{`endpoint "ms" (index 0)`, `method "GET "`}},
		{"repeated method", []Endpoint{{Name: "rm", Methods: []string{"GET", "POST", "GET"}, Path: "/a", Scope: "x:y"}},
			[]string{`endpoint "rm" (index 0) lists method GET twice`}},
		{"empty template", []Endpoint{ep("et", "GET", "", "x:y")}, []string{`endpoint "et" (index 0)`, "template is empty"}},
		{"bad template", []Endpoint{good, ep("bt", "GET", "/a/{x", "x:y")}, []string{`endpoint "bt" (index 1)`, `template "/a/{x"`}},
		{"trailing slash", []Endpoint{ep("ts", "GET", "/a/", "x:y")}, []string{`endpoint "ts" (index 0)`, "trailing slash"}},
		{"too many variables", []Endpoint{ep("tm", "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i...}", "x:y")},
			[]string{`endpoint "tm" (index 0)`, "more than 8 variables"}},
		{"empty scope", []Endpoint{ep("es", "GET", "/a", "")}, []string{`endpoint "es" (index 0)`, "scope is empty"}},
		{"bad scope", []Endpoint{ep("bs", "GET", "/a", "Devices:list")}, []string{`endpoint "bs" (index 0)`, `scope "Devices:list"`}},

		// Overlaps: the later endpoint is named first, then the earlier.
		{"same template", []Endpoint{ep("a", "GET", "/a/{x}", "x:y"), ep("b", "GET", "/a/{y}", "x:y")},
			[]string{`endpoint "b" (index 1) overlaps endpoint "a" (index 0)`, "both match requests such as GET /a/y", "no request matches both"}},
		{"wildcard and literal", []Endpoint{ep("a", "GET", "/a/{x}", "x:y"), ep("b", "GET", "/a/b", "x:y")},
			[]string{`endpoint "b" (index 1) overlaps endpoint "a" (index 0)`, "both match requests such as GET /a/b"}},
		{"crossed wildcards", []Endpoint{good, ep("a", "GET", "/a/{x}/b", "x:y"), ep("b", "GET", "/a/c/{y}", "x:y")},
			[]string{`endpoint "b" (index 2) overlaps endpoint "a" (index 1)`, "both match requests such as GET /a/c/b"}},
		{"rest and literal", []Endpoint{ep("a", "GET", "/a/{x...}", "x:y"), ep("b", "GET", "/a/b/c", "x:y")},
			[]string{`endpoint "b" (index 1) overlaps endpoint "a" (index 0)`, "both match requests such as GET /a/b/c"}},
		{"shared method of several", []Endpoint{
			{Name: "a", Methods: []string{"GET", "PUT"}, Path: "/a/{x}", Scope: "x:y"},
			{Name: "b", Methods: []string{"POST", "PUT"}, Path: "/a/b", Scope: "x:y"},
		}, []string{`endpoint "b" (index 1) overlaps endpoint "a" (index 0)`, "both match requests such as PUT /a/b"}},
		{"example catalog plus a clash", append(exampleEndpoints(), ep("device-status", "GET", "/v1/products/{product}/devices/{device}/status", "devices:get")),
			[]string{`endpoint "device-status" (index 8) overlaps endpoint "get-variable" (index 4)`, "GET /v1/products/product/devices/device/status"}},
	}
	for _, tt := range tests {
		c, err := NewCatalog(tt.eps)
		if err == nil {
			t.Errorf("%s: NewCatalog succeeded with %d endpoints; want an error", tt.name, len(c.Endpoints()))
			continue
		}
		for _, want := range tt.wants {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q; want it to contain %q", tt.name, err, want)
			}
		}
	}
}

// TestNewCatalogNoOverlap lists pairs of endpoints that must be accepted
// together.
func TestNewCatalogNoOverlap(t *testing.T) {
	tests := []struct {
		name string
		eps  []Endpoint
	}{
		{"same template, different methods", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/a/{x}", Scope: "x:y"},
			{Name: "b", Methods: []string{"POST"}, Path: "/a/{x}", Scope: "x:y"},
		}},
		{"different lengths", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/a/{x}", Scope: "x:y"},
			{Name: "b", Methods: []string{"GET"}, Path: "/a/{x}/b", Scope: "x:y"},
		}},
		{"different literal after wildcard", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/a/{x}/b", Scope: "x:y"},
			{Name: "b", Methods: []string{"GET"}, Path: "/a/{x}/c", Scope: "x:y"},
		}},
		{"rest needs a segment", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/a", Scope: "x:y"},
			{Name: "b", Methods: []string{"GET"}, Path: "/a/{x...}", Scope: "x:y"},
		}},
		{"root and rest", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/", Scope: "x:y"},
			{Name: "b", Methods: []string{"GET"}, Path: "/{x...}", Scope: "x:y"},
		}},
		{"case differs", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/a", Scope: "x:y"},
			{Name: "b", Methods: []string{"GET"}, Path: "/A", Scope: "x:y"},
		}},
		{"HEAD is its own method", []Endpoint{
			{Name: "a", Methods: []string{"GET"}, Path: "/a", Scope: "x:y"},
			{Name: "b", Methods: []string{"HEAD"}, Path: "/a", Scope: "x:y"},
		}},
		{"the example catalog", exampleEndpoints()},
	}
	for _, tt := range tests {
		if _, err := NewCatalog(tt.eps); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestCatalogAccessors(t *testing.T) {
	eps := exampleEndpoints()
	c := exampleCatalog(t)

	// NewCatalog copies: changing the input changes nothing.
	eps[0].Name = "changed"
	eps[0].Methods[0] = "DELETE"
	if ep, _, ok := c.Match("GET", "/v1/products/1/devices"); !ok || ep.Name != "list-devices" || ep.Methods[0] != "GET" {
		t.Errorf("catalog changed with its input: %v", ep)
	}

	var names []string
	for _, e := range c.Endpoints() {
		names = append(names, e.Name)
	}
	want := []string{"list-devices", "get-device", "update-device", "call-function", "get-variable", "get-events", "send-event", "org-events"}
	if !slices.Equal(names, want) {
		t.Errorf("Endpoints() = %q; want %q", names, want)
	}

	if e, ok := c.Endpoint("get-events"); !ok || e.Path != "/v1/products/{product}/events/{prefix...}" || e.Scope != "events:get" {
		t.Errorf("Endpoint(get-events) = %+v, %v", e, ok)
	} else if !slices.Equal(e.VarNames(), []string{"product", "prefix"}) {
		t.Errorf("VarNames() = %q", e.VarNames())
	}
	if _, ok := c.Endpoint("nope"); ok {
		t.Error("Endpoint(nope) found")
	}

	scopes := c.Scopes()
	wantScopes := []Scope{"devices.function:call", "devices.variable:get", "devices:get", "devices:list", "devices:update", "events:get", "events:send"}
	if !slices.Equal(scopes, wantScopes) {
		t.Errorf("Scopes() = %q; want %q", scopes, wantScopes)
	}
	if got := c.VarNames(); !slices.Equal(got, []string{"device", "function", "org", "prefix", "product", "variable"}) {
		t.Errorf("VarNames() = %q", got)
	}

	empty, err := NewCatalog(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := empty.Match("GET", "/"); ok || len(empty.Endpoints()) != 0 || len(empty.Scopes()) != 0 {
		t.Error("the empty catalog is not empty")
	}
}
