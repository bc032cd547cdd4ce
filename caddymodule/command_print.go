package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/apiusers/caddy-api-users/policy"
)

// How `caddy api-users` prints: text for a person, or with --json the
// management API's response body.

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
	quota := "the gateway's"
	if v.Quota != nil {
		quota = fmt.Sprintf("%d per %s (UTC)", v.Quota.Requests, v.Quota.Period)
	}
	row("quota", quota)
	allowedIPs := strings.Join(v.AllowedIPs, ", ")
	if allowedIPs == "" {
		allowedIPs = "anywhere"
	}
	row("allowed IPs", allowedIPs)
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
