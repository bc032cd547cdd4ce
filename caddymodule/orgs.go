package caddymodule

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds the life cycle of orgs and products, shared by the
// management API and the CLI. As with roles, the ones the api_users config
// declares are read-only here; the store holds more, which these methods
// create, replace and delete. Every change is first tried on a copy of the
// merged view, so that no write can leave the gateway with a catalog it
// cannot compile (such as a slug that names two orgs).

// OrgSpec is what a PUT of an org sets.
type OrgSpec struct {
	// Slug, when set, names the org in routes too.
	Slug string `json:"slug"`
}

// ProductSpec is what a PUT of a product sets.
type ProductSpec struct {
	// Slug names the product in routes, such as "my-product-v1".
	Slug string `json:"slug"`
}

func (a *App) configOrg(id string) bool {
	for _, o := range a.Orgs {
		if o.ID == id {
			return true
		}
	}
	return false
}

func (a *App) configProduct(id int64) bool {
	for _, o := range a.Orgs {
		for _, p := range o.Products {
			if p.ID == id {
				return true
			}
		}
	}
	return false
}

func (a *App) source(fromConfig bool) string {
	if fromConfig {
		return SourceConfig
	}
	return SourceStore
}

func (a *App) orgView(t *policy.Tenancy, o policy.Org) OrgView {
	v := OrgView{ID: o.ID, Slug: o.Slug, Source: a.source(a.configOrg(o.ID)), Products: []ProductView{}}
	for _, p := range t.Products() {
		if p.Org == o.ID {
			v.Products = append(v.Products, a.productView(p))
		}
	}
	return v
}

func (a *App) productView(p policy.Product) ProductView {
	return ProductView{ID: p.ID, Slug: p.Slug, Org: p.Org, Source: a.source(a.configProduct(p.ID))}
}

// ListOrgs returns every org with its products, config's first.
func (a *App) ListOrgs() []OrgView {
	t := a.view.Load().tenancy
	out := []OrgView{}
	for _, o := range t.Orgs() {
		out = append(out, a.orgView(t, o))
	}
	return out
}

// GetOrg returns the org whose ID or slug is name.
func (a *App) GetOrg(name string) (OrgView, error) {
	t := a.view.Load().tenancy
	o, ok := t.Org(name)
	if !ok {
		return OrgView{}, &NotFoundError{Message: fmt.Sprintf("no org %q", name)}
	}
	return a.orgView(t, *o), nil
}

// tryTenancy checks that the view would still compile with the store's
// orgs and products changed by edit.
func (a *App) tryTenancy(ctx context.Context, edit func(orgs []policy.Org, products []policy.Product) ([]policy.Org, []policy.Product)) error {
	orgs, err := a.store.ListOrgs(ctx)
	if err != nil {
		return storeErr(err, nil)
	}
	products, err := a.store.ListProducts(ctx)
	if err != nil {
		return storeErr(err, nil)
	}
	orgs, products = edit(orgs, products)
	if _, err := a.buildView(orgs, products, nil); err != nil {
		return conflictErr("%s", strings.TrimPrefix(err.Error(), "api_users: "))
	}
	return nil
}

// PutOrg creates or replaces the store's org whose ID is id.
func (a *App) PutOrg(ctx context.Context, id string, spec OrgSpec) (OrgView, error) {
	if _, err := policy.NewTenancy([]policy.Org{{ID: id}}, nil); err != nil {
		return OrgView{}, fieldErr("org", "%q is not a valid org ID: a lowercase letter or digit, then lowercase letters, digits, '_' and '-', such as \"acme\"", id)
	}
	if spec.Slug != "" {
		if _, err := policy.NewTenancy([]policy.Org{{ID: "x", Slug: spec.Slug}}, nil); err != nil {
			return OrgView{}, fieldErr("slug", "%q is not a valid org slug: a lowercase letter or digit, then lowercase letters, digits, '_' and '-', such as \"acme-corp\"", spec.Slug)
		}
	}
	if a.configOrg(id) {
		return OrgView{}, conflictErr("org %q is defined in the api_users config, which is read-only here: change it in the Caddyfile", id)
	}
	catalogMu.Lock()
	defer catalogMu.Unlock()
	t := a.view.Load().tenancy
	var before *policy.Org
	if o, ok := t.Org(id); ok {
		if o.ID != id {
			return OrgView{}, conflictErr("org: %q is the slug of org %q; give the new org another ID", id, o.ID)
		}
		prev := *o
		before = &prev
	}
	if o, ok := t.Org(spec.Slug); ok && spec.Slug != "" && o.ID != id {
		return OrgView{}, conflictErr("slug: %q already names org %q; choose another slug", spec.Slug, o.ID)
	}
	o := policy.Org{ID: id, Slug: spec.Slug}
	err := a.tryTenancy(ctx, func(orgs []policy.Org, products []policy.Product) ([]policy.Org, []policy.Product) {
		out := []policy.Org{o}
		for _, x := range orgs {
			if x.ID != id {
				out = append(out, x)
			}
		}
		return out, products
	})
	if err != nil {
		return OrgView{}, err
	}
	if err := a.store.PutOrg(ctx, o); err != nil {
		return OrgView{}, storeErr(err, nil)
	}
	if err := a.catalogChanged(ctx); err != nil {
		return OrgView{}, err
	}
	after, err := a.GetOrg(id)
	if err != nil {
		return OrgView{}, err
	}
	fields := []zap.Field{zap.String("org", id), zap.Any("after", after)}
	if before != nil {
		fields = append(fields, zap.Any("before", OrgView{ID: before.ID, Slug: before.Slug, Source: SourceStore}))
	}
	a.auditChange(ctx, "put_org", fields...)
	return after, nil
}

// DeleteOrg deletes the store's org named name (ID or slug). It refuses an
// org the config declares, and one that still has products or API users.
func (a *App) DeleteOrg(ctx context.Context, name string) error {
	catalogMu.Lock()
	defer catalogMu.Unlock()
	before, err := a.GetOrg(name)
	if err != nil {
		return err
	}
	if before.Source == SourceConfig {
		return conflictErr("org %q is defined in the api_users config, which is read-only here: remove it from the Caddyfile", before.ID)
	}
	if err := a.store.DeleteOrg(ctx, before.ID); err != nil {
		return storeErr(err, func() error { return &NotFoundError{Message: fmt.Sprintf("no org %q", name)} })
	}
	if err := a.catalogChanged(ctx); err != nil {
		return err
	}
	a.auditChange(ctx, "delete_org", zap.String("org", before.ID), zap.Any("before", before))
	return nil
}

// ListProducts returns the products of the org named org (ID or slug).
func (a *App) ListProducts(org string) ([]ProductView, error) {
	o, err := a.GetOrg(org)
	if err != nil {
		return nil, fieldErr("org", "unknown org %q: use the ID or slug of an org in the catalog", org)
	}
	return o.Products, nil
}

// GetProduct returns the product named product (ID or slug) of the org
// named org.
func (a *App) GetProduct(org, product string) (ProductView, error) {
	t := a.view.Load().tenancy
	o, ok := t.Org(org)
	if !ok {
		return ProductView{}, fieldErr("org", "unknown org %q: use the ID or slug of an org in the catalog", org)
	}
	p, ok := t.Product(product)
	if !ok || p.Org != o.ID {
		return ProductView{}, &NotFoundError{Message: fmt.Sprintf("no product %q in org %q", product, org)}
	}
	return a.productView(*p), nil
}

// PutProduct creates or replaces the store's product whose numeric ID is
// id, as a product of the org named org. Moving a product to another org
// is refused while API users belong to it.
func (a *App) PutProduct(ctx context.Context, org, id string, spec ProductSpec) (ProductView, error) {
	pid, err := strconv.ParseInt(id, 10, 64)
	if err != nil || pid <= 0 || strconv.FormatInt(pid, 10) != id {
		return ProductView{}, fieldErr("product", "%q is not a product ID: a product is created or replaced by its positive numeric ID, such as 1337", id)
	}
	o, ok := a.view.Load().tenancy.Org(org)
	if !ok {
		return ProductView{}, fieldErr("org", "unknown org %q: create it first with PUT /v1/orgs/%s", org, org)
	}
	if spec.Slug != "" {
		if _, err := policy.NewTenancy([]policy.Org{{ID: "x"}}, []policy.Product{{ID: 1, Slug: spec.Slug, Org: "x"}}); err != nil {
			return ProductView{}, fieldErr("slug", "%q is not a valid product slug: lowercase letters, digits, '_' and '-', with at least one letter, such as \"my-product-v1\"", spec.Slug)
		}
	}
	if a.configProduct(pid) {
		return ProductView{}, conflictErr("product %d is defined in the api_users config, which is read-only here: change it in the Caddyfile", pid)
	}
	catalogMu.Lock()
	defer catalogMu.Unlock()
	t := a.view.Load().tenancy
	var before *ProductView
	if p, ok := t.ProductByID(pid); ok {
		v := a.productView(*p)
		before = &v
	}
	if p, ok := t.Product(spec.Slug); ok && spec.Slug != "" && p.ID != pid {
		return ProductView{}, conflictErr("slug: %q already names product %d; choose another slug", spec.Slug, p.ID)
	}
	p := policy.Product{ID: pid, Slug: spec.Slug, Org: o.ID}
	err = a.tryTenancy(ctx, func(orgs []policy.Org, products []policy.Product) ([]policy.Org, []policy.Product) {
		out := []policy.Product{p}
		for _, x := range products {
			if x.ID != pid {
				out = append(out, x)
			}
		}
		return orgs, out
	})
	if err != nil {
		return ProductView{}, err
	}
	if err := a.store.PutProduct(ctx, p); err != nil {
		return ProductView{}, storeErr(err, nil)
	}
	if err := a.catalogChanged(ctx); err != nil {
		return ProductView{}, err
	}
	after := a.productView(p)
	fields := []zap.Field{zap.String("org", o.ID), zap.String("product", id), zap.Any("after", after)}
	if before != nil {
		fields = append(fields, zap.Any("before", *before))
	}
	a.auditChange(ctx, "put_product", fields...)
	return after, nil
}

// DeleteProduct deletes the store's product named product (ID or slug) of
// the org named org. It refuses a product the config declares, and one
// that API users still belong to.
func (a *App) DeleteProduct(ctx context.Context, org, product string) error {
	catalogMu.Lock()
	defer catalogMu.Unlock()
	before, err := a.GetProduct(org, product)
	if err != nil {
		return err
	}
	if before.Source == SourceConfig {
		return conflictErr("product %d is defined in the api_users config, which is read-only here: remove it from the Caddyfile", before.ID)
	}
	if err := a.store.DeleteProduct(ctx, before.ID); err != nil {
		return storeErr(err, func() error { return &NotFoundError{Message: fmt.Sprintf("no product %q in org %q", product, org)} })
	}
	if err := a.catalogChanged(ctx); err != nil {
		return err
	}
	a.auditChange(ctx, "delete_product", zap.String("org", before.Org), zap.String("product", strconv.FormatInt(before.ID, 10)), zap.Any("before", before))
	return nil
}
