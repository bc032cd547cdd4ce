package caddymodule

import (
	"context"
	"fmt"
	"sync"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
	"go.uber.org/zap"
)

func (a *App) policyEndpoints() []policy.Endpoint {
	eps := make([]policy.Endpoint, 0, len(a.Endpoints))
	for _, e := range a.Endpoints {
		eps = append(eps, policy.Endpoint{Name: e.Name, Methods: e.Methods, Path: e.Path, Scope: policy.Scope(e.Scope)})
	}
	return eps
}

func (a *App) tenancyConfig() ([]policy.Org, []policy.Product) {
	var orgs []policy.Org
	var products []policy.Product
	for _, o := range a.Orgs {
		orgs = append(orgs, policy.Org{ID: o.ID, Slug: o.Slug})
		for _, p := range o.Products {
			products = append(products, policy.Product{ID: p.ID, Slug: p.Slug, Org: o.ID})
		}
	}
	return orgs, products
}

// view is what decisions read, swapped whole when the catalog changes.
type view struct {
	catalog *policy.Catalog
	tenancy *policy.Tenancy
	roles   map[string][]policy.Scope
}

// buildView compiles the config's catalog, orgs and roles, plus any orgs,
// products and roles kept in the store. An entry in the config wins over a
// store entry of the same name, so the Caddyfile stays the source of truth
// for what it declares.
func (a *App) buildView(storeOrgs []policy.Org, storeProducts []policy.Product, storeRoles []store.Role) (*view, error) {
	endpoints := make([]policy.Endpoint, 0, len(a.Endpoints))
	for _, e := range a.Endpoints {
		endpoints = append(endpoints, policy.Endpoint{Name: e.Name, Methods: e.Methods, Path: e.Path, Scope: policy.Scope(e.Scope)})
	}
	catalog, err := policy.NewCatalog(endpoints)
	if err != nil {
		return nil, fmt.Errorf("api_users: endpoint catalog: %w", err)
	}

	orgs, products := a.tenancyConfig()
	if _, err := policy.NewTenancy(orgs, products); err != nil {
		return nil, fmt.Errorf("api_users: orgs and products: %w", err)
	}
	orgs, products = a.addStoreTenancy(orgs, products, storeOrgs, storeProducts)
	tenancy, err := policy.NewTenancy(orgs, products)
	if err != nil {
		// addStoreTenancy admits only entries that fit; this is a bug.
		return nil, fmt.Errorf("api_users: orgs and products: %w", err)
	}

	roles := map[string][]policy.Scope{}
	for _, r := range a.Roles {
		if !validRoleName(r.Name) {
			return nil, fmt.Errorf("api_users: role %q: a role name is lowercase letters, digits, '-' and '_', starting with a letter", r.Name)
		}
		if _, dup := roles[r.Name]; dup {
			return nil, fmt.Errorf("api_users: role %q is defined twice: give each role one definition", r.Name)
		}
		scopes, err := policy.ParseScopes(r.Scopes)
		if err != nil {
			return nil, fmt.Errorf("api_users: role %q: %w", r.Name, err)
		}
		roles[r.Name] = scopes
	}
	for _, r := range storeRoles {
		if _, fromConfig := roles[r.Name]; fromConfig {
			continue
		}
		scopes, err := policy.ParseScopes(r.Scopes)
		if err != nil {
			// A role written by an older or broken writer must not take
			// the gateway down; it grants nothing until it is fixed.
			a.logger.Error("ignoring invalid role in store", zap.String("role", r.Name), zap.Error(err))
			continue
		}
		roles[r.Name] = scopes
	}
	return &view{catalog: catalog, tenancy: tenancy, roles: roles}, nil
}

// addStoreTenancy appends to the config's orgs and products those of the
// store that fit beside them. The config wins for the IDs it declares. A
// store entry that is invalid or clashes with another (an org slug already
// naming another org, a product slug or ID already taken, a product of an
// unknown org) is left out and logged rather than failing the reload: one bad
// row written by another process must not take the catalog down, and
// leaving it out only takes rights away (requests naming it get 403).
func (a *App) addStoreTenancy(orgs []policy.Org, products []policy.Product, storeOrgs []policy.Org, storeProducts []policy.Product) ([]policy.Org, []policy.Product) {
	orgName := map[string]string{} // org ID or slug -> org ID
	for _, o := range orgs {
		orgName[o.ID] = o.ID
		if o.Slug != "" {
			orgName[o.Slug] = o.ID
		}
	}
	productID := map[int64]bool{}
	productSlug := map[string]bool{}
	for _, p := range products {
		productID[p.ID] = true
		if p.Slug != "" {
			productSlug[p.Slug] = true
		}
	}
	skip := func(what string, err error) {
		if a.logger != nil {
			a.logger.Warn("ignoring "+what+" in the store", zap.Error(err))
		}
	}
	for _, o := range storeOrgs {
		if owner, ok := orgName[o.ID]; ok && owner == o.ID {
			continue // declared in the config, which wins
		}
		if _, err := policy.NewTenancy([]policy.Org{o}, nil); err != nil {
			skip("invalid org", err)
			continue
		}
		if owner, ok := orgName[o.ID]; ok {
			skip("org", fmt.Errorf("org %q: the ID is already the slug of org %q", o.ID, owner))
			continue
		}
		if owner, ok := orgName[o.Slug]; ok && o.Slug != "" && o.Slug != o.ID {
			skip("org", fmt.Errorf("org %q: slug %q already names org %q", o.ID, o.Slug, owner))
			continue
		}
		orgs = append(orgs, o)
		orgName[o.ID] = o.ID
		if o.Slug != "" {
			orgName[o.Slug] = o.ID
		}
	}
	for _, p := range storeProducts {
		if productID[p.ID] {
			continue // declared in the config, or a duplicate row
		}
		if _, err := policy.NewTenancy([]policy.Org{{ID: p.Org}}, []policy.Product{p}); err != nil {
			skip("invalid product", err)
			continue
		}
		if owner, ok := orgName[p.Org]; !ok || owner != p.Org {
			skip("product", fmt.Errorf("product %d belongs to org %q, which is not known", p.ID, p.Org))
			continue
		}
		if p.Slug != "" && productSlug[p.Slug] {
			skip("product", fmt.Errorf("product %d: slug %q already names another product", p.ID, p.Slug))
			continue
		}
		products = append(products, p)
		productID[p.ID] = true
		if p.Slug != "" {
			productSlug[p.Slug] = true
		}
	}
	return orgs, products
}

// seedTenancy writes the orgs and products declared in the config to the
// store, where they are missing or differ, so every process on the store
// (other nodes, the CLI) knows them and the store can keep each user inside
// an existing org and product. The config stays authoritative for what it
// declares; the store may hold more, managed through the API.
func (a *App) seedTenancy(ctx context.Context) error {
	orgs, err := a.store.ListOrgs(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading orgs from the store: %w", err)
	}
	products, err := a.store.ListProducts(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading products from the store: %w", err)
	}
	haveOrg := map[string]policy.Org{}
	for _, o := range orgs {
		haveOrg[o.ID] = o
	}
	haveProduct := map[int64]policy.Product{}
	for _, p := range products {
		haveProduct[p.ID] = p
	}
	wantOrgs, wantProducts := a.tenancyConfig()
	for _, o := range wantOrgs {
		if have, ok := haveOrg[o.ID]; ok && have == o {
			continue
		}
		if err := a.store.PutOrg(ctx, o); err != nil {
			return fmt.Errorf("api_users: writing org %q of the config to the store: %w", o.ID, err)
		}
	}
	for _, p := range wantProducts {
		if have, ok := haveProduct[p.ID]; ok && have == p {
			continue
		}
		if err := a.store.PutProduct(ctx, p); err != nil {
			return fmt.Errorf("api_users: writing product %d of the config to the store: %w", p.ID, err)
		}
	}
	return nil
}

// reloadView rebuilds the view from the config and the store. Reloads are
// serialised: without that, a reload that read the store before a change
// could publish its view after the reload that read the change, and the
// change would be lost until the next one.
func (a *App) reloadView(ctx context.Context) error {
	a.viewMu.Lock()
	defer a.viewMu.Unlock()
	orgs, err := a.store.ListOrgs(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading orgs from the store: %w", err)
	}
	products, err := a.store.ListProducts(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading products from the store: %w", err)
	}
	roles, err := a.store.ListRoles(ctx)
	if err != nil {
		return fmt.Errorf("api_users: reading roles from the store: %w", err)
	}
	v, err := a.buildView(orgs, products, roles)
	if err != nil {
		return err
	}
	a.view.Store(v)
	return nil
}

// endpointNames lists the catalog's endpoint names in configuration order,
// which is the order of policy.Endpoint.Index.
func (a *App) endpointNames() []string {
	names := make([]string, len(a.Endpoints))
	for i, e := range a.Endpoints {
		names[i] = e.Name
	}
	return names
}

// catalogMu serialises this process's changes to roles, orgs and products,
// so that the check that a change keeps the merged view valid and the
// write are not interleaved with another change. A user write that gives
// roles holds it for reading, so that a role cannot be deleted between the
// check that it exists and the write that gives it (which would leave the
// user a dangling name, and the rights of any role later created under it).
var catalogMu sync.RWMutex
