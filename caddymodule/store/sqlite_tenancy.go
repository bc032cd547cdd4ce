package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/apiusers/caddy-api-users/policy"
)

// ListRoles implements Store.
func (s *SQLite) ListRoles(ctx context.Context) ([]Role, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT name, description, scopes FROM roles ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	defer rows.Close()
	var roles []Role
	for rows.Next() {
		var r Role
		var scopes string
		if err := rows.Scan(&r.Name, &r.Description, &scopes); err != nil {
			return nil, fmt.Errorf("listing roles: %w", err)
		}
		if r.Scopes, err = decodeList[string](fmt.Sprintf("the scopes of role %q", r.Name), scopes); err != nil {
			return nil, err
		}
		roles = append(roles, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return roles, nil
}

// PutRole implements Store.
func (s *SQLite) PutRole(ctx context.Context, r Role) error {
	if r.Name == "" {
		return errors.New("a role needs a name")
	}
	var e encoder
	scopes := encodeList(&e, "scopes", r.Scopes)
	if e.err != nil {
		return fmt.Errorf("role %q: %w", r.Name, e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO roles (name, description, scopes) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET description = excluded.description, scopes = excluded.scopes`,
			r.Name, r.Description, scopes); err != nil {
			return fmt.Errorf("writing role %q: %w", r.Name, err)
		}
		return s.appendChange(ctx, tx, ChangeRole, r.Name)
	})
}

// DeleteRole implements Store. Users that name the role keep the name,
// which then grants nothing: fewer privileges, never more.
func (s *SQLite) DeleteRole(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := deleteOne(ctx, tx, "role "+strconv.Quote(name), `DELETE FROM roles WHERE name = ?`, name); err != nil {
			return err
		}
		return s.appendChange(ctx, tx, ChangeRole, name)
	})
}

// ListOrgs implements Store.
func (s *SQLite) ListOrgs(ctx context.Context) ([]policy.Org, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, coalesce(slug, '') FROM orgs ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing orgs: %w", err)
	}
	defer rows.Close()
	var orgs []policy.Org
	for rows.Next() {
		var o policy.Org
		if err := rows.Scan(&o.ID, &o.Slug); err != nil {
			return nil, fmt.Errorf("listing orgs: %w", err)
		}
		orgs = append(orgs, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing orgs: %w", err)
	}
	return orgs, nil
}

// PutOrg implements Store. Routes name an org by ID or slug, so an org's
// slug may not be another org's ID or slug, nor its ID another org's slug.
func (s *SQLite) PutOrg(ctx context.Context, o policy.Org) error {
	if o.ID == "" {
		return errors.New("an org needs an ID")
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var other string
		err := tx.QueryRowContext(ctx, `SELECT id FROM orgs WHERE id <> ?1 AND (slug = ?1 OR (?2 <> '' AND (id = ?2 OR slug = ?2))) LIMIT 1`,
			o.ID, o.Slug).Scan(&other)
		if err == nil {
			return fmt.Errorf("org %q (slug %q): its ID or slug names org %q already: %w", o.ID, o.Slug, other, ErrExists)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("writing org %q: %w", o.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO orgs (id, slug) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET slug = excluded.slug`, o.ID, nullString(o.Slug)); err != nil {
			return fmt.Errorf("writing org %q: %w", o.ID, err)
		}
		return s.appendChange(ctx, tx, ChangeOrg, o.ID)
	})
}

// DeleteOrg implements Store.
func (s *SQLite) DeleteOrg(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var products, users int
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM products WHERE org = ?1), (SELECT count(*) FROM users WHERE org = ?1)`,
			id).Scan(&products, &users); err != nil {
			return fmt.Errorf("deleting org %q: %w", id, err)
		}
		if products > 0 || users > 0 {
			return fmt.Errorf("org %q still has %d products and %d API users (delete them first): %w", id, products, users, ErrInUse)
		}
		if err := deleteOne(ctx, tx, "org "+strconv.Quote(id), `DELETE FROM orgs WHERE id = ?`, id); err != nil {
			return err
		}
		return s.appendChange(ctx, tx, ChangeOrg, id)
	})
}

// ListProducts implements Store.
func (s *SQLite) ListProducts(ctx context.Context) ([]policy.Product, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, coalesce(slug, ''), org FROM products ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing products: %w", err)
	}
	defer rows.Close()
	var products []policy.Product
	for rows.Next() {
		var p policy.Product
		if err := rows.Scan(&p.ID, &p.Slug, &p.Org); err != nil {
			return nil, fmt.Errorf("listing products: %w", err)
		}
		products = append(products, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing products: %w", err)
	}
	return products, nil
}

// PutProduct implements Store. Routes name a product by its numeric ID or
// its slug, so a slug may not be all digits.
func (s *SQLite) PutProduct(ctx context.Context, p policy.Product) error {
	switch {
	case p.ID <= 0:
		return fmt.Errorf("product %d: its ID must be positive", p.ID)
	case p.Org == "":
		return fmt.Errorf("product %d needs an org", p.ID)
	case p.Slug != "" && isDigits(p.Slug):
		return fmt.Errorf("product %d: slug %q is all digits, which routes would read as a product ID; add a letter", p.ID, p.Slug)
	}
	key := strconv.FormatInt(p.ID, 10)
	return s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM orgs WHERE id = ?`, p.Org).Scan(&n); err != nil {
			return fmt.Errorf("writing product %d: %w", p.ID, err)
		}
		if n == 0 {
			return fmt.Errorf("product %d: org %q: %w (create the org first)", p.ID, p.Org, ErrNotFound)
		}
		if p.Slug != "" {
			var other int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM products WHERE slug = ? AND id <> ?`, p.Slug, p.ID).Scan(&other)
			if err == nil {
				return fmt.Errorf("product %d: slug %q is product %d's already: %w", p.ID, p.Slug, other, ErrExists)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("writing product %d: %w", p.ID, err)
			}
		}
		// Moving a product to another org would leave its users in the old
		// org with a product of the new one.
		var users int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE product = ? AND org <> ?`, p.ID, p.Org).Scan(&users); err != nil {
			return fmt.Errorf("writing product %d: %w", p.ID, err)
		}
		if users > 0 {
			return fmt.Errorf("product %d cannot move to org %q while %d API users of another org belong to it (delete them first): %w", p.ID, p.Org, users, ErrInUse)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO products (id, slug, org) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET slug = excluded.slug, org = excluded.org`, p.ID, nullString(p.Slug), p.Org); err != nil {
			return fmt.Errorf("writing product %d: %w", p.ID, err)
		}
		return s.appendChange(ctx, tx, ChangeProduct, key)
	})
}

// DeleteProduct implements Store.
func (s *SQLite) DeleteProduct(ctx context.Context, id int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var users int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE product = ?`, id).Scan(&users); err != nil {
			return fmt.Errorf("deleting product %d: %w", id, err)
		}
		if users > 0 {
			return fmt.Errorf("product %d still has %d API users (delete them first): %w", id, users, ErrInUse)
		}
		if err := deleteOne(ctx, tx, fmt.Sprintf("product %d", id), `DELETE FROM products WHERE id = ?`, id); err != nil {
			return err
		}
		return s.appendChange(ctx, tx, ChangeProduct, strconv.FormatInt(id, 10))
	})
}

// deleteOne runs a DELETE that must remove exactly one row of what.
func deleteOne(ctx context.Context, tx *sql.Tx, what, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("deleting %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}
