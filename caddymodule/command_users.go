package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// The user commands of `caddy api-users`: create, list, explain, show,
// update, retire, rotate, regenerate-secret, add-key, delete-key and
// delete, with the flags that build a UserSpec.

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
	f.String("quota", "", "The user's own quota, requests/day or requests/month (calendar, UTC), such as 100000/month, in place of the gateway's (\"\" or 0 clears)")
	f.StringSlice("allowed-ips", nil, "Client networks the user may be used from, comma-separated CIDRs or addresses, such as 203.0.113.0/24,2001:db8::/32 (empty: anywhere; a change replaces the token)")
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

// parseQuotaFlag reads --quota: requests/period, or "" or "0" to clear the
// user's own quota. The period is checked with the rest of the spec.
func parseQuotaFlag(v string) (*UserQuota, error) {
	if v == "" || v == "0" {
		return &UserQuota{}, nil
	}
	n, period, ok := strings.Cut(v, "/")
	requests, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || requests < 1 {
		return nil, fmt.Errorf("--quota %q: write it as requests/day or requests/month, such as 100000/month (or \"\" to clear)", v)
	}
	return &UserQuota{Requests: requests, Period: period}, nil
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
	spec.AllowedIPs = list("allowed-ips")
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
	if f.Changed("quota") {
		v, _ := f.GetString("quota")
		q, err := parseQuotaFlag(v)
		if err != nil {
			return spec, err
		}
		spec.Quota = q
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
