package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/apiusers/caddy-api-users/policy"
)

// The `caddy api-users` command manages API users, roles, orgs and products
// directly in the store of a Caddy config, through the same App methods as
// the management API, so the first user can be created before anything is
// exposed. Its --json output is the management API's response body.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "api-users",
		Usage: "<command> [--config <path>] [--adapter <name>] [--json] ...",
		Short: "Manages API users, roles, orgs and products in the store named by a Caddy config",
		Long: `
Manages API users directly in the store that the api_users global option of
a Caddy config names, so the first user can be created before anything is
exposed. A running gateway on the same store sees a change within its
sync_interval (500ms by default). Each change is written to the audit
logger http.handlers.api_users.audit (on stderr), with "by":
"cli:<login>".

Credential values are printed once, when they are created. Store them in a
secret manager: only their hashes are kept.

  caddy api-users create --org acme --product 1337 --scopes devices:list,devices:get
  caddy api-users list --org acme [--q sync] [--state active] [--sort -last_used]
  caddy api-users explain <username> GET /v1/products/1337/devices
  caddy api-users show <username>
  caddy api-users usage <username> [--granularity day] [--from <RFC 3339>] [--to <RFC 3339>]
  caddy api-users update <username> --scopes devices:list   (prints the new token)
  caddy api-users rotate <username>
  caddy api-users add-key <username> [--previous-keys-expire-at 2027-01-31T00:00:00Z]
  caddy api-users delete-key <username> <key-id>
  caddy api-users regenerate-secret <username>
  caddy api-users retire <username> [--undo]
  caddy api-users delete <username>
  caddy api-users role list|show|put|delete ...
  caddy api-users catalog org|product list|put|delete ...
  caddy api-users catalog endpoints
  caddy api-users check

Add --json for the management API's JSON instead of text.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.PersistentFlags().Bool("json", false, "Print JSON (the management API's response body) instead of text")
			cmd.AddCommand(
				cliCreateCommand(), cliListCommand(), cliShowCommand(), cliUpdateCommand(),
				cliRotateCommand(), cliAddKeyCommand(), cliDeleteKeyCommand(),
				cliRegenerateSecretCommand(), cliRetireCommand(), cliDeleteCommand(),
				cliRoleCommand(), cliCatalogCommand(), cliCheckCommand(), cliExplainCommand(),
				cliUsageCommand(),
			)
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
	// Changes made from the shell are audited like the API's, to the same
	// logger name; without the server's logging config they go to stderr.
	app.logger = caddy.Log().Named("api_users")
	app.audit = caddy.Log().Named("http.handlers.api_users.audit")
	if err := app.open(context.Background()); err != nil {
		return nil, err
	}
	return app, nil
}

// withApp runs fn with the app of the config and a context that names the
// CLI's user as the actor of any change.
func withApp(cmd *cobra.Command, fn func(ctx context.Context, app *App) error) error {
	app, err := openAppFromConfig(cmd)
	if err != nil {
		return err
	}
	defer app.Cleanup()
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return fn(WithActor(ctx, Actor{ID: cliActor()}), app)
}

// cliActor names the shell user in the audit log.
func cliActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if name := os.Getenv("USER"); name != "" {
		return "cli:" + name
	}
	return "cli"
}

// addUserSpecFlags adds the flags of the fields a create or update sets.
func addUserSpecFlags(c *cobra.Command) {
	f := c.Flags()
	f.String("name", "", "Friendly name")
	f.String("description", "", "Description")
	f.StringSlice("scopes", nil, "Scopes, comma-separated, such as devices:list,devices:get")
	f.StringSlice("roles", nil, "Roles, comma-separated")
	f.StringSlice("endpoints", nil, "Allowed endpoint names, comma-separated (empty: all)")
	f.Bool("allow-proxied-users", false, "Allow the user to act on behalf of proxied users")
	f.StringSlice("proxied-users", nil, "Allowed proxied user IDs, comma-separated (empty: any)")
	f.String("expires-at", "", "RFC 3339 time from which the user cannot authenticate (\"\" clears)")
	f.String("idle-timeout", "", "Duration, such as 720h, after which an idle user cannot authenticate (\"\" clears)")
	f.String("rate-limit", "", "The user's own rate limit, requests/window, such as 600/1m, in place of the gateway's (\"\" or 0 clears)")
	f.StringArray("constraint", nil, "Resource constraint var=value,value (repeatable), such as device=0a1b2c,3d4e5f; replaces all constraints")
	f.Bool("clear-constraints", false, "Remove every resource constraint")
}

// parseRateLimitFlag reads --rate-limit: requests/window, or "" or "0" to
// clear the user's own limit. The window is checked with the rest of the
// spec, like a management API request.
func parseRateLimitFlag(v string) (*UserRateLimit, error) {
	if v == "" || v == "0" {
		return &UserRateLimit{}, nil
	}
	n, window, ok := strings.Cut(v, "/")
	requests, err := strconv.Atoi(n)
	if !ok || err != nil || requests < 1 {
		return nil, fmt.Errorf("--rate-limit %q: write it as requests/window, such as 600/1m (or \"\" to clear)", v)
	}
	return &UserRateLimit{Requests: requests, Window: window}, nil
}

// specFromFlags builds a UserSpec from the flags that were given.
func specFromFlags(cmd *cobra.Command) (UserSpec, error) {
	f := cmd.Flags()
	var spec UserSpec
	str := func(name string) *string {
		if !f.Changed(name) {
			return nil
		}
		v, _ := f.GetString(name)
		return &v
	}
	list := func(name string) *[]string {
		if !f.Changed(name) {
			return nil
		}
		v, _ := f.GetStringSlice(name)
		if v == nil {
			v = []string{}
		}
		return &v
	}
	spec.FriendlyName = str("name")
	spec.Description = str("description")
	spec.Scopes = list("scopes")
	spec.Roles = list("roles")
	spec.AllowedEndpoints = list("endpoints")
	spec.AllowedProxiedUsers = list("proxied-users")
	spec.ExpiresAt = str("expires-at")
	spec.IdleTimeout = str("idle-timeout")
	if f.Changed("allow-proxied-users") {
		v, _ := f.GetBool("allow-proxied-users")
		spec.AllowProxiedUsers = &v
	}
	clearAll, _ := f.GetBool("clear-constraints")
	if f.Changed("rate-limit") {
		v, _ := f.GetString("rate-limit")
		rl, err := parseRateLimitFlag(v)
		if err != nil {
			return spec, err
		}
		spec.RateLimit = rl
	}
	if f.Changed("constraint") || clearAll {
		if f.Changed("constraint") && clearAll {
			return spec, errors.New("--constraint and --clear-constraints contradict each other: give one")
		}
		rc := map[string][]string{}
		pairs, _ := f.GetStringArray("constraint")
		for _, p := range pairs {
			name, values, ok := strings.Cut(p, "=")
			if !ok || name == "" {
				return spec, fmt.Errorf("--constraint %q: write it as var=value,value, such as device=0a1b2c", p)
			}
			rc[name] = append(rc[name], strings.Split(values, ",")...)
		}
		spec.ResourceConstraints = &rc
	}
	return spec, nil
}

func cliCreateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "create --org <org> [--product <id|slug>] [--scopes a,b] [--roles r] [--username id] [--name text] ...",
		Short: "Creates an API user and prints its credentials, once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			org, _ := f.GetString("org")
			product, _ := f.GetString("product")
			if org == "" && product == "" {
				return errors.New("--org or --product is required: an API user belongs to an org or to one of its products")
			}
			spec, err := specFromFlags(cmd)
			if err != nil {
				return err
			}
			if f.Changed("username") {
				v, _ := f.GetString("username")
				spec.Username = &v
			}
			return withApp(cmd, func(ctx context.Context, app *App) error {
				u, iss, err := app.CreateUser(ctx, Tenant{Org: org, Product: product}, &spec)
				if err != nil {
					return err
				}
				return printCreated(cmd.OutOrStdout(), jsonFlag(cmd), u, iss)
			})
		},
	}
	c.Flags().String("org", "", "Org ID or slug")
	c.Flags().String("product", "", "Product ID or slug (makes a product-scoped user)")
	c.Flags().String("username", "", "Username (generated when omitted)")
	addUserSpecFlags(c)
	return c
}

func cliListCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list [--org <org>] [--product <id|slug>] [--q text] [--state s] [--sort key]",
		Short: "Lists API users (never their credentials)",
		Long: `Lists API users: all of them, all of an org's (--org, org-level and
product users alike), or one product's (--product). --q keeps the users
whose username or friendly name contains the text; --state keeps active,
retired, expired or idle_expired users; --sort orders by username (the
default), name, created or last_used, "-" before it for descending.

The list is read from the store a page at a time (--page-size users), so
it works for any number of users in bounded memory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			org, _ := f.GetString("org")
			product, _ := f.GetString("product")
			var tq TeamQuery
			tq.Q, _ = f.GetString("q")
			tq.State, _ = f.GetString("state")
			tq.Sort, _ = f.GetString("sort")
			tq.Limit, _ = f.GetInt("page-size")
			return withApp(cmd, func(ctx context.Context, app *App) error {
				t := Tenant{Org: org, Product: product}
				wholeOrg := product == "" && org != ""
				if wholeOrg {
					// The shell sees the whole org, unlike the API's org
					// team route, which lists org-level users only.
					t = Tenant{}
					orgID, _, err := app.resolveTenant(Tenant{Org: org})
					if err != nil {
						return err
					}
					tq.org = orgID
				}
				out := cmd.OutOrStdout()
				asJSON := jsonFlag(cmd)
				var tw *tabwriter.Writer
				if asJSON {
					fmt.Fprint(out, "{\n  \"ok\": true,\n  \"team\": [")
				} else {
					tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "USERNAME\tORG\tPRODUCT\tSCOPES\tROLES\tKEYS\tSTATE\tLAST USED")
				}
				now := time.Now()
				n := 0
				for {
					users, next, err := app.ListTeamPage(ctx, t, tq)
					if err != nil {
						return err
					}
					for _, u := range users {
						if asJSON {
							data, err := json.MarshalIndent(viewOf(u), "    ", "  ")
							if err != nil {
								return err
							}
							sep := ","
							if n == 0 {
								sep = ""
							}
							fmt.Fprintf(out, "%s\n    %s", sep, data)
						} else {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", u.ID, u.Org, dash(productLabel(u.Product)),
								dash(joinScopes(u.Scopes)), dash(strings.Join(u.Roles, ",")), len(u.Keys), userState(u, now), timeOrDash(u.LastUsedAt))
						}
						n++
					}
					if next == "" {
						break
					}
					tq.Cursor = next
				}
				if asJSON {
					if n > 0 {
						fmt.Fprint(out, "\n  ")
					}
					_, err := fmt.Fprintln(out, "]\n}")
					return err
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().String("org", "", "Only this org's users (org-level and product users)")
	c.Flags().String("product", "", "Only this product's users")
	c.Flags().String("q", "", "Only users whose username or friendly name contains this text (ASCII case ignored)")
	c.Flags().String("state", "", "Only users in this state: active, retired, expired or idle_expired")
	c.Flags().String("sort", "", "Order: username (default), name, created or last_used; prefix \"-\" for descending")
	c.Flags().Int("page-size", 500, "Users read from the store at a time, 1 to 1000")
	return c
}

func cliExplainCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "explain <username> <method> <path> [--proxied-user <id>]",
		Short: "Shows what the gateway would decide for an API user's request, and why",
		Long: `Runs the gateway's decision for the API user and the request, without
sending anything anywhere: the endpoint it matches, the reason code, and
the decision step that settled it. The path is given as a client sends it
(escaped, with any query), such as /v1/products/1337/devices.

It decides as if the user's credential were valid; a real request must
also present one and stay within the user's rate limit.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := DecideSpec{Method: args[1], Path: args[2]}
			if cmd.Flags().Changed("proxied-user") {
				v, _ := cmd.Flags().GetString("proxied-user")
				spec.ProxiedUser = &v
			}
			return withApp(cmd, func(ctx context.Context, app *App) error {
				_, d, err := app.Explain(ctx, Tenant{}, args[0], spec)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if jsonFlag(cmd) {
					return writeIndentedJSON(out, okWith("decision", d))
				}
				verdict := "refused"
				if d.Allowed {
					verdict = "allowed"
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
				row("decision", fmt.Sprintf("%s (%d %s)", verdict, d.Status, d.Reason))
				row("why", d.Description)
				row("step", fmt.Sprintf("%d %s", d.Step, d.StepName))
				if d.Endpoint != nil {
					row("endpoint", fmt.Sprintf("%s: %s %s, scope %s", d.Endpoint.Name, strings.Join(d.Endpoint.Methods, ","), d.Endpoint.Path, d.Endpoint.Scope))
				} else {
					row("endpoint", "-")
				}
				var vars []string
				for k, v := range d.Vars {
					vars = append(vars, k+"="+v)
				}
				row("variables", dash(strings.Join(dedupe(vars), " ")))
				row("effective scopes", dash(strings.Join(d.EffectiveScopes, ", ")))
				if d.ProxiedUser != "" {
					row("proxied user", d.ProxiedUser)
				}
				row("not checked", d.NotChecked)
				return tw.Flush()
			})
		},
	}
	c.Flags().String("proxied-user", "", "The value of the proxied-user header, if the request sends one")
	return c
}

func cliShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show <username>",
		Short: "Shows one API user (never its credentials)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				u, err := app.GetUser(ctx, Tenant{}, args[0])
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("user", viewOf(u)))
				}
				return printUser(cmd.OutOrStdout(), u)
			})
		},
	}
}

func cliUpdateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "update <username> [--scopes a,b] [--roles r] [--name text] ...",
		Short: "Updates an API user; prints the new access token when its privileges changed",
		Long: `Updates the fields given by flags and leaves the others as they are.
When the update changes what the user may do (scopes, roles, endpoints,
proxied users, constraints) or lengthens its life (un-retiring, a later or
cleared expiry, a longer or cleared idle timeout), the access token is
replaced: the old one stops working at once, and the new one is printed,
once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := specFromFlags(cmd)
			if err != nil {
				return err
			}
			return withApp(cmd, func(ctx context.Context, app *App) error {
				u, token, err := app.UpdateUser(ctx, Tenant{}, args[0], &spec)
				if err != nil {
					return err
				}
				return printUpdated(cmd.OutOrStdout(), jsonFlag(cmd), u, token)
			})
		},
	}
	addUserSpecFlags(c)
	return c
}

func cliRetireCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "retire <username> [--undo]",
		Short: "Retires an API user (it cannot authenticate), or with --undo brings it back with a new token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			undo, _ := cmd.Flags().GetBool("undo")
			retired := !undo
			return withApp(cmd, func(ctx context.Context, app *App) error {
				u, token, err := app.UpdateUser(ctx, Tenant{}, args[0], &UserSpec{Retired: &retired})
				if err != nil {
					return err
				}
				return printUpdated(cmd.OutOrStdout(), jsonFlag(cmd), u, token)
			})
		},
	}
	c.Flags().Bool("undo", false, "Un-retire the user; its access token is replaced")
	return c
}

func cliRotateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate <username>",
		Short: "Replaces an API user's access token and prints the new one, once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				_, token, err := app.RotateToken(ctx, Tenant{}, args[0])
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("token", token))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Replaced the access token of %s; the old one no longer works.\nThis value is shown once; store it now.\n\naccess token:  %s\n", args[0], token)
				return nil
			})
		},
	}
}

func cliRegenerateSecretCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "regenerate-secret <username>",
		Short: "Replaces an API user's Secret and prints the new one, once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				_, secret, err := app.RegenerateSecret(ctx, Tenant{}, args[0])
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("secret", secret))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Replaced the Secret of %s; the old one no longer works, with any key.\nThis value is shown once; store it now.\n\nsecret:  %s\n", args[0], secret)
				return nil
			})
		},
	}
}

func cliAddKeyCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "add-key <username> [--expires-at <time>] [--previous-keys-expire-at <time>]",
		Short: "Adds a Key to an API user and prints it, once; the other keys keep working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec KeySpec
			spec.ExpiresAt, _ = cmd.Flags().GetString("expires-at")
			spec.PreviousKeysExpireAt, _ = cmd.Flags().GetString("previous-keys-expire-at")
			return withApp(cmd, func(ctx context.Context, app *App) error {
				_, key, err := app.AddKey(ctx, Tenant{}, args[0], spec)
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("key", key))
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "Added key %s to %s.\nThis value is shown once; store it now.\n\nkey %s: %s\n", key.ID, args[0], key.ID, key.Value)
				if spec.PreviousKeysExpireAt != "" {
					fmt.Fprintf(out, "\nThe other keys stop working at %s.\n", spec.PreviousKeysExpireAt)
				}
				return nil
			})
		},
	}
	c.Flags().String("expires-at", "", "RFC 3339 time at which the new key stops working (a temporary key)")
	c.Flags().String("previous-keys-expire-at", "", "RFC 3339 time at which the user's other keys stop working (an overlap window)")
	return c
}

func cliDeleteKeyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete-key <username> <key-id>",
		Short: "Deletes one of an API user's Keys; it stops working at once",
		Long: `Deletes one Key. Deleting the last one is allowed: it locks out Basic
(key and secret) authentication until a key is added; the access token keeps
working (retire the user to stop it too).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				u, err := app.DeleteKey(ctx, Tenant{}, args[0], args[1])
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okOnly)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted key %s of %s; %d keys remain.\n", args[1], args[0], len(u.Keys))
				return nil
			})
		},
	}
}

func cliDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete <username>",
		Short: "Deletes an API user and all its credentials",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				if _, err := app.DeleteUserAt(ctx, Tenant{}, args[0]); err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okOnly)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s and all its credentials\n", args[0])
				return nil
			})
		},
	}
}

func cliCheckCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Checks the store's integrity, and exits non-zero if it is damaged",
		Long: `Checks the store named by the config: its schema version, and for SQLite
PRAGMA integrity_check and foreign_key_check; for PostgreSQL the rows that
reference missing ones. Run it after restoring a backup, or after a crash.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, func(ctx context.Context, app *App) error {
				if err := app.store.Check(ctx); err != nil {
					return fmt.Errorf("the store is damaged: %w", err)
				}
				n, err := app.store.CountUsers(ctx)
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("users", n))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "store OK: %d API users\n", n)
				return nil
			})
		},
	}
}

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

func printCreated(out io.Writer, asJSON bool, u *policy.APIUser, iss *Issued) error {
	if asJSON {
		return writeIndentedJSON(out, okWith("created", createdView(u, iss)))
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

func printUpdated(out io.Writer, asJSON bool, u *policy.APIUser, token string) error {
	if asJSON {
		v := UpdatedView{UserView: viewOf(u)}
		if token != "" {
			v.Tokens = []TokenView{{Token: token}}
		}
		return writeIndentedJSON(out, okWith("token_replaced", token != "", "user", v))
	}
	fmt.Fprintf(out, "Updated API user %s.\n", u.ID)
	if token != "" {
		fmt.Fprintf(out, "The change may grant more, so the access token was replaced and the old one no longer works.\nThis value is shown once; store it now.\n\naccess token:  %s\n", token)
	} else {
		fmt.Fprintln(out, "The access token is unchanged.")
	}
	return nil
}

func printUser(out io.Writer, u *policy.APIUser) error {
	v := viewOf(u)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s:\t%s\n", k, val) }
	row("username", v.Username)
	row("friendly name", dash(v.FriendlyName))
	row("description", dash(v.Description))
	row("org", v.Org)
	row("product", dash(productLabel(u.Product)))
	row("state", userState(u, time.Now()))
	row("scopes", dash(strings.Join(v.Scopes, ", ")))
	row("roles", dash(strings.Join(v.Roles, ", ")))
	endpoints := strings.Join(v.AllowedEndpoints, ", ")
	if endpoints == "" {
		endpoints = "all"
	}
	row("allowed endpoints", endpoints)
	proxied := "not allowed"
	if v.AllowProxiedUsers {
		proxied = "any valid ID"
		if len(v.AllowedProxiedUsers) > 0 {
			proxied = strings.Join(v.AllowedProxiedUsers, ", ")
		}
	}
	row("proxied users", proxied)
	var rc []string
	for name, values := range v.ResourceConstraints {
		rc = append(rc, name+"="+strings.Join(values, ","))
	}
	row("resource constraints", dash(strings.Join(dedupe(rc), "; ")))
	row("expires at", timeOrDash(u.ExpiresAt))
	row("idle timeout", dash(v.IdleTimeout))
	rateLimit := "the gateway's"
	if v.RateLimit != nil {
		rateLimit = fmt.Sprintf("%d per %s", v.RateLimit.Requests, v.RateLimit.Window)
	}
	row("rate limit", rateLimit)
	row("created at", timeOrDash(u.CreatedAt))
	row("updated at", timeOrDash(u.UpdatedAt))
	row("last used at", timeOrDash(u.LastUsedAt))
	row("access token", dash(v.TokenID))
	if len(v.Keys) == 0 {
		row("keys", "none (Basic authentication is locked out)")
	}
	for _, k := range v.Keys {
		desc := "created " + k.CreatedAt.Format(time.RFC3339)
		if k.ExpiresAt != nil {
			desc += ", expires " + k.ExpiresAt.Format(time.RFC3339)
		}
		row("key "+k.ID, desc)
	}
	return tw.Flush()
}

func printRole(cmd *cobra.Command, r RoleView) error {
	if jsonFlag(cmd) {
		return writeIndentedJSON(cmd.OutOrStdout(), okWith("role", r))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "role %s (%s): %s\n", r.Name, r.Source, strings.Join(r.Scopes, ", "))
	if r.Description != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", r.Description)
	}
	return nil
}

// printDone reports a deletion: the management API's body with --json.
func printDone(cmd *cobra.Command, format string, args ...any) error {
	if jsonFlag(cmd) {
		return writeIndentedJSON(cmd.OutOrStdout(), okOnly)
	}
	fmt.Fprintf(cmd.OutOrStdout(), format, args...)
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

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func joinScopes(ss []policy.Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

// userState says whether the user can authenticate now, and if not why.
func userState(u *policy.APIUser, now time.Time) string {
	switch policy.Compile(u, nil).Active(now, time.Time{}) {
	case policy.Retired:
		return "retired"
	case policy.Expired:
		return "expired"
	case policy.IdleExpired:
		return "idle"
	}
	return "active"
}
