package policy

import (
	"fmt"
	"slices"
	"strconv"
)

// Tenancy is the validated catalog of orgs and products. Routes name an org
// by its ID or slug and a product by its numeric ID or slug; Tenancy resolves
// either spelling, so that /v1/products/1337/... and
// /v1/products/my-product-v1/... are the same product to every check. It is
// immutable and safe for concurrent use.
type Tenancy struct {
	orgs     []Org
	products []Product

	orgByName     map[string]*Org // by ID and by slug
	productByID   map[int64]*Product
	productBySlug map[string]*Product
}

// NewTenancy validates orgs and products and indexes them. Org IDs and slugs
// are a lowercase letter or digit followed by lowercase letters, digits, "_"
// and "-", and no two orgs share one (an org's slug may equal its own ID).
// Product IDs are positive; product slugs follow the org rule but contain at
// least one letter, so that they never read as IDs, and are unique. Slugs
// are optional. Every product's org must be listed. The error names the
// offending org or product and says what to fix.
func NewTenancy(orgs []Org, products []Product) (*Tenancy, error) {
	t := &Tenancy{
		orgs:          slices.Clone(orgs),
		products:      slices.Clone(products),
		orgByName:     make(map[string]*Org, 2*len(orgs)),
		productByID:   make(map[int64]*Product, len(products)),
		productBySlug: make(map[string]*Product, len(products)),
	}
	for i := range t.orgs {
		o := &t.orgs[i]
		if o.ID == "" {
			return nil, fmt.Errorf("org at index %d has no ID; give it one such as %q", i, "acme")
		}
		if !validTenantName(o.ID) {
			return nil, fmt.Errorf("org %q (index %d): the ID must be a lowercase letter or digit followed by lowercase letters, digits, \"_\" or \"-\", such as %q", o.ID, i, "acme")
		}
		if o.Slug != "" && !validTenantName(o.Slug) {
			return nil, fmt.Errorf("org %q (index %d): slug %q must be a lowercase letter or digit followed by lowercase letters, digits, \"_\" or \"-\", such as %q", o.ID, i, o.Slug, "acme-corp")
		}
		names := []string{o.ID}
		if o.Slug != "" && o.Slug != o.ID {
			names = append(names, o.Slug)
		}
		for _, name := range names {
			if other, taken := t.orgByName[name]; taken {
				return nil, fmt.Errorf("org %q (index %d): %q already names org %q; every org ID and slug must be unique", o.ID, i, name, other.ID)
			}
			t.orgByName[name] = o
		}
	}
	for i := range t.products {
		p := &t.products[i]
		if p.ID <= 0 {
			return nil, fmt.Errorf("product %q (index %d) has ID %d; give it a positive numeric ID", p.Slug, i, p.ID)
		}
		if other, taken := t.productByID[p.ID]; taken {
			return nil, fmt.Errorf("product %d (index %d): the ID is already used by product %q; every product ID must be unique", p.ID, i, other.Slug)
		}
		t.productByID[p.ID] = p
		if p.Slug != "" {
			if !validTenantName(p.Slug) || !hasLetter(p.Slug) {
				return nil, fmt.Errorf("product %d (index %d): slug %q must be a lowercase letter or digit followed by lowercase letters, digits, \"_\" or \"-\", with at least one letter so it cannot be read as an ID, such as %q", p.ID, i, p.Slug, "my-product-v1")
			}
			if other, taken := t.productBySlug[p.Slug]; taken {
				return nil, fmt.Errorf("product %d (index %d): slug %q already names product %d; every product slug must be unique", p.ID, i, p.Slug, other.ID)
			}
			t.productBySlug[p.Slug] = p
		}
		if o, ok := t.orgByName[p.Org]; !ok || o.ID != p.Org {
			return nil, fmt.Errorf("product %d (index %d) belongs to org %q, which is not listed by its ID; add the org or correct the product's org ID", p.ID, i, p.Org)
		}
	}
	return t, nil
}

// validTenantName reports whether s matches [a-z0-9][a-z0-9_-]*.
func validTenantName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

func hasLetter(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'a' && s[i] <= 'z' {
			return true
		}
	}
	return false
}

// Org returns the org whose ID or slug is idOrSlug.
func (t *Tenancy) Org(idOrSlug string) (*Org, bool) {
	if t == nil {
		return nil, false
	}
	o, ok := t.orgByName[idOrSlug]
	return o, ok
}

// Product returns the product named by idOrSlug: a canonical decimal number
// (no sign, no leading zero) is an ID, anything else a slug. "01337" is
// therefore neither: it names no product, rather than one the backend might
// parse differently.
func (t *Tenancy) Product(idOrSlug string) (*Product, bool) {
	if t == nil {
		return nil, false
	}
	if id, ok := parseProductID(idOrSlug); ok {
		return t.ProductByID(id)
	}
	p, ok := t.productBySlug[idOrSlug]
	return p, ok
}

// ProductByID returns the product with the given ID.
func (t *Tenancy) ProductByID(id int64) (*Product, bool) {
	if t == nil {
		return nil, false
	}
	p, ok := t.productByID[id]
	return p, ok
}

// Orgs returns the orgs in the order given to NewTenancy.
func (t *Tenancy) Orgs() []Org { return slices.Clone(t.orgs) }

// Products returns the products in the order given to NewTenancy.
func (t *Tenancy) Products() []Product { return slices.Clone(t.products) }

// parseID parses s as a canonical positive decimal int64, without
// allocating: digits only, no leading zero.
func parseProductID(s string) (int64, bool) {
	if s == "" || len(s) > 19 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil
}
