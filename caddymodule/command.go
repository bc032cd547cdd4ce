package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "api-users",
		Usage: "<create|list|show|delete> [--config <path>] [--adapter <name>] [--json] ...",
		Short: "Manages API users in the store named by a Caddy config",
		Long: `
Manages API users directly in the store that the api_users global option of
a Caddy config names, so the first user can be created before anything is
exposed. A running gateway on the same store sees a change within its
sync_interval (500ms by default).

Credential values are printed once, when they are created. Store them in a
secret manager: only their hashes are kept.

  caddy api-users create --org acme --product 1337 --scopes devices:list,devices:get
  caddy api-users list --org acme
  caddy api-users show <username>
  caddy api-users delete <username>
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.PersistentFlags().Bool("json", false, "Print JSON instead of text")
			cmd.AddCommand(cliCreateCommand(), cliListCommand(), cliShowCommand(), cliDeleteCommand())
		},
	})
}

// openAppFromConfig loads a Caddy config and opens the api_users app it
// configures, without starting the gateway.
func openAppFromConfig(cmd *cobra.Command) (*App, error) {
	configFile, _ := cmd.Flags().GetString("config")
	adapter, _ := cmd.Flags().GetString("adapter")
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("loading the config: %w", err)
	}
	if cfgJSON == nil {
		return nil, errors.New("no config found: pass --config with the Caddyfile the server uses")
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	app := new(App)
	if raw, ok := cfg.Apps["api_users"]; ok {
		if err := json.Unmarshal(raw, app); err != nil {
			return nil, fmt.Errorf("reading the api_users app config: %w", err)
		}
	}
	repl := caddy.NewReplacer()
	app.Store.Path = repl.ReplaceKnown(app.Store.Path, "")
	if err := app.open(context.Background()); err != nil {
		return nil, err
	}
	return app, nil
}

func cliCreateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "create --org <org> [--product <id|slug>] [--scopes a,b] [--roles r] [--username id] [--name text]",
		Short: "Creates an API user and prints its credentials, once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			app, err := openAppFromConfig(cmd)
			if err != nil {
				return err
			}
			defer app.Cleanup()
			f := cmd.Flags()
			org, _ := f.GetString("org")
			product, _ := f.GetString("product")
			if org == "" && product == "" {
				return errors.New("--org or --product is required: an API user belongs to an org or to one of its products")
			}
			spec := UserSpec{}
			if f.Changed("username") {
				v, _ := f.GetString("username")
				spec.Username = &v
			}
			if f.Changed("name") {
				v, _ := f.GetString("name")
				spec.FriendlyName = &v
			}
			if f.Changed("description") {
				v, _ := f.GetString("description")
				spec.Description = &v
			}
			for _, name := range []string{"scopes", "roles", "endpoints"} {
				if !f.Changed(name) {
					continue
				}
				v, _ := f.GetStringSlice(name)
				switch name {
				case "scopes":
					spec.Scopes = &v
				case "roles":
					spec.Roles = &v
				case "endpoints":
					spec.AllowedEndpoints = &v
				}
			}
			u, iss, err := app.CreateUser(cmd.Context(), Tenant{Org: org, Product: product}, &spec)
			if err != nil {
				return err
			}
			return printCreated(cmd.OutOrStdout(), jsonFlag(cmd), u, iss)
		},
	}
	c.Flags().String("org", "", "Org ID or slug")
	c.Flags().String("product", "", "Product ID or slug (makes a product-scoped user)")
	c.Flags().String("username", "", "Username (generated when omitted)")
	c.Flags().String("name", "", "Friendly name")
	c.Flags().String("description", "", "Description")
	c.Flags().StringSlice("scopes", nil, "Scopes, comma-separated, such as devices:list,devices:get")
	c.Flags().StringSlice("roles", nil, "Roles, comma-separated")
	c.Flags().StringSlice("endpoints", nil, "Allowed endpoint names, comma-separated (default: all)")
	return c
}

func cliListCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list [--org <org>] [--product <id|slug>]",
		Short: "Lists API users (never their credentials)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			app, err := openAppFromConfig(cmd)
			if err != nil {
				return err
			}
			defer app.Cleanup()
			org, _ := cmd.Flags().GetString("org")
			product, _ := cmd.Flags().GetString("product")
			var filter store.UserFilter
			if org != "" || product != "" {
				orgID, productID, err := app.resolveTenant(Tenant{Org: org, Product: product})
				if err != nil {
					return err
				}
				filter.Org = orgID
				if product != "" {
					filter.Product, filter.ProductSet = productID, true
				}
			}
			users, err := app.ListUsers(cmd.Context(), filter)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if jsonFlag(cmd) {
				views := make([]UserView, 0, len(users))
				for _, u := range users {
					views = append(views, viewOf(u))
				}
				return writeIndentedJSON(out, views)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USERNAME\tORG\tPRODUCT\tSCOPES\tROLES\tSTATE")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Org, dash(productLabel(u.Product)),
					dash(joinScopes(u.Scopes)), dash(strings.Join(u.Roles, ",")), userState(u, time.Now()))
			}
			return tw.Flush()
		},
	}
	c.Flags().String("org", "", "Only this org's users")
	c.Flags().String("product", "", "Only this product's users")
	return c
}

func cliShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show <username>",
		Short: "Shows one API user (never its credentials)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, err := openAppFromConfig(cmd)
			if err != nil {
				return err
			}
			defer app.Cleanup()
			u, err := app.store.GetUser(cmd.Context(), args[0])
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no API user %q", args[0])
			}
			if err != nil {
				return err
			}
			return writeIndentedJSON(cmd.OutOrStdout(), viewOf(u))
		},
	}
}

func cliDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete <username>",
		Short: "Deletes an API user and all its credentials",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, err := openAppFromConfig(cmd)
			if err != nil {
				return err
			}
			defer app.Cleanup()
			if err := app.DeleteUser(cmd.Context(), args[0]); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no API user %q", args[0])
				}
				return err
			}
			if jsonFlag(cmd) {
				return writeIndentedJSON(cmd.OutOrStdout(), map[string]any{"ok": true, "deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s and all its credentials\n", args[0])
			return nil
		},
	}
}

func printCreated(out io.Writer, asJSON bool, u *policy.APIUser, iss *Issued) error {
	if asJSON {
		return writeIndentedJSON(out, createdView(u, iss))
	}
	fmt.Fprintf(out, "Created API user %s (org %s", u.ID, u.Org)
	if u.Product != 0 {
		fmt.Fprintf(out, ", product %d", u.Product)
	}
	fmt.Fprintf(out, ").\nThese values are shown once; store them now.\n\n")
	fmt.Fprintf(out, "access token:  %s\n", iss.Token)
	fmt.Fprintf(out, "secret:        %s\n", iss.Secret)
	fmt.Fprintf(out, "key %s: %s\n\n", iss.KeyID, iss.Key)
	fmt.Fprintf(out, "curl -H 'Authorization: Bearer %s' ...\n", iss.Token)
	fmt.Fprintf(out, "curl -u '%s:%s:%s' ...\n", u.ID, iss.Key, iss.Secret)
	return nil
}

func jsonFlag(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

func writeIndentedJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinScopes(ss []policy.Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

func userState(u *policy.APIUser, now time.Time) string {
	switch {
	case u.Retired:
		return "retired"
	case !u.ExpiresAt.IsZero() && !now.Before(u.ExpiresAt):
		return "expired"
	}
	return "active"
}
