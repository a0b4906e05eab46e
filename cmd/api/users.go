package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/term"

	"github.com/docuvault/docuvault/internal/auth"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

const usersUsage = `usage: api users create --email EMAIL [--admin] [--password-file PATH]

Creates an account. The password is read from PATH (its first line), or
else from standard input: asked twice without echo on a terminal, its first
line otherwise (printf '%s\n' "$PW" | api users create --email E). It must
have 12 characters or more and be neither common nor contain the email's
local part. --admin makes the account an administrator; the first account
ever created is one anyway. Works whatever AUTH_REGISTRATION says.
Settings: DATABASE_URL.
`

// usersCmd runs `api users ...`.
func usersCmd(ctx context.Context, global, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = io.WriteString(stdout, usersUsage)
		return nil
	}
	if args[0] != "create" {
		return fmt.Errorf("users: unknown subcommand %q (see `api users --help`)", args[0])
	}
	fs := flag.NewFlagSet("api users create", flag.ContinueOnError)
	email := fs.String("email", "", "")
	admin := fs.Bool("admin", false, "")
	passwordFile := fs.String("password-file", "", "")
	envFile := fs.String("env-file", "", "")
	if help, err := config.ParseFlags(fs, args[1:], "users create", usersUsage, stdout); help || err != nil {
		return err
	}
	addr, err := checkEmail(*email)
	if err != nil {
		return err
	}
	src, err := config.LoadCommand("api", global, *envFile, getenv, os.Stderr)
	if err != nil {
		return err
	}
	dbCfg, err := config.Database(src, "DATABASE_URL")
	if err != nil {
		return err
	}
	password, err := readPassword(*passwordFile)
	if err != nil {
		return err
	}
	if err := auth.CheckPassword(password, addr); err != nil {
		return fmt.Errorf("users create: password: %w", err)
	}
	hash, err := auth.NewHasher(auth.DefaultArgon2).Hash(ctx, password)
	if err != nil {
		return err
	}
	pool, err := store.Open(ctx, dbCfg)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	var u store.User
	err = store.WithTx(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if u, err = store.CreateUser(ctx, tx, store.NewUser{ID: uuid.Must(uuid.NewV7()), Email: addr, PasswordHash: hash, Admin: *admin}); err != nil {
			return err
		}
		ev, err := events.New(events.UserRegistered, "user", u.ID, events.System, uuid.Must(uuid.NewV7()), nil,
			events.User{ID: u.ID, Email: u.Email, IsAdmin: u.IsAdmin})
		if err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, store.Origin{})
	})
	if errors.Is(err, store.ErrEmailTaken) {
		return fmt.Errorf("users create: an account with email %s exists", addr)
	}
	if err != nil {
		return fmt.Errorf("users create: %s", config.Redact(err.Error(), dbCfg.ConnConfig.Password))
	}
	role := "user"
	if u.IsAdmin {
		role = "administrator"
	}
	fmt.Fprintf(stdout, "created %s %s (%s)\n", role, u.Email, u.ID)
	return nil
}

// checkEmail is the API's email check (httpapi validEmail), for the
// command line.
func checkEmail(raw string) (string, error) {
	e := strings.TrimSpace(raw)
	if e == "" {
		return "", errors.New("users create: --email is required")
	}
	local, domain, _ := strings.Cut(e, "@")
	if len(e) > 320 || local == "" || domain == "" || strings.Contains(domain, "@") ||
		strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("users create: --email %q is not an address such as alice@example.org", e)
	}
	return e, nil
}

// readPassword reads the new password: the first line of path, or of
// standard input (asked twice, without echo, on a terminal).
func readPassword(path string) (string, error) {
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("users create: --password-file: %w", err)
		}
		defer f.Close()
		return firstLine(f, "--password-file "+path)
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return firstLine(os.Stdin, "standard input")
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(os.Stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		return string(b), err
	}
	pw, err := ask("Password: ")
	if err != nil {
		return "", fmt.Errorf("users create: read password: %w", err)
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", fmt.Errorf("users create: read password: %w", err)
	}
	if pw != again {
		return "", errors.New("users create: the passwords differ")
	}
	return pw, nil
}

// firstLine returns the first line of r without its line ending.
func firstLine(r io.Reader, what string) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, auth.MaxPasswordBytes+2)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("users create: read password from %s: %w", what, err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", fmt.Errorf("users create: no password in %s", what)
	}
	return line, nil
}
