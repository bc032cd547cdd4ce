// The catalog is the gateway's list of named endpoints, compiled once into a
// decision tree in the manner of net/http's routing tree. The root branches
// on the method (exactly: HEAD is not implied by GET), and each level below
// on one raw, still-escaped path segment: first a child for an equal literal,
// then the child for a {name} variable, then an endpoint whose final
// {name...} takes the rest. Matching compares bytes, so it is exact and
// case-sensitive, and variable values are substrings of the request path.
// There is no precedence rule to learn, because NewCatalog refuses any two
// endpoints that could match the same request: /a/{x} and /a/b for the same
// method are an error, not "the more specific wins". So at most one endpoint
// matches a request, whichever branch is tried first; the order above only
// makes the lookup deterministic, and the search backtracks when a literal
// branch dead-ends (given /a/b/c and /a/{x}/d, the path /a/b/d tries b first,
// fails at d, and then matches through {x}).

package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Endpoint is a named route of the catalog: the methods and path template a
// request must match, and the scope it requires.
type Endpoint struct {
	// Name identifies the endpoint in users' allowed endpoints, in the audit
	// log and in metrics: a lowercase letter or digit, then lowercase
	// letters, digits, "_", "." and "-".
	Name string

	// Methods are upper-case HTTP methods, such as GET and POST. HEAD is not
	// implied by GET; list it to allow it.
	Methods []string

	// Path is the template, such as "/v1/products/{product}/devices/{device}".
	Path string

	// Scope is the scope a user needs for this endpoint.
	Scope Scope

	tmpl  template // compiled Path
	index int      // position in the configuration
}

// Index is the endpoint's position in the list given to NewCatalog, so that
// callers may keep per-endpoint tables (such as pre-resolved metrics) in a
// slice instead of a map. Every catalog built from the same list gives each
// endpoint the same index.
func (e *Endpoint) Index() int { return e.index }

// VarNames returns the names of the endpoint's path variables, in order.
// It returns nil for an endpoint that did not come from a Catalog.
func (e *Endpoint) VarNames() []string { return slices.Clone(e.tmpl.names) }

// Catalog is a validated, compiled set of endpoints. It is immutable and
// safe for concurrent use.
type Catalog struct {
	endpoints []*Endpoint
	byName    map[string]*Endpoint
	trees     []methodTree
	scopes    []Scope
	varNames  []string
}

// A methodTree is the tree of one method's endpoints.
type methodTree struct {
	method string
	root   *node
}

// A node is a node of the decision tree; see the top of this file.
type node struct {
	leaf  *Endpoint // the endpoint whose template ends here
	keys  []string  // literal children, with kids in the same order
	kids  []*node
	index map[string]*node // the literal children, when there are many
	wild  *node            // the child for a {name} segment
	multi *Endpoint        // the endpoint whose {name...} starts here
}

// maxLinearChildren is how many literal children a node scans in order
// before it indexes them in a map instead.
const maxLinearChildren = 8

// NewCatalog validates endpoints and compiles them. The error names the
// first offending endpoint by name and index and says what to fix: a missing,
// malformed or duplicate name, missing, malformed or repeated methods, a bad
// template, a bad scope, or two endpoints that could match the same request.
// NewCatalog copies what it keeps, so the caller may reuse endpoints.
// An empty catalog is valid and matches nothing.
func NewCatalog(endpoints []Endpoint) (*Catalog, error) {
	c := &Catalog{byName: make(map[string]*Endpoint, len(endpoints))}
	for i := range endpoints {
		e, err := compileEndpoint(&endpoints[i], i)
		if err != nil {
			return nil, err
		}
		if prev, dup := c.byName[e.Name]; dup {
			return nil, fmt.Errorf("%s has the same name as endpoint at index %d; give each endpoint its own name", e.label(), prev.index)
		}
		c.byName[e.Name] = e
		c.endpoints = append(c.endpoints, e)
	}
	for i, a := range c.endpoints {
		for _, b := range c.endpoints[:i] {
			if err := checkOverlap(b, a); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range c.endpoints {
		for _, m := range e.Methods {
			c.tree(m).add(e, e.tmpl.segs)
		}
		c.scopes = append(c.scopes, e.Scope)
		c.varNames = append(c.varNames, e.tmpl.names...)
	}
	slices.Sort(c.scopes)
	c.scopes = slices.Compact(c.scopes)
	slices.Sort(c.varNames)
	c.varNames = slices.Compact(c.varNames)
	return c, nil
}

// compileEndpoint validates and copies one configured endpoint.
func compileEndpoint(in *Endpoint, i int) (*Endpoint, error) {
	e := &Endpoint{Name: in.Name, Methods: slices.Clone(in.Methods), Path: in.Path, Scope: in.Scope, index: i}
	if e.Name == "" {
		return nil, fmt.Errorf("endpoint at index %d has no name; give it one such as %q", i, "get-device")
	}
	if !validEndpointName(e.Name) {
		return nil, fmt.Errorf("%s: the name must be a lowercase letter or digit followed by lowercase letters, digits, \"_\", \".\" or \"-\", such as %q", e.label(), "get-device")
	}
	if len(e.Methods) == 0 {
		return nil, fmt.Errorf("%s has no methods; list at least one, such as GET", e.label())
	}
	for j, m := range e.Methods {
		if !validMethod(m) {
			return nil, fmt.Errorf("%s: method %q is not an upper-case HTTP method; write it like GET, POST or PUT", e.label(), m)
		}
		if slices.Contains(e.Methods[:j], m) {
			return nil, fmt.Errorf("%s lists method %s twice; list it once", e.label(), m)
		}
	}
	t, err := parseTemplate(e.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.label(), err)
	}
	e.tmpl = t
	if _, err := ParseScope(string(e.Scope)); err != nil {
		return nil, fmt.Errorf("%s: %w", e.label(), err)
	}
	return e, nil
}

// label names an endpoint in error messages.
func (e *Endpoint) label() string {
	return fmt.Sprintf("endpoint %q (index %d)", e.Name, e.index)
}

// checkOverlap returns an error if a request could match both a and b.
func checkOverlap(a, b *Endpoint) error {
	for _, m := range b.Methods {
		if !slices.Contains(a.Methods, m) {
			continue
		}
		if example, ok := overlap(a.tmpl, b.tmpl); ok {
			return fmt.Errorf("%s overlaps %s: both match requests such as %s %s; change one template or method so that no request matches both (the catalog has no precedence rules)",
				b.label(), a.label(), m, example)
		}
	}
	return nil
}

// validEndpointName reports whether s matches [a-z0-9][a-z0-9_.-]*.
func validEndpointName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

// validMethod reports whether s is an upper-case HTTP method token:
// [A-Z][A-Z0-9_-]*.
func validMethod(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
		case (c >= '0' && c <= '9' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

// tree returns the root for method, creating it if needed.
func (c *Catalog) tree(method string) *node {
	for _, t := range c.trees {
		if t.method == method {
			return t.root
		}
	}
	n := &node{}
	c.trees = append(c.trees, methodTree{method, n})
	return n
}

// add adds e, whose remaining template segments are segs, below n. The
// overlap check has run, so no place is ever taken twice; if it were, that
// is a bug here, not a configuration error.
func (n *node) add(e *Endpoint, segs []segment) {
	if len(segs) == 0 {
		if n.leaf != nil {
			panic("policy: two endpoints at one leaf after the overlap check")
		}
		n.leaf = e
		return
	}
	switch s := segs[0]; {
	case s.multi:
		if n.multi != nil {
			panic("policy: two {name...} endpoints at one node after the overlap check")
		}
		n.multi = e
	case s.wild:
		if n.wild == nil {
			n.wild = &node{}
		}
		n.wild.add(e, segs[1:])
	default:
		child := n.child(s.s)
		if child == nil {
			child = &node{}
			n.keys = append(n.keys, s.s)
			n.kids = append(n.kids, child)
			if len(n.keys) > maxLinearChildren {
				n.index = make(map[string]*node, len(n.keys))
				for i, k := range n.keys {
					n.index[k] = n.kids[i]
				}
			}
		}
		child.add(e, segs[1:])
	}
}

// child returns the literal child of n for seg, or nil.
func (n *node) child(seg string) *node {
	if n.index != nil {
		return n.index[seg]
	}
	for i, k := range n.keys {
		if k == seg {
			return n.kids[i]
		}
	}
	return nil
}

// Match returns the endpoint that method and path match, with the values of
// its variables. path is the raw, escaped request path, already accepted by
// CheckPath. Variable values are raw segments, substrings of path, still
// escaped; a {name...} value is the rest of the path without its leading
// slash, such as "a/b/c". A path with a trailing slash matches no template
// but "/". Match does not allocate.
func (c *Catalog) Match(method, path string) (*Endpoint, Vars, bool) {
	var v Vars
	var root *node
	for i := range c.trees {
		if c.trees[i].method == method {
			root = c.trees[i].root
			break
		}
	}
	if root == nil || path == "" || path[0] != '/' {
		return nil, Vars{}, false
	}
	var e *Endpoint
	if path == "/" {
		e = root.leaf
	} else {
		e = root.match(path, &v.values, 0)
	}
	if e == nil {
		return nil, Vars{}, false
	}
	v.n = len(e.tmpl.names)
	copy(v.names[:], e.tmpl.names)
	// Failed branches may have left values past the match's own; clear them.
	for i := v.n; i < MaxVars; i++ {
		v.values[i] = ""
	}
	return e, v, true
}

// match matches path, which is empty or begins with "/", below n. It records
// variable values in vals, the first nv of which are already taken.
func (n *node) match(path string, vals *[MaxVars]string, nv int) *Endpoint {
	if path == "" {
		return n.leaf
	}
	seg, rest := path[1:], ""
	if i := strings.IndexByte(seg, '/'); i >= 0 {
		seg, rest = seg[:i], seg[i:]
	}
	if seg == "" {
		// An empty segment: "//" or a trailing slash. Nothing matches it.
		return nil
	}
	if child := n.child(seg); child != nil {
		if e := child.match(rest, vals, nv); e != nil {
			return e
		}
	}
	if n.wild != nil && nv < MaxVars {
		vals[nv] = seg
		if e := n.wild.match(rest, vals, nv+1); e != nil {
			return e
		}
	}
	if n.multi != nil && nv < MaxVars {
		if all := path[1:]; !strings.Contains(all, "//") && all[len(all)-1] != '/' {
			vals[nv] = all
			return n.multi
		}
	}
	return nil
}

// Endpoint returns the endpoint called name.
func (c *Catalog) Endpoint(name string) (*Endpoint, bool) {
	e, ok := c.byName[name]
	return e, ok
}

// Endpoints returns the endpoints in configuration order. The slice is the
// caller's; the endpoints are shared and must not be modified.
func (c *Catalog) Endpoints() []*Endpoint { return slices.Clone(c.endpoints) }

// Scopes returns the distinct scopes the endpoints require, sorted.
func (c *Catalog) Scopes() []Scope { return slices.Clone(c.scopes) }

// VarNames returns the distinct variable names of all templates, sorted.
// Configuration and management use it to refuse a resource constraint on a
// variable no endpoint has, which would otherwise lock the user out.
func (c *Catalog) VarNames() []string { return slices.Clone(c.varNames) }

// Vars holds the variables of a matched template inline, with no heap
// allocation. Values are raw path segments, still escaped.
type Vars struct {
	n      int
	names  [MaxVars]string
	values [MaxVars]string
}

// Get returns the value of the variable called name.
func (v *Vars) Get(name string) (string, bool) {
	for i := 0; i < v.n; i++ {
		if v.names[i] == name {
			return v.values[i], true
		}
	}
	return "", false
}

// Len returns how many variables v holds.
func (v *Vars) Len() int { return v.n }

// At returns the i'th variable, in template order; 0 <= i < Len().
func (v *Vars) At(i int) (name, value string) {
	if i < 0 || i >= v.n {
		panic(fmt.Sprintf("policy: Vars.At(%d) out of range [0, %d)", i, v.n))
	}
	return v.names[i], v.values[i]
}
