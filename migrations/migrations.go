// Package migrations embeds DocuVault's SQL migrations.
//
// The files are plain tern migrations (NNN_name.sql), so the folder also works
// with the tern CLI: `tern migrate -m migrations --conn-string "$DATABASE_MIGRATE_URL"`.
package migrations

import "embed"

// FS holds every migration file, applied in the order of its number.
//
//go:embed *.sql
var FS embed.FS
