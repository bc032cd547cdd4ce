package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// The `caddy api-users` command manages API users, roles, orgs and products
// directly in the store of a Caddy config, through the same App methods as
// the management API, so the first user can be created before anything is
// exposed. Its --json output is the management API's response body.
//
// This file registers the command and holds what its subcommands share:
// opening the store of the config, with the config's logging, and naming
// the shell user as the actor. The subcommands live in command_users.go,
// command_catalog.go and command_check.go; how they print, in
// command_print.go.

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
logger http.handlers.api_users.audit, with "by": "cli:<login>", where the
config's logging sends it (a "log" that includes that logger, say).

It prints what was asked for, and errors. With --verbose it also prints
Caddy's log lines, and the audit records that the config's logging sends
to the terminal (stderr, by default).

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

Add --json for the management API's JSON instead of text, --verbose for
the log lines.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.PersistentFlags().Bool("json", false, "Print JSON (the management API's response body) instead of text")
			cmd.PersistentFlags().Bool("verbose", false, "Also print log lines, and the audit records the config's logging sends to the terminal")
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
	verbose, _ := cmd.Flags().GetBool("verbose")
	if !verbose {
		// Before the config is loaded, which logs what it found.
		if err := quietCaddyLog(); err != nil {
			return nil, err
		}
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("loading the config: %w", err)
	}
	if cfgJSON == nil {
		return nil, errors.New("no config found: pass --config with the Caddyfile the server uses")
	}
	var cfg struct {
		Apps    map[string]json.RawMessage `json:"apps"`
		Logging *caddy.Logging             `json:"logging"`
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
	// logger name, through the logs of the server's config.
	logs, err := cliLogs(cfg.Logging, verbose)
	if err != nil {
		return nil, err
	}
	app.logger = logs.Logger(app)
	app.audit = logs.Logger(Gateway{}).Named("audit")
	if err := app.open(context.Background()); err != nil {
		return nil, err
	}
	return app, nil
}

// quietCaddyLog makes Caddy's default log, which writes to stderr, show
// errors only, so a command prints what it was asked for and not the log
// lines of loading a config. The writer stays stderr, so Caddy does not
// announce a redirection.
func quietCaddyLog() error {
	_, err := caddy.ProvisionContext(&caddy.Config{Logging: &caddy.Logging{Logs: map[string]*caddy.CustomLog{
		caddy.DefaultLoggerName: {BaseLog: caddy.BaseLog{Level: "ERROR"}},
	}}})
	if err != nil {
		return fmt.Errorf("setting up the log: %w", err)
	}
	return nil
}

// cliLogs opens the logs of the config's logging, as the server does, so
// an audit record goes where the server's would: a log that writes to a
// file or to the network gets it. Unless verbose, what would write to the
// terminal shows errors only: the default log is kept for them, other
// logs on stdout or stderr are dropped.
func cliLogs(logging *caddy.Logging, verbose bool) (*caddy.Logging, error) {
	if logging == nil {
		logging = new(caddy.Logging)
	}
	if !verbose {
		if logging.Logs == nil {
			logging.Logs = map[string]*caddy.CustomLog{}
		}
		for name, l := range logging.Logs {
			if name != caddy.DefaultLoggerName && writesToTerminal(l.WriterRaw) {
				delete(logging.Logs, name)
			}
		}
		if d, ok := logging.Logs[caddy.DefaultLoggerName]; !ok {
			logging.Logs[caddy.DefaultLoggerName] = &caddy.CustomLog{BaseLog: caddy.BaseLog{Level: "ERROR"}}
		} else if writesToTerminal(d.WriterRaw) {
			d.Level = "ERROR"
		}
	}
	// ProvisionContext opens the logs and nothing else, since the config
	// holds no app. Its context is never cancelled: the logs stay open
	// until the command exits.
	if _, err := caddy.ProvisionContext(&caddy.Config{Logging: logging}); err != nil {
		return nil, fmt.Errorf("opening the logs of the config: %w", err)
	}
	return logging, nil
}

// writesToTerminal says whether a log's writer is stdout or stderr
// (stderr when none is given).
func writesToTerminal(writer json.RawMessage) bool {
	if len(writer) == 0 {
		return true
	}
	var w struct {
		Output string `json:"output"`
	}
	if err := json.Unmarshal(writer, &w); err != nil {
		return false
	}
	return w.Output == "" || w.Output == "stderr" || w.Output == "stdout"
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
