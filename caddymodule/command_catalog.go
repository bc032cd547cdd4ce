package caddymodule

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// The catalog commands of `caddy api-users`: roles (`role`), and the orgs,
// products and endpoints of the catalog (`catalog`).

func cliRoleCommand() *cobra.Command {
	role := &cobra.Command{
		Use:   "role <list|show|put|delete>",
		Short: "Manages roles: named sets of scopes",
		Long: `Manages the roles kept in the store. Roles of the api_users config are
listed but read-only: change them in the Caddyfile.`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Lists roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				roles, err := app.ListRoles(ctx)
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("roles", nonNilSlice(roles)))
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSOURCE\tSCOPES\tDESCRIPTION")
				for _, r := range roles {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Source, strings.Join(r.Scopes, ","), dash(r.Description))
				}
				return tw.Flush()
			})
		},
	}
	show := &cobra.Command{
		Use:   "show <name>",
		Short: "Shows one role",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				r, err := app.GetRole(ctx, args[0])
				if err != nil {
					return err
				}
				return printRole(cmd, r)
			})
		},
	}
	put := &cobra.Command{
		Use:   "put <name> --scopes a,b [--description text]",
		Short: "Creates or replaces a role of the store",
		Long: `Creates or replaces a role. The change applies at once to every API user
with the role, without replacing their access tokens.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec RoleSpec
			spec.Scopes, _ = cmd.Flags().GetStringSlice("scopes")
			spec.Description, _ = cmd.Flags().GetString("description")
			return withApp(cmd, func(ctx context.Context, app *App) error {
				r, holders, err := app.PutRole(ctx, args[0], spec)
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("role", r, "users_affected", holders))
				}
				if err := printRole(cmd, r); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "  held by %d API users, whose rights changed with it (their tokens stay valid)\n", holders)
				return nil
			})
		},
	}
	put.Flags().StringSlice("scopes", nil, "Scopes, comma-separated")
	put.Flags().String("description", "", "Description")
	del := &cobra.Command{
		Use:   "delete <name>",
		Short: "Deletes a role of the store that no API user has",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				if err := app.DeleteRole(ctx, args[0]); err != nil {
					return err
				}
				return printDone(cmd, "deleted role %s\n", args[0])
			})
		},
	}
	role.AddCommand(list, show, put, del)
	return role
}

func cliCatalogCommand() *cobra.Command {
	catalog := &cobra.Command{
		Use:   "catalog <org|product|endpoints>",
		Short: "Manages orgs and products, and lists the endpoint catalog",
		Long: `Manages the orgs and products kept in the store. Those of the api_users
config are listed but read-only: change them in the Caddyfile. The endpoint
catalog is defined by the config only.`,
	}
	org := &cobra.Command{Use: "org <list|put|delete>", Short: "Manages orgs"}
	org.AddCommand(
		&cobra.Command{
			Use:   "list",
			Short: "Lists orgs and their products",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return withApp(cmd, func(_ context.Context, app *App) error {
					orgs := app.ListOrgs()
					if jsonFlag(cmd) {
						return writeIndentedJSON(cmd.OutOrStdout(), okWith("orgs", orgs))
					}
					tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ORG\tSLUG\tSOURCE\tPRODUCTS")
					for _, o := range orgs {
						var ps []string
						for _, p := range o.Products {
							ps = append(ps, fmt.Sprintf("%d (%s)", p.ID, dash(p.Slug)))
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.ID, dash(o.Slug), o.Source, dash(strings.Join(ps, ", ")))
					}
					return tw.Flush()
				})
			},
		},
		orgPutCommand(),
		&cobra.Command{
			Use:   "delete <org>",
			Short: "Deletes an org of the store that has no products and no API users",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withApp(cmd, func(ctx context.Context, app *App) error {
					if err := app.DeleteOrg(ctx, args[0]); err != nil {
						return err
					}
					return printDone(cmd, "deleted org %s\n", args[0])
				})
			},
		},
	)
	product := &cobra.Command{Use: "product <list|put|delete>", Short: "Manages products"}
	product.AddCommand(
		&cobra.Command{
			Use:   "list <org>",
			Short: "Lists an org's products",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withApp(cmd, func(_ context.Context, app *App) error {
					ps, err := app.ListProducts(args[0])
					if err != nil {
						return err
					}
					if jsonFlag(cmd) {
						return writeIndentedJSON(cmd.OutOrStdout(), okWith("products", ps))
					}
					tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "PRODUCT\tSLUG\tORG\tSOURCE")
					for _, p := range ps {
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.ID, dash(p.Slug), p.Org, p.Source)
					}
					return tw.Flush()
				})
			},
		},
		productPutCommand(),
		&cobra.Command{
			Use:   "delete <org> <product>",
			Short: "Deletes a product of the store that no API user belongs to",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withApp(cmd, func(ctx context.Context, app *App) error {
					if err := app.DeleteProduct(ctx, args[0], args[1]); err != nil {
						return err
					}
					return printDone(cmd, "deleted product %s of org %s\n", args[1], args[0])
				})
			},
		},
	)
	endpoints := &cobra.Command{
		Use:   "endpoints",
		Short: "Lists the endpoint catalog and its scopes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, func(_ context.Context, app *App) error {
				eps := endpointViews(app.view.Load().catalog)
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("endpoints", eps))
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ENDPOINT\tMETHODS\tPATH\tSCOPE")
				for _, e := range eps {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, strings.Join(e.Methods, ","), e.Path, e.Scope)
				}
				return tw.Flush()
			})
		},
	}
	catalog.AddCommand(org, product, endpoints)
	return catalog
}

func orgPutCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "put <org-id> [--slug <slug>]",
		Short: "Creates or replaces an org of the store",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			slug, _ := cmd.Flags().GetString("slug")
			return withApp(cmd, func(ctx context.Context, app *App) error {
				o, err := app.PutOrg(ctx, args[0], OrgSpec{Slug: slug})
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("org", o))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "org %s (slug %s) is stored\n", o.ID, dash(o.Slug))
				return nil
			})
		},
	}
	c.Flags().String("slug", "", "The org's slug")
	return c
}

func productPutCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "put <org> <product-id> [--slug <slug>]",
		Short: "Creates or replaces a product of the store",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			slug, _ := cmd.Flags().GetString("slug")
			return withApp(cmd, func(ctx context.Context, app *App) error {
				p, err := app.PutProduct(ctx, args[0], args[1], ProductSpec{Slug: slug})
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("product", p))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "product %d (slug %s) of org %s is stored\n", p.ID, dash(p.Slug), p.Org)
				return nil
			})
		},
	}
	c.Flags().String("slug", "", "The product's slug, such as my-product-v1")
	return c
}
