package caddymodule

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

// TestRoleDeleteRacingGrant: a role deleted while another request gives it
// to a user either is refused (the user has it) or wins (the grant is
// refused); never does the user end up with a role that no longer exists.
func TestRoleDeleteRacingGrant(t *testing.T) {
	g := startGateway(t, gatewayOptions{gatewayBlock: "lockout off"})
	ctx := WithActor(context.Background(), Actor{ID: "test"})
	id, _ := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list")})
	for i := range 40 {
		if _, _, err := g.app.PutRole(ctx, "racy", RoleSpec{Scopes: []string{"devices:get"}}); err != nil {
			t.Fatalf("round %d: creating the role: %v", i, err)
		}
		var wg sync.WaitGroup
		var delErr, grantErr error
		wg.Go(func() { delErr = g.app.DeleteRole(ctx, "racy") })
		wg.Go(func() {
			_, _, grantErr = g.app.UpdateUser(ctx, Tenant{Org: "acme"}, id, &UserSpec{Roles: strs("racy")})
		})
		wg.Wait()
		u, err := g.app.GetUser(ctx, Tenant{Org: "acme"}, id)
		if err != nil {
			t.Fatal(err)
		}
		_, roleErr := g.app.GetRole(ctx, "racy")
		roleExists := roleErr == nil
		if slices.Contains(u.Roles, "racy") && !roleExists {
			t.Fatalf("round %d: the user holds role racy, which no longer exists (delete: %v, grant: %v)", i, delErr, grantErr)
		}
		var nf *NotFoundError
		if roleErr != nil && !errors.As(roleErr, &nf) {
			t.Fatal(roleErr)
		}
		// Reset: take the role away, delete it if it is still there.
		if _, _, err := g.app.UpdateUser(ctx, Tenant{Org: "acme"}, id, &UserSpec{Roles: strs()}); err != nil {
			t.Fatal(err)
		}
		if roleExists {
			if err := g.app.DeleteRole(ctx, "racy"); err != nil {
				t.Fatal(err)
			}
		}
	}
}
