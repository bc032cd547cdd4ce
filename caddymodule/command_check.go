package caddymodule

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

// The store check of `caddy api-users check`.

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
